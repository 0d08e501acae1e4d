//! Argyle's times become protobuf `Timestamp`s: values no `Timestamp` can hold are refused at the
//! edge, and both databases keep and return the same instant at microsecond precision.

use serde_json::json;

use crate::helpers::{TestApp, body, new_id};

#[tokio::test]
async fn a_leap_second_or_a_year_outside_0001_to_9999_is_answered_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    for bad in ["2016-12-31T23:59:60Z", "0000-12-31T23:59:59Z"] {
        let (status, answer) = app.deliver(&body::ready(&user, &[(&account, bad)])).await;

        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"], "invalid_event");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with("data.accounts[0].last_synced_at: "),
            "{message}"
        );
        assert!(answer["delivery_id"].is_i64(), "{answer}");
    }
    let leap = body::updated(&user, &account, "error", "2016-12-31T23:59:60Z");
    let (status, answer) = app.deliver(&leap).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("data.resource.connection.updated_at: "),
        "{answer}"
    );
    assert_eq!(app.event_count().await, 0, "nothing was applied");
    app.stop().await;
}

#[tokio::test]
async fn both_databases_return_the_same_instant_at_microsecond_precision() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let ready = json!({"event": "reports.ready", "name": "readiness-test", "data": {
        "user": user, "accounts": [{"id": account, "last_synced_at": "2024-01-08T12:58:06.123456789Z"}]}})
    .to_string();

    app.deliver_ok(&ready).await;
    let readiness = app.readiness(&user).await;

    let synced = readiness.accounts[0].last_synced_at.unwrap();
    assert_eq!(
        (synced.seconds, synced.nanos),
        (1_704_718_686, 123_456_000),
        "truncated to microseconds, not rounded"
    );
    for (name, at) in [
        ("since", readiness.since),
        ("updated_at", readiness.updated_at),
        ("first_seen_at", readiness.accounts[0].first_seen_at),
    ] {
        let at = at.unwrap();
        assert_eq!(
            at.nanos % 1000,
            0,
            "{name} has sub-microsecond digits: {at:?}"
        );
    }
    app.stop().await;
}
