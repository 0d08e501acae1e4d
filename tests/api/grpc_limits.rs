//! Limits the gRPC listener keeps: at most `grpc_max_concurrent_streams` requests at once per
//! connection, and a client's deadline (`grpc-timeout`) ends the call on the server.

use std::time::{Duration, Instant};

use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use readiness::grpc::pb::watch_readiness_response::Message;
use readiness::grpc::pb::{self, StartPosition};
use tonic::Code;

use crate::helpers::{TestApp, new_id};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn lookup() -> pb::GetUserReadinessRequest {
    pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(new_id())),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_connection_carries_at_most_grpc_max_concurrent_streams_requests_at_once() {
    let app = TestApp::spawn_with(|settings| settings.grpc_max_concurrent_streams = 2).await;
    // One channel is one HTTP/2 connection.
    let client = ReadinessServiceClient::new(app.channel().await);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = client
            .clone()
            .watch_readiness(pb::WatchReadinessRequest {
                start: StartPosition::Now.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(PATIENCE, stream.message()).await;
        assert!(
            matches!(
                first,
                Ok(Ok(Some(pb::WatchReadinessResponse {
                    message: Some(Message::CaughtUp(_))
                })))
            ),
            "{first:?}"
        );
        open.push(stream);
    }

    // A third request on the same connection waits for a place...
    let mut third = tokio::spawn({
        let mut client = client.clone();
        async move { client.get_user_readiness(lookup()).await }
    });
    // ...while another connection is answered at once,
    let other = ReadinessServiceClient::new(app.channel().await)
        .get_user_readiness(lookup())
        .await;
    assert_eq!(other.unwrap_err().code(), Code::NotFound);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "the third request on a full connection was answered"
    );
    // ...and is answered as soon as a stream ends.
    drop(open.pop());
    let answered = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("answered once a place is free")
        .unwrap();
    assert_eq!(answered.unwrap_err().code(), Code::NotFound);
    app.stop().await;
}

/// A gRPC frame: uncompressed, 4-byte big-endian length, the message.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}

#[tokio::test]
async fn the_server_ends_a_call_at_the_deadline_its_client_sent() {
    let app = TestApp::spawn_with(|settings| {
        settings.database_max_connections = 1;
        settings.database_timeout_secs = 20;
    })
    .await;
    // The pool's only connection is taken: a query now waits up to 20 s for one.
    let held = sea_orm::TransactionTrait::begin(app.core.db())
        .await
        .unwrap();

    // A plain HTTP/2 client, which (unlike tonic's) does not enforce the deadline itself: only
    // the server can end the call early.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .post(format!(
            "http://{}/readiness.v1.ReadinessService/GetUserReadiness",
            app.grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(grpc_frame(&lookup()))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();

    // tonic answers an expired deadline with CANCELLED ("Timeout expired"), trailers only.
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("grpc-status").as_deref(),
        Some("1"),
        "{:?}",
        response.headers()
    );
    assert_eq!(
        header("grpc-message").as_deref(),
        Some("Timeout%20expired"),
        "percent-encoded, as gRPC sends it"
    );
    assert!(
        took < Duration::from_secs(10),
        "ended at the 300 ms deadline, not after the 20 s database wait: {took:?}"
    );
    held.rollback().await.unwrap();
    app.stop().await;
}
