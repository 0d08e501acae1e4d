//! A request that outlives `http_request_timeout_secs` is answered 408 with the usual JSON error
//! body, and the answer tells the truth: the outcome is unknown (the delivery may still commit),
//! and a retry is safe because deliveries are deduplicated by content.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use readiness::store::log::APPEND_LOCK_KEY;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use crate::helpers::{TestApp, body, new_id};

/// Something outside the service that keeps its next commit waiting until released.
enum WriteBlocker {
    /// Another process holding SQLite's write lock (`BEGIN IMMEDIATE`); closing its stdin ends it.
    Sqlite {
        child: Child,
        stdin: Option<ChildStdin>,
    },
    /// A session holding the event log's append lock.
    Postgres(DatabaseConnection),
}

impl WriteBlocker {
    async fn hold(app: &TestApp) -> Self {
        let url = app.database_url();
        if app.on_postgres() {
            let db = Database::connect(&url).await.unwrap();
            db.execute_unprepared(&format!("SELECT pg_advisory_lock({APPEND_LOCK_KEY})"))
                .await
                .unwrap();
            return WriteBlocker::Postgres(db);
        }
        let path = url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                      c.execute('BEGIN IMMEDIATE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n\
                      c.execute('ROLLBACK')\n";
        let mut child = Command::new("python3")
            .args(["-c", script, &path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let stdin = child.stdin.take();
        WriteBlocker::Sqlite { child, stdin }
    }

    async fn release(self) {
        match self {
            WriteBlocker::Sqlite { mut child, stdin } => {
                drop(stdin);
                child.wait().unwrap();
            }
            WriteBlocker::Postgres(db) => db.close().await.unwrap(),
        }
    }
}

#[tokio::test]
async fn a_timed_out_delivery_is_answered_408_outcome_unknown_and_its_retry_is_deduplicated() {
    let app = TestApp::spawn_with(|settings| {
        settings.http_request_timeout_secs = 1;
        settings.database_timeout_secs = 30;
    })
    .await;
    let delivery = body::connected(&new_id(), &new_id());
    let blocker = WriteBlocker::hold(&app).await;

    let (status, answer) = app.deliver(&delivery).await;

    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"], "request_timeout");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("unknown") && message.contains("retrying is safe"),
        "{message}"
    );

    // Released, the queued commit goes through: the outcome really was unknown.
    blocker.release().await;
    let mut stored = false;
    for _ in 0..100 {
        if !app.deliveries().await.is_empty() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "the delivery committed after its 408");

    let (status, answer) = app.deliver(&delivery).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(app.deliveries().await.len(), 1);
    app.stop().await;
}
