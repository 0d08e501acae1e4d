//! Conversions between protobuf messages and domain/core types, each written once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use super::pb;
use super::status::invalid_argument;
use crate::core::{AccountView, Cursor, ReadOptions, Report, ReportLookup, UserLookup, UserView};
use crate::domain::report::ReportOrigin;
use crate::domain::{
    AccountState, ReadinessState, ReportId, ReportStatus, ReportType, UserId, echo,
};

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn readiness_state(state: ReadinessState) -> pb::ReadinessState {
    match state {
        ReadinessState::NoAccounts => pb::ReadinessState::NoAccounts,
        ReadinessState::Pending => pb::ReadinessState::Pending,
        ReadinessState::Ready => pb::ReadinessState::Ready,
        ReadinessState::Blocked => pb::ReadinessState::Blocked,
    }
}

/// A readiness filter: `None` for UNSPECIFIED (any state).
pub fn readiness_filter(value: i32, field: &str) -> Result<Option<ReadinessState>, Status> {
    let state = pb::ReadinessState::try_from(value)
        .map_err(|_| invalid_argument(field, format!("unknown readiness state {value}")))?;
    Ok(ReadinessState::ALL
        .into_iter()
        .find(|known| readiness_state(*known) == state))
}

pub fn account_state(state: AccountState) -> pb::AccountState {
    match state {
        AccountState::Added => pb::AccountState::Added,
        AccountState::Connected => pb::AccountState::Connected,
        AccountState::Synced => pb::AccountState::Synced,
        AccountState::Failed => pb::AccountState::Failed,
        AccountState::Disconnected => pb::AccountState::Disconnected,
        AccountState::Removed => pb::AccountState::Removed,
    }
}

pub fn report_type(report_type: &ReportType) -> pb::ReportType {
    match report_type {
        ReportType::Voie => pb::ReportType::Voie,
        ReportType::Voe => pb::ReportType::Voe,
        ReportType::VoieMortgage => pb::ReportType::VoieMortgage,
        ReportType::VoeMortgage => pb::ReportType::VoeMortgage,
        ReportType::Other(_) => pb::ReportType::Other,
    }
}

/// A report type filter, as (exact Argyle type, unknown types only): UNSPECIFIED is any type,
/// a known type its Argyle spelling, OTHER the types this version does not know.
pub fn report_type_filter(value: i32) -> Result<(Option<&'static str>, bool), Status> {
    let wanted = pb::ReportType::try_from(value)
        .map_err(|_| invalid_argument("type", format!("unknown report type {value}")))?;
    Ok(match wanted {
        pb::ReportType::Unspecified => (None, false),
        pb::ReportType::Other => (None, true),
        known => (
            ReportType::KNOWN
                .iter()
                .find(|t| report_type(t) == known)
                .and_then(ReportType::known_name),
            false,
        ),
    })
}

pub fn account(account: &AccountView) -> pb::Account {
    let error = account.error.as_deref().cloned().unwrap_or_default();
    pb::Account {
        account_id: account.id.to_string(),
        state: account_state(account.state).into(),
        error_code: error.code.unwrap_or_default(),
        error_message: error.message.unwrap_or_default(),
        last_synced_at: account.last_synced_at.map(timestamp),
        first_seen_at: Some(timestamp(account.first_seen_at)),
        updated_at: Some(timestamp(account.updated_at)),
    }
}

pub fn user(user: &UserView) -> pb::UserReadiness {
    pb::UserReadiness {
        user_id: user.id.to_string(),
        external_id: user.external_id().unwrap_or_default().to_owned(),
        state: readiness_state(user.readiness).into(),
        since: Some(timestamp(user.since)),
        accounts: user.accounts.iter().map(account).collect(),
        updated_at: Some(timestamp(user.updated_at)),
        data_as_of: user.data_as_of.map(timestamp),
        external_ids: user.external_ids.clone(),
    }
}

