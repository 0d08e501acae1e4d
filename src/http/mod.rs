//! axum ingress: `POST /webhooks/argyle` (limits → signature → core), `GET /healthz`,
//! `GET /readyz`. Every failure maps once to a status and a JSON body in [`ApiError`].

mod error;
mod per_source;
mod serve;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::core::Core;
use crate::domain::signature::Secret;

pub use error::ApiError;
pub use serve::{ConnectionTimeouts, serve};

/// Which client addresses may use an endpoint (webhooks, `/metrics`), and how to find a
/// request's client address behind a trusted proxy.
pub use crate::config::Sources as SourcePolicy;

/// Protection of the HTTP listener as a whole.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a request may take before it is answered 408.
    pub request_timeout: std::time::Duration,
    /// Requests handled at once; more are shed with 503 and `Retry-After`.
    pub max_in_flight: usize,
    /// Requests one client address may have in flight (`None`: no per-source cap); more are
    /// shed like the global excess.
    pub max_in_flight_per_source: Option<usize>,
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub core: Core,
    /// Accepted webhook secrets (several during rotation).
    pub secrets: Arc<[Secret]>,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Cancelled when shutdown begins; `/readyz` then fails so load balancers stop sending.
    pub shutdown: CancellationToken,
    /// Which sources may post webhooks.
    pub sources: Arc<SourcePolicy>,
    /// Which sources may read `/metrics` (the same client-address rules, another allow-list).
    pub metrics_sources: Arc<SourcePolicy>,
    /// Deadline for a webhook's whole body, from the end of its headers (408 after).
    pub body_timeout: std::time::Duration,
}

/// The HTTP routes, behind a per-source cap, load shedding, a concurrency limit and a request
/// timeout. `Router::layer` gives each route its own copy of the protection layers, so each route
/// (webhooks, `/healthz`, `/readyz`, `/metrics`) has its own `max_in_flight` slots: a webhook
/// flood sheds webhooks, never a probe.
pub fn router(state: HttpState, limits: &Limits) -> Router {
    let request_timeout = limits.request_timeout;
    let protection = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: tower::BoxError| {
            shed_or_timed_out(error, request_timeout)
        }))
        .load_shed()
        .concurrency_limit(limits.max_in_flight)
        .timeout(request_timeout);
    let mut router = Router::new()
        .route("/webhooks/argyle", post(webhook::receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(protection);
    // Outside the per-route limits: a source over its cap is shed without taking a slot.
    if let Some(cap) = limits.max_in_flight_per_source {
        router = router.layer(axum::middleware::from_fn_with_state(
            per_source::PerSource::new(state.sources.clone(), cap),
            per_source::limit,
        ));
    }
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // A 5xx is logged where it is caused, once per cause (see `ApiError`,
                // `core::health`); not again per request here.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// One span per HTTP request, child of the caller's trace when it sends `traceparent`.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let span = tracing::info_span!(
        "http_request",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
    );
    crate::telemetry::set_remote_parent(&span, request.headers());
    span
}

/// The answer when the concurrency limit is reached (shed, do not queue) or the request timed
/// out (its outcome is unknown: a delivery may still commit, and a retry is deduplicated).
async fn shed_or_timed_out(
    error: tower::BoxError,
    timeout: std::time::Duration,
) -> axum::response::Response {
    let (reason, error) = if error.is::<tower::timeout::error::Elapsed>() {
        ("timeout", ApiError::TimedOut { timeout })
    } else {
        ("in_flight_limit", ApiError::Overloaded)
    };
    metrics::counter!(crate::metrics::HTTP_SHED, "reason" => reason).increment(1);
    error.into_response()
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Prometheus text exposition. Nothing here touches the database: the user counts are kept
/// current by the event-log follower, the read model's sizes are in memory, readiness and the
/// oldest PENDING user are kept by a task that asks
/// every few seconds (`core::health`), and the `process_*` metrics come from `/proc`.
async fn metrics_text(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let client = state.metrics_sources.client(peer.ip(), &headers);
    if !state.metrics_sources.allows(client) {
        return Err(ApiError::ForbiddenSource(client));
    }
    for (readiness, count) in state.core.users_by_state() {
        metrics::gauge!(crate::metrics::USERS, "state" => readiness.as_str()).set(count as f64);
    }
    let cached = state.core.read_model_stats();
    for (cache, entries) in [("users", cached.users), ("reports", cached.reports)] {
        metrics::gauge!(crate::metrics::READ_CACHE_ENTRIES, "cache" => cache).set(entries as f64);
    }
    crate::metrics::collect_process();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::handle().render(),
    ))
}

/// Readiness: shutdown has not begun, and the database answers, takes writes and is still the
/// file that was opened (see `core::health`).
async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    match state.core.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(not_ready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", not_ready.reason()),
        ),
    }
}
