//! Read-side use cases: one user's readiness, users by state, reports. Lists are keyset-paged:
//! the caller passes the last key of the previous page (`after`) and how many it wants.

use std::sync::Arc;

use super::log::Cursor;
use super::read_model::{AsOf, ReadOptions};
use super::{Core, CoreError};
use crate::domain::report::Report;
use crate::domain::user::UserView;
use crate::domain::{ReadinessState, ReportId, ReportType, UserId, echo};
use crate::store::{ReportKey, ReportQuery, UserQuery};

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

/// Which users to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub state: Option<ReadinessState>,
    /// Only users that ever had this external id.
    pub external_id: Option<String>,
}

/// A report with its position in the order reports were recorded (the paging key).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportView {
    pub position: i64,
    pub report: Report,
}

/// Which reports to list or stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub user: Option<UserId>,
    /// Only this exact Argyle type string.
    pub type_name: Option<String>,
    /// Only types this version does not know ([`ReportType::Other`]).
    pub unknown_types_only: bool,
    /// Only reports in this status.
    pub status: Option<crate::domain::ReportStatus>,
}

impl ReportFilter {
    /// True when a report of `user` with Argyle type `type_name` passes the filter (the same
    /// rule the database query applies, for streams).
    pub fn matches(&self, user: UserId, type_name: &str) -> bool {
        self.user.is_none_or(|wanted| wanted == user)
            && self
                .type_name
                .as_deref()
                .is_none_or(|wanted| wanted == type_name)
            && (!self.unknown_types_only
                || matches!(ReportType::from_argyle(type_name), ReportType::Other(_)))
    }
}

impl Core {
    /// One user's readiness with every account, from the read model, with the log position
    /// the answer reflects (at or after `options.min_cursor`).
    pub async fn user_readiness(
        &self,
        lookup: &UserLookup,
        options: &ReadOptions,
    ) -> Result<AsOf<Arc<UserView>>, CoreError> {
        self.health.check_file()?;
        self.reach(options).await?;
        let id = match lookup {
            UserLookup::Id(id) => *id,
            UserLookup::ExternalId(external_id) => match *self.holders(external_id).await? {
                [id] => id,
                [] => {
                    return Err(CoreError::NotFound(format!(
                        "user with external id {}",
                        echo(external_id)
                    )));
                }
                _ => {
                    return Err(CoreError::FailedPrecondition(format!(
                        "external id {} belongs to more than one user; look up by user_id",
                        echo(external_id)
                    )));
                }
            },
        };
        self.user_view(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("user {id}")))
    }

    /// Users ordered by id, matching `filter`, after `after`, at most `limit`, read from the
    /// database with the log position of the same snapshot.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: u64,
        options: &ReadOptions,
    ) -> Result<AsOf<Vec<UserView>>, CoreError> {
        self.health.check_file()?;
        let query = UserQuery {
            state: filter.state,
            external_id: filter.external_id.clone(),
        };
        let users = self.store.users_as_of(&query, after, limit).await?;
        listed(options, users, |user| UserView::from(&user))
    }

    /// One report, read fresh from the database (for the pipeline's own use).
    pub async fn report(&self, lookup: &ReportLookup) -> Result<Report, CoreError> {
        self.health.check_file()?;
        let found = self.store.report(report_key(lookup)).await?;
        found
            .map(|(_, report)| report)
            .ok_or_else(|| not_found(lookup))
    }

    /// One report from the read model, with the log position the answer reflects (at or after
    /// `options.min_cursor`).
    pub async fn report_as_of(
        &self,
        lookup: &ReportLookup,
        options: &ReadOptions,
    ) -> Result<AsOf<Report>, CoreError> {
        self.health.check_file()?;
        self.reach(options).await?;
        let found = self.report_view(report_key(lookup)).await?;
        found
            .map(|found| AsOf {
                value: found.value.1.clone(),
                cursor: found.cursor,
            })
            .ok_or_else(|| not_found(lookup))
    }

    /// Reports in the order they were recorded, after position `after`, at most `limit`, read
    /// from the database with the log position of the same snapshot.
    pub async fn list_reports(
        &self,
        filter: &ReportFilter,
        after: Option<i64>,
        limit: u64,
        options: &ReadOptions,
    ) -> Result<AsOf<Vec<ReportView>>, CoreError> {
        self.health.check_file()?;
        let query = ReportQuery {
            user: filter.user,
            type_name: filter.type_name.clone(),
            status: filter.status,
            excluding_types: if filter.unknown_types_only {
                ReportType::KNOWN
                    .iter()
                    .filter_map(ReportType::known_name)
                    .collect()
            } else {
                vec![]
            },
        };
        let reports = self.store.reports_as_of(&query, after, limit).await?;
        listed(options, reports, |(position, report)| ReportView {
            position,
            report,
        })
    }
}

/// A list read from the database at log position `position`, as views. Such a list has every
/// committed event: a `min_cursor` beyond its position is beyond the log.
fn listed<R, V>(
    options: &ReadOptions,
    (rows, position): (Vec<R>, i64),
    view: impl FnMut(R) -> V,
) -> Result<AsOf<Vec<V>>, CoreError> {
    match options.min_cursor {
        Some(min) if min.0 > position => Err(CoreError::FailedPrecondition(format!(
            "min_cursor is ahead of this service's event log (at most {}): it was issued by \
             another deployment or the log was reset",
            Cursor(position).encode()
        ))),
        _ => Ok(AsOf {
            value: rows.into_iter().map(view).collect(),
            cursor: Cursor(position),
        }),
    }
}

fn report_key(lookup: &ReportLookup) -> ReportKey<'_> {
    match lookup {
        ReportLookup::Id(id) => ReportKey::Id(*id),
        ReportLookup::ArgyleId(id) => ReportKey::Argyle(id),
    }
}

fn not_found(lookup: &ReportLookup) -> CoreError {
    CoreError::NotFound(match lookup {
        ReportLookup::Id(id) => format!("report {id}"),
        ReportLookup::ArgyleId(id) => format!("report with Argyle id {}", echo(id)),
    })
}
