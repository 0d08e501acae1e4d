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
    /// Internal, never streamed: something a query answers changed that no other event of the
    /// same commit tells (a newer sync time, an error text, a new external id, a report's
    /// details). With it every change to a query's answer is in the log, so each replica's read
    /// model knows which views changed and at which position.
    ViewChanged {
        user: UserId,
        /// Reports of the user that changed without a report event of their own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reports: Vec<ReportId>,
        /// External ids first reported for the user.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        external_ids: Vec<String>,
    },
}

impl DomainEvent {
    /// The stable kind name stored beside the payload, for filtering without parsing.
    pub fn kind(&self) -> &'static str {
        match self {
            DomainEvent::AccountChanged { .. } => "account_changed",
            DomainEvent::ReadinessChanged { .. } => "readiness_changed",
            DomainEvent::ReportGenerated { .. } => "report_generated",
            DomainEvent::ReportUpdated { .. } => "report_updated",
            DomainEvent::ViewChanged { .. } => "view_changed",
        }
    }

    /// The user the event is about.
    pub fn user(&self) -> UserId {
        match self {
            DomainEvent::AccountChanged { user, .. }
            | DomainEvent::ReadinessChanged { user, .. }
            | DomainEvent::ReportGenerated { user, .. }
            | DomainEvent::ViewChanged { user, .. } => *user,
            DomainEvent::ReportUpdated { report } => report.user,
        }
    }

    /// The report whose view the event changes, if any ([`DomainEvent::ViewChanged`] may name
    /// several: see [`DomainEvent::changed_reports`]).
    pub fn report(&self) -> Option<ReportId> {
        match self {
            DomainEvent::ReportGenerated { report, .. } => Some(*report),
            DomainEvent::ReportUpdated { report } => Some(report.id),
            _ => None,
        }
    }

    /// Every report whose view the event changes.
    pub fn changed_reports(&self) -> Vec<ReportId> {
        match self {
            DomainEvent::ViewChanged { reports, .. } => reports.clone(),
            other => other.report().into_iter().collect(),
        }
    }

    /// True for the kinds streams deliver; the others are internal to the read model.
    pub fn is_streamed(&self) -> bool {
        !matches!(self, DomainEvent::ViewChanged { .. })
    }
}

/// Every kind the log holds.
pub const ALL_KINDS: &[&str] = &[
    "account_changed",
    "readiness_changed",
    "report_generated",
    "report_updated",
    "view_changed",
];
/// The kinds a stream of readiness changes reads from the log.
pub const READINESS_KINDS: &[&str] = &["readiness_changed"];
/// The kinds a stream of report announcements reads from the log.
pub const ANNOUNCEMENT_KINDS: &[&str] = &["report_generated"];
/// The kinds a stream of every report change reads from the log.
pub const REPORT_KINDS: &[&str] = &["report_generated", "report_updated"];

impl DomainEvent {
    /// Events telling what changed of each of `users` that no event in `events` tells: a
    /// [`DomainEvent::ViewChanged`] per user whose view changed without an event naming the
    /// user, or with reports or external ids those events do not cover.
    pub fn uncovered_changes<'u>(
        events: &[DomainEvent],
        users: impl IntoIterator<Item = &'u super::user::User>,
    ) -> Vec<DomainEvent> {
        let mut told_users = std::collections::HashSet::new();
        let mut told_reports = std::collections::HashSet::new();
        for event in events {
            told_users.insert(event.user());
            told_reports.extend(event.changed_reports());
        }
        users
            .into_iter()
            .filter_map(|user| {
                let changes = user.changes();
                let changed = changes.user
                    || !changes.accounts.is_empty()
                    || !changes.reports.is_empty()
                    || !changes.new_external_ids.is_empty();
                let reports: Vec<ReportId> = changes
                    .reports
                    .iter()
                    .filter(|report| !told_reports.contains(*report))
                    .copied()
                    .collect();
                let external_ids: Vec<String> = changes.new_external_ids.iter().cloned().collect();
                let needed = changed
                    && (!told_users.contains(&user.id)
                        || !reports.is_empty()
                        || !external_ids.is_empty());
                needed.then_some(DomainEvent::ViewChanged {
                    user: user.id,
                    reports,
                    external_ids,
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::at;
    use crate::domain::user::{DeliveryRef, User};
    use uuid::Uuid;

    fn user(n: u128) -> UserId {
        UserId(Uuid::from_u128(n))
    }

    /// A user as the store holds it: nothing changed yet.
    fn stored(n: u128) -> User {
        User::restore(
            user(n),
            Default::default(),
            ReadinessState::NoAccounts,
            at(0),
            at(0),
            at(0),
            [],
            [],
        )
    }

    /// A stored user that then learns an external id.
    fn renamed(n: u128) -> User {
        let mut loaded = stored(n);
        let event = crate::domain::argyle::ArgyleEvent::ReportsReady {
            user: user(n),
            external_id: Some(format!("applicant-{n}")),
            accounts: vec![],
        };
        let delivery = DeliveryRef {
            id: 1,
            content_key: "k",
            at: at(1),
        };
        loaded
            .apply(&event, &delivery, &mut Default::default())
            .unwrap();
        loaded
    }

    #[test]
    fn every_kind_is_listed() {
        let event = DomainEvent::ViewChanged {
            user: user(1),
            reports: vec![],
            external_ids: vec![],
        };
        assert!(ALL_KINDS.contains(&event.kind()));
        for kinds in [READINESS_KINDS, ANNOUNCEMENT_KINDS, REPORT_KINDS] {
            assert!(kinds.iter().all(|kind| ALL_KINDS.contains(kind)));
        }
    }

    #[test]
    fn a_change_no_event_tells_is_logged_as_an_internal_view_change() {
        let users = [renamed(1)];
        let internal = DomainEvent::uncovered_changes(&[], &users);
        assert_eq!(
            internal,
            vec![DomainEvent::ViewChanged {
                user: user(1),
                reports: vec![],
                external_ids: vec!["applicant-1".into()],
            }]
        );
        assert!(!internal[0].is_streamed());
    }

    #[test]
    fn a_user_without_changes_needs_no_internal_entry() {
        assert!(DomainEvent::uncovered_changes(&[], [&stored(2)]).is_empty());
    }
}
