//! A PostgreSQL that answers but refuses writes (a read-only database, as a standby is): the
//! service reports not ready while reads and lists still work and an open stream stays open, and
//! ready again, without a restart, once a probe write succeeds. (SQLite's equivalent, a full disk, is in `disk_full.rs`.)

use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use readiness::grpc::pb;

use crate::helpers::{TestApp, body, new_id};

/// Sets the database's default for new sessions and ends every other session, so that the
/// service's pool reconnects under it.
async fn reconnect_everyone_with(admin: &DatabaseConnection, setting: &str) {
    let name: String = admin
        .query_one_raw(Statement::from_string(
            admin.get_database_backend(),
            "SELECT current_database() AS name",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "name")
        .unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} {setting}"))
        .await
        .unwrap();
    admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn health(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Polls until `check` holds, for at most `within`; how long it took.
async fn within<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() <= within {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test]
async fn a_read_only_postgres_makes_the_service_not_ready_until_a_write_succeeds_again() {
    let app = TestApp::spawn().await;
    if !app.on_postgres() {
        eprintln!("skipped: PostgreSQL only (READINESS_TEST_DATABASE_URL is not set)");
        app.stop().await;
        return;
    }
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected(&user, &account)).await;
    // One connection, so that ending "every other session" never ends one of ours.
    let mut options = ConnectOptions::new(app.database_url());
    options.max_connections(1).sqlx_logging(false);
    let admin = Database::connect(options).await.unwrap();
    // A stream opened before writes are refused, to show it outlives the refusal.
    let mut changes = app
        .readiness_client()
        .await
        .watch_readiness(pb::WatchReadinessRequest {
            start: pb::StartPosition::Now.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    reconnect_everyone_with(&admin, "SET default_transaction_read_only = on").await;
    within(Duration::from_secs(10), "a delivery is refused", || async {
        app.deliver(&body::connected(&new_id(), &new_id())).await.0 == 503
    })
    .await;
    let not_ready = readyz(&app).await;
    within(
        Duration::from_secs(10),
        "gRPC health NOT_SERVING",
        || async { health(&app).await == ServingStatus::NotServing },
    )
    .await;
    let read_while_refused = app.readiness(&user).await;
    let listed_while_refused = app
        .readiness_client()
        .await
        .list_users(pb::ListUsersRequest::default())
        .await
        .map(|answer| answer.into_inner().users.len());

    reconnect_everyone_with(&admin, "RESET default_transaction_read_only").await;
    // No delivery meanwhile: the probe write alone must find out (it runs at most every 5 s).
    let ready_after = within(Duration::from_secs(7), "/readyz 200", || async {
        readyz(&app).await.0 == 200
    })
    .await;
    within(Duration::from_secs(5), "gRPC health SERVING", || async {
        health(&app).await == ServingStatus::Serving
    })
    .await;
    let after = new_id();
    let (status, answer) = app.deliver(&body::connected(&after, &new_id())).await;
    // The stream, open all along, carries the change the delivery made.
    let streamed = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), changes.message())
            .await
            .expect("a change in time")
            .expect("the stream is still open")
            .expect("the stream has not ended");
        if let Some(pb::watch_readiness_response::Message::Change(change)) = message.message {
            break change.user_id;
        }
    };
    admin.close().await.ok();

    assert_eq!(
        not_ready,
        (503, "database refuses writes\n".to_owned()),
        "/readyz while writes are refused"
    );
    assert_eq!(
        read_while_refused.accounts.len(),
        1,
        "reads are still answered"
    );
    assert!(
        matches!(listed_while_refused, Ok(users) if users >= 1),
        "lists are still answered: {listed_while_refused:?}"
    );
    assert!(ready_after <= Duration::from_secs(7), "{ready_after:?}");
    assert_eq!(status, 200, "a delivery once writes work: {answer}");
    assert_eq!(
        streamed, after,
        "a stream opened before the refusal outlives it"
    );
    app.stop().await;
}
