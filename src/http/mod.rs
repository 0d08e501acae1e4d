//! axum ingress: `POST /webhooks/argyle` (limits → signature → core), `GET /healthz`,
//! `GET /readyz`. Every failure maps once to a status and a JSON body in [`ApiError`].

mod error;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::core::Core;
use crate::domain::signature::Secret;

pub use error::{ApiError, error_chain};

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
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/webhooks/argyle", post(webhook::receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and shutdown has not begun.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !state.core.database_reachable().await {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
