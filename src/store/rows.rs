//! Rows ↔ domain values. The tables hold strings and JSON; everything above the store sees only
//! domain types. A row this version cannot read is [`StoreError::Corrupt`], never a panic.

use std::collections::BTreeSet;
use std::str::FromStr;

use sea_orm::ActiveValue::Set;

use super::StoreError;
use super::entities::{account, report, user};
use crate::domain::ReportType;
use crate::domain::account::ErrorInfo;
use crate::domain::report::{Report, ReportOrigin};
use crate::domain::user::{Account, User};

/// Reads a column that holds one of our stable names.
pub(crate) fn parse_name<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("unknown name {value:?}"),
    })
}

/// Reads a column that holds an id.
pub(crate) fn parse_id<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("malformed id {value:?}"),
    })
}

pub(crate) fn account_from_row(row: account::Model) -> Result<Account, StoreError> {
    let facts = serde_json::from_str(&row.facts).map_err(|error| StoreError::Corrupt {
        table: "accounts",
        detail: format!("facts of {}: {error}", row.account_id),
    })?;
    let error = (row.error_code.is_some() || row.error_message.is_some()).then_some(ErrorInfo {
        code: row.error_code,
        message: row.error_message,
    });
    Ok(Account {
        id: parse_id("accounts", &row.account_id)?,
        facts,
        state: parse_name("accounts", &row.state)?,
        error,
        last_synced_at: row.last_synced_at,
        first_seen_at: row.first_seen_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn account_row(
    user: &User,
    account: &Account,
) -> Result<account::ActiveModel, StoreError> {
    let facts = serde_json::to_string(&account.facts).map_err(|error| StoreError::Corrupt {
        table: "accounts",
        detail: format!("facts of {} do not serialise: {error}", account.id),
    })?;
    let error = account.error.clone().unwrap_or_default();
    Ok(account::ActiveModel {
        account_id: Set(account.id.to_string()),
        user_id: Set(user.id.to_string()),
        state: Set(account.state.as_str().to_owned()),
        facts: Set(facts),
        error_code: Set(error.code),
        error_message: Set(error.message),
        last_synced_at: Set(account.last_synced_at),
        first_seen_at: Set(account.first_seen_at),
        updated_at: Set(account.updated_at),
    })
}

/// A user from its row, its accounts' rows and the report rows the caller wants it to know.
pub(crate) fn user_from_rows(
    row: user::Model,
    accounts: Vec<account::Model>,
    reports: Vec<Report>,
) -> Result<User, StoreError> {
    let accounts = accounts
        .into_iter()
        .map(account_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut external_ids: BTreeSet<String> =
        serde_json::from_str(&row.external_ids).map_err(|error| StoreError::Corrupt {
            table: "users",
            detail: format!("external ids of {}: {error}", row.user_id),
        })?;
    // Rows written before the set existed hold their one id in `external_id` only.
    external_ids.extend(row.external_id);
    Ok(User::restore(
        parse_id("users", &row.user_id)?,
        external_ids,
        parse_name("users", &row.state)?,
        row.state_since,
        row.created_at,
        row.updated_at,
        accounts,
        reports,
    ))
}

pub(crate) fn user_row(user: &User) -> user::ActiveModel {
    user::ActiveModel {
        user_id: Set(user.id.to_string()),
        external_id: Set(user.external_id().map(str::to_owned)),
        external_ids: Set(serde_json::json!(user.external_ids).to_string()),
        state: Set(user.readiness.as_str().to_owned()),
        state_since: Set(user.since),
        created_at: Set(user.created_at),
        updated_at: Set(user.updated_at),
    }
}

pub(crate) fn report_from_row(row: report::Model) -> Result<(i64, Report), StoreError> {
    let details = serde_json::from_str(&row.details).map_err(|error| StoreError::Corrupt {
        table: "reports",
        detail: format!("details of {}: {error}", row.id),
    })?;
    let origin = ReportOrigin::from_name(&row.origin).ok_or_else(|| StoreError::Corrupt {
        table: "reports",
        detail: format!("unknown origin {:?}", row.origin),
    })?;
    Ok((
        row.seq,
        Report {
            id: parse_id("reports", &row.id)?,
            user: parse_id("reports", &row.user_id)?,
            argyle_report_id: row.argyle_report_id,
            report_type: ReportType::from_argyle(&row.report_type),
            status: parse_name("reports", &row.status)?,
            status_reason: row.status_reason,
            origin,
            request_id: row.request_id,
            request_fingerprint: row.request_fingerprint,
            requested_at: row.requested_at,
            announced_at: row.announced_at,
            delivery_id: (row.delivery_id != NO_DELIVERY).then_some(row.delivery_id),
            details,
            recorded_at: row.generated_at,
            updated_at: row.updated_at.unwrap_or(row.generated_at),
        },
    ))
}

/// `reports.delivery_id` of a report no delivery announced (the column is NOT NULL).
const NO_DELIVERY: i64 = 0;

pub(crate) fn report_row(report: &Report) -> Result<report::ActiveModel, StoreError> {
    let details = serde_json::to_string(&report.details).map_err(|error| StoreError::Corrupt {
        table: "reports",
        detail: format!("details of {} do not serialise: {error}", report.id),
    })?;
    Ok(report::ActiveModel {
        id: Set(report.id.to_string()),
        argyle_report_id: Set(report.argyle_report_id.clone()),
        user_id: Set(report.user.to_string()),
        report_type: Set(report.report_type.as_str().to_owned()),
        generated_at: Set(report.recorded_at),
        delivery_id: Set(report.delivery_id.unwrap_or(NO_DELIVERY)),
        status: Set(report.status.as_str().to_owned()),
        status_reason: Set(report.status_reason.clone()),
        origin: Set(report.origin.as_str().to_owned()),
        request_id: Set(report.request_id.clone()),
        request_fingerprint: Set(report.request_fingerprint.clone()),
        requested_at: Set(report.requested_at),
        announced_at: Set(report.announced_at),
        details: Set(details),
        updated_at: Set(Some(report.updated_at)),
        ..Default::default()
    })
}
