//! The inbox's SQL: listing and showing stored deliveries, locking one for a replay inside a
//! batch and recording its new verdict, and pruning old bodies.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::entities::delivery;
use super::rows::parse_name;
use super::{Batch, Store, StoreError};
use crate::domain::inbox::{InboxFilter, StoredDelivery};
use crate::domain::{DeliveryStatus, UserId};

fn summary(row: &delivery::Model) -> Result<StoredDelivery, StoreError> {
    Ok(StoredDelivery {
        id: row.id,
        received_at: row.received_at,
        status: parse_name("deliveries", &row.status)?,
        event: row.event_name.clone(),
        user_id: row.user_id.clone(),
        error: row.error.clone(),
        body_sha256: row.body_sha256.clone(),
        body_bytes: row.body.len(),
    })
}

/// A delivery's new verdict after a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub event_name: Option<String>,
    pub user: Option<UserId>,
}

impl Store {
    /// Deliveries matching `filter`, oldest first.
    pub async fn deliveries(
        &self,
        filter: &InboxFilter,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let mut query = delivery::Entity::find().order_by_asc(delivery::Column::Id);
        if let Some(status) = filter.status {
            query = query.filter(delivery::Column::Status.eq(status.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(delivery::Column::ReceivedAt.gte(since));
        }
        if let Some(after) = filter.after_id {
            query = query.filter(delivery::Column::Id.gt(after));
        }
        let rows = query.limit(filter.limit.max(1)).all(&self.db).await?;
        rows.iter().map(summary).collect()
    }

    /// One delivery with its raw body.
    pub async fn delivery(&self, id: i64) -> Result<Option<(StoredDelivery, Vec<u8>)>, StoreError> {
        match delivery::Entity::find_by_id(id).one(&self.db).await? {
            Some(row) => Ok(Some((summary(&row)?, row.body))),
            None => Ok(None),
        }
    }

    /// Ids of every delivery with `status`, oldest first.
    pub async fn delivery_ids(&self, status: DeliveryStatus) -> Result<Vec<i64>, StoreError> {
        Ok(delivery::Entity::find()
            .select_only()
            .column(delivery::Column::Id)
            .filter(delivery::Column::Status.eq(status.as_str()))
            .order_by_asc(delivery::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// How many raw deliveries were received before `cutoff`.
    pub async fn deliveries_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(delivery::Entity::find()
            .filter(delivery::Column::ReceivedAt.lt(cutoff))
            .count(&self.db)
            .await?)
    }

    /// Deletes the oldest `limit` raw deliveries received before `cutoff`, in one statement;
    /// returns how many (0 when none are left).
    pub async fn prune_deliveries(
        &self,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let oldest = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::Id)
            .filter(delivery::Column::ReceivedAt.lt(cutoff))
            .order_by_asc(delivery::Column::Id)
            .limit(limit)
            .into_query();
        let deleted = delivery::Entity::delete_many()
            .filter(delivery::Column::Id.in_subquery(oldest))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}

impl Batch {
    /// Locks one stored delivery for a replay; its raw body.
    pub async fn delivery_for_replay(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(delivery::Entity::find_by_id(id)
            .lock_exclusive()
            .one(self.conn().await?)
            .await?
            .map(|row| row.body))
    }

    /// Records a replayed delivery's verdict; returns its summary.
    pub async fn record_verdict(
        &self,
        id: i64,
        verdict: Verdict,
    ) -> Result<StoredDelivery, StoreError> {
        let row = delivery::Entity::find_by_id(id)
            .one(self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                table: "deliveries",
                detail: format!("delivery {id} vanished during its replay"),
            })?;
        let mut model = row.into_active_model();
        model.status = Set(verdict.status.as_str().to_owned());
        model.error = Set(verdict.error);
        model.event_name = Set(verdict.event_name);
        model.user_id = Set(verdict.user.map(|user| user.to_string()));
        let row = model.update(self.conn().await?).await?;
        summary(&row)
    }
}
