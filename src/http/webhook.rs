//! `POST /webhooks/argyle`: size limit, content type, signature, then the core. The body is
//! handled as raw bytes until its signature is verified; it is never re-serialised.

use axum::Json;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::{ApiError, HttpState};
use crate::core::Outcome;
use crate::domain::signature::{self, SignatureError};

/// The header Argyle signs deliveries with.
const SIGNATURE_HEADER: &str = "x-argyle-signature";

pub async fn receive(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let result = accept(state, peer, headers, body).await;
    let (event, outcome) = match &result {
        Ok((_, Json(answer))) => (
            answer["event"].as_str().unwrap_or("-").to_owned(),
            answer["status"].as_str().unwrap_or("-").to_owned(),
        ),
        Err(error) => ("-".to_owned(), error.outcome().to_owned()),
    };
    if outcome == "duplicate" {
        metrics::counter!(crate::metrics::DUPLICATES).increment(1);
    }
    metrics::counter!(crate::metrics::WEBHOOKS_RECEIVED, "event" => event, "outcome" => outcome)
        .increment(1);
    result
}

async fn accept(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let client = state.sources.client(peer.ip(), &headers);
    if !state.sources.allows(client) {
        return Err(ApiError::ForbiddenSource(client));
    }
    let body = read_body(&state, &headers, body).await?;

    let mut signatures = headers.get_all(SIGNATURE_HEADER).iter();
    let signature = signatures.next().map(|value| value.as_bytes());
    if signatures.next().is_some() {
        return Err(SignatureError::Duplicated.into());
    }
    let verified = tracing::info_span!("verify_signature")
        .in_scope(|| signature::verify(&state.secrets, signature, body));
    let verified = verified.inspect_err(|error| {
        metrics::counter!(crate::metrics::SIGNATURE_FAILURES, "reason" => error.reason())
            .increment(1);
    })?;
    let started = std::time::Instant::now();
    let report = state.core.ingest(verified).await?;
    metrics::histogram!(crate::metrics::APPLY_SECONDS).record(started.elapsed().as_secs_f64());
    let status = match report.outcome {
        Outcome::Applied { .. } => "applied",
        Outcome::Ignored => "ignored",
        Outcome::Duplicate => "duplicate",
        Outcome::Rejected { reason } => {
            metrics::counter!(crate::metrics::QUARANTINED).increment(1);
            return Err(ApiError::InvalidEvent {
                reason,
                delivery_id: report.delivery_id,
            });
        }
    };
    Ok((
        StatusCode::OK,
        Json(json!({
            "status": status,
            "delivery_id": report.delivery_id,
            "event": report.event_name,
        })),
    ))
}

/// The request's body: refused before reading when its declared length is over the limit or
/// its content type is not JSON, then read with one deadline for all of it.
async fn read_body(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    check_content_type(headers)?;
    // One deadline for the whole body: a sender trickling bytes cannot hold a slot for long.
    let body = tokio::time::timeout(state.body_timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout {
            secs: state.body_timeout.as_secs(),
        })?;
    match body {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { limit })
        }
        Err(error) => Err(ApiError::UnreadableBody(error.to_string())),
    }
}

/// Accepts `application/json` (with parameters such as `charset`) and `application/*+json`.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("nothing".into()));
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(crate::domain::echo(&text)))
    }
}