pub fn report_status(status: ReportStatus) -> pb::ReportStatus {
    match status {
        ReportStatus::Requested => pb::ReportStatus::Requested,
        ReportStatus::WaitingForSync => pb::ReportStatus::WaitingForSync,
        ReportStatus::Generating => pb::ReportStatus::Generating,
        ReportStatus::Generated => pb::ReportStatus::Generated,
        ReportStatus::Failed => pb::ReportStatus::Failed,
        ReportStatus::Refused => pb::ReportStatus::Refused,
    }
}

/// A report status filter: `None` for UNSPECIFIED (any status).
pub fn report_status_filter(value: i32) -> Result<Option<ReportStatus>, Status> {
    let wanted = pb::ReportStatus::try_from(value)
        .map_err(|_| invalid_argument("status", format!("unknown report status {value}")))?;
    Ok(ReportStatus::ALL
        .into_iter()
        .find(|status| report_status(*status) == wanted))
}

fn report_origin(origin: ReportOrigin) -> pb::ReportOrigin {
    match origin {
        ReportOrigin::Announced => pb::ReportOrigin::Announced,
        ReportOrigin::Automatic => pb::ReportOrigin::Automatic,
        ReportOrigin::Requested => pb::ReportOrigin::Requested,
    }
}

/// A JSON value as a `google.protobuf.Struct` (`None` unless it is an object).
fn metadata(value: &serde_json::Value) -> Option<prost_types::Struct> {
    let serde_json::Value::Object(map) = value else {
        return None;
    };
    Some(prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), protobuf_value(v)))
            .collect(),
    })
}

fn protobuf_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(protobuf_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(metadata(value).unwrap_or_default()),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as JSON (an empty object when absent).
pub fn json_metadata(value: Option<prost_types::Struct>) -> serde_json::Value {
    fn json(value: prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match value.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => b.into(),
            Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Some(Kind::StringValue(s)) => s.into(),
            Some(Kind::ListValue(list)) => list.values.into_iter().map(json).collect(),
            Some(Kind::StructValue(fields)) => object(fields),
        }
    }
    fn object(value: prost_types::Struct) -> serde_json::Value {
        serde_json::Value::Object(
            value
                .fields
                .into_iter()
                .map(|(k, v)| (k, json(v)))
                .collect(),
        )
    }
    value.map_or_else(|| serde_json::json!({}), object)
}

pub fn report(report: &Report) -> pb::Report {
    let details = &report.details;
    pb::Report {
        id: report.id.to_string(),
        argyle_report_id: report.argyle_report_id.clone().unwrap_or_default(),
        user_id: report.user.to_string(),
        r#type: report_type(&report.report_type).into(),
        type_name: report.report_type.as_str().to_owned(),
        generated_at: report.announced_at.map(timestamp),
        status: report_status(report.status).into(),
        status_reason: report.status_reason.clone().unwrap_or_default(),
        file_url: details.file_url.clone().unwrap_or_default(),
        json_url: details.json_url.clone().unwrap_or_default(),
        argyle_created_at: details.created_at.map(timestamp),
        last_synced_at: details.last_synced_at.map(timestamp),
        accounts: details
            .accounts
            .iter()
            .map(|account| pb::ReportAccount {
                account_id: account.account.to_string(),
                item: account.item.clone().unwrap_or_default(),
                last_synced_at: account.last_synced_at.map(timestamp),
            })
            .collect(),
        metadata: metadata(&details.metadata),
        external_id: details.external_id.clone().unwrap_or_default(),
        origin: report_origin(report.origin).into(),
        request_id: report.request_id.clone().unwrap_or_default(),
        requested_at: report.requested_at.map(timestamp),
        updated_at: Some(timestamp(report.updated_at)),
    }
}

