//! The inbox of raw webhook deliveries, as operators see it: every signed delivery is kept with
//! what became of it, so that it can be inspected and replayed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::DeliveryStatus;

/// One stored delivery, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredDelivery {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    /// The `event` field, when the body could be read.
    pub event: Option<String>,
    pub user_id: Option<String>,
    /// Why it was rejected.
    pub error: Option<String>,
    /// SHA-256 (hex) of the raw body: the deduplication key.
    pub body_sha256: String,
    pub body_bytes: usize,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxFilter {
    pub status: Option<DeliveryStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Only ids greater than this (pagination).
    pub after_id: Option<i64>,
    pub limit: u64,
}
