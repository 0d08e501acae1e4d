//! A faithful local fake of Argyle's API, for the integration tests and for
//! `readiness-bench fake-argyle`: `/v2/webhooks` and `/v2/reports` behind HTTP Basic auth,
//! reports that move `generating` → `generated` (after a delay or when a test says so), documents
//! behind a credential-checking redirect to a second, credential-free host, signed
//! `reports.generated` webhooks, scripted faults, and a record of every request.
//!
//! Where Argyle is silent, this fake chooses: the 10-reports-per-user-per-24-hours cap is
//! answered `429` with `Retry-After` (seconds until a slot frees) and a `detail` body; a new
//! report answers `201`; `previous` links are always `null`; list cursors are opaque strings.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::Endpoint;
use crate::domain::signature::{Secret, sign};

/// Argyle's cap: reports per user per rolling 24 hours.
pub const DAILY_CAP: usize = 10;
/// Report types Argyle generates.
const REPORT_TYPES: [&str; 4] = ["voie", "voe", "voie-mortgage", "voe-mortgage"];
/// Subscriptions per `GET /v2/webhooks` page: small, so that clients' paging is exercised.
const WEBHOOK_PAGE: usize = 2;
/// Attempts to deliver one `reports.generated` webhook.
const WEBHOOK_ATTEMPTS: u32 = 5;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The HTTP Basic user name every API request must carry.
    pub key_id: String,
    /// The HTTP Basic password every API request must carry.
    pub key_secret: String,
    /// Where signed `reports.generated` webhooks go; none are sent when `None`.
    pub webhook: Option<WebhookTarget>,
    /// How long a new report stays `generating` before it becomes `generated` by itself;
    /// `None`: only when told ([`FakeArgyle::generate`]).
    pub generate_after: Option<Duration>,
    /// Whether `reports.generated` carries `report_id` (Argyle's field is unconfirmed).
    pub send_report_id: bool,
    /// The wait before redelivering a webhook the receiver failed; doubles each time.
    pub webhook_retry_delay: Duration,
    /// One line per request on standard error (the development command).
    pub log_requests: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            key_id: "key-id".into(),
            key_secret: "key-secret".into(),
            webhook: None,
            generate_after: None,
            send_report_id: true,
            webhook_retry_delay: Duration::from_millis(200),
            log_requests: false,
        }
    }
}

/// The receiver of `reports.generated` webhooks.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// For example `http://127.0.0.1:8080/webhooks/argyle`.
    pub url: String,
    /// Signs the body (`X-Argyle-Signature`), as Argyle does with a subscription's secret.
    pub secret: Secret,
    /// The subscription name echoed in the body.
    pub name: String,
}

/// A scripted answer for the next request to an endpoint, instead of (or around) the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a JSON `detail` (and `Retry-After` if given); do nothing else.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Close the connection without answering and without acting.
    Drop,
    /// Wait this long, then act and answer normally.
    Delay(Duration),
    /// Act (create, delete, ...), then close the connection without answering: a lost answer.
    DropAfterActing,
    /// Act, then hold the answer this long before sending it (a client may die meanwhile).
    HoldAfterActing(Duration),
}

impl Fault {
    /// An answer with `status` and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            retry_after: None,
        }
    }

    /// A 429 with this `Retry-After` value (seconds or an HTTP date).
    pub fn rate_limited(retry_after: &str) -> Self {
        Fault::Status {
            status: 429,
            retry_after: Some(retry_after.to_owned()),
        }
    }
}

/// One request the fake received (on either host).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The API route; `None` on the document host and for unknown routes.
    pub endpoint: Option<Endpoint>,
    pub body: String,
    /// Whether an `Authorization` header came with it.
    pub authorization: bool,
    pub traceparent: Option<String>,
}

/// One `reports.generated` webhook and what became of it.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub report_id: String,
    /// The exact signed body.
    pub body: String,
    /// The receiver's status per attempt; `None` when no answer came.
    pub statuses: Vec<Option<u16>>,
    /// A 2xx was received.
    pub delivered: bool,
}

/// A running fake. Clones share it; it serves until the runtime ends.
#[derive(Clone)]
pub struct FakeArgyle {
    shared: Arc<Shared>,
}

struct Shared {
    config: FakeConfig,
    base_url: String,
    documents_url: String,
    expected_authorization: String,
    http: reqwest::Client,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    subscriptions: Vec<Value>,
    /// In creation order.
    reports: Vec<FakeReport>,
    next_seq: u64,
    /// Accounts a new report of the user covers.
    accounts: HashMap<String, Vec<Value>>,
    requests: Vec<RecordedRequest>,
    scripts: HashMap<Endpoint, VecDeque<Fault>>,
    deliveries: Vec<WebhookDelivery>,
    /// Where webhooks go when set after start (wins over the configuration's).
    webhook: Option<WebhookTarget>,
}

