//! The readiness rule end to end: signed webhooks in, readiness out over gRPC.

use readiness::grpc::pb::{AccountState, ReadinessState};

use crate::helpers::{TestApp, body, new_id};

const T1: &str = "2024-01-08T12:00:00Z";
const T2: &str = "2024-01-08T12:58:06.023659Z";
const T3: &str = "2024-01-09T08:00:00Z";
const T4: &str = "2024-01-09T09:30:00Z";

#[tokio::test]
async fn a_single_connected_account_becomes_ready_once_reports_ready_lists_it() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());

    app.deliver_ok(&body::added(&user, &account)).await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);
    app.deliver_ok(&body::connected(&user, &account)).await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;

    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    assert_eq!(readiness.accounts.len(), 1);
    assert_eq!(readiness.accounts[0].state(), AccountState::Synced);
    let synced = readiness.accounts[0].last_synced_at.unwrap();
    assert_eq!((synced.seconds, synced.nanos), (1704718686, 23_659_000));
    assert!(readiness.since.is_some());
    app.stop().await;
}

#[tokio::test]
async fn two_accounts_stay_pending_until_reports_ready_lists_both() {
    let app = TestApp::spawn().await;
    let (user, first, second) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &first)).await;
    app.deliver_ok(&body::connected(&user, &second)).await;

    app.deliver_ok(&body::ready(&user, &[(&first, T2)])).await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);

    app.deliver_ok(&body::ready(&user, &[(&first, T2), (&second, T2)]))
        .await;
    assert_eq!(app.state(&user).await, ReadinessState::Ready);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_account_does_not_block_a_synced_one() {
    let app = TestApp::spawn().await;
    let (user, good, bad) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &good)).await;
    app.deliver_ok(&body::failed(&user, &bad)).await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);

    app.deliver_ok(&body::ready(&user, &[(&good, T2)])).await;

    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    let failed = readiness
        .accounts
        .iter()
        .find(|a| a.account_id == bad)
        .unwrap();
    assert_eq!(failed.state(), AccountState::Failed);
    assert_eq!(failed.error_code, "invalid_credentials");
    assert_eq!(failed.error_message, "The credentials are not valid.");
    app.stop().await;
}

#[tokio::test]
async fn a_user_whose_accounts_all_failed_is_blocked() {
    let app = TestApp::spawn().await;
    let (user, first, second) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::failed(&user, &first)).await;
    app.deliver_ok(&body::failed(&user, &second)).await;
    assert_eq!(app.state(&user).await, ReadinessState::Blocked);
    app.stop().await;
}

#[tokio::test]
async fn a_reconnection_newer_than_the_last_sync_is_pending_until_a_newer_reports_ready() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, T1))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;
    assert_eq!(app.state(&user).await, ReadinessState::Ready);

    app.deliver_ok(&body::connected_at(&user, &account, T3))
        .await;
    assert_eq!(app.state(&user).await, ReadinessState::Pending);
    assert_eq!(
        app.account_state(&user, &account).await,
        AccountState::Connected
    );

    app.deliver_ok(&body::ready(&user, &[(&account, T4)])).await;
    assert_eq!(app.state(&user).await, ReadinessState::Ready);
    app.stop().await;
}

#[tokio::test]
async fn reports_ready_before_accounts_connected_is_ready_in_either_order() {
    let app = TestApp::spawn().await;
    for ready_first in [true, false] {
        let (user, account) = (new_id(), new_id());
        let deliveries = [
            body::ready(&user, &[(&account, T2)]),
            body::connected(&user, &account),
        ];
        let order: Vec<_> = if ready_first {
            deliveries.iter().collect()
        } else {
            deliveries.iter().rev().collect()
        };
        for delivery in order {
            app.deliver_ok(delivery).await;
        }
        assert_eq!(
            app.state(&user).await,
            ReadinessState::Ready,
            "ready first: {ready_first}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_late_bare_connected_event_never_unreadies_a_synced_account() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, T1))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;

    let late = serde_json::json!({"event": "accounts.connected", "name": "other-subscription",
        "data": {"account": account, "user": user}})
    .to_string();
    assert_eq!(app.deliver_ok(&late).await["status"], "applied");

    assert_eq!(app.state(&user).await, ReadinessState::Ready);
    assert_eq!(
        app.account_state(&user, &account).await,
        AccountState::Synced
    );
    app.stop().await;
}

#[tokio::test]
async fn a_disconnection_after_a_sync_keeps_its_data_and_the_user_ready() {
    let app = TestApp::spawn().await;
    let (user, account, other) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, T1))
        .await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;

    app.deliver_ok(&body::updated(&user, &account, "error", T3))
        .await;

    // Argyle keeps the data it synced: a report can still be generated, as of T2; the account
    // keeps its state and error, so the user can be asked to reconnect for fresher data.
    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    assert_eq!(readiness.accounts[0].state(), AccountState::Disconnected);
    assert_eq!(readiness.accounts[0].error_code, "auth_required");
    assert_eq!(readiness.data_as_of, readiness.accounts[0].last_synced_at);

    // A second, synced account adds its data; the older sync still dates the report.
    app.deliver_ok(&body::connected(&user, &other)).await;
    app.deliver_ok(&body::ready(&user, &[(&other, T4)])).await;
    let readiness = app.readiness(&user).await;
    assert_eq!(readiness.state(), ReadinessState::Ready);
    assert_eq!(
        readiness.data_as_of.unwrap().seconds,
        chrono::DateTime::parse_from_rfc3339(T2)
            .unwrap()
            .timestamp()
    );
    app.stop().await;
}

