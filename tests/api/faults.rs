//! Faults: the database goes away while webhooks arrive, or is locked by someone else. The
//! service answers 503 (never hangs, never a 2xx it cannot keep), reports not ready, recovers by
//! itself, and loses nothing it acknowledged. At start, a PostgreSQL server not up yet is waited
//! for (`database_startup_wait_secs`), and what waiting cannot mend ends the start at once.
//! PostgreSQL faults use a private server started by the test (`initdb` + `pg_ctl` on a temporary
//! directory and port), never the shared one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use readiness::grpc::pb;
use tonic::Code;

use readiness::store::entities::delivery;
use sea_orm::{Database, EntityTrait};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use readiness::app::App;
use readiness::config::Settings;

use crate::helpers::process::ChildProcess;
use crate::helpers::{TestApp, body, free_port, new_id, sha, status_code, test_settings};

/// Long enough for anything that should happen; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

/// A throw-away PostgreSQL server owned by the `postgres` user.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn run_as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser runs")
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are installed")
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb found");
        let dir = tempfile::Builder::new()
            .prefix("readiness-pg-")
            .tempdir()
            .unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.path().join("data");
        let out = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Self {
            bin,
            dir,
            port: free_port(),
        };
        server.pg_ctl_start();
        server
    }

    fn pg_ctl_start(&self) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let out = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let data = self.dir.path().join("data");
        let out = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

