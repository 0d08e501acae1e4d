//! A transaction that ends by failure must not leave its connection in the pool half-open. On
//! SQLite the database itself rolls back on some errors (a full disk, `RAISE(ROLLBACK)`), the
//! driver's own ROLLBACK then fails and it keeps counting the transaction open: reused, such a
//! connection turned the next `BEGIN` into a `SAVEPOINT` and every later "commit" into a
//! `RELEASE` inside a transaction that never ends, so 2xx answers were lost at the next restart.
//! On PostgreSQL a COMMIT can fail on a deferred check or a lost connection. With one pooled
//! connection, the deliveries after each failure must be answered 200 and survive a restart.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};

use crate::helpers::{TestApp, body, new_id, sha};

/// Sends ten ordinary deliveries (each must be answered 200), restarts the service, and checks
/// that all ten are stored.
async fn ten_deliveries_are_acknowledged_and_survive_a_restart(app: TestApp) {
    let mut sent = Vec::new();
    for _ in 0..10 {
        let delivery = body::connected(&new_id(), &new_id());
        app.deliver_ok(&delivery).await;
        sent.push(sha(&delivery));
    }
    let app = app.restart().await;
    let stored: Vec<String> = app
        .deliveries()
        .await
        .into_iter()
        .map(|row| row.body_sha256)
        .collect();
    let lost = sent.iter().filter(|sha| !stored.contains(sha)).count();
    assert_eq!(lost, 0, "acknowledged deliveries missing after the restart");
    app.stop().await;
}

/// One pooled connection for the work (PostgreSQL: and one for the NOTIFY listener), so that a
/// poisoned one would be reused for certain.
async fn spawn_with_one_connection() -> TestApp {
    let postgres = std::env::var("READINESS_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    TestApp::spawn_with(|settings| {
        settings.database_max_connections = if postgres { 2 } else { 1 };
    })
    .await
}

#[tokio::test]
async fn a_transaction_the_database_rolled_back_by_itself_leaves_no_half_open_connection() {
    let app = spawn_with_one_connection().await;
    let other = Database::connect(&app.database_url()).await.unwrap();
    if app.on_postgres() {
        // PostgreSQL ends the transaction itself when COMMIT fails on a deferred check.
        other
            .execute_unprepared(
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF position('refuse-at-commit' in convert_from(NEW.body, 'UTF8')) > 0 THEN \
                 RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$",
            )
            .await
            .unwrap();
        other
            .execute_unprepared(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON deliveries \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()",
            )
            .await
            .unwrap();
    } else {
        // SQLite rolls the whole transaction back itself on RAISE(ROLLBACK), as on a full disk;
        // RAISE(ABORT) fails one statement and leaves the transaction to the application.
        for (marker, action) in [("refuse-rollback", "ROLLBACK"), ("refuse-abort", "ABORT")] {
            other
                .execute_unprepared(&format!(
                    "CREATE TRIGGER \"{marker}\" BEFORE INSERT ON deliveries \
                     WHEN instr(CAST(NEW.body AS TEXT), '{marker}') > 0 \
                     BEGIN SELECT RAISE({action}, 'refused'); END"
                ))
                .await
                .unwrap();
        }
    }
    other.close().await.ok();

    let markers: &[&str] = if app.on_postgres() {
        &["refuse-at-commit", "refuse-at-commit"]
    } else {
        &["refuse-rollback", "refuse-abort"]
    };
    for marker in markers {
        let refused = body::connected(&new_id(), &new_id()).replace("readiness-test", marker);
        let (status, answer) = app.deliver(&refused).await;
        assert_eq!(status, 503, "{marker}: {answer}");
    }

    ten_deliveries_are_acknowledged_and_survive_a_restart(app).await;
}

#[tokio::test]
async fn a_commit_cut_off_by_a_lost_postgres_connection_leaves_no_broken_connection_pooled() {
    let app = spawn_with_one_connection().await;
    if !app.on_postgres() {
        eprintln!("skipped: PostgreSQL only (READINESS_TEST_DATABASE_URL is not set)");
        app.stop().await;
        return;
    }
    // A deferred check that takes a second, so the test can end the connection mid-COMMIT.
    let other = Database::connect(&app.database_url()).await.unwrap();
    other
        .execute_unprepared(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF position('slow-commit' in convert_from(NEW.body, 'UTF8')) > 0 THEN \
             PERFORM pg_sleep(1); END IF; RETURN NULL; END $$",
        )
        .await
        .unwrap();
    other
        .execute_unprepared(
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON deliveries \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        )
        .await
        .unwrap();

    let slow = body::connected(&new_id(), &new_id()).replace("readiness-test", "slow-commit");
    let pending = {
        let request = app.signed_request(slow);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let mut terminated = false;
    for _ in 0..100 {
        let found = other
            .query_one_raw(sea_orm::Statement::from_string(
                other.get_database_backend(),
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'active' AND query = 'COMMIT'",
            ))
            .await
            .unwrap()
            .and_then(|row| row.try_get::<i64>("", "n").ok())
            .unwrap_or(0);
        if found > 0 {
            terminated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.close().await.ok();
    assert!(terminated, "the COMMIT was caught and its connection ended");
    assert_eq!(
        pending.await.unwrap(),
        503,
        "a COMMIT without an answer is not acknowledged"
    );

    ten_deliveries_are_acknowledged_and_survive_a_restart(app).await;
}
