//! User-level rules through HTTP and gRPC: what a delivery teaches about a user, and what it
//! leaves alone (readiness correctness, round 2: Argyle's semantics for errors, synced data,
//! subscription names, external ids, and the time of a change).

use serde_json::{Value, json};
use tonic::Code;

use readiness::grpc::pb::{self, AccountState, ReadinessState};

use crate::helpers::{TestApp, body, new_id};

const T1: &str = "2024-01-08T12:00:00Z";
const T2: &str = "2024-01-08T12:58:06.023659Z";
const T3: &str = "2024-01-09T08:00:00Z";
const T4: &str = "2024-01-09T09:30:00Z";

fn seconds(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
}

/// `accounts.failed` with `include_resource`: the top-level error, and the resource's own copy.
fn failed_with_resource(
    user: &str,
    account: &str,
    top: (Option<&str>, Option<&str>),
    resource_code: Option<&str>,
    updated_at: &str,
) -> String {
    json!({"event": "accounts.failed", "name": "readiness-test-include-resource", "data": {
        "account": account, "user": user, "error_code": top.0, "error_message": top.1,
        "resource": {"id": account, "user": user, "connection": {
            "status": "error", "error_code": resource_code, "error_message": null,
            "updated_at": updated_at}}}})
    .to_string()
}

/// The `accounts.updated` Argyle sends with every failure: the same connection, no error code.
fn updated_twin(user: &str, account: &str, updated_at: &str) -> String {
    json!({"event": "accounts.updated", "name": "readiness-test-include-resource", "data": {
        "account": account, "user": user,
        "resource": {"id": account, "user": user, "connection": {
            "status": "error", "error_code": null, "error_message": null,
            "updated_at": updated_at}}}})
    .to_string()
}

async fn lookup(app: &TestApp, external_id: &str) -> Result<pb::UserReadiness, tonic::Status> {
    app.readiness_client()
        .await
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::ExternalId(
                external_id.into(),
            )),
            ..Default::default()
        })
        .await
        .map(|answer| answer.into_inner().user.unwrap())
}

#[tokio::test]
async fn an_accounts_updated_without_a_resource_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let bare = json!({"event": "accounts.updated", "name": "readiness-test",
                      "data": {"account": account, "user": user}})
    .to_string();

    let answer = app.deliver_ok(&bare).await;

    assert_eq!(answer["status"], "applied");
    let status = app
        .readiness_client()
        .await
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(user)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "no user (and no pending account) from an event that tells nothing"
    );
    assert_eq!(app.event_count().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_account_whose_datasets_all_failed_to_sync_stays_pending() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, "2024-01-08T12:00:00Z"))
        .await;
    let failed_syncs =
        json!({"event": "accounts.updated", "name": "readiness-test-include-resource",
        "data": {"account": account, "user": user, "resource": {"id": account, "user": user,
            "connection": {"status": "connected", "error_code": null, "error_message": null,
                           "updated_at": "2024-01-08T12:00:00Z"},
            "availability": {"paystubs": {"status": "sync_failed"},
                             "gigs": {"status": "sync_failed"},
                             "shifts": {"status": "sync_failed"}}}}})
        .to_string();

    let answer = app.deliver_ok(&failed_syncs).await;

    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(
        app.state(&user).await,
        pb::ReadinessState::Pending,
        "no reports.ready came: the data never counted"
    );
    app.stop().await;
}

#[tokio::test]
async fn accounts_failed_keeps_its_top_level_error_when_the_resource_copy_is_null() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let top = (
        Some("invalid_credentials"),
        Some("The credentials are not valid."),
    );

    app.deliver_ok(&failed_with_resource(&user, &account, top, None, T1))
        .await;
    app.deliver_ok(&updated_twin(&user, &account, T1)).await;

    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.accounts[0].state(), AccountState::Failed);
    assert_eq!(readiness.accounts[0].error_code, "invalid_credentials");
    assert_eq!(
        readiness.accounts[0].error_message,
        "The credentials are not valid."
    );
    // A later copy without a code (the next accounts.updated) never erases it either.
    app.deliver_ok(&updated_twin(&user, &account, T2)).await;
    assert_eq!(
        app.readiness(&user).await.accounts[0].error_code,
        "invalid_credentials"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_top_level_error_of_accounts_failed_wins_over_a_different_resource_copy() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());

    app.deliver_ok(&failed_with_resource(
        &user,
        &account,
        (Some("mfa_timeout"), None),
        Some("auth_required"),
        T1,
    ))
    .await;

    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.accounts[0].state(), AccountState::Failed);
    assert_eq!(readiness.accounts[0].error_code, "mfa_timeout");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_reauthentication_of_a_synced_account_keeps_its_data_and_the_user_ready() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, T1))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;

    app.deliver_ok(&failed_with_resource(
        &user,
        &account,
        (Some("invalid_credentials"), None),
        None,
        T3,
    ))
    .await;

    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    assert_eq!(readiness.accounts[0].state(), AccountState::Failed);
    assert_eq!(readiness.accounts[0].error_code, "invalid_credentials");
    let data_as_of = readiness.data_as_of.expect("data as of the last sync");
    assert_eq!(data_as_of, readiness.accounts[0].last_synced_at.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn without_synced_data_a_failed_account_blocks_and_a_reconnection_is_pending_again() {
    let app = TestApp::spawn().await;
    let (user, account, other) = (new_id(), new_id(), new_id());

    // Nothing synced, one failure: the user must act.
    app.deliver_ok(&body::failed(&user, &other)).await;
    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Blocked);
    assert!(readiness.data_as_of.is_none());

    // A sync makes the user ready; a reconnection newer than it is pending until a newer sync.
    app.deliver_ok(&body::connected_at(&user, &account, T1))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;
    assert_eq!(app.state(&user).await, ReadinessState::Ready);
    app.deliver_ok(&body::connected_at(&user, &account, T3))
        .await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);
    app.deliver_ok(&body::ready(&user, &[(&account, T4)])).await;
    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    assert_eq!(readiness.data_as_of.unwrap().seconds, seconds(T4));

    // Removed accounts never count.
    app.deliver_ok(&body::removed(&user, &account)).await;
    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Blocked);
    assert!(readiness.data_as_of.is_none());
    app.stop().await;
}

