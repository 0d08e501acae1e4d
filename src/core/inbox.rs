//! The inbox of raw deliveries: list, show, replay and prune. Replaying re-parses the stored
//! bytes with this version's parser and applies them in one transaction, exactly like a new
//! delivery (`core::pipeline`); applying is idempotent, so replaying an applied delivery changes
//! nothing.

use chrono::{DateTime, Utc};

use super::pipeline::{self, Input};
use super::{Core, CoreError, Outcome};
use crate::domain::argyle::{self, ArgyleEvent};
use crate::domain::inbox::{InboxFilter, StoredDelivery};
use crate::domain::{DeliveryStatus, time};
use crate::store::Verdict;

impl Core {
    /// Deliveries, oldest first.
    pub async fn inbox_list(&self, filter: &InboxFilter) -> Result<Vec<StoredDelivery>, CoreError> {
        self.health.check_file()?;
        Ok(self.store.deliveries(filter).await?)
    }

    /// One delivery with its raw body.
    pub async fn inbox_show(&self, id: i64) -> Result<(StoredDelivery, Vec<u8>), CoreError> {
        self.health.check_file()?;
        self.store
            .delivery(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("delivery {id}")))
    }

    /// Re-applies one stored delivery with this version's parser and rules.
    pub async fn inbox_replay(&self, id: i64) -> Result<(StoredDelivery, Outcome), CoreError> {
        self.health.check_file()?;
        let at = time::now();
        let _writer = super::hold(&self.write_lock).await;
        let batch = self.store.begin_batch().await?;
        let body = batch
            .delivery_for_replay(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("delivery {id}")))?;
        let (verdict, outcome, events) = match argyle::parse(&body) {
            Err(error) => {
                let reason = error.to_string();
                let verdict = Verdict {
                    status: DeliveryStatus::Rejected,
                    error: Some(reason.clone()),
                    event_name: None,
                    user: None,
                };
                (verdict, Outcome::Rejected { reason }, vec![])
            }
            Ok(parsed) if parsed.event == ArgyleEvent::Other => {
                let verdict = Verdict {
                    status: DeliveryStatus::Ignored,
                    error: None,
                    event_name: Some(parsed.event_name),
                    user: None,
                };
                (verdict, Outcome::Ignored, vec![])
            }
            Ok(parsed) => {
                let input = Input {
                    delivery_id: id,
                    event: &parsed.event,
                    content_key: &parsed.fact_key,
                };
                let mut applied =
                    pipeline::apply(&batch, at, std::slice::from_ref(&input), &self.pipeline)
                        .await?;
                let outcome = applied.outcomes.pop().unwrap_or(Outcome::Ignored);
                let (status, error) = match &outcome {
                    Outcome::Rejected { reason } => {
                        (DeliveryStatus::Rejected, Some(reason.clone()))
                    }
                    _ => (DeliveryStatus::Applied, None),
                };
                let verdict = Verdict {
                    status,
                    error,
                    event_name: Some(parsed.event_name),
                    user: parsed.event.user(),
                };
                (verdict, outcome, applied.events)
            }
        };
        let summary = batch.record_verdict(id, verdict).await?;
        let last = pipeline::commit(batch, events, at, &self.log).await?;
        self.settle(last).await;
        Ok((summary, outcome))
    }

    /// Ids of the `rejected` deliveries, oldest first: what [`Core::inbox_replay_rejected`]
    /// replays (a caller replaying them one by one can report progress).
    pub async fn inbox_rejected_ids(&self) -> Result<Vec<i64>, CoreError> {
        self.health.check_file()?;
        Ok(self.store.delivery_ids(DeliveryStatus::Rejected).await?)
    }

    /// Replays every `rejected` delivery, oldest first; returns each result.
    pub async fn inbox_replay_rejected(&self) -> Result<Vec<(StoredDelivery, Outcome)>, CoreError> {
        let ids = self.inbox_rejected_ids().await?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            results.push(self.inbox_replay(id).await?);
        }
        Ok(results)
    }

    /// Deletes raw deliveries received before `cutoff`, oldest first, `PRUNE_BATCH` per
    /// transaction (so writers wait for one batch at most). Calls `progress(deleted, total)`
    /// before the first batch and after each; `total` is how many there were at the start. The
    /// event log and the state derived from the deliveries are kept; only the raw bodies go.
    /// Returns how many were deleted; after an error, the batches before it stay deleted.
    pub async fn inbox_prune(
        &self,
        cutoff: DateTime<Utc>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, CoreError> {
        self.health.check_file()?;
        let total = self.store.deliveries_before(cutoff).await?;
        let mut deleted = 0;
        progress(deleted, total);
        loop {
            let batch = {
                let _writer = super::hold(&self.write_lock).await;
                self.store.prune_deliveries(cutoff, PRUNE_BATCH).await?
            };
            if batch == 0 {
                return Ok(deleted);
            }
            deleted += batch;
            progress(deleted, total);
        }
    }
}

/// Raw deliveries deleted per transaction by [`Core::inbox_prune`].
const PRUNE_BATCH: u64 = 1000;
