//! The one mapping from ingress failures to HTTP answers: a status and a JSON body
//! `{"error": "<code>", "message": "..."}`. Internal causes are logged here, never echoed.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::CoreError;
use crate::domain::signature::SignatureError;
use crate::telemetry::error_chain;

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("content type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    #[error("the body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the whole body did not arrive within {secs} s of the headers; nothing was stored")]
    BodyTimeout { secs: u64 },
    #[error("source address {0} is not in this endpoint's allow-list")]
    ForbiddenSource(std::net::IpAddr),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error(
        "the request took longer than {}s; whether it was stored is unknown: retrying is safe \
         (deliveries are deduplicated by content)",
        timeout.as_secs_f64()
    )]
    TimedOut { timeout: std::time::Duration },
    #[error("{reason}")]
    InvalidEvent { reason: String, delivery_id: i64 },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl ApiError {
    /// The outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Signature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::UnreadableBody(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::ForbiddenSource(_) => (StatusCode::FORBIDDEN, "forbidden_source"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::TimedOut { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::InvalidEvent { .. } => (StatusCode::BAD_REQUEST, "invalid_event"),
            ApiError::Core(
                CoreError::Unavailable(_)
                | CoreError::ShuttingDown
                | CoreError::DatabaseFileChanged,
            ) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            ApiError::Core(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Seconds a sender should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Core(error) => {
                if matches!(error, CoreError::Unavailable(_)) {
                    metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                }
                if matches!(error, CoreError::DatabaseFileChanged) {
                    // Logged once, when it was found; not once per request.
                    tracing::debug!(error = %error, "webhook not stored");
                } else {
                    tracing::error!(error = %error_chain(error), "webhook not stored");
                }
                match error {
                    CoreError::Unavailable(_)
                    | CoreError::ShuttingDown
                    | CoreError::DatabaseFileChanged => {
                        "the database is unavailable; retry later".to_owned()
                    }
                    _ => "internal error".to_owned(),
                }
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": code, "message": message });
        if let ApiError::InvalidEvent { delivery_id, .. } = &self {
            body["delivery_id"] = json!(delivery_id);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