struct FakeReport {
    seq: u64,
    id: String,
    user: String,
    report_type: String,
    status: &'static str,
    created_at: DateTime<Utc>,
    generated_at: Option<DateTime<Utc>>,
    metadata: Value,
    accounts: Vec<Value>,
}

impl fmt::Debug for FakeArgyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeArgyle")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Host {
    Api,
    Documents,
}

/// Makes hyper close the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl FakeArgyle {
    /// Binds the API on `addr` (port 0 for any) and the document host on another port of the
    /// same address, and serves both.
    pub async fn start(addr: SocketAddr, config: FakeConfig) -> std::io::Result<Self> {
        use base64::Engine;
        let api = TcpListener::bind(addr).await?;
        let documents = TcpListener::bind((addr.ip(), 0)).await?;
        let credentials = format!("{}:{}", config.key_id, config.key_secret);
        let fake = FakeArgyle {
            shared: Arc::new(Shared {
                base_url: format!("http://{}/v2", api.local_addr()?),
                documents_url: format!("http://{}", documents.local_addr()?),
                expected_authorization: format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(std::io::Error::other)?,
                config,
                state: Mutex::default(),
            }),
        };
        tokio::spawn(serve(api, fake.clone(), Host::Api));
        tokio::spawn(serve(documents, fake.clone(), Host::Documents));
        Ok(fake)
    }

    /// The API base URL, `/v2` included, as the client's base URL.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The credential-free host that documents redirect to.
    pub fn documents_url(&self) -> &str {
        &self.shared.documents_url
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the signed `reports.generated` webhooks to `target` from now on (a receiver that
    /// starts after the fake).
    pub fn send_webhooks_to(&self, target: WebhookTarget) {
        self.state().webhook = Some(target);
    }

    /// Queues answers for the next requests to `endpoint`, in order; later requests are served.
    pub fn script(&self, endpoint: Endpoint, faults: impl IntoIterator<Item = Fault>) {
        self.state()
            .scripts
            .entry(endpoint)
            .or_default()
            .extend(faults);
    }

    /// Every request so far, on both hosts, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests so far to one endpoint.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        let state = self.state();
        let matching = state
            .requests
            .iter()
            .filter(|r| r.endpoint == Some(endpoint));
        matching.cloned().collect()
    }

    /// The subscriptions as `GET /v2/webhooks` would list them (secrets included).
    pub fn subscriptions(&self) -> Vec<Value> {
        self.state().subscriptions.clone()
    }

    /// Adds a subscription as if someone had created it.
    pub fn add_subscription(&self, subscription: Value) {
        self.state().subscriptions.push(subscription);
    }

    /// Every report, newest first, as `GET /v2/reports` would show it.
    pub fn reports(&self) -> Vec<Value> {
        let state = self.state();
        let reports = state.reports.iter().rev();
        reports
            .map(|report| report.to_json(self.base_url()))
            .collect()
    }

    /// One report as `GET /v2/reports/{id}` would show it.
    pub fn report(&self, id: &str) -> Option<Value> {
        let state = self.state();
        let report = state.reports.iter().find(|report| report.id == id)?;
        Some(report.to_json(self.base_url()))
    }

    /// The accounts (`{id, item, last_synced_at}`) that the user's next reports cover.
    pub fn set_accounts(&self, user: &str, accounts: Vec<Value>) {
        self.state().accounts.insert(user.to_owned(), accounts);
    }

    /// The `reports.generated` webhooks so far.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.state().deliveries.clone()
    }

    /// Makes a `generating` or `waiting_for_sync` report `generated` now (and announces it).
    /// False if there is no such report in either status.
    pub fn generate(&self, id: &str) -> bool {
        self.transition(id, &["generating", "waiting_for_sync"], "generated")
    }

    /// Makes a report `failed` (Argyle sends no webhook for that). False if unknown or generated.
    pub fn fail(&self, id: &str) -> bool {
        self.transition(id, &["generating", "waiting_for_sync"], "failed")
    }

    /// Keeps a `generating` report `waiting_for_sync` until [`FakeArgyle::generate`].
    pub fn wait_for_sync(&self, id: &str) -> bool {
        self.transition(id, &["generating"], "waiting_for_sync")
    }

    fn transition(&self, id: &str, from: &[&str], to: &'static str) -> bool {
        let announcement = {
            let mut state = self.state();
            let Some(report) = state.reports.iter_mut().find(|report| report.id == id) else {
                return false;
            };
            if !from.contains(&report.status) {
                return false;
            }
            report.status = to;
            if to != "generated" {
                return true;
            }
            report.generated_at = Some(Utc::now());
            (
                report.id.clone(),
                report.user.clone(),
                report.report_type.clone(),
            )
        };
        self.announce(announcement);
        true
    }

    /// Sends the signed `reports.generated` for a report, retrying while the receiver fails.
    fn announce(&self, (report_id, user, report_type): (String, String, String)) {
        let target = self.state().webhook.clone();
        let Some(target) = target.or_else(|| self.shared.config.webhook.clone()) else {
            return;
        };
        let mut data = json!({"user": user, "type": report_type});
        if self.shared.config.send_report_id {
            data["report_id"] = json!(report_id);
        }
        let body =
            json!({"event": "reports.generated", "name": target.name, "data": data}).to_string();
        let index = {
            let mut state = self.state();
            state.deliveries.push(WebhookDelivery {
                report_id,
                body: body.clone(),
                statuses: vec![],
                delivered: false,
            });
            state.deliveries.len() - 1
        };
        let fake = self.clone();
        tokio::spawn(async move {
            let signature = sign(&target.secret, body.as_bytes());
            let mut wait = fake.shared.config.webhook_retry_delay;
            for _ in 0..WEBHOOK_ATTEMPTS {
                let answer = fake
                    .shared
                    .http
                    .post(&target.url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("X-Argyle-Signature", &signature)
                    .body(body.clone())
                    .send()
                    .await;
                let status = answer.ok().map(|answer| answer.status());
                let delivered = status.is_some_and(|status| status.is_success());
                {
                    let mut state = fake.state();
                    let delivery = &mut state.deliveries[index];
                    delivery.statuses.push(status.map(|status| status.as_u16()));
                    delivery.delivered = delivered;
                }
                if delivered {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        });
    }

    fn record(&self, request: RecordedRequest) {
        self.state().requests.push(request);
    }

    fn next_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        self.state().scripts.get_mut(&endpoint)?.pop_front()
    }
}

impl FakeReport {
    fn to_json(&self, base: &str) -> Value {
        let generated = self.status == "generated";
        let url = |format: &str| generated.then(|| format!("{base}/reports/{}/{format}", self.id));
        let last_synced_at = self
            .accounts
            .iter()
            .filter_map(|account| account["last_synced_at"].as_str())
            .max();
        json!({
            "id": self.id,
            "user": self.user,
            "type": self.report_type,
            "status": self.status,
            "file_url": url("pdf"),
            "json_url": url("json"),
            "created_at": rfc3339(self.created_at),
            "last_synced_at": last_synced_at,
            "accounts": self.accounts,
            "metadata": self.metadata,
            "external_id": null,
            // Deprecated, still sent by Argyle.
            "reference_id": null,
            "generated_at": self.generated_at.map(rfc3339),
        })
    }
}

async fn serve(listener: TcpListener, fake: FakeArgyle, host: Host) {
    let router = match host {
        Host::Api => api_routes(),
        Host::Documents => Router::new().route("/documents/{id}/{format}", get(document)),
    }
    .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not found.") })
    .with_state(fake.clone());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (fake, router) = (fake.clone(), router.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(fake.clone(), router.clone(), host, request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn api_routes() -> Router<FakeArgyle> {
    Router::new()
        .route("/v2/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v2/webhooks/{id}", delete(delete_webhook))
        .route("/v2/reports", get(list_reports))
        .route(
            "/v2/reports/{id}",
            get(get_report).post(create_report).delete(delete_report),
        )
        .route("/v2/reports/{id}/{format}", get(document_redirect))
}

/// Records the request, applies a scripted fault, checks the credentials (API host), serves.
async fn handle(
    fake: FakeArgyle,
    router: Router,
    host: Host,
    request: Request<hyper::body::Incoming>,
) -> Result<Response, Dropped> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let endpoint = match host {
        Host::Api => parts
            .uri
            .path()
            .strip_prefix("/v2")
            .and_then(|path| Endpoint::recognise(parts.method.as_str(), path)),
        Host::Documents => None,
    };
    let line = format!("{} {}", parts.method, parts.uri);
    fake.record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        endpoint,
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: parts.headers.contains_key(header::AUTHORIZATION),
        traceparent: parts
            .headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    });
    let answer = answer(&fake, router, host, endpoint, parts, body).await;
    if fake.shared.config.log_requests {
        let outcome = answer
            .as_ref()
            .map_or_else(|_| "dropped".to_owned(), |r| r.status().to_string());
        eprintln!("fake-argyle: {line} -> {outcome}");
    }
    answer
}

async fn answer(
    fake: &FakeArgyle,
    router: Router,
    host: Host,
    endpoint: Option<Endpoint>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Result<Response, Dropped> {
    let mut drop_after_acting = false;
    let mut hold = None;
    match endpoint.and_then(|endpoint| fake.next_fault(endpoint)) {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = detail(status, "Scripted failure; try later.");
            if let Some(value) = retry_after.and_then(|value| value.parse().ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Ok(response);
        }
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Delay(wait)) => tokio::time::sleep(wait).await,
        Some(Fault::DropAfterActing) => drop_after_acting = true,
        Some(Fault::HoldAfterActing(wait)) => hold = Some(wait),
        None => {}
    }
    let authorization = parts.headers.get(header::AUTHORIZATION);
    if host == Host::Api
        && authorization.and_then(|value| value.to_str().ok())
            != Some(fake.shared.expected_authorization.as_str())
    {
        return Ok(detail(StatusCode::UNAUTHORIZED, "Invalid credentials."));
    }
    let response = router
        .oneshot(Request::from_parts(parts, Body::from(body)))
        .await
        .unwrap_or_else(|never| match never {});
    if drop_after_acting {
        return Err(Dropped);
    }
    if let Some(wait) = hold {
        tokio::time::sleep(wait).await;
    }
    Ok(response)
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"detail": message}))).into_response()
}

