//! The test harness: a running app, signed deliveries, gRPC clients, and direct store access for
//! assertions about what was (not) written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use readiness::app::App;
use readiness::config::Settings;
use readiness::core::Core;
use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use readiness::grpc::pb::report_service_client::ReportServiceClient;
use readiness::store::entities::{delivery, event};
use sea_orm::{ConnectionTrait, Database, EntityTrait, PaginatorTrait};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const SECRET: &str = "test-webhook-secret";

/// Where the test databases live.
pub enum TestDatabase {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
    /// Created and removed by the test itself.
    External,
}

impl TestDatabase {
    /// A fresh database (SQLite file, or PostgreSQL when configured) and its URL; dropped with it.
    pub async fn create() -> (Self, String) {
        match std::env::var("READINESS_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("readiness_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = with_database(&admin_url, &name);
                (TestDatabase::Postgres { admin_url, name }, url)
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("readiness.db").display()
                );
                (TestDatabase::Sqlite(dir), url)
            }
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop may run inside the test's runtime: use a thread with its own.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// The settings every test service starts from: `database_url`, both listeners on free loopback
/// ports, the tests' webhook secret, short database and shutdown waits.
pub fn test_settings(database_url: String) -> Settings {
    Settings {
        database_url,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        argyle_secrets: vec![Secret::new(SECRET)],
        database_timeout_secs: 2,
        shutdown_grace_secs: 5,
        ..Settings::default()
    }
}

/// A loopback port nothing listens on now (bound, read and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of a gRPC call's result (`Ok` for an answer).
pub fn status_code<T>(result: Result<T, tonic::Status>) -> tonic::Code {
    result.err().map_or(tonic::Code::Ok, |status| status.code())
}

/// A running service.
pub struct TestApp {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub core: Core,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    database: Arc<TestDatabase>,
    settings: Settings,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let (database, url) = TestDatabase::create().await;
        Self::start(Arc::new(database), url, adjust).await
    }

    /// A service on a database the test manages itself (no cleanup by the harness).
    pub async fn spawn_on(url: String, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start(Arc::new(TestDatabase::External), url, adjust).await
    }

    /// The database URL the service uses.
    pub fn database_url(&self) -> String {
        self.settings.database_url.clone()
    }

    /// Another replica on the same database.
    pub async fn replica(&self, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start(
            self.database.clone(),
            self.settings.database_url.clone(),
            adjust,
        )
        .await
    }

