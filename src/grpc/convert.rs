//! Conversions between protobuf messages and domain/store types.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use super::pb;
use super::status::invalid_argument;
use crate::core::UserView;
use crate::domain::{AccountState, ReadinessState, ReportType};
use crate::store::{AccountRecord, ReportRecord};

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
    match pb::ReadinessState::try_from(value) {
        Ok(pb::ReadinessState::Unspecified) => Ok(None),
        Ok(pb::ReadinessState::NoAccounts) => Ok(Some(ReadinessState::NoAccounts)),
        Ok(pb::ReadinessState::Pending) => Ok(Some(ReadinessState::Pending)),
        Ok(pb::ReadinessState::Ready) => Ok(Some(ReadinessState::Ready)),
        Ok(pb::ReadinessState::Blocked) => Ok(Some(ReadinessState::Blocked)),
        Err(_) => Err(invalid_argument(
            field,
            format!("unknown readiness state {value}"),
        )),
    }
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

/// A report type filter: `Ok(None)` for any type, `Ok(Some(None))` for unknown types only,
/// `Ok(Some(Some(name)))` for one known type.
pub fn report_type_filter(value: i32) -> Result<Option<Option<&'static str>>, Status> {
    let known = |t: ReportType| match t {
        ReportType::Voie => "voie",
        ReportType::Voe => "voe",
        ReportType::VoieMortgage => "voie-mortgage",
        ReportType::VoeMortgage => "voe-mortgage",
        ReportType::Other(_) => "",
    };
    match pb::ReportType::try_from(value) {
        Ok(pb::ReportType::Unspecified) => Ok(None),
        Ok(pb::ReportType::Voie) => Ok(Some(Some(known(ReportType::Voie)))),
        Ok(pb::ReportType::Voe) => Ok(Some(Some(known(ReportType::Voe)))),
        Ok(pb::ReportType::VoieMortgage) => Ok(Some(Some(known(ReportType::VoieMortgage)))),
        Ok(pb::ReportType::VoeMortgage) => Ok(Some(Some(known(ReportType::VoeMortgage)))),
        Ok(pb::ReportType::Other) => Ok(Some(None)),
        Err(_) => Err(invalid_argument(
            "type",
            format!("unknown report type {value}"),
        )),
    }
}

pub fn account(record: &AccountRecord) -> pb::Account {
    let error = record.error.clone().unwrap_or_default();
    pb::Account {
        account_id: record.account_id.to_string(),
        state: account_state(record.state).into(),
        error_code: error.code.unwrap_or_default(),
        error_message: error.message.unwrap_or_default(),
        last_synced_at: record.last_synced_at.map(timestamp),
        first_seen_at: Some(timestamp(record.first_seen_at)),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

pub fn user(view: &UserView) -> pb::UserReadiness {
    pb::UserReadiness {
        user_id: view.user.user_id.to_string(),
        external_id: view.user.external_id.clone().unwrap_or_default(),
        state: readiness_state(view.user.state).into(),
        since: Some(timestamp(view.user.state_since)),
        accounts: view.accounts.iter().map(account).collect(),
        updated_at: Some(timestamp(view.user.updated_at)),
    }
}

pub fn report(record: &ReportRecord) -> pb::Report {
    pb::Report {
        id: record.id.to_string(),
        argyle_report_id: record.argyle_report_id.clone().unwrap_or_default(),
        user_id: record.user_id.to_string(),
        r#type: report_type(&record.report_type).into(),
        type_name: record.report_type.as_str().to_owned(),
        generated_at: Some(timestamp(record.generated_at)),
    }
}

/// Parses a UUID request field, naming the field when it is malformed.
pub fn uuid_field<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status> {
    value.trim().parse().map_err(|_| {
        invalid_argument(
            field,
            format!("{} is not a UUID", crate::domain::echo(value)),
        )
    })
}
