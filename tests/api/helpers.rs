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
    pub async fn restart(mut self) -> Self {
        let (database, settings) = (self.database.clone(), self.settings.clone());
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let url = settings.database_url.clone();
        Self::start(database, url, |s| *s = settings).await
    }

    async fn start(
        database: Arc<TestDatabase>,
        url: String,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = Settings {
            database_url: url,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            argyle_secrets: vec![Secret::new(SECRET)],
            database_timeout_secs: 2,
            shutdown_grace_secs: 5,
            ..Settings::default()
        };
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