async fn health(app: &TestApp) -> ServingStatus {
    let channel = app.channel().await;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "readiness.v1.ReadinessService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// Every unary query, each about something that does not exist: the method, the status code it
/// got (`Ok` for an answer), and the code it gets while the database is up.
async fn unary_calls(app: &TestApp) -> Vec<(&'static str, Code, Code)> {
    let (mut readiness, mut reports) = (app.readiness_client().await, app.report_client().await);
    let user = pb::GetUserReadinessRequest {
        user: Some(pb::get_user_readiness_request::User::UserId(new_id())),
        ..Default::default()
    };
    let report = pb::GetReportRequest {
        report: Some(pb::get_report_request::Report::Id(new_id())),
        ..Default::default()
    };
    let reports_of = pb::ListReportsRequest {
        user_id: new_id(),
        ..Default::default()
    };
    vec![
        (
            "GetUserReadiness",
            status_code(readiness.get_user_readiness(user).await),
            Code::NotFound,
        ),
        (
            "ListUsers",
            status_code(readiness.list_users(pb::ListUsersRequest::default()).await),
            Code::Ok,
        ),
        (
            "GetReport",
            status_code(reports.get_report(report).await),
            Code::NotFound,
        ),
        (
            "ListReports",
            status_code(reports.list_reports(reports_of).await),
            Code::Ok,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_gives_503_and_not_ready_then_recovers_and_loses_nothing_acknowledged()
{
    let postgres = PrivatePostgres::start();
    let url = postgres.url();
    let app = Arc::new(
        TestApp::spawn_on(url.clone(), |settings| {
            settings.database_timeout_secs = 1;
        })
        .await,
    );

    // A steady stream of deliveries for the whole test.
    let stop_sending = Arc::new(AtomicBool::new(false));
    let sender = {
        let (app, stop) = (app.clone(), stop_sending.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let delivery = body::connected(&new_id(), &new_id());
                let (status, _) = app.deliver(&delivery).await;
                outcomes.push((delivery, status));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        })
    };
    eventually("deliveries are acknowledged", || async {
        app.deliver(&body::connected(&new_id(), &new_id())).await.0 == 200
    })
    .await;

    postgres.stop();

    let refused = body::connected(&new_id(), &new_id());
    let (status, answer) = app.deliver(&refused).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "database_unavailable");
    for (call, code, _) in unary_calls(&app).await {
        assert_eq!(code, Code::Unavailable, "{call} while the database is down");
    }
    eventually("/readyz fails", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;
    eventually("gRPC health is NOT_SERVING", || async {
        health(&app).await == ServingStatus::NotServing
    })
    .await;
    let alive = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        alive.status(),
        200,
        "/healthz (the liveness probe) stays 200: an outage must not restart the process"
    );

    postgres.pg_ctl_start();

    eventually("deliveries are acknowledged again", || async {
        app.deliver(&body::connected(&new_id(), &new_id())).await.0 == 200
    })
    .await;
    eventually("/readyz passes", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    eventually("gRPC health is SERVING", || async {
        health(&app).await == ServingStatus::Serving
    })
    .await;
    for (call, code, when_up) in unary_calls(&app).await {
        assert_eq!(code, when_up, "{call} once the database is back");
    }
    // A 503 stored nothing: the sender's retry is applied as new, not a duplicate.
    let retried = app.deliver_ok(&refused).await;
    assert_eq!(retried["status"], "applied", "{retried}");

    stop_sending.store(true, Ordering::Relaxed);
    let outcomes = sender.await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|(_, status)| [200, 503].contains(status)),
        "only 200 or 503: {:?}",
        outcomes.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    assert!(
        outcomes.iter().any(|(_, status)| *status == 503),
        "some deliveries met the outage"
    );

    let db = Database::connect(&url).await.unwrap();
    let stored: std::collections::HashSet<String> = delivery::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.body_sha256)
        .collect();
    let acknowledged: Vec<_> = outcomes
        .iter()
        .filter(|(_, status)| *status == 200)
        .collect();
    assert!(!acknowledged.is_empty());
    for (delivery, _) in &acknowledged {
        assert!(
            stored.contains(&sha(delivery)),
            "an acknowledged delivery is missing: {delivery}"
        );
    }
    db.close().await.ok();
    Arc::try_unwrap(app).ok().expect("sole owner").stop().await;
}

/// Takes SQLite's write lock on the database file given as its argument, says `locked`, and holds
/// the lock until its standard input closes. Python's standard `sqlite3` module: another process,
/// as another program would hold the file.
const HOLD_SQLITE_LOCK: &str = "import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
sys.stdin.read()
c.execute('COMMIT')
";

#[tokio::test]
async fn a_sqlite_file_locked_by_another_process_gives_503_not_a_hang_and_stores_nothing() {
    let app = TestApp::spawn_with(|settings| settings.database_timeout_secs = 1).await;
    if app.on_postgres() {
        app.stop().await;
        return;
    }
    let url = app.database_url();
    let path = url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned();
    let mut holder = ChildProcess::spawn(
        Command::new("python3")
            .args(["-c", HOLD_SQLITE_LOCK, &path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let stdout = holder.0.stdout.take().unwrap();
    let said = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(said.trim(), "locked", "the other process holds the lock");

    let delivery = body::connected(&new_id(), &new_id());
    let started = Instant::now();
    let (status, answer) = app.deliver(&delivery).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "database_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}, not a hang",
        started.elapsed()
    );

    drop(holder.0.stdin.take());
    let released = tokio::task::spawn_blocking(move || holder.wait_for_exit(PATIENCE))
        .await
        .unwrap();
    assert!(released.success(), "the other process committed and exited");
    // A 503 stored nothing: the sender's retry is applied as new, not a duplicate.
    let answer = app.deliver_ok(&delivery).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    app.stop().await;
}

/// The tests' settings on `database_url`, waiting up to `startup_wait_secs` for it at start.
fn settings_on(database_url: String, startup_wait_secs: u64) -> Settings {
    Settings {
        database_startup_wait_secs: startup_wait_secs,
        ..test_settings(database_url)
    }
}

/// A PostgreSQL URL on a loopback port nothing listens on.
fn postgres_nobody_listens_on() -> String {
    format!("postgres://postgres@127.0.0.1:{}/postgres", free_port())
}

/// Answers every connection to `port`, for `how_long`, as a PostgreSQL server that is still
/// starting up: encryption declined (`N`), then, after the startup message, a FATAL error with
/// SQLSTATE `57P03`. Returns how many connections it answered.
async fn starting_up_on(port: u16, how_long: Duration) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;
    async fn answer(mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
        loop {
            let length = socket.read_u32().await? as usize;
            let mut message = vec![0; length.saturating_sub(4)];
            socket.read_exact(&mut message).await?;
            let code = message
                .get(..4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
            if matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST)) {
                socket.write_all(b"N").await?;
                continue;
            }
            let fields: &[u8] = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0";
            let mut error = vec![b'E'];
            error.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
            error.extend_from_slice(fields);
            return socket.write_all(&error).await;
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let until = tokio::time::Instant::now() + how_long;
    let mut answered = 0;
    while let Ok(Ok((socket, _))) = tokio::time::timeout_at(until, listener.accept()).await {
        answered += 1;
        tokio::spawn(answer(socket));
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_postgres_waits_for_it_then_serves() {
    let postgres = PrivatePostgres::start();
    postgres.stop();

    let starting = tokio::spawn(TestApp::spawn_on(postgres.url(), |settings| {
        settings.database_startup_wait_secs = 60;
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !starting.is_finished(),
        "the start waits while nothing listens on the database's port"
    );
    let answered = starting_up_on(postgres.port, Duration::from_secs(2)).await;
    assert!(answered > 0, "the service tried the port again");
    assert!(
        !starting.is_finished(),
        "the start waits while the server says it is starting up"
    );

    let postgres = tokio::task::spawn_blocking(move || {
        postgres.pg_ctl_start();
        postgres
    })
    .await
    .unwrap();
    let app = tokio::time::timeout(PATIENCE, starting)
        .await
        .expect("the service is up soon after its database")
        .expect("the service started");
    let answer = app.deliver_ok(&body::connected(&new_id(), &new_id())).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    app.stop().await;
    drop(postgres);
}

#[tokio::test]
async fn a_start_gives_up_when_postgres_is_not_up_within_the_startup_wait() {
    let started = Instant::now();
    let Err(error) = App::build(settings_on(postgres_nobody_listens_on(), 2)).await else {
        panic!("the service started without a database");
    };
    let took = started.elapsed();

    let error = format!("{error:#}");
    assert!(error.contains("opening database"), "{error}");
    assert!(error.contains("refused"), "the last error is told: {error}");
    assert!(
        took >= Duration::from_millis(1500),
        "it retried for most of the 2 s before giving up (took {took:?})"
    );
    assert!(took < PATIENCE, "took {took:?}");
}

#[tokio::test]
async fn what_waiting_cannot_mend_ends_the_start_at_once() {
    let postgres = PrivatePostgres::start();
    let directory = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a PostgreSQL database that does not exist",
            format!(
                "postgres://postgres@127.0.0.1:{}/no_such_database",
                postgres.port
            ),
            "database \"no_such_database\" does not exist",
        ),
        (
            "a PostgreSQL role that does not exist",
            format!(
                "postgres://no_such_role@127.0.0.1:{}/postgres",
                postgres.port
            ),
            "role \"no_such_role\" does not exist",
        ),
        (
            "a SQLite file in a directory that does not exist",
            format!(
                "sqlite://{}?mode=rwc",
                directory.path().join("missing/readiness.db").display()
            ),
            "unable to open database file",
        ),
    ];
    for (case, url, told) in cases {
        let started = Instant::now();
        let Err(error) = App::build(settings_on(url, 60)).await else {
            panic!("{case}: the service started");
        };
        let error = format!("{error:#}");
        assert!(error.contains(told), "{case}: {error}");
        assert!(
            started.elapsed() < PATIENCE,
            "{case}: gave up after {:?}, not at once",
            started.elapsed()
        );
    }
}
