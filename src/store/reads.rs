//! Read queries: users with their accounts, reports. Lists are keyset-paged (`after` the last key
//! of the previous page), so each page costs one indexed range scan; they read one row more than
//! asked for, so that the caller knows whether another page follows.

use std::collections::HashMap;

use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entities::{account, report, user, user_external_id};
use super::pg_rows::one_of;
use super::rows::{report_from_row, user_from_rows};
use super::{Store, StoreError};
use crate::domain::report::Report;
use crate::domain::user::User;
use crate::domain::{ReadinessState, ReportId, UserId};

/// Which users to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    pub state: Option<ReadinessState>,
    /// Only users that ever had this external id.
    pub external_id: Option<String>,
}

impl UserQuery {
    fn external_id(external_id: &str) -> Self {
        Self {
            external_id: Some(external_id.to_owned()),
            ..Self::default()
        }
    }
}

/// How a report is named: by this service's id or by Argyle's report id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKey<'a> {
    Id(ReportId),
    Argyle(&'a str),
}

/// Which reports to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportQuery {
    pub user: Option<UserId>,
    /// Only this exact Argyle type string.
    pub type_name: Option<String>,
    /// Only types other than these (Argyle's spellings of the types this version knows).
    pub excluding_types: Vec<&'static str>,
    /// Only reports in this status.
    pub status: Option<crate::domain::ReportStatus>,
}

impl Store {
    /// When the user longest in `state` entered it (`None` when no user is in it): one lookup
    /// in the `users_state_state_since` index.
    pub async fn oldest_in_state(
        &self,
        state: ReadinessState,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        Ok(user::Entity::find()
            .select_only()
            .column(user::Column::StateSince)
            .filter(user::Column::State.eq(state.as_str()))
            .order_by_asc(user::Column::StateSince)
            .limit(1)
            .into_tuple::<chrono::DateTime<chrono::Utc>>()
            .one(&self.db)
            .await?)
    }

    /// One user with every account (one query: a LEFT JOIN).
    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let Some((row, accounts)) = user::Entity::find_by_id(id.to_string())
            .find_with_related(account::Entity)
            .all(&self.db)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        user_from_rows(row, accounts, vec![]).map(Some)
    }

    /// Users that ever had the external id `external_id`, at most `limit`, with their accounts.
    pub async fn users_by_external_id(
        &self,
        external_id: &str,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        self.users(&UserQuery::external_id(external_id), None, limit)
            .await
    }

    /// Users ordered by id, after `after`, at most `limit`, matching `query`.
    pub async fn users(
        &self,
        query: &UserQuery,
        after: Option<UserId>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        users_in(&self.db, query, after, limit).await
    }

    /// [`Store::users`], with the log position the answer reflects, read in the same snapshot.
    pub async fn users_as_of(
        &self,
        query: &UserQuery,
        after: Option<UserId>,
        limit: u64,
    ) -> Result<(Vec<User>, i64), StoreError> {
        let txn = self.snapshot().await?;
        let position = super::log::last_seq(&txn).await?;
        let users = users_in(&txn, query, after, limit).await?;
        txn.commit().await?;
        Ok((users, position))
    }

    /// A read-only transaction that sees one snapshot of the database (PostgreSQL
    /// `REPEATABLE READ`; a SQLite read transaction always does).
    async fn snapshot(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        let postgres = self.db.get_database_backend() == sea_orm::DbBackend::Postgres;
        let txn = self
            .db
            .begin_with_config(
                postgres.then_some(sea_orm::IsolationLevel::RepeatableRead),
                postgres.then_some(sea_orm::AccessMode::ReadOnly),
            )
            .await?;
        Ok(txn)
    }

    /// One report by this service's id or by Argyle's, with its position in report order.
    pub async fn report(&self, key: ReportKey<'_>) -> Result<Option<(i64, Report)>, StoreError> {
        let filter = match key {
            ReportKey::Id(id) => report::Column::Id.eq(id.to_string()),
            ReportKey::Argyle(id) => report::Column::ArgyleReportId.eq(id),
        };
        report::Entity::find()
            .filter(filter)
            .one(&self.db)
            .await?
            .map(report_from_row)
            .transpose()
    }

    /// Reports in the order they were recorded, after position `after`, at most `limit`.
    pub async fn reports(
        &self,
        query: &ReportQuery,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, Report)>, StoreError> {
        reports_in(&self.db, query, after, limit).await
    }

    /// [`Store::reports`], with the log position the answer reflects, read in the same
    /// snapshot.
    pub async fn reports_as_of(
        &self,
        query: &ReportQuery,
        after: Option<i64>,
        limit: u64,
    ) -> Result<(Vec<(i64, Report)>, i64), StoreError> {
        let txn = self.snapshot().await?;
        let position = super::log::last_seq(&txn).await?;
        let reports = reports_in(&txn, query, after, limit).await?;
        txn.commit().await?;
        Ok((reports, position))
    }
}

/// Users ordered by id, after `after`, at most `limit`, matching `query`, with their accounts
/// (two queries).
async fn users_in(
    db: &impl ConnectionTrait,
    query: &UserQuery,
    after: Option<UserId>,
    limit: u64,
) -> Result<Vec<User>, StoreError> {
    let mut select = user::Entity::find().order_by_asc(user::Column::UserId);
    if let Some(state) = query.state {
        select = select.filter(user::Column::State.eq(state.as_str()));
    }
    if let Some(external_id) = &query.external_id {
        let holders = Query::select()
            .column(user_external_id::Column::UserId)
            .from(user_external_id::Entity)
            .and_where(user_external_id::Column::ExternalId.eq(external_id.as_str()))
            .to_owned();
        select = select.filter(user::Column::UserId.in_subquery(holders));
    }
    if let Some(after) = after {
        select = select.filter(user::Column::UserId.gt(after.to_string()));
    }
    let rows = select.limit(limit).all(db).await?;
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let ids = rows.iter().map(|row| row.user_id.clone()).collect();
    let mut by_user: HashMap<String, Vec<account::Model>> = HashMap::new();
    for row in account::Entity::find()
        .filter(one_of(
            db.get_database_backend(),
            account::Column::UserId,
            ids,
        ))
        .all(db)
        .await?
    {
        by_user.entry(row.user_id.clone()).or_default().push(row);
    }
    rows.into_iter()
        .map(|row| {
            let accounts = by_user.remove(&row.user_id).unwrap_or_default();
            user_from_rows(row, accounts, vec![])
        })
        .collect()
}

/// Reports in the order they were recorded, after position `after`, at most `limit`.
async fn reports_in(
    db: &impl ConnectionTrait,
    query: &ReportQuery,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<(i64, Report)>, StoreError> {
    let mut select = report::Entity::find().order_by_asc(report::Column::Seq);
    if let Some(user) = query.user {
        select = select.filter(report::Column::UserId.eq(user.to_string()));
    }
    if let Some(name) = &query.type_name {
        select = select.filter(report::Column::ReportType.eq(name.as_str()));
    }
    if !query.excluding_types.is_empty() {
        select = select
            .filter(report::Column::ReportType.is_not_in(query.excluding_types.iter().copied()));
    }
    if let Some(status) = query.status {
        select = select.filter(report::Column::Status.eq(status.as_str()));
    }
    if let Some(after) = after {
        select = select.filter(report::Column::Seq.gt(after));
    }
    select
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(report_from_row)
        .collect()
}
