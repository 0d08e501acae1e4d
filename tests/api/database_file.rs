//! The SQLite file deleted, or replaced by another file, while the service runs (as a child
//! process, with its own log). The service keeps writing to the file it has open, which is no
//! longer the configured one, so from then on it must answer 503 / UNAVAILABLE, never a 2xx,
//! report not ready, and say so in one error log line (not one per request).

use std::path::Path;
use std::time::{Duration, Instant};

use readiness::grpc::pb;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use sea_orm::{ConnectionTrait, Database};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::disk_full::sqlite_only;
use crate::helpers::{SECRET, body, new_id};
use crate::process::ServeProcess;
use readiness::domain::signature::{Secret, sign};

async fn deliver(server: &ServeProcess, delivery: &str) -> u16 {
    reqwest::Client::new()
        .post(server.url("/webhooks/argyle"))
        .header("content-type", "application/json")
        .header(
            "x-argyle-signature",
            sign(&Secret::new(SECRET), delivery.as_bytes()),
        )
        .body(delivery.to_owned())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

async fn readiness_code(server: &ServeProcess, user: &str) -> tonic::Code {
    let mut client = ReadinessServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let request = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(user.into())),
        ..Default::default()
    };
    match client.get_user_readiness(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Log lines at ERROR level.
fn errors(server: &ServeProcess) -> Vec<serde_json::Value> {
    server
        .log_lines()
        .into_iter()
        .filter(|line| line["level"] == "ERROR")
        .collect()
}

/// Runs the service on a fresh SQLite file, stores a delivery, applies `change` to the file,
/// and checks every promise that follows.
async fn after_the_file_changes(test: &str, change: impl FnOnce(&Path), expected_change: &str) {
    if !sqlite_only(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readiness.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let server = ServeProcess::start(&url, &dir.path().join("serve.log")).await;
    let user = new_id();
    assert_eq!(
        deliver(&server, &body::connected(&user, &new_id())).await,
        200
    );
    assert_eq!(readiness_code(&server, &user).await, tonic::Code::Ok);

    change(&file);
    let changed = Instant::now();

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(deliver(&server, &body::connected(&new_id(), &new_id())).await);
    }
    let readyz = reqwest::get(server.url("/readyz")).await.unwrap();
    let readyz = (readyz.status().as_u16(), readyz.text().await.unwrap());
    let query = readiness_code(&server, &user).await;
    let mut health = server.health().await;
    while health != Some(ServingStatus::NotServing) && changed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = server.health().await;
    }
    let not_serving_after = changed.elapsed();
    for _ in 0..10 {
        statuses.push(deliver(&server, &body::connected(&new_id(), &new_id())).await);
    }
    let errors = errors(&server);
    // The error says where the file that was written can still be copied from.
    let open_file = errors
        .first()
        .and_then(|line| line["fields"]["open_file"].as_str())
        .unwrap_or_default()
        .to_owned();
    let header = std::fs::read(&open_file).unwrap_or_default();
    let exit = server.terminate();

    assert!(
        statuses.iter().all(|status| *status == 503),
        "every delivery after the change is answered 503: {statuses:?}"
    );
    assert_eq!(
        readyz,
        (503, "database file deleted or replaced\n".to_owned()),
        "/readyz"
    );
    assert_eq!(query, tonic::Code::Unavailable, "a gRPC query");
    assert_eq!(
        health,
        Some(ServingStatus::NotServing),
        "gRPC health after {not_serving_after:?}"
    );
    assert_eq!(
        errors.len(),
        1,
        "one error logged for twenty refused deliveries: {errors:#?}"
    );
    let change_logged = errors[0]["fields"]["change"].as_str().unwrap_or_default();
    assert!(
        change_logged.contains(expected_change) && change_logged.contains("readiness.db"),
        "the error names the file and what happened: {change_logged}"
    );
    assert!(
        header.starts_with(b"SQLite format 3\0"),
        "the open file named in the log ({open_file}) is the database"
    );
    assert!(exit.success(), "SIGTERM: clean exit ({exit})");
}

#[tokio::test]
async fn deleting_the_sqlite_file_while_running_turns_every_answer_into_503_and_not_ready() {
    after_the_file_changes(
        "database_file_deleted",
        |file| std::fs::remove_file(file).unwrap(),
        "was deleted",
    )
    .await;
}

#[tokio::test]
async fn replacing_the_sqlite_file_while_running_turns_every_answer_into_503_and_not_ready() {
    after_the_file_changes(
        "database_file_replaced",
        |file| {
            // A copy of the same database put in its place: it looks right, but the service's
            // connections still write to the file they opened.
            let copy = file.with_extension("copy");
            std::fs::copy(file, &copy).unwrap();
            std::fs::rename(&copy, file).unwrap();
        },
        "was replaced",
    )
    .await;
}

#[tokio::test]
async fn a_delivery_committed_after_its_file_was_deleted_is_answered_503_not_200() {
    if !sqlite_only("database_file_deleted_during_commit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readiness.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let server = ServeProcess::start(&url, &dir.path().join("serve.log")).await;
    // Another connection holds the write lock, so the delivery's transaction starts while the
    // file is still in place and waits to commit.
    let other = Database::connect(&url).await.unwrap();
    other.execute_unprepared("BEGIN EXCLUSIVE").await.unwrap();
    let delivery = body::connected(&new_id(), &new_id());
    let server = std::sync::Arc::new(server);
    let pending = {
        let server = server.clone();
        tokio::spawn(async move { deliver(&server, &delivery).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    std::fs::remove_file(&file).unwrap();
    other.execute_unprepared("COMMIT").await.unwrap();
    let status = pending.await.unwrap();
    other.close().await.ok();

    assert_eq!(
        status, 503,
        "the commit reached the deleted file, not the configured one"
    );
    let server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    assert_eq!(errors(&server).len(), 1);
    assert!(server.terminate().success());
}
