//! Domain events: what changed, as appended to the ordered event log in the same transaction as
//! the change itself. Streams and other readers consume them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::Report;
use super::{AccountId, AccountState, ReadinessState, ReportId, UserId};

/// One change clients care about. The JSON form (tagged by `kind`) is what the log stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DomainEvent {
    /// An account's derived state changed (`from` is `None` for a new account).
    AccountChanged {
        user: UserId,
        account: AccountId,
        from: Option<AccountState>,
        to: AccountState,
    },
    /// A user's readiness changed (`from` is `None` for a new user).
    ReadinessChanged {
        user: UserId,
        from: Option<ReadinessState>,
        to: ReadinessState,
    },
    /// Argyle announced a report (`reports.generated`).
    ReportGenerated {
        report: ReportId,
        user: UserId,
        report_type: String,
        argyle_report_id: Option<String>,
        /// The report as of the announcement (absent from events logged by older versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<Box<Report>>,
    },
    /// A report changed: requested (or refused), its status, or what Argyle's API tells of it.
    /// Carries the report as of the change.
    ReportUpdated { report: Box<Report> },
}

impl DomainEvent {
    /// The stable kind name stored beside the payload, for filtering without parsing.
    pub fn kind(&self) -> &'static str {
        match self {
            DomainEvent::AccountChanged { .. } => "account_changed",
            DomainEvent::ReadinessChanged { .. } => "readiness_changed",
            DomainEvent::ReportGenerated { .. } => "report_generated",
            DomainEvent::ReportUpdated { .. } => "report_updated",
        }
    }

    /// The user the event is about.
    pub fn user(&self) -> UserId {
        match self {
            DomainEvent::AccountChanged { user, .. }
            | DomainEvent::ReadinessChanged { user, .. }
            | DomainEvent::ReportGenerated { user, .. } => *user,
            DomainEvent::ReportUpdated { report } => report.user,
        }
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log: the stable event id and the basis of cursors.
    pub seq: i64,
    /// When the transaction that appended it stored it.
    pub recorded_at: DateTime<Utc>,
    pub event: DomainEvent,
}