/// A report as a `report_generated` event describes it: its snapshot, or (events logged before
/// snapshots existed) what the announcement said, generated at the event's time.
pub fn announced_report(
    id: ReportId,
    user: UserId,
    report_type: &ReportType,
    argyle_report_id: Option<&str>,
    generated_at: DateTime<Utc>,
) -> pb::Report {
    pb::Report {
        id: id.to_string(),
        argyle_report_id: argyle_report_id.unwrap_or_default().to_owned(),
        user_id: user.to_string(),
        r#type: self::report_type(report_type).into(),
        type_name: report_type.as_str().to_owned(),
        generated_at: Some(timestamp(generated_at)),
        status: pb::ReportStatus::Generated.into(),
        origin: pb::ReportOrigin::Announced.into(),
        updated_at: Some(timestamp(generated_at)),
        ..pb::Report::default()
    }
}

/// What a request's `user` or `report` oneof names: our id, or the external one (a user's
/// `external_id`, a report's `argyle_report_id`).
pub enum Named {
    Id(String),
    External(String),
}

impl Named {
    /// The same, the external id without surrounding whitespace.
    pub fn trimmed(self) -> Self {
        match self {
            Named::External(id) => Named::External(id.trim().to_owned()),
            id => id,
        }
    }
}

macro_rules! named_from_oneofs {
    ($($module:ident::$oneof:ident { $id:ident, $external:ident }),+ $(,)?) => {$(
        impl From<pb::$module::$oneof> for Named {
            fn from(named: pb::$module::$oneof) -> Self {
                match named {
                    pb::$module::$oneof::$id(id) => Named::Id(id),
                    pb::$module::$oneof::$external(id) => Named::External(id),
                }
            }
        }
    )+};
}

named_from_oneofs!(
    get_user_readiness_request::User { UserId, ExternalId },
    request_report_request::User { UserId, ExternalId },
    get_report_request::Report { Id, ArgyleReportId },
    get_report_document_request::Report { Id, ArgyleReportId },
);

/// The user a request's `user` oneof names; its external id without surrounding whitespace, as
/// external ids are stored (`domain::normalize_external_id`).
pub fn user_lookup(named: Option<Named>) -> Result<UserLookup, Status> {
    match named.map(Named::trimmed) {
        Some(Named::Id(id)) => Ok(UserLookup::Id(uuid_field("user_id", &id)?)),
        Some(Named::External(id)) if !id.is_empty() => Ok(UserLookup::ExternalId(id)),
        Some(Named::External(_)) => Err(invalid_argument("external_id", "must not be empty")),
        None => Err(invalid_argument("user", "set user_id or external_id")),
    }
}

/// The report a request's `report` oneof names; its Argyle id without surrounding whitespace.
pub fn report_lookup(named: Option<Named>) -> Result<ReportLookup, Status> {
    match named.map(Named::trimmed) {
        Some(Named::Id(id)) => Ok(ReportLookup::Id(uuid_field("id", &id)?)),
        Some(Named::External(id)) if !id.is_empty() => Ok(ReportLookup::ArgyleId(id)),
        Some(Named::External(_)) => Err(invalid_argument("argyle_report_id", "must not be empty")),
        None => Err(invalid_argument("report", "set id or argyle_report_id")),
    }
}

/// Parses a UUID request field, naming the field when it is malformed.
pub fn uuid_field<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_argument(field, format!("{} is not a UUID", echo(value))))
}

/// How a read may be answered: its `min_cursor` (empty for none), and the caller's deadline
/// from `grpc-timeout`, brought forward a little so that the caller gets this service's
/// DEADLINE_EXCEEDED rather than its own cancellation.
pub fn read_options(
    metadata: &tonic::metadata::MetadataMap,
    min_cursor: &str,
) -> Result<ReadOptions, Status> {
    let min_cursor = match min_cursor.trim() {
        "" => None,
        text => Some(Cursor::decode(text).ok_or_else(|| {
            invalid_argument(
                "min_cursor",
                format!("{} is not a cursor this service issued", echo(text)),
            )
        })?),
    };
    let deadline = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(grpc_timeout)
        .map(|timeout| tokio::time::Instant::now() + timeout.mul_f64(0.9));
    Ok(ReadOptions {
        min_cursor,
        deadline,
    })
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_nonsense_is_ignored() {
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "1x", "-1m", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
