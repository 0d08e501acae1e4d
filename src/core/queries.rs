//! Read-side use cases: one user's readiness, users by state, reports. Pages are keyset-based
//! (`after` the last key of the previous page), so each page costs one indexed range scan.

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Core, CoreError};
use crate::domain::{ReadinessState, ReportId, ReportType, UserId};
use crate::store::entities::{account, report, user};
use crate::store::{AccountRecord, ReportRecord, UserRecord};

/// How a caller names a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    Id(UserId),
    ExternalId(String),
}

/// How a caller names a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLookup {
    Id(ReportId),
    ArgyleId(String),
}

/// A user with every account, ordered by account id.
#[derive(Debug, Clone, PartialEq)]
pub struct UserView {
    pub user: UserRecord,
    pub accounts: Vec<AccountRecord>,
}

/// One page of a list, and whether more follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// Which reports to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub user: Option<UserId>,
    /// Only this exact Argyle type string.
    pub type_name: Option<String>,
    /// Only types this version does not know (`ReportType::Other`).
    pub unknown_types_only: bool,
}

const KNOWN_TYPES: [ReportType; 4] = [
    ReportType::Voie,
    ReportType::Voe,
    ReportType::VoieMortgage,
    ReportType::VoeMortgage,
];

impl Core {
    /// One user's readiness with every account.
    pub async fn user_readiness(&self, lookup: &UserLookup) -> Result<UserView, CoreError> {
        self.health.check_file()?;
        let row = match lookup {
            UserLookup::Id(id) => {
                // The hot path: the user and its accounts in one query (a LEFT JOIN).
                let (row, mut accounts) = user::Entity::find_by_id(id.to_string())
                    .find_with_related(account::Entity)
                    .all(&self.db)
                    .await?
                    .pop()
                    .ok_or_else(|| CoreError::NotFound(format!("user {id}")))?;
                accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
                return Ok(UserView {
                    user: UserRecord::try_from(row)?,
                    accounts: accounts
                        .into_iter()
                        .map(AccountRecord::try_from)
                        .collect::<Result<_, _>>()?,
                });
            }
            UserLookup::ExternalId(external_id) => {
                let mut rows = user::Entity::find()
                    .filter(user::Column::ExternalId.eq(external_id.as_str()))
                    .order_by_asc(user::Column::UserId)
                    .limit(2)
                    .all(&self.db)
                    .await?;
                if rows.len() > 1 {
                    return Err(CoreError::FailedPrecondition(format!(
                        "external id {external_id:?} belongs to more than one user; look up by user_id"
                    )));
                }
                rows.pop().ok_or_else(|| {
                    CoreError::NotFound(format!("user with external id {external_id:?}"))
                })?
            }
        };
        let mut views = self.with_accounts(vec![row]).await?;
        views
            .pop()
            .ok_or_else(|| CoreError::NotFound("user".into()))
    }

    /// Users ordered by id, optionally in one state, after `after`, at most `limit`.
    pub async fn list_users(
        &self,
        state: Option<ReadinessState>,
        after: Option<UserId>,
        limit: u64,
    ) -> Result<Page<UserView>, CoreError> {
        self.health.check_file()?;
        let mut query = user::Entity::find().order_by_asc(user::Column::UserId);
        if let Some(state) = state {
            query = query.filter(user::Column::State.eq(state.as_str()));
        }
        if let Some(after) = after {
            query = query.filter(user::Column::UserId.gt(after.to_string()));
        }
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok(Page {
            items: self.with_accounts(rows).await?,
            more,
        })
    }

    async fn with_accounts(&self, rows: Vec<user::Model>) -> Result<Vec<UserView>, CoreError> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let ids = rows.iter().map(|row| row.user_id.clone());
        let mut by_user: BTreeMap<String, Vec<AccountRecord>> = BTreeMap::new();
        for row in account::Entity::find()
            .filter(account::Column::UserId.is_in(ids))
            .order_by_asc(account::Column::AccountId)
            .all(&self.db)
            .await?
        {
            by_user
                .entry(row.user_id.clone())
                .or_default()
                .push(AccountRecord::try_from(row)?);
        }
        rows.into_iter()
            .map(|row| {
                let accounts = by_user.remove(&row.user_id).unwrap_or_default();
                Ok(UserView {
                    user: UserRecord::try_from(row)?,
                    accounts,
                })
            })
            .collect()
    }

    /// How many users are in each readiness state (states with none are reported as 0).
    pub async fn users_by_state(&self) -> Result<Vec<(ReadinessState, u64)>, CoreError> {
        let rows: Vec<(String, i64)> = user::Entity::find()
            .select_only()
            .column(user::Column::State)
            .column_as(user::Column::UserId.count(), "count")
            .group_by(user::Column::State)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ReadinessState::ALL
            .into_iter()
            .map(|state| {
                let count = rows
                    .iter()
                    .find(|(name, _)| name == state.as_str())
                    .map_or(0, |(_, count)| (*count).max(0) as u64);
                (state, count)
            })
            .collect())
    }

    /// One report.
    pub async fn report(&self, lookup: &ReportLookup) -> Result<ReportRecord, CoreError> {
        self.health.check_file()?;
        let (query, what) = match lookup {
            ReportLookup::Id(id) => (
                report::Entity::find().filter(report::Column::Id.eq(id.to_string())),
                format!("report {id}"),
            ),
            ReportLookup::ArgyleId(id) => (
                report::Entity::find().filter(report::Column::ArgyleReportId.eq(id.as_str())),
                format!("report with Argyle id {id:?}"),
            ),
        };
        let row = query
            .one(&self.db)
            .await?
            .ok_or(CoreError::NotFound(what))?;
        Ok(ReportRecord::try_from(row)?)
    }

    /// Reports in the order they were recorded, after sequence `after`, at most `limit`.
    pub async fn list_reports(
        &self,
        filter: &ReportFilter,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<ReportRecord>, CoreError> {
        self.health.check_file()?;
        let mut query = report::Entity::find().order_by_asc(report::Column::Seq);
        if let Some(user) = filter.user {
            query = query.filter(report::Column::UserId.eq(user.to_string()));
        }
        if let Some(name) = &filter.type_name {
            query = query.filter(report::Column::ReportType.eq(name.as_str()));
        }
        if filter.unknown_types_only {
            query = query.filter(
                report::Column::ReportType.is_not_in(KNOWN_TYPES.iter().map(|t| t.as_str())),
            );
        }
        if let Some(after) = after {
            query = query.filter(report::Column::Seq.gt(after));
        }
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok(Page {
            items: rows
                .into_iter()
                .map(ReportRecord::try_from)
                .collect::<Result<_, _>>()?,
            more,
        })
    }
}