#[tokio::test]
async fn one_fact_from_two_subscriptions_is_one_report_and_one_event() {
    let app = TestApp::spawn().await;
    let user = new_id();
    let from = |subscription: &str| {
        json!({"event": "reports.generated", "name": subscription,
               "data": {"user": user, "type": "voie"}})
        .to_string()
    };

    let first = app.deliver_ok(&from("readiness-reports")).await;
    let second = app.deliver_ok(&from("readiness-reports-eu")).await;

    // Two deliveries, two inbox rows; one fact.
    assert_ne!(first["delivery_id"], second["delivery_id"]);
    let reports = app.reports_of(&user).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let mut stream = app
        .report_client()
        .await
        .stream_report_events(pb::StreamReportEventsRequest {
            start: pb::StartPosition::Beginning.into(),
            user_id: user,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut announced = 0;
    loop {
        use pb::stream_report_events_response::Message;
        match stream.message().await.unwrap().unwrap().message.unwrap() {
            Message::ReportGenerated(_) => announced += 1,
            Message::CaughtUp(_) => break,
            Message::Heartbeat(_) | Message::ReportUpdated(_) => {}
        }
    }
    assert_eq!(announced, 1);
    app.stop().await;
}

#[tokio::test]
async fn every_external_id_argyle_reported_resolves() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    app.deliver_ok(&body::ready_with_external_id(
        &user,
        Some("zeta-7"),
        &[(&account, T1)],
    ))
    .await;

    // Renamed at Argyle to a smaller value: later deliveries carry it.
    app.deliver_ok(&body::ready_with_external_id(
        &user,
        Some("alpha-3"),
        &[(&account, T2)],
    ))
    .await;

    for external_id in ["alpha-3", "zeta-7"] {
        let found = lookup(&app, external_id).await.unwrap();
        assert_eq!(found.user_id, user, "{external_id}");
        assert_eq!(found.external_ids, vec!["alpha-3", "zeta-7"]);
        assert_eq!(
            found.external_id, "zeta-7",
            "the greatest, whatever the order"
        );
    }
    let listed = app
        .readiness_client()
        .await
        .list_users(pb::ListUsersRequest {
            external_id: "alpha-3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user_id, user);
    // A stream filtered by the new id opens (and by an unknown one does not).
    let mut watch = app.readiness_client().await;
    let opened = watch
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Beginning.into(),
            external_id: "alpha-3".into(),
            ..Default::default()
        })
        .await;
    assert!(opened.is_ok());
    let unknown = watch
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Beginning.into(),
            external_id: "never-seen".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_external_id_shared_by_two_users_is_a_failed_precondition() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        let (user, account) = (new_id(), new_id());
        app.deliver_ok(&body::ready_with_external_id(
            &user,
            Some("shared-1"),
            &[(&account, T1)],
        ))
        .await;
    }

    let status = lookup(&app, "shared-1").await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_for_a_user_id_not_seen_yet_opens_and_receives_the_users_first_change() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let mut stream = app
        .readiness_client()
        .await
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Now.into(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await
        .expect("a consumer can subscribe before the user's first webhook")
        .into_inner();
    use pb::watch_readiness_response::Message;
    assert!(matches!(
        stream.message().await.unwrap().unwrap().message,
        Some(Message::CaughtUp(_))
    ));

    app.deliver_ok(&body::connected(&user, &account)).await;

    loop {
        match stream.message().await.unwrap().unwrap().message.unwrap() {
            Message::Change(change) => {
                assert_eq!(change.user_id, user);
                assert_eq!(change.state(), ReadinessState::Pending);
                break;
            }
            Message::Heartbeat(_) => {}
            Message::CaughtUp(_) => panic!("a second caught-up marker"),
        }
    }
    app.stop().await;
}

/// The instant a user's readiness change was recorded, from the log (as streams carry it).
async fn changed_at(app: &TestApp, user: &str) -> Vec<prost_types::Timestamp> {
    let mut stream = app
        .readiness_client()
        .await
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Beginning.into(),
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut times = Vec::new();
    loop {
        use pb::watch_readiness_response::Message;
        match stream.message().await.unwrap().unwrap().message.unwrap() {
            Message::Change(change) => times.push(change.changed_at.unwrap()),
            Message::CaughtUp(_) => return times,
            Message::Heartbeat(_) => {}
        }
    }
}

#[tokio::test]
async fn a_change_carries_one_moment_in_its_query_its_event_and_its_inbox_row() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());

    let answer: Value = app.deliver_ok(&body::connected(&user, &account)).await;

    let readiness = app.readiness(&user).await;
    let since = readiness.since.unwrap();
    assert_eq!(changed_at(&app, &user).await, vec![since]);
    assert_eq!(readiness.updated_at.unwrap(), since);
    assert_eq!(readiness.accounts[0].updated_at.unwrap(), since);
    assert_eq!(readiness.accounts[0].first_seen_at.unwrap(), since);
    let row = app
        .deliveries()
        .await
        .into_iter()
        .find(|row| row.id == answer["delivery_id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(
        (
            row.received_at.timestamp(),
            row.received_at.timestamp_subsec_nanos() as i32
        ),
        (since.seconds, since.nanos)
    );
    app.stop().await;
}
