//! Conversions between protobuf messages and domain/core types, each written once.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use super::pb;
use super::status::invalid_argument;
use crate::core::{Account, Report, User};
use crate::domain::{AccountState, ReadinessState, ReportId, ReportType, UserId, echo};

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

pub fn account(account: &Account) -> pb::Account {
    let error = account.error.clone().unwrap_or_default();
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

pub fn user(user: &User) -> pb::UserReadiness {
    pb::UserReadiness {
        user_id: user.id.to_string(),
        external_id: user.external_id().unwrap_or_default().to_owned(),
        state: readiness_state(user.readiness).into(),
        since: Some(timestamp(user.since)),
        accounts: user.accounts.values().map(account).collect(),
        updated_at: Some(timestamp(user.updated_at)),
        data_as_of: user.data_as_of().map(timestamp),
        external_ids: user.external_ids.iter().cloned().collect(),
    }
}

pub fn report(report: &Report) -> pb::Report {
    announced_report(
        report.id,
        report.user,
        &report.report_type,
        report.argyle_report_id.as_deref(),
        report.generated_at,
    )
}

/// A report as its announcement describes it (a stored report, or a `report_generated` event).
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
    }
}

/// Parses a UUID request field, naming the field when it is malformed.
pub fn uuid_field<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_argument(field, format!("{} is not a UUID", echo(value))))
}