fn field_error(field: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({field: [message]}))).into_response()
}

async fn list_webhooks(
    State(fake): State<FakeArgyle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all = fake.subscriptions();
    let offset: usize = query
        .get("offset")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let page: Vec<_> = all.iter().skip(offset).take(WEBHOOK_PAGE).collect();
    let next = (offset + WEBHOOK_PAGE < all.len()).then(|| {
        format!(
            "{}/webhooks?offset={}",
            fake.base_url(),
            offset + WEBHOOK_PAGE
        )
    });
    Json(json!({"next": next, "previous": null, "results": page})).into_response()
}

async fn create_webhook(State(fake): State<FakeArgyle>, Json(body): Json<Value>) -> Response {
    for field in ["name", "url"] {
        if !body[field].is_string() {
            return field_error(field, "This field is required.");
        }
    }
    if body["events"]
        .as_array()
        .is_none_or(|events| events.is_empty())
    {
        return field_error("events", "This field is required.");
    }
    let now = rfc3339(Utc::now());
    let created = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": body["name"], "events": body["events"],
        "config": body.get("config").cloned().unwrap_or(json!({})), "secret": body["secret"],
        "url": body["url"], "created_at": now, "updated_at": now, "last_sent_at": null,
    });
    fake.add_subscription(created.clone());
    (StatusCode::CREATED, Json(created)).into_response()
}