    /// True when the tests run against PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        matches!(*self.database, TestDatabase::Postgres { .. })
    }

    /// Stops the service and starts it again on the same database and settings.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the service and starts it again on the same database, with its settings adjusted.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut Settings)) -> Self {
        let (database, mut settings) = (self.database.clone(), self.settings.clone());
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        adjust(&mut settings);
        let url = settings.database_url.clone();
        Self::start(database, url, |s| *s = settings).await
    }

    async fn start(
        database: Arc<TestDatabase>,
        url: String,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(url);
        adjust(&mut settings);
        let app = App::build(settings.clone()).await.expect("app builds");
        let (http, grpc, core) = (app.http_addr(), app.grpc_addr(), app.core());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        Self {
            http,
            grpc,
            core,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown,
            server: Some(server),
            database,
            settings,
        }
    }

    /// Stops the service and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Begins a shutdown without waiting for it: returns the server's outcome to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<anyhow::Result<()>> {
        self.shutdown.cancel();
        self.server.take().expect("the server is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Posts `body` signed with the test secret; returns the status and the JSON answer.
    pub async fn deliver(&self, body: &str) -> (u16, Value) {
        let signature = sign(&Secret::new(SECRET), body.as_bytes());
        self.post(
            body.as_bytes().to_vec(),
            &[
                ("content-type", "application/json"),
                ("x-argyle-signature", &signature),
            ],
        )
        .await
    }

    /// A webhook request for `body`, signed with the test secret, ready for more headers.
    pub fn signed_request(&self, body: String) -> reqwest::RequestBuilder {
        let signature = sign(&Secret::new(SECRET), body.as_bytes());
        self.client
            .post(self.url("/webhooks/argyle"))
            .header("content-type", "application/json")
            .header("x-argyle-signature", signature)
            .body(body)
    }

    /// Posts raw bytes with exactly these headers.
    pub async fn post(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.post(self.url("/webhooks/argyle")).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Delivers and asserts a 2xx.
    pub async fn deliver_ok(&self, body: &str) -> Value {
        let (status, answer) = self.deliver(body).await;
        assert_eq!(status, 200, "delivery {body} answered {answer}");
        answer
    }

    /// A plaintext gRPC channel to the service.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn readiness_client(&self) -> ReadinessServiceClient<Channel> {
        ReadinessServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub async fn report_client(&self) -> ReportServiceClient<Channel> {
        ReportServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// The user's readiness over gRPC.
    pub async fn readiness(&self, user: &str) -> pb::UserReadiness {
        let request = pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(user.into())),
            ..Default::default()
        };
        self.readiness_client()
            .await
            .get_user_readiness(request)
            .await
            .expect("GetUserReadiness")
            .into_inner()
            .user
            .unwrap()
    }

    /// The report Argyle knows by `argyle_report_id`, over gRPC.
    pub async fn report_by_argyle_id(&self, argyle_report_id: &str) -> pb::Report {
        let request = pb::GetReportRequest {
            report: Some(pb::get_report_request::Report::ArgyleReportId(
                argyle_report_id.into(),
            )),
            ..Default::default()
        };
        self.report_client()
            .await
            .get_report(request)
            .await
            .expect("GetReport")
            .into_inner()
            .report
            .unwrap()
    }

    /// The user's reports (the first page of `ListReports`), over gRPC.
    pub async fn reports_of(&self, user: &str) -> Vec<pb::Report> {
        self.report_client()
            .await
            .list_reports(pb::ListReportsRequest {
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .expect("ListReports")
            .into_inner()
            .reports
    }

    pub async fn state(&self, user: &str) -> pb::ReadinessState {
        self.readiness(user).await.state()
    }

    /// The account's state over gRPC.
    pub async fn account_state(&self, user: &str, account: &str) -> pb::AccountState {
        let readiness = self.readiness(user).await;
        readiness
            .accounts
            .iter()
            .find(|a| a.account_id == account)
            .unwrap_or_else(|| panic!("account {account} not in {readiness:?}"))
            .state()
    }

    pub async fn event_count(&self) -> u64 {
        event::Entity::find().count(self.core.db()).await.unwrap()
    }

    pub async fn deliveries(&self) -> Vec<delivery::Model> {
        delivery::Entity::find().all(self.core.db()).await.unwrap()
    }
}

/// Fresh random ids, so tests never share users.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A body's SHA-256 in hex, the inbox's key for it.
pub fn sha(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

pub mod body {
    //! Argyle delivery bodies, shaped as documented in `shared/argyle.md`.
    use serde_json::json;

    pub fn connected(user: &str, account: &str) -> String {
        json!({"event": "accounts.connected", "name": "readiness-test", "data": {"account": account, "user": user}}).to_string()
    }

    pub fn added(user: &str, account: &str) -> String {
        json!({"event": "accounts.added", "name": "readiness-test", "data": {"account": account, "user": user}}).to_string()
    }

    pub fn failed(user: &str, account: &str) -> String {
        json!({"event": "accounts.failed", "name": "readiness-test", "data": {
            "account": account, "user": user,
            "error_code": "invalid_credentials", "error_message": "The credentials are not valid."}})
        .to_string()
    }

    pub fn removed(user: &str, account: &str) -> String {
        json!({"event": "accounts.removed", "name": "readiness-test", "data": {"account": account, "user": user}}).to_string()
    }

    /// `accounts.updated` with `include_resource`: the connection's status and time.
    pub fn updated(user: &str, account: &str, status: &str, updated_at: &str) -> String {
        let (code, message) = if status == "error" {
            (
                json!("auth_required"),
                json!("The account requires re-authentication."),
            )
        } else {
            (json!(null), json!(null))
        };
        json!({"event": "accounts.updated", "name": "readiness-test-include-resource", "data": {
            "account": account, "user": user,
            "resource": {"id": account, "user": user, "connection": {
                "status": status, "error_code": code, "error_message": message, "updated_at": updated_at}}}})
        .to_string()
    }

    /// `accounts.connected` with `include_resource` (a (re)connection at `updated_at`).
    pub fn connected_at(user: &str, account: &str, updated_at: &str) -> String {
        json!({"event": "accounts.connected", "name": "readiness-test-include-resource", "data": {
            "account": account, "user": user,
            "resource": {"id": account, "user": user, "connection": {
                "status": "connected", "error_code": null, "error_message": null, "updated_at": updated_at}}}})
        .to_string()
    }

    /// `reports.ready` (shape 2: with `external_id`).
    pub fn ready(user: &str, accounts: &[(&str, &str)]) -> String {
        ready_with_external_id(user, None, accounts)
    }

    pub fn ready_with_external_id(
        user: &str,
        external_id: Option<&str>,
        accounts: &[(&str, &str)],
    ) -> String {
        let accounts: Vec<_> = accounts
            .iter()
            .map(|(id, synced)| json!({"id": id, "last_synced_at": synced}))
            .collect();
        json!({"event": "reports.ready", "name": "readiness-test", "data": {
            "user": user, "external_id": external_id, "accounts": accounts}})
        .to_string()
    }

    pub fn generated(user: &str, report_type: &str, report_id: Option<&str>) -> String {
        let mut data = json!({"user": user, "type": report_type});
        if let Some(id) = report_id {
            data["report_id"] = json!(id);
        }
        json!({"event": "reports.generated", "name": "readiness-test", "data": data}).to_string()
    }
}

pub mod process {
    //! Child processes of the tests: `readiness serve` and small helpers. Every child is killed
    //! and reaped when its guard is dropped, so a failing test leaves nothing running.

    use std::io::{BufRead, BufReader, Read};
    use std::net::SocketAddr;
    use std::process::{Child, Command, ExitStatus, Output, Stdio};
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// The `readiness` binary under test.
    pub const BIN: &str = env!("CARGO_BIN_EXE_readiness");

    /// `delivery`, signed with the tests' secret, posted to the webhook endpoint of the server
    /// at `http` (an address such as `127.0.0.1:8080`).
    pub async fn post_signed(http: impl std::fmt::Display, delivery: String) -> reqwest::Response {
        use readiness::domain::signature::{Secret, sign};
        reqwest::Client::new()
            .post(format!("http://{http}/webhooks/argyle"))
            .header("content-type", "application/json")
            .header(
                "x-argyle-signature",
                sign(&Secret::new(super::SECRET), delivery.as_bytes()),
            )
            .body(delivery)
            .send()
            .await
            .expect("the webhook is sent")
    }

    /// Long enough for a debug build to start on a loaded machine; only reached when broken.
    const START_PATIENCE: Duration = Duration::from_secs(60);

    /// `readiness` with no `READINESS_*` setting inherited from the test's environment.
    pub fn readiness() -> Command {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("READINESS_") {
                command.env_remove(name);
            }
        }
        command
    }

    /// `readiness serve` on these ports (0 picks one) with JSON logs on stderr.
    pub fn serve_command(http: u16, grpc: u16) -> Command {
        let mut command = readiness();
        command.args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--log-format",
            "json",
        ]);
        command
    }

    /// A child process that is killed (SIGKILL) and reaped when dropped.
    pub struct ChildProcess(pub Child);

    impl ChildProcess {
        pub fn spawn(command: &mut Command) -> Self {
            Self(command.spawn().expect("the process starts"))
        }

        /// Sends SIGTERM (a graceful stop).
        pub fn terminate(&self) {
            let sent = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success(), "SIGTERM sent");
        }

        /// Waits for the process to exit; panics (and so kills it) after `patience`.
        pub fn wait_for_exit(&mut self, patience: Duration) -> ExitStatus {
            let started = Instant::now();
            loop {
                if let Some(status) = self.0.try_wait().expect("the process can be waited for") {
                    return status;
                }
                assert!(
                    started.elapsed() < patience,
                    "still running after {patience:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for ChildProcess {
        fn drop(&mut self) {
            // Both fail harmlessly when the process was already reaped.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Runs `command` to completion with its output captured; kills it after `patience`.
    pub fn run(command: &mut Command, patience: Duration) -> Output {
        let mut child = ChildProcess::spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.0.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.0.stderr.take().map(|p| Box::new(p) as _));
        let status = child.wait_for_exit(patience);
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }

    /// A running `readiness serve` (from [`serve_command`]) and everything it has logged.
    pub struct ServeProcess {
        process: ChildProcess,
        pub http: SocketAddr,
        pub grpc: SocketAddr,
        log: Arc<Mutex<Vec<u8>>>,
        reader: Option<JoinHandle<()>>,
    }

    impl ServeProcess {
        /// Starts the server and waits for its `serving` log line (which gives the bound
        /// addresses).
        pub fn start(command: &mut Command) -> Self {
            let mut process = ChildProcess::spawn(
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped()),
            );
            let stderr = process.0.stderr.take().expect("stderr is piped");
            let log = Arc::new(Mutex::new(Vec::new()));
            let (serving, addresses) = mpsc::channel();
            let reader = {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(stderr);
                    let mut line = String::new();
                    while lines.read_line(&mut line).is_ok_and(|read| read > 0) {
                        log.lock().unwrap().extend_from_slice(line.as_bytes());
                        if let Some(bound) = serving_addresses(&line) {
                            let _ = serving.send(bound);
                        }
                        line.clear();
                    }
                })
            };
            let (http, grpc) = match addresses.recv_timeout(START_PATIENCE) {
                Ok(bound) => bound,
                Err(error) => panic!(
                    "the server did not start ({error}): {}",
                    String::from_utf8_lossy(&log.lock().unwrap())
                ),
            };
            Self {
                process,
                http,
                grpc,
                log,
                reader: Some(reader),
            }
        }

        pub fn terminate(&self) {
            self.process.terminate();
        }

        /// Kills the server at once (SIGKILL), like a crash, and reaps it.
        pub fn kill_9(mut self) {
            self.process.0.kill().expect("SIGKILL sent");
            self.wait_for_exit(START_PATIENCE);
        }

        /// Waits for the server to exit and for the rest of its log.
        pub fn wait_for_exit(&mut self, patience: Duration) -> ExitStatus {
            let status = self.process.wait_for_exit(patience);
            if let Some(reader) = self.reader.take() {
                reader.join().unwrap();
            }
            status
        }

        /// Everything logged so far.
        pub fn logs(&self) -> String {
            String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
        }
    }

    /// The HTTP and gRPC addresses of the JSON `serving` line, if `line` is it.
    fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &value["fields"];
        if fields["message"] != "serving" {
            return None;
        }
        Some((
            fields["http"].as_str()?.parse().ok()?,
            fields["grpc"].as_str()?.parse().ok()?,
        ))
    }
}
