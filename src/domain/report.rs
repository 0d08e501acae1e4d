//! A report: announced by Argyle (`reports.generated`), or requested by this service
//! (automatically when a user enters READY, or on request), and what Argyle's API tells of it.
//!
//! Its status only moves forward — requested → waiting for sync → generating → generated or
//! failed — whatever order the webhook and the API's answers arrive in; a refused request
//! (Argyle's daily cap, counted here) never reaches Argyle and never changes. An announcement is
//! authoritative: it makes a failed report generated.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AccountId, ReportId, ReportStatus, ReportType, UserId};

/// Who asked for a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOrigin {
    /// Announced by Argyle without a request from this service.
    Announced,
    /// Requested when the user entered READY.
    Automatic,
    /// Requested with `RequestReport`.
    Requested,
}

impl ReportOrigin {
    /// The stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOrigin::Announced => "announced",
            ReportOrigin::Automatic => "automatic",
            ReportOrigin::Requested => "requested",
        }
    }

    /// Reads a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Announced, Self::Automatic, Self::Requested]
            .into_iter()
            .find(|origin| origin.as_str() == name)
    }
}

/// An account a report covers, as Argyle lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAccount {
    pub account: AccountId,
    /// Argyle's item (the payroll provider).
    pub item: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// What Argyle's API tells of a report (`GET /v2/reports/{id}`); empty until it has been asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArgyleDetails {
    /// The PDF (needs Argyle API credentials).
    pub file_url: Option<String>,
    /// The JSON document (needs Argyle API credentials).
    pub json_url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// How fresh the report's data is.
    pub last_synced_at: Option<DateTime<Utc>>,
    pub accounts: Vec<ReportAccount>,
    /// The report's metadata at Argyle (`null` when none).
    pub metadata: serde_json::Value,
    pub external_id: Option<String>,
}

/// One report of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: ReportId,
    pub user: UserId,
    /// Argyle's id, once known (from the webhook or Argyle's answer to the request).
    pub argyle_report_id: Option<String>,
    #[serde(with = "super::report_type_name")]
    pub report_type: ReportType,
    pub status: ReportStatus,
    /// Why it failed or was refused.
    pub status_reason: Option<String>,
    pub origin: ReportOrigin,
    /// The caller's idempotency key (origin `Requested`).
    pub request_id: Option<String>,
    /// A hash of the request's arguments: the same key with other arguments is refused.
    #[serde(default)]
    pub request_fingerprint: Option<String>,
    /// When this service requested it (origins `Automatic` and `Requested`).
    pub requested_at: Option<DateTime<Utc>>,
    /// When a `reports.generated` announced it.
    pub announced_at: Option<DateTime<Utc>>,
    /// The delivery that announced it.
    pub delivery_id: Option<i64>,
    pub details: ArgyleDetails,
    /// When this service first recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When this service last changed what it knows of it.
    pub updated_at: DateTime<Utc>,
}

/// A report this service is about to ask Argyle for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: ReportId,
    pub user: UserId,
    pub report_type: ReportType,
    pub origin: ReportOrigin,
    /// The caller's idempotency key (origin `Requested`).
    pub request_id: Option<String>,
    /// A hash of the request's arguments.
    pub fingerprint: Option<String>,
    /// What Argyle keeps on the report.
    pub metadata: serde_json::Value,
}

/// Statuses in the order a report goes through them; failed and generated are both last.
fn rank(status: ReportStatus) -> u8 {
    match status {
        ReportStatus::Requested => 0,
        ReportStatus::WaitingForSync => 1,
        ReportStatus::Generating => 2,
        ReportStatus::Generated | ReportStatus::Failed => 3,
        ReportStatus::Refused => 4,
    }
}

