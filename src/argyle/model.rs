//! Argyle's API objects as this service reads them: webhook subscriptions and reports. Unknown
//! fields are ignored and unknown enum values kept, since Argyle adds both over time; missing
//! optional fields (and `null` lists) read as empty.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::domain::{AccountId, ReportType, UserId};

/// A webhook subscription as Argyle returns it (the secret is never printed).
#[derive(Clone, Deserialize, Serialize)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub url: String,
    /// Compared (so that `subscribe` with a rotated secret re-creates), never printed.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub last_sent_at: Option<String>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("events", &self.events)
            .field("config", &self.config)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("created_at", &self.created_at)
            .field("last_sent_at", &self.last_sent_at)
            .finish()
    }
}

/// A report's status. Argyle adds values over time: an unknown one is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportStatus {
    WaitingForSync,
    Generating,
    Generated,
    Failed,
    Other(String),
}

impl ReportStatus {
    /// Argyle's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ReportStatus::WaitingForSync => "waiting_for_sync",
            ReportStatus::Generating => "generating",
            ReportStatus::Generated => "generated",
            ReportStatus::Failed => "failed",
            ReportStatus::Other(name) => name,
        }
    }

    /// Reads Argyle's spelling; never fails.
    pub fn from_argyle(name: &str) -> Self {
        match name {
            "waiting_for_sync" => ReportStatus::WaitingForSync,
            "generating" => ReportStatus::Generating,
            "generated" => ReportStatus::Generated,
            "failed" => ReportStatus::Failed,
            other => ReportStatus::Other(other.to_owned()),
        }
    }
}

impl Serialize for ReportStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| ReportStatus::from_argyle(&name))
    }
}

/// A report as `GET /v2/reports/{id}` returns it. Deprecated fields (`reference_id`,
/// `generated_at`) and any field added later are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Report {
    /// Argyle's report id.
    pub id: String,
    pub user: UserId,
    #[serde(rename = "type", with = "crate::domain::report_type_name")]
    pub report_type: ReportType,
    pub status: ReportStatus,
    /// The PDF; needs the API credentials and redirects. Set once generated.
    #[serde(default)]
    pub file_url: Option<String>,
    /// The same report as JSON; as `file_url`.
    #[serde(default)]
    pub json_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// The data in the report is as of this instant.
    #[serde(default)]
    pub last_synced_at: Option<DateTime<Utc>>,
    /// The accounts the report covers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub accounts: Vec<ReportAccount>,
    /// What the requester attached (`null` when nothing).
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// One account covered by a report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ReportAccount {
    pub id: AccountId,
    /// Argyle's item (the employer or payroll platform) of the account.
    #[serde(default)]
    pub item: Option<String>,
    #[serde(default)]
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// One page of `GET /v2/reports`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPage {
    pub results: Vec<Report>,
    /// The next page's URL as Argyle gave it; `None` on the last page.
    pub next: Option<String>,
}

impl ReportPage {
    /// The `cursor` of the next page, for [`super::ArgyleClient::list_reports`].
    pub fn next_cursor(&self) -> Option<String> {
        let next = reqwest::Url::parse(self.next.as_deref()?).ok()?;
        next.query_pairs()
            .find(|(name, _)| name == "cursor")
            .map(|(_, value)| value.into_owned())
    }
}

/// A `{next, previous, results}` page as Argyle's list calls answer.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct Page<T> {
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default = "Vec::new", deserialize_with = "null_as_default")]
    pub results: Vec<T>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_report_object_reads_with_deprecated_and_unknown_fields_ignored() {
        let report: Report = serde_json::from_str(
            r#"{"id":"43a2c6c3-1e63-91e5-88e3-f9ab2dcc489b","user":"018051aa-f7a9-a0db-2f38-6cfa325e9d69",
                "type":"voie","status":"generated","file_url":"https://x/pdf","json_url":"https://x/json",
                "created_at":"2024-01-08T13:00:00.123456Z","last_synced_at":"2024-01-08T12:58:06.023659Z",
                "generated_at":"2024-01-08T13:00:05Z","reference_id":"r-1","brand_new_field":{"a":1},
                "accounts":[{"id":"0187c66e-e7e5-811c-b006-2232f00f426a","item":"item_000012345",
                             "last_synced_at":"2024-01-08T12:58:06.023659Z","extra":true}],
                "metadata":{"job":"j-1"},"external_id":"emp-7"}"#,
        )
        .unwrap();
        assert_eq!(report.status, ReportStatus::Generated);
        assert_eq!(report.report_type, ReportType::Voie);
        assert_eq!(report.accounts.len(), 1);
        assert_eq!(report.accounts[0].item.as_deref(), Some("item_000012345"));
        assert_eq!(report.metadata["job"], "j-1");
        assert_eq!(report.external_id.as_deref(), Some("emp-7"));
    }

    #[test]
    fn a_minimal_report_with_an_unknown_status_and_type_reads() {
        let report: Report = serde_json::from_str(
            r#"{"id":"r","user":"018051aa-f7a9-a0db-2f38-6cfa325e9d69","type":"voie-plus",
                "status":"queued","accounts":null,"file_url":null}"#,
        )
        .unwrap();
        assert_eq!(report.status, ReportStatus::Other("queued".into()));
        assert_eq!(report.report_type, ReportType::Other("voie-plus".into()));
        assert!(report.accounts.is_empty() && report.file_url.is_none());
        assert_eq!(report.metadata, Value::Null);
        let again: Report = serde_json::from_value(serde_json::to_value(&report).unwrap()).unwrap();
        assert_eq!(again, report, "unknown values survive a round trip");
    }

    #[test]
    fn the_next_cursor_is_read_from_the_next_link() {
        let page = |next: Option<&str>| ReportPage {
            results: vec![],
            next: next.map(str::to_owned),
        };
        assert_eq!(
            page(Some("https://a/v2/reports?user=u&limit=2&cursor=abc%3D")).next_cursor(),
            Some("abc=".into())
        );
        assert_eq!(page(None).next_cursor(), None);
    }

    #[test]
    fn a_subscription_secret_is_never_printed() {
        let subscription: Subscription = serde_json::from_str(
            r#"{"id":"1","name":"n","events":[],"url":"u","secret":"hunter2"}"#,
        )
        .unwrap();
        assert!(
            !serde_json::to_string(&subscription)
                .unwrap()
                .contains("hunter2")
        );
        assert!(!format!("{subscription:?}").contains("hunter2"));
    }
}
