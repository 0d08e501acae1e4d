//! Shutdown: requests in flight finish and are answered, probes stop passing at once, and a
//! request still running when the grace period ends is cut off visibly (an error in the log and
//! a failed exit status of `readiness serve`).

use std::time::{Duration, Instant};

use readiness::core::IngestBacklog;
use readiness::store::entities::delivery;
use sea_orm::EntityTrait;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use tokio::io::AsyncWriteExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::process::{ServeProcess, serve_command};
use crate::helpers::{SECRET, TestApp, body, new_id};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_stored_while_probes_stop_passing() {
    let mut app = TestApp::spawn_with(|settings| {
        settings.shutdown_grace_secs = 20;
        settings.database_timeout_secs = 20;
    })
    .await;
    // Hold the deliveries table from another connection: a webhook then stays in flight.
    let other = Database::connect(&app.database_url()).await.unwrap();
    let hold = other.begin().await.unwrap();
    hold.execute_unprepared(if app.on_postgres() {
        "LOCK TABLE deliveries IN EXCLUSIVE MODE"
    } else {
        "DELETE FROM deliveries WHERE id < 0"
    })
    .await
    .unwrap();
    let delivery = body::connected(&new_id(), &new_id());
    let in_flight = tokio::spawn(app.signed_request(delivery.clone()).send());
    let core = app.core.clone();
    eventually("the delivery waits for its commit", || async {
        core.ingest_backlog()
            == IngestBacklog {
                unanswered: 1,
                queued: 0,
            }
    })
    .await;

    let started = Instant::now();
    let outcome = app.begin_shutdown();
    // The listeners close at once: a probe cannot connect (or, already accepted, gets 503).
    eventually("/readyz stops passing", || async {
        let probe = reqwest::Client::new().get(app.url("/readyz")).send().await;
        !probe.is_ok_and(|answer| answer.status() == 200)
    })
    .await;
    let health = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
            .unwrap()
            .connect()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
    }
    .await;
    assert!(
        health.as_ref().is_err()
            || health
                .as_ref()
                .is_ok_and(|answer| answer.get_ref().status() != ServingStatus::Serving),
        "gRPC health does not pass during shutdown: {health:?}"
    );
    assert!(
        !outcome.is_finished(),
        "shutdown waits for the request in flight"
    );

    hold.rollback().await.unwrap();
    let answer = in_flight.await.unwrap().expect("answered");
    assert_eq!(answer.status(), 200);
    let outcome = tokio::time::timeout(PATIENCE, outcome)
        .await
        .expect("shutdown ends once nothing is in flight")
        .unwrap();
    assert!(outcome.is_ok(), "a clean shutdown: {outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "within the grace period"
    );
    let stored = delivery::Entity::find().all(&other).await.unwrap();
    assert_eq!(stored.len(), 1, "the answered delivery is stored");
    assert_eq!(stored[0].body, delivery.into_bytes());
    other.close().await.ok();
}

/// The next status a health watch sends, or `None` when it has ended.
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<ServingStatus> {
    tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("a message in time")
        .expect("the watch is healthy")
        .map(|answer| answer.status())
}

#[tokio::test]
async fn an_open_health_watch_sees_not_serving_then_ends_without_holding_up_shutdown() {
    let mut app = TestApp::spawn_with(|settings| settings.shutdown_grace_secs = 5).await;
    let mut watch = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));

    let started = Instant::now();
    let outcome = tokio::time::timeout(PATIENCE, app.begin_shutdown())
        .await
        .expect("shutdown ends")
        .unwrap();
    let took = started.elapsed();

    assert!(outcome.is_ok(), "nothing had to be cut off: {outcome:?}");
    assert!(
        took < Duration::from_secs(2),
        "shutdown did not wait out the 5 s grace period for the watch: {took:?}"
    );
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(next_status(&mut watch).await, None, "the watch ended");
}

#[test]
fn a_request_still_in_flight_when_the_grace_period_ends_is_cut_off_and_serve_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(
        serve_command(0, 0)
            .args(["--shutdown-grace-secs", "1", "--http-max-in-flight", "1"])
            .env("READINESS_ARGYLE_SECRETS", SECRET)
            .env(
                "READINESS_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
            )
            .env("RUST_LOG", "info"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A webhook whose body never finishes stays in flight (until the 10 s body timeout). It
    // holds the only webhook slot once the server is handling it: another webhook is then shed
    // with 503 (`http_max_in_flight` counts per route). A check can also reach the server first
    // and take the slot, and the stalled webhook is then the one shed: it is started again.
    let _stalled = runtime.block_on(async {
        let client = reqwest::Client::new();
        let webhooks = format!("http://{}/webhooks/argyle", server.http);
        let deadline = Instant::now() + PATIENCE;
        let mut stalled = stalled_webhook(server.http).await;
        loop {
            let check = client.post(&webhooks).send().await;
            if check.is_ok_and(|answer| answer.status() == 503) {
                return stalled;
            }
            if was_answered(&stalled) {
                stalled = stalled_webhook(server.http).await;
            }
            assert!(
                Instant::now() < deadline,
                "the stalled webhook was never being handled: {}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let started = Instant::now();
    server.terminate();
    let status = server.wait_for_exit(PATIENCE);
    let took = started.elapsed();

    let logs = server.logs();
    assert_eq!(
        status.code(),
        Some(1),
        "a forced close exits 1 ({status}): {logs}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(15),
        "cut off after the 1 s grace period, took {took:?}"
    );
    let cut_off = logs
        .lines()
        .find(|line| line.contains("in-flight requests did not finish within the grace period"))
        .unwrap_or_else(|| panic!("no cut-off line in: {logs}"));
    assert!(cut_off.contains("\"level\":\"ERROR\""), "{cut_off}");
    assert!(logs.contains("shutdown forced"), "{logs}");
}

/// A connection that sent a webhook's headers and the first byte of its 100-byte body.
async fn stalled_webhook(http: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = "POST /webhooks/argyle HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Whether the server has answered (or closed) `stream`, without waiting.
fn was_answered(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0; 1];
    !matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}
