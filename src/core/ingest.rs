//! The entry of a verified webhook delivery: hash and parse it, queue it for the next group
//! commit (`core::commit`), and answer once the transaction holding it has committed
//! (`core::pipeline`), so a 2xx means the raw body, its state change and its events are durable.

use sha2::{Digest, Sha256};

use super::{Core, CoreError};
use crate::domain::UserId;
use crate::domain::argyle::{self, Delivery};
use crate::domain::signature::Verified;

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and applied; `events` domain events were appended.
    Applied { events: usize },
    /// Stored; an event this service does not act on.
    Ignored,
    /// The same body was stored before; nothing changed.
    Duplicate,
    /// Stored for inspection but not applied: the body is not a valid event, or contradicts
    /// what is known. The sender's mistake.
    Rejected { reason: String },
}

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// The inbox row holding the raw delivery.
    pub delivery_id: i64,
    pub event_name: Option<String>,
    pub outcome: Outcome,
}

/// A verified delivery, hashed and parsed before it joins a batch.
pub(super) struct Job {
    pub(super) body: Vec<u8>,
    /// SHA-256 (hex) of the body: the inbox's deduplication key.
    pub(super) sha: String,
    pub(super) parsed: Result<Delivery, argyle::ParseError>,
    /// The request's `ingest` span: the batch's work for this delivery is traced under it.
    pub(super) span: tracing::Span,
}

impl Job {
    /// The user whose row this delivery locks, if any; batches take row locks in this order.
    pub(super) fn lock_key(&self) -> Option<UserId> {
        self.parsed.as_ref().ok().and_then(|d| d.event.user())
    }
}

impl Core {
    /// Stores and applies one verified delivery. It joins the next group commit; the answer
    /// arrives only after the transaction holding it has committed, and once this process's
    /// read model shows it (so a read after the answer sees the delivery).
    #[tracing::instrument(name = "ingest", skip_all)]
    pub async fn ingest(
        &self,
        body: Verified<impl AsRef<[u8]>>,
    ) -> Result<IngestReport, CoreError> {
        self.health.check_file()?;
        let body = body.get().as_ref().to_vec();
        let job = Job {
            sha: hex::encode(Sha256::digest(&body)),
            parsed: argyle::parse(&body),
            body,
            span: tracing::Span::current(),
        };
        let (report, last) = self.committer.submit(job).await?;
        self.settle(last).await;
        Ok(report)
    }
}