impl Report {
    /// A report Argyle announced without a request from this service.
    pub fn announced(
        id: ReportId,
        user: UserId,
        report_type: ReportType,
        argyle_report_id: Option<String>,
        delivery_id: i64,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            user,
            argyle_report_id,
            report_type,
            status: ReportStatus::Generated,
            status_reason: None,
            origin: ReportOrigin::Announced,
            request_id: None,
            request_fingerprint: None,
            requested_at: None,
            announced_at: Some(at),
            delivery_id: Some(delivery_id),
            details: ArgyleDetails::default(),
            recorded_at: at,
            updated_at: at,
        }
    }

    /// A report this service asks Argyle for (`Requested` until Argyle answers), or refuses at
    /// once (`refusal`: the daily cap) without calling Argyle.
    pub fn requested(request: Request, refusal: Option<String>, at: DateTime<Utc>) -> Self {
        let Request {
            id,
            user,
            report_type,
            origin,
            request_id,
            fingerprint,
            metadata,
        } = request;
        Self {
            id,
            user,
            argyle_report_id: None,
            report_type,
            status: if refusal.is_some() {
                ReportStatus::Refused
            } else {
                ReportStatus::Requested
            },
            status_reason: refusal,
            origin,
            request_id,
            request_fingerprint: fingerprint,
            requested_at: Some(at),
            announced_at: None,
            delivery_id: None,
            details: ArgyleDetails {
                metadata,
                ..ArgyleDetails::default()
            },
            recorded_at: at,
            updated_at: at,
        }
    }

    /// True for a request this service made (and not refused): it counts against Argyle's cap.
    pub fn counts_against_the_cap(&self, since: DateTime<Utc>) -> bool {
        self.origin != ReportOrigin::Announced
            && self.status != ReportStatus::Refused
            && self.requested_at.is_some_and(|at| at > since)
    }

    /// Moves the status forward (never back; a refusal never changes; an announced generation
    /// overrides a failure). True when it changed.
    fn advance(&mut self, status: ReportStatus, reason: Option<String>) -> bool {
        let forward = match (self.status, status) {
            (ReportStatus::Refused, _) => false,
            (ReportStatus::Failed, ReportStatus::Generated) => true,
            (current, next) => rank(next) > rank(current),
        };
        if forward {
            self.status = status;
            self.status_reason = reason;
        }
        forward
    }

    /// A `reports.generated` names this report. True the first time (the announcement to
    /// stream); repeated announcements change nothing.
    pub fn announce(&mut self, delivery_id: i64, at: DateTime<Utc>) -> bool {
        if self.announced_at.is_some() {
            return false;
        }
        self.announced_at = Some(at);
        self.delivery_id.get_or_insert(delivery_id);
        self.advance(ReportStatus::Generated, None);
        self.updated_at = at;
        true
    }

    /// What Argyle's API answered about the report. True when anything changed.
    pub fn learn(
        &mut self,
        argyle_report_id: &str,
        status: Option<ReportStatus>,
        details: ArgyleDetails,
        at: DateTime<Utc>,
    ) -> bool {
        let mut changed = false;
        if self.status == ReportStatus::Failed && self.argyle_report_id.is_none() {
            // The request gave up before Argyle ever answered; an operator's retry reached it.
            self.status = ReportStatus::Requested;
            self.status_reason = None;
        }
        if self.argyle_report_id.is_none() {
            self.argyle_report_id = Some(argyle_report_id.to_owned());
            changed = true;
        }
        if let Some(status) = status {
            let reason = (status == ReportStatus::Failed).then(|| {
                "Argyle reports status failed: a system error prevented generation".into()
            });
            changed |= self.advance(status, reason);
        }
        if details != self.details {
            self.details = details;
            changed = true;
        }
        if changed {
            self.updated_at = at;
        }
        changed
    }

    /// The request failed for good (a refusal by Argyle, a job out of attempts). True when the
    /// status changed.
    pub fn fail(&mut self, reason: String, at: DateTime<Utc>) -> bool {
        let changed = self.advance(ReportStatus::Failed, Some(reason));
        if changed {
            self.updated_at = at;
        }
        changed
    }

    /// Records why something went wrong without changing the status (say, Argyle no longer has
    /// the report). True when the reason changed.
    pub fn note(&mut self, reason: String, at: DateTime<Utc>) -> bool {
        if self.status_reason.as_deref() == Some(reason.as_str()) {
            return false;
        }
        self.status_reason = Some(reason);
        self.updated_at = at;
        true
    }

    /// True once Argyle will not change the report any more.
    pub fn settled(&self) -> bool {
        matches!(
            self.status,
            ReportStatus::Generated | ReportStatus::Failed | ReportStatus::Refused
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::at;
    use uuid::Uuid;

    fn request(id: u128, origin: ReportOrigin) -> Request {
        Request {
            id: ReportId(Uuid::from_u128(id)),
            user: UserId(Uuid::from_u128(2)),
            report_type: ReportType::Voie,
            origin,
            request_id: None,
            fingerprint: None,
            metadata: serde_json::Value::Null,
        }
    }

    fn requested() -> Report {
        Report::requested(request(1, ReportOrigin::Automatic), None, at(0))
    }

    #[test]
    fn the_status_only_moves_forward_whatever_the_order_of_the_news() {
        use ReportStatus::*;
        let cases: &[(&[ReportStatus], ReportStatus)] = &[
            (&[Generating, Generated], Generated),
            (&[Generated, Generating], Generated),
            (&[WaitingForSync, Generating, WaitingForSync], Generating),
            (&[Failed, Generating], Failed),
            (&[Failed, Generated], Generated),
            (&[Generated, Failed], Generated),
        ];
        for (news, expected) in cases {
            let mut report = requested();
            for status in *news {
                report.learn("r", Some(*status), ArgyleDetails::default(), at(1));
            }
            assert_eq!(report.status, *expected, "{news:?}");
        }
    }

    #[test]
    fn an_announcement_is_news_once_and_generates_a_failed_report() {
        let mut report = requested();
        report.learn(
            "r",
            Some(ReportStatus::Failed),
            ArgyleDetails::default(),
            at(1),
        );
        assert!(report.announce(7, at(2)));
        assert_eq!(report.status, ReportStatus::Generated);
        assert!(!report.announce(8, at(3)));
        assert_eq!(report.delivery_id, Some(7));
    }

    #[test]
    fn a_refused_request_never_changes_status_and_does_not_count_against_the_cap() {
        let mut refused = Report::requested(
            request(3, ReportOrigin::Requested),
            Some("cap".into()),
            at(0),
        );
        assert!(!refused.counts_against_the_cap(at(0) - chrono::Duration::hours(24)));
        refused.learn(
            "r",
            Some(ReportStatus::Generated),
            ArgyleDetails::default(),
            at(1),
        );
        assert_eq!(refused.status, ReportStatus::Refused);
        assert!(requested().counts_against_the_cap(at(0) - chrono::Duration::hours(24)));
        assert!(!requested().counts_against_the_cap(at(0)));
    }
}
