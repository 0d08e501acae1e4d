//! Errors repeat at most about 128 bytes of the caller's input, so a huge id or header comes
//! back as the real error, not as a broken answer.

use readiness::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{SECRET, TestApp, new_id};
use readiness::domain::signature::{Secret, sign};

/// Longest error message accepted: the echoed input (about 128 bytes) plus the words around it.
const SHORT: usize = 600;

#[tokio::test]
async fn a_3_mb_external_id_is_answered_not_found_with_a_short_message() {
    let app = TestApp::spawn().await;
    let mut client = app.readiness_client().await;
    let request = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::ExternalId(
            "x".repeat(3 * 1024 * 1024),
        )),
        ..Default::default()
    };

    let status = client.get_user_readiness(request).await.unwrap_err();

    assert_eq!(
        status.code(),
        Code::NotFound,
        "{}",
        &status.message()[..200.min(status.message().len())]
    );
    assert!(
        status.message().len() < SHORT,
        "{} bytes",
        status.message().len()
    );
    assert!(status.message().contains("bytes)"), "{}", status.message());
    app.stop().await;
}

#[tokio::test]
async fn a_huge_malformed_user_id_is_answered_invalid_argument_with_a_short_message() {
    let app = TestApp::spawn().await;
    let mut client = app.readiness_client().await;
    let request = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(
            "y".repeat(1024 * 1024),
        )),
        ..Default::default()
    };

    let status = client.get_user_readiness(request).await.unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().len() < SHORT,
        "{} bytes",
        status.message().len()
    );
    app.stop().await;
}

#[tokio::test]
async fn webhook_errors_repeat_at_most_a_short_prefix_of_the_input() {
    let app = TestApp::spawn().await;
    let huge = "z".repeat(200_000);
    // A malformed value serde would quote in full.
    let body = json!({"event": "accounts.connected", "data": {"user": new_id(), "account": huge}})
        .to_string();
    let (status, answer) = app.deliver(&body).await;
    assert_eq!(status, 400, "{}", &answer.to_string()[..300]);
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with("data.account: "), "{}", &message[..100]);
    assert!(message.len() < SHORT, "{} bytes", message.len());

    // A long unknown key holding a NUL: the path names the key.
    let body = format!(r#"{{"event":"x","data":{{"{huge}":"a\u0000b"}}}}"#);
    let (status, answer) = app.deliver(&body).await;
    assert_eq!(status, 400);
    assert!(answer["message"].as_str().unwrap().len() < SHORT);

    // A long content type.
    let content_type = format!("text/{}", "p".repeat(6000));
    let small = r#"{"event":"x"}"#;
    let signature = sign(&Secret::new(SECRET), small.as_bytes());
    let (status, answer) = app
        .post(
            small.as_bytes().to_vec(),
            &[
                ("content-type", &content_type),
                ("x-argyle-signature", &signature),
            ],
        )
        .await;
    assert_eq!(status, 415);
    assert!(
        answer["message"].as_str().unwrap().len() < SHORT,
        "{answer}"
    );
    app.stop().await;
}