async fn delete_webhook(State(fake): State<FakeArgyle>, Path(id): Path<String>) -> Response {
    let mut state = fake.state();
    let before = state.subscriptions.len();
    state.subscriptions.retain(|s| s["id"] != id);
    deleted(state.subscriptions.len() < before)
}

/// 204 when something was deleted, else 404 as Argyle words it.
fn deleted(found: bool) -> Response {
    if found {
        StatusCode::NO_CONTENT.into_response()
    } else {
        detail(StatusCode::NOT_FOUND, "Not found.")
    }
}

async fn create_report(
    State(fake): State<FakeArgyle>,
    Path(report_type): Path<String>,
    body: Bytes,
) -> Response {
    if !REPORT_TYPES.contains(&report_type.as_str()) {
        return field_error("type", &format!("\"{report_type}\" is not a valid choice."));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return detail(StatusCode::BAD_REQUEST, "JSON parse error.");
    };
    let Some(user) = body["user"]
        .as_str()
        .and_then(|user| uuid::Uuid::parse_str(user).ok())
    else {
        return field_error("user", "Must be a valid UUID.");
    };
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(metadata @ Value::Object(_)) => metadata.clone(),
        Some(_) => return field_error("metadata", "Must be an object."),
    };
    let user = user.to_string();
    let now = Utc::now();
    let (id, created) = {
        let mut state = fake.state();
        let window_start = now - chrono::Duration::hours(24);
        let oldest_recent = state
            .reports
            .iter()
            .filter(|report| report.user == user && report.created_at > window_start)
            .map(|report| report.created_at);
        let recent: Vec<DateTime<Utc>> = oldest_recent.collect();
        if recent.len() >= DAILY_CAP {
            let frees_at =
                recent.iter().min().copied().unwrap_or(now) + chrono::Duration::hours(24);
            let wait = (frees_at - now).num_seconds().max(1);
            let mut response = detail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Report limit reached: {DAILY_CAP} reports per user per 24 hours."),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                wait.to_string().parse().expect("digits"),
            );
            return response;
        }
        state.next_seq += 1;
        let report = FakeReport {
            seq: state.next_seq,
            id: uuid::Uuid::new_v4().to_string(),
            accounts: state.accounts.get(&user).cloned().unwrap_or_default(),
            user,
            report_type,
            status: "generating",
            created_at: now,
            generated_at: None,
            metadata,
        };
        let created = report.to_json(fake.base_url());
        let id = report.id.clone();
        state.reports.push(report);
        (id, created)
    };
    if let Some(after) = fake.shared.config.generate_after {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            fake.transition(&id, &["generating"], "generated");
        });
    }
    (StatusCode::CREATED, Json(created)).into_response()
}

