//! What `POST /webhooks/argyle` answers for good and bad input, and what it stores.

use std::path::PathBuf;

use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb::{self, ReadinessState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{SECRET, TestApp, body, new_id};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/argyle-recorded")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn every_recorded_argyle_delivery_is_accepted_and_applied_or_ignored() {
    let app = TestApp::spawn().await;
    let expected = [
        ("01-accounts.connected.json", "applied"),
        ("02-identities.added.json", "ignored"),
        ("03-accounts.updated.json", "applied"),
        ("04-accounts.updated.json", "applied"),
        ("05-paystubs.partially_synced.json", "ignored"),
        ("06-gigs.partially_synced.json", "ignored"),
        ("07-paystubs.partially_synced.json", "ignored"),
        ("08-gigs.partially_synced.json", "ignored"),
        ("fixture-webhook_accounts.connected.json", "applied"),
        ("fixture-webhook_users.fully_synced.json", "applied"),
        ("fixture-webhook_gigs.fully_synced.json", "ignored"),
        ("fixture-webhook_identities.added.json", "ignored"),
        ("fixture-webhook_paystubs.fully_synced.json", "ignored"),
    ];
    for (name, status) in expected {
        let raw = String::from_utf8(fixture(name)).unwrap();
        assert_eq!(app.deliver_ok(&raw).await["status"], status, "{name}");
    }

    // The recorded run connected one account and never sent reports.ready: still pending.
    let recorded = app.readiness("019c0b39-021f-1499-2601-4988ca1a95bb").await;
    assert_eq!(recorded.state(), ReadinessState::Pending);
    assert_eq!(recorded.accounts[0].state(), pb::AccountState::Connected);

    // The unit-test fixtures: connected, then users.fully_synced with an external id.
    let request = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::ExternalId(
            "609d842d-db12-4e06-ada8-c6afa1390adc".into(),
        )),
        ..Default::default()
    };
    let synced = app
        .readiness_client()
        .await
        .get_user_readiness(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(synced.user_id, "0195d370-e353-43bb-51b7-b7b2dae5767e");
    assert_eq!(synced.state(), ReadinessState::Ready);
    app.stop().await;
}

