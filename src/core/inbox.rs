//! The inbox of raw deliveries: list, show, replay and prune. Replaying re-parses the stored
//! bytes with this version's parser and applies them in one transaction, exactly like a new
//! delivery; applying is idempotent, so replaying an applied delivery changes nothing.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use sha2::Digest;

use super::apply::{Input, apply_one};
use super::ingest::{APPLIED, IGNORED, REJECTED, append_events};
use super::{Core, CoreError, Outcome};
use crate::domain::argyle::{self, ArgyleEvent};
use crate::store::entities::delivery;

/// Delivery statuses, as stored.
pub const STATUSES: [&str; 3] = [APPLIED, IGNORED, REJECTED];

/// One stored delivery without its body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub error: Option<String>,
    pub body_sha256: String,
    pub body_bytes: usize,
}

impl From<&delivery::Model> for DeliverySummary {
    fn from(row: &delivery::Model) -> Self {
        Self {
            id: row.id,
            received_at: row.received_at,
            status: row.status.clone(),
            event: row.event_name.clone(),
            user_id: row.user_id.clone(),
            error: row.error.clone(),
            body_sha256: row.body_sha256.clone(),
            body_bytes: row.body.len(),
        }
    }
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only ids greater than this (pagination).
    pub after_id: Option<i64>,
    pub limit: u64,
}

impl Core {
    /// Deliveries, oldest first.
    pub async fn inbox_list(
        &self,
        filter: &InboxFilter,
    ) -> Result<Vec<DeliverySummary>, CoreError> {
        self.health.check_file()?;
        let mut query = delivery::Entity::find().order_by_asc(delivery::Column::Id);
        if let Some(status) = &filter.status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(CoreError::InvalidArgument {
                    field: "status",
                    reason: format!("{status:?} is not one of {}", STATUSES.join(", ")),
                });
            }
            query = query.filter(delivery::Column::Status.eq(status.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(delivery::Column::ReceivedAt.gte(since));
        }
        if let Some(after) = filter.after_id {
            query = query.filter(delivery::Column::Id.gt(after));
        }
        let rows = query.limit(filter.limit.max(1)).all(&self.db).await?;
        Ok(rows.iter().map(DeliverySummary::from).collect())
    }

    /// One delivery with its raw body.
    pub async fn inbox_show(&self, id: i64) -> Result<(DeliverySummary, Vec<u8>), CoreError> {
        self.health.check_file()?;
        let row = delivery::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("delivery {id}")))?;
        Ok((DeliverySummary::from(&row), row.body))
    }

    /// Re-applies one stored delivery with this version's parser and rules.
    pub async fn inbox_replay(&self, id: i64) -> Result<(DeliverySummary, Outcome), CoreError> {
        self.health.check_file()?;
        let now = Utc::now();
        let _writer = super::hold(&self.write_lock).await;
        let txn = self.db.begin().await?;
        let row = delivery::Entity::find_by_id(id)
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("delivery {id}")))?;
        let sha = hex::encode(sha2::Sha256::digest(&row.body));
        let (status, error, outcome, event_name, user) = match argyle::parse(&row.body) {
            Err(error) => {
                let reason = error.to_string();
                (
                    REJECTED,
                    Some(reason.clone()),
                    Outcome::Rejected { reason },
                    None,
                    None,
                )
            }
            Ok(parsed) if parsed.event == ArgyleEvent::Other => (
                IGNORED,
                None,
                Outcome::Ignored,
                Some(parsed.event_name),
                None,
            ),
            Ok(parsed) => {
                let user = parsed.event.user().map(|user| user.to_string());
                let input = Input {
                    event: &parsed.event,
                    delivery_id: row.id,
                    sha: &sha,
                };
                match apply_one(&txn, now, &input).await? {
                    Ok(events) => (
                        APPLIED,
                        None,
                        Outcome::Applied {
                            events: append_events(&txn, now, &events).await?,
                        },
                        Some(parsed.event_name),
                        user,
                    ),
                    Err(reason) => (
                        REJECTED,
                        Some(reason.clone()),
                        Outcome::Rejected { reason },
                        Some(parsed.event_name),
                        user,
                    ),
                }
            }
        };
        let mut model = row.into_active_model();
        model.status = Set(status.to_owned());
        model.error = Set(error);
        model.event_name = Set(event_name);
        model.user_id = Set(user);
        let row = sea_orm::ActiveModelTrait::update(model, &txn).await?;
        txn.commit().await?;
        if matches!(outcome, Outcome::Applied { events } if events > 0) {
            self.log.committed();
        }
        Ok((DeliverySummary::from(&row), outcome))
    }

    /// Replays every `rejected` delivery, oldest first; returns each result.
    pub async fn inbox_replay_rejected(
        &self,
    ) -> Result<Vec<(DeliverySummary, Outcome)>, CoreError> {
        self.health.check_file()?;
        let ids: Vec<i64> = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::Id)
            .filter(delivery::Column::Status.eq(REJECTED))
            .order_by_asc(delivery::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            results.push(self.inbox_replay(id).await?);
        }
        Ok(results)
    }

    /// Deletes raw deliveries received before `cutoff`. The event log and the state derived from
    /// the deliveries are kept; only the raw bodies go. Returns how many were deleted.
    pub async fn inbox_prune(&self, cutoff: DateTime<Utc>) -> Result<u64, CoreError> {
        self.health.check_file()?;
        let _writer = super::hold(&self.write_lock).await;
        let deleted = delivery::Entity::delete_many()
            .filter(delivery::Column::ReceivedAt.lt(cutoff))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}