#[tokio::test]
async fn removing_the_only_account_leaves_the_user_with_no_accounts() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    app.deliver_ok(&body::ready(&user, &[(&account, T2)])).await;

    app.deliver_ok(&body::removed(&user, &account)).await;

    assert_eq!(app.state(&user).await, ReadinessState::NoAccounts);
    assert_eq!(
        app.account_state(&user, &account).await,
        AccountState::Removed
    );
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing_and_appends_no_event() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let delivery = body::connected(&user, &account);
    let first = app.deliver_ok(&delivery).await;
    assert_eq!(first["status"], "applied");
    let events = app.event_count().await;
    let before = app.readiness(&user).await;

    let again = app.deliver_ok(&delivery).await;

    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["delivery_id"], first["delivery_id"]);
    assert_eq!(app.event_count().await, events);
    assert_eq!(app.readiness(&user).await, before);
    assert_eq!(app.deliveries().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_same_fact_from_another_subscription_appends_no_event() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    let events = app.event_count().await;

    let twin = serde_json::json!({"event": "accounts.connected", "name": "second-subscription",
        "data": {"account": account, "user": user}})
    .to_string();
    assert_eq!(app.deliver_ok(&twin).await["status"], "applied");

    assert_eq!(app.event_count().await, events);
    app.stop().await;
}

/// A small deterministic generator, so failures replay exactly.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[tokio::test]
async fn any_order_and_repetition_of_a_users_deliveries_converges_to_one_answer() {
    let app = TestApp::spawn().await;
    let mut rng = Lcg(0x5eed);
    let mut answers = Vec::new();
    for round in 0..12 {
        let (user, first, second, third) = (new_id(), new_id(), new_id(), new_id());
        let mut deliveries = vec![
            body::added(&user, &first),
            body::connected_at(&user, &first, T1),
            body::updated(&user, &first, "connected", T1),
            body::ready(&user, &[(&first, T2)]),
            body::connected(&user, &second),
            body::ready(&user, &[(&first, T2), (&second, T2)]),
            body::failed(&user, &third),
            body::connected(&user, &first),
        ];
        // Argyle repeats an event as a new delivery (another subscription, a retry with other
        // bytes): the same facts under another `name`. Byte-identical copies would be answered
        // `duplicate` before the merge sees them; these must go through it.
        for copy in 0..3 {
            let mut repeat: serde_json::Value =
                serde_json::from_str(&deliveries[rng.below(deliveries.len())]).unwrap();
            repeat["name"] = format!("repeating-subscription-{copy}").into();
            deliveries.push(repeat.to_string());
        }
        for i in (1..deliveries.len()).rev() {
            deliveries.swap(i, rng.below(i + 1));
        }
        for delivery in &deliveries {
            let answer = app.deliver_ok(delivery).await;
            assert_eq!(answer["status"], "applied", "round {round}: {delivery}");
        }
        let readiness = app.readiness(&user).await;
        let states: Vec<_> = [&first, &second, &third]
            .iter()
            .map(|id| {
                readiness
                    .accounts
                    .iter()
                    .find(|a| &&a.account_id == id)
                    .unwrap()
                    .state()
            })
            .collect();
        answers.push((round, readiness.state(), states));
    }
    for (round, state, states) in &answers {
        assert_eq!(
            (*state, states.as_slice()),
            (
                ReadinessState::Ready,
                &[
                    AccountState::Synced,
                    AccountState::Synced,
                    AccountState::Failed
                ][..]
            ),
            "round {round}"
        );
    }
    app.stop().await;
}