#[tokio::test]
async fn deliveries_signed_with_any_configured_secret_are_accepted() {
    let app = TestApp::spawn_with(|settings| {
        settings.argyle_secrets = vec![Secret::new("old-secret"), Secret::new("new-secret")];
    })
    .await;
    for secret in ["old-secret", "new-secret"] {
        let body = body::connected(&new_id(), &new_id());
        let signature = sign(&Secret::new(secret), body.as_bytes());
        let (status, _) = app
            .post(
                body.into_bytes(),
                &[
                    ("content-type", "application/json"),
                    ("x-argyle-signature", &signature),
                ],
            )
            .await;
        assert_eq!(status, 200, "signed with {secret}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_signature_is_refused_with_401_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let body = body::connected(&new_id(), &new_id());
    let other = sign(&Secret::new("someone-else"), body.as_bytes());
    let truncated = &sign(&Secret::new(SECRET), body.as_bytes())[..100];
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("missing", vec![("content-type", "application/json")]),
        (
            "another secret",
            vec![
                ("content-type", "application/json"),
                ("x-argyle-signature", &other),
            ],
        ),
        (
            "not hex",
            vec![
                ("content-type", "application/json"),
                ("x-argyle-signature", "not-hex!"),
            ],
        ),
        (
            "truncated",
            vec![
                ("content-type", "application/json"),
                ("x-argyle-signature", truncated),
            ],
        ),
    ];
    for (name, headers) in cases {
        let (status, answer) = app.post(body.clone().into_bytes(), &headers).await;
        assert_eq!(status, 401, "{name}: {answer}");
        assert_eq!(answer["error"], "invalid_signature", "{name}");
    }
    assert!(app.deliveries().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    let app = TestApp::spawn_with(|settings| settings.max_body_bytes = 1024).await;
    let big = format!("{{\"event\":\"x\",\"pad\":\"{}\"}}", "a".repeat(4096));
    let (status, answer) = app.deliver(&big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "body_too_large");
    // Size is checked before the content type (and the signature).
    let (status, answer) = app
        .post(big.clone().into_bytes(), &[("content-type", "text/plain")])
        .await;
    assert_eq!((status, &answer["error"]), (413, &"body_too_large".into()));

    // Chunked, no Content-Length, and the sender never finishes: the answer must not wait.
    let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let head = "POST /webhooks/argyle HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                X-Argyle-Signature: 00\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "b".repeat(2048);
    stream
        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the body ended")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    assert!(app.deliveries().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_non_json_content_type_is_refused_with_415() {
    let app = TestApp::spawn().await;
    let body = body::connected(&new_id(), &new_id());
    let signature = sign(&Secret::new(SECRET), body.as_bytes());
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut headers = vec![("x-argyle-signature", signature.as_str())];
        headers.extend(content_type.map(|value| ("content-type", value)));
        let (status, answer) = app.post(body.clone().into_bytes(), &headers).await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert_eq!(answer["error"], "unsupported_media_type");
    }
    let (status, _) = app
        .post(
            body.into_bytes(),
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("x-argyle-signature", &signature),
            ],
        )
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_valid_event_gets_400_naming_the_problem_and_is_kept() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let cases = [
        ("not json".to_owned(), "not valid JSON"),
        ("[1,2]".to_owned(), "expected a JSON object"),
        (r#"{"data":{}}"#.to_owned(), "missing field `event`"),
        (r#"{"event":"accounts.connected"}"#.to_owned(), "data"),
        (
            format!(
                r#"{{"event":"accounts.connected","data":{{"user":"{user}","account":"not-a-uuid"}}}}"#
            ),
            "data.account",
        ),
        (
            format!(
                r#"{{"event":"reports.ready","data":{{"user":"{user}","accounts":[{{"id":5}}]}}}}"#
            ),
            "data.accounts[0].id",
        ),
        (
            format!(r#"{{"event":"reports.generated","data":{{"user":"{user}"}}}}"#),
            "missing field `type`",
        ),
    ];
    for (body, expected) in &cases {
        let (status, answer) = app.deliver(body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_event");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
    }

    let stored = app.deliveries().await;
    assert_eq!(stored.len(), cases.len());
    assert!(
        stored
            .iter()
            .all(|d| d.status == "rejected" && d.error.is_some())
    );
    assert!(app.event_count().await == 0);

    // The same bad body again gets the same answer and is not stored twice.
    let (status, _) = app.deliver(&cases[0].0).await;
    assert_eq!(status, 400);
    assert_eq!(app.deliveries().await.len(), cases.len());
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_is_stored_and_acknowledged_but_not_applied() {
    let app = TestApp::spawn().await;
    let answer = app
        .deliver_ok(r#"{"event":"shifts.added","name":"n","data":{"user":"x"}}"#)
        .await;
    assert_eq!(answer["status"], "ignored");
    let stored = app.deliveries().await;
    assert_eq!((stored.len(), stored[0].status.as_str()), (1, "ignored"));
    assert_eq!(app.event_count().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_account_named_under_another_user_is_rejected_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (owner, intruder, account) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&owner, &account)).await;
    let events = app.event_count().await;

    let (status, answer) = app
        .deliver(&body::ready(
            &intruder,
            &[(&account, "2024-01-08T12:00:00Z")],
        ))
        .await;

    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("belongs to user")
    );
    assert_eq!(app.event_count().await, events);
    assert_eq!(app.state(&owner).await, ReadinessState::Pending);
    let status = app
        .readiness_client()
        .await
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(
                intruder.clone(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn health_probes_answer_and_a_lost_database_gives_503_not_2xx() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Close the pool under the running service: every database call now fails.
    app.core.db().close_by_ref().await.unwrap();

    let (status, answer) = app.deliver(&body::connected(&new_id(), &new_id())).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "database_unavailable");
    let response = app
        .client
        .post(app.url("/webhooks/argyle"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        415,
        "sender mistakes are still answered as such"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn retry_after_is_sent_with_503() {
    let app = TestApp::spawn().await;
    app.core.db().close_by_ref().await.unwrap();
    let response = app
        .signed_request(body::connected(&new_id(), &new_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
}