async fn get_report(State(fake): State<FakeArgyle>, Path(id): Path<String>) -> Response {
    match fake.report(&id) {
        Some(report) => Json(report).into_response(),
        None => detail(StatusCode::NOT_FOUND, "Not found."),
    }
}

async fn list_reports(
    State(fake): State<FakeArgyle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = match query.get("user") {
        None => None,
        Some(user) => match uuid::Uuid::parse_str(user) {
            Ok(user) => Some(user.to_string()),
            Err(_) => return field_error("user", "Must be a valid UUID."),
        },
    };
    let limit = match query.get("limit").map(|limit| limit.parse::<usize>()) {
        None => 10,
        Some(Ok(limit @ 1..=200)) => limit,
        Some(_) => return field_error("limit", "Must be an integer from 1 to 200."),
    };
    let below = match query.get("cursor").map(|cursor| cursor.parse::<u64>()) {
        None => u64::MAX,
        Some(Ok(seq)) => seq,
        Some(Err(_)) => return field_error("cursor", "Invalid cursor."),
    };
    let state = fake.state();
    let mut matching = state.reports.iter().rev().filter(|report| {
        report.seq < below && user.as_ref().is_none_or(|user| &report.user == user)
    });
    let page: Vec<&FakeReport> = matching.by_ref().take(limit).collect();
    let next = match (matching.next(), page.last()) {
        (Some(_), Some(last)) => {
            let mut next = reqwest::Url::parse(&format!("{}/reports", fake.base_url()))
                .expect("the base URL is a URL");
            if let Some(user) = &user {
                next.query_pairs_mut().append_pair("user", user);
            }
            next.query_pairs_mut()
                .append_pair("limit", &limit.to_string())
                .append_pair("cursor", &last.seq.to_string());
            Some(next.to_string())
        }
        _ => None,
    };
    let results: Vec<Value> = page
        .iter()
        .map(|report| report.to_json(fake.base_url()))
        .collect();
    Json(json!({"next": next, "previous": null, "results": results})).into_response()
}

async fn delete_report(State(fake): State<FakeArgyle>, Path(id): Path<String>) -> Response {
    let mut state = fake.state();
    let before = state.reports.len();
    // Removing the report also frees its slot of the daily cap.
    state.reports.retain(|report| report.id != id);
    deleted(state.reports.len() < before)
}

/// `file_url` / `json_url`: credentials checked (by [`answer`]), then a redirect to the
/// credential-free document host.
async fn document_redirect(
    State(fake): State<FakeArgyle>,
    Path((id, format)): Path<(String, String)>,
) -> Response {
    let generated = fake
        .report(&id)
        .is_some_and(|report| report["status"] == "generated");
    if !generated || !matches!(format.as_str(), "pdf" | "json") {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    }
    let location = format!("{}/documents/{id}/{format}", fake.documents_url());
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn document(
    State(fake): State<FakeArgyle>,
    Path((id, format)): Path<(String, String)>,
) -> Response {
    let Some(report) = fake
        .report(&id)
        .filter(|report| report["status"] == "generated")
    else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    match format.as_str() {
        "pdf" => ([(header::CONTENT_TYPE, "application/pdf")], pdf(&report)).into_response(),
        "json" => Json(report).into_response(),
        _ => detail(StatusCode::NOT_FOUND, "Not found."),
    }
}

/// A small valid one-page PDF naming the report.
fn pdf(report: &Value) -> Vec<u8> {
    let text = format!(
        "Argyle {} report {} for user {}",
        report["type"].as_str().unwrap_or_default(),
        report["id"].as_str().unwrap_or_default(),
        report["user"].as_str().unwrap_or_default(),
    );
    let stream = format!("BT /F1 10 Tf 40 750 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
