//! Parses a verified Argyle delivery body into typed facts about users, accounts and reports.
//!
//! Accepts every documented shape (three for `reports.ready`), tolerates unknown fields and
//! values, and names the offending field in every error (`data.accounts[0].id: ...`). Events
//! this service does not apply become [`ArgyleEvent::Other`]; they are stored, not rejected.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::account::{ConnectionStatus, ErrorInfo, Observation, TimedConnection};
use super::{AccountId, ReportType, UserId, normalize_external_id};

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `event` field, verbatim.
    pub event_name: String,
    /// The subscription `name` Argyle echoes back, if present.
    pub subscription: Option<String>,
    pub event: ArgyleEvent,
    /// SHA-256 (hex) of the delivery's content without `name`: the identity of the fact it
    /// states, the same whichever subscription delivered it (ids derived from a delivery's
    /// content use this, never the raw body's hash).
    pub fact_key: String,
}

/// What a delivery means for this service.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgyleEvent {
    /// An `accounts.*` event: facts about one account of one user.
    Account {
        user: UserId,
        account: AccountId,
        observations: Vec<Observation>,
    },
    /// `reports.ready`: these accounts have synced enough data.
    ReportsReady {
        user: UserId,
        external_id: Option<String>,
        accounts: Vec<(AccountId, Observation)>,
    },
    /// `reports.generated`: a report can be retrieved from Argyle.
    ReportGenerated {
        user: UserId,
        report_type: ReportType,
        argyle_report_id: Option<String>,
    },
    /// `users.fully_synced`: every connected account of the user has synced.
    UserFullySynced {
        user: UserId,
        external_id: Option<String>,
        accounts: Vec<AccountId>,
    },
    /// Any other event: kept, not applied.
    Other,
}

impl ArgyleEvent {
    /// The user the event is about, if it is one this service applies.
    pub fn user(&self) -> Option<UserId> {
        match self {
            ArgyleEvent::Account { user, .. }
            | ArgyleEvent::ReportsReady { user, .. }
            | ArgyleEvent::ReportGenerated { user, .. }
            | ArgyleEvent::UserFullySynced { user, .. } => Some(*user),
            ArgyleEvent::Other => None,
        }
    }
}

/// Why a body is not a valid Argyle event: the JSON path of the problem and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

impl ParseError {
    /// Both parts may repeat the sender's input (a key, a value serde quotes), so each is cut to
    /// about [`MAX_ECHO_BYTES`](super::MAX_ECHO_BYTES) (the message keeps some room for its own
    /// words).
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let cut = |text: String, max: usize| {
            if text.len() <= max {
                text
            } else {
                format!("{}… ({} bytes)", super::clip(&text, max), text.len())
            }
        };
        Self {
            path: cut(path.into(), super::MAX_ECHO_BYTES),
            message: cut(message.into(), 2 * super::MAX_ECHO_BYTES),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AccountData {
    account: Uuid,
    user: Uuid,
    error_code: Option<String>,
    error_message: Option<String>,
    resource: Option<AccountResource>,
}

#[derive(Deserialize)]
struct AccountResource {
    connection: Option<Connection>,
}

#[derive(Deserialize)]
struct Connection {
    status: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    #[serde(default, deserialize_with = "super::time::argyle_time")]
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct ReadyAccount {
    id: Uuid,
    #[serde(default, deserialize_with = "super::time::argyle_time")]
    last_synced_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct ReportsReadyData {
    user: Uuid,
    external_id: Option<String>,
    accounts: Option<Vec<ReadyAccount>>,
    resource: Option<ReportsReadyResource>,
}

#[derive(Deserialize)]
struct ReportsReadyResource {
    external_id: Option<String>,
    accounts: Option<Vec<ReadyAccount>>,
}

#[derive(Deserialize)]
struct ReportGeneratedData {
    user: Uuid,
    #[serde(rename = "type")]
    report_type: String,
    report_id: Option<String>,
}

#[derive(Deserialize)]
struct UserFullySyncedData {
    user: Uuid,
    resource: Option<UserResource>,
}

#[derive(Deserialize)]
struct UserResource {
    #[serde(default)]
    accounts_connected: Vec<Uuid>,
    external_id: Option<String>,
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        ParseError::new(path, error.into_inner().to_string())
    })
}

/// Longest accepted identifier-like string (external id, report id, report type, event name):
/// far above anything Argyle sends, and safely below index entry limits.
pub const MAX_NAME_LEN: usize = 255;
/// Most accounts accepted in one `reports.ready` or `users.fully_synced`.
pub const MAX_ACCOUNTS: usize = 1000;

/// Parses a delivery body. Never panics; unknown fields and event names are accepted.
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| ParseError::new("$", format!("not valid JSON: {error}")))?;
    if !value.is_object() {
        return Err(ParseError::new("$", "expected a JSON object"));
    }
    reject_nul("$", &value)?;
    let fact_key = fact_key(&value);
    let envelope: Envelope = from_json(value, "$")?;
    check_len("event", &envelope.event)?;
    if let Some(name) = &envelope.name {
        check_len("name", name)?;
    }
    let event = match envelope.event.as_str() {
        "accounts.added" | "accounts.connected" | "accounts.failed" | "accounts.updated"
        | "accounts.removed" => account_event(&envelope.event, required_data(envelope.data)?)?,
        "reports.ready" => reports_ready(required_data(envelope.data)?)?,
        "reports.generated" => report_generated(required_data(envelope.data)?)?,
        "users.fully_synced" => user_fully_synced(required_data(envelope.data)?)?,
        _ => ArgyleEvent::Other,
    };
    Ok(Delivery {
        event_name: envelope.event,
        subscription: envelope.name,
        event,
        fact_key,
    })
}

/// The hash of a delivery without its subscription `name`, over a canonical form (serde_json's
/// map keeps keys sorted, so key order and white space do not matter either).
fn fact_key(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut fact = value.clone();
    if let Some(envelope) = fact.as_object_mut() {
        envelope.remove("name");
    }
    hex::encode(Sha256::digest(fact.to_string().as_bytes()))
}

/// NUL cannot be stored in PostgreSQL text and never appears in Argyle data.
fn reject_nul(path: &str, value: &serde_json::Value) -> Result<(), ParseError> {
    let bad = |path: String| {
        Err(ParseError::new(
            path,
            "strings must not contain NUL (\\u0000)",
        ))
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => bad(path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| reject_nul(&format!("{path}[{i}]"), item)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key.contains('\0') {
                return bad(path.to_owned());
            }
            // An empty key still gets a path that names it (found by the fuzzer: an error with
            // an empty path under `{"": {...}}`).
            let child = match (path, key.is_empty()) {
                (_, true) => format!("{path}[\"\"]"),
                ("$", false) => key.clone(),
                _ => format!("{path}.{key}"),
            };
            reject_nul(&child, item)
        }),
        _ => Ok(()),
    }
}

fn check_len(path: &str, value: &str) -> Result<(), ParseError> {
    at_most(path, value.len(), MAX_NAME_LEN, "bytes long")
}

fn check_accounts<T>(path: &str, accounts: &[T]) -> Result<(), ParseError> {
    at_most(path, accounts.len(), MAX_ACCOUNTS, "accounts")
}

/// Refuses `count` over `max`, naming the field: "more than 255 bytes long", "more than 1000
/// accounts".
fn at_most(path: &str, count: usize, max: usize, what: &str) -> Result<(), ParseError> {
    if count > max {
        Err(ParseError::new(path, format!("more than {max} {what}")))
    } else {
        Ok(())
    }
}

fn required_data(data: Option<serde_json::Value>) -> Result<serde_json::Value, ParseError> {
    match data {
        Some(value @ serde_json::Value::Object(_)) => Ok(value),
        Some(_) => Err(ParseError::new("data", "expected a JSON object")),
        None => Err(ParseError::new("data", "missing field `data`")),
    }
}

fn account_event(event: &str, data: serde_json::Value) -> Result<ArgyleEvent, ParseError> {
    let data: AccountData = from_json(data, "data")?;
    // `accounts.failed` carries its error at the top of `data`; the resource's copy may lack it
    // (`error_code: null`) or differ: the top-level one wins, a null never erases it.
    let failure = (event == "accounts.failed").then_some(ErrorInfo {
        code: data.error_code,
        message: data.error_message,
    });
    let mut observations = match event {
        "accounts.added" => vec![Observation::Added],
        "accounts.connected" => vec![Observation::Connected],
        "accounts.failed" => vec![Observation::Failed(failure.clone().unwrap_or_default())],
        "accounts.removed" => vec![Observation::Removed],
        _ => vec![],
    };
    if let Some(connection) = data.resource.and_then(|resource| resource.connection) {
        observations.extend(connection_observation(connection, failure.as_ref()));
    }
    Ok(ArgyleEvent::Account {
        user: UserId(data.user),
        account: AccountId(data.account),
        observations,
    })
}

/// What `resource.connection` adds; unknown statuses add nothing. `failure` is the top-level
/// error of an `accounts.failed` (then the observation comes from a failed event).
fn connection_observation(
    connection: Connection,
    failure: Option<&ErrorInfo>,
) -> Option<Observation> {
    let from_failed_event = failure.is_some();
    let status = match connection.status.as_deref()? {
        "connecting" => ConnectionStatus::Connecting,
        "connected" => ConnectionStatus::Connected,
        "error" => ConnectionStatus::Error,
        _ => return None,
    };
    let error = ErrorInfo {
        code: failure
            .and_then(|f| f.code.clone())
            .or(connection.error_code),
        message: failure
            .and_then(|f| f.message.clone())
            .or(connection.error_message),
    };
    Some(match (connection.updated_at, status) {
        (Some(at), status) => Observation::Connection(TimedConnection {
            at,
            status,
            from_failed_event,
            error: if status == ConnectionStatus::Error {
                error
            } else {
                ErrorInfo::default()
            },
        }),
        (None, ConnectionStatus::Connecting) => Observation::Added,
        (None, ConnectionStatus::Connected) => Observation::Connected,
        (None, ConnectionStatus::Error) => Observation::Failed(error),
    })
}

fn reports_ready(data: serde_json::Value) -> Result<ArgyleEvent, ParseError> {
    let data: ReportsReadyData = from_json(data, "data")?;
    let (external_id, accounts) = match (data.accounts, data.resource) {
        (Some(accounts), _) => {
            check_accounts("data.accounts", &accounts)?;
            (data.external_id, accounts)
        }
        (None, Some(resource)) => match resource.accounts {
            Some(accounts) => {
                check_accounts("data.resource.accounts", &accounts)?;
                (resource.external_id.or(data.external_id), accounts)
            }
            None => {
                return Err(ParseError::new(
                    "data.resource.accounts",
                    "missing field `accounts`",
                ));
            }
        },
        (None, None) => return Err(ParseError::new("data.accounts", "missing field `accounts`")),
    };
    if let Some(external_id) = &external_id {
        check_len("data.external_id", external_id)?;
    }
    Ok(ArgyleEvent::ReportsReady {
        user: UserId(data.user),
        external_id: normalize_external_id(external_id.as_deref()),
        accounts: accounts
            .into_iter()
            .map(|account| {
                let observation = match account.last_synced_at {
                    Some(at) => Observation::SyncedAt(at),
                    None => Observation::Synced,
                };
                (AccountId(account.id), observation)
            })
            .collect(),
    })
}

fn report_generated(data: serde_json::Value) -> Result<ArgyleEvent, ParseError> {
    let data: ReportGeneratedData = from_json(data, "data")?;
    if data.report_type.trim().is_empty() {
        return Err(ParseError::new("data.type", "must not be empty"));
    }
    check_len("data.type", &data.report_type)?;
    if let Some(report_id) = &data.report_id {
        check_len("data.report_id", report_id)?;
    }
    Ok(ArgyleEvent::ReportGenerated {
        user: UserId(data.user),
        report_type: ReportType::from_argyle(&data.report_type),
        argyle_report_id: data.report_id.filter(|id| !id.trim().is_empty()),
    })
}

fn user_fully_synced(data: serde_json::Value) -> Result<ArgyleEvent, ParseError> {
    let data: UserFullySyncedData = from_json(data, "data")?;
    let (external_id, accounts) = match data.resource {
        Some(resource) => (resource.external_id, resource.accounts_connected),
        None => (None, vec![]),
    };
    check_accounts("data.resource.accounts_connected", &accounts)?;
    if let Some(external_id) = &external_id {
        check_len("data.resource.external_id", external_id)?;
    }
    Ok(ArgyleEvent::UserFullySynced {
        user: UserId(data.user),
        external_id: normalize_external_id(external_id.as_deref()),
        accounts: accounts.into_iter().map(AccountId).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "018051aa-f7a9-a0db-2f38-6cfa325e9d69";
    const ACCOUNT: &str = "0187c66e-e7e5-811c-b006-2232f00f426a";

    fn ready_accounts(body: &str) -> (Option<String>, Vec<(AccountId, Observation)>) {
        match parse(body.as_bytes()).unwrap().event {
            ArgyleEvent::ReportsReady {
                external_id,
                accounts,
                ..
            } => (external_id, accounts),
            other => panic!("expected reports.ready, got {other:?}"),
        }
    }

    #[test]
    fn all_three_reports_ready_shapes_are_accepted() {
        let synced = DateTime::parse_from_rfc3339("2024-01-08T12:58:06.023659Z")
            .unwrap()
            .with_timezone(&Utc);
        let expected = vec![(ACCOUNT.parse().unwrap(), Observation::SyncedAt(synced))];
        let account =
            format!(r#"{{"id":"{ACCOUNT}","last_synced_at":"2024-01-08T12:58:06.023659Z"}}"#);
        let plain = format!(
            r#"{{"event":"reports.ready","data":{{"user":"{USER}","accounts":[{account}]}}}}"#
        );
        let null_external = format!(
            r#"{{"event":"reports.ready","data":{{"user":"{USER}","external_id":null,"accounts":[{account}]}}}}"#
        );
        let resource = format!(
            r#"{{"event":"reports.ready","data":{{"user":"{USER}","resource":{{"user":"{USER}","external_id":"","accounts":[{account}],"documents":[]}}}}}}"#
        );
        for body in [plain, null_external, resource] {
            assert_eq!(ready_accounts(&body), (None, expected.clone()), "{body}");
        }
    }

    #[test]
    fn errors_name_the_offending_field() {
        let body = format!(
            r#"{{"event":"accounts.connected","data":{{"user":"{USER}","account":"nope"}}}}"#
        );
        let error = parse(body.as_bytes()).unwrap_err();
        assert_eq!(error.path, "data.account");

        let body = format!(
            r#"{{"event":"reports.ready","data":{{"user":"{USER}","accounts":[{{"id":"{ACCOUNT}","last_synced_at":5}}]}}}}"#
        );
        assert_eq!(
            parse(body.as_bytes()).unwrap_err().path,
            "data.accounts[0].last_synced_at"
        );

        assert_eq!(parse(b"[]").unwrap_err().path, "$");
        // Found by the fuzzer: a NUL under an empty key was reported with an empty path.
        assert_eq!(
            parse(br#"{"": {"a\u0000": [{"id": "x"}]}}"#)
                .unwrap_err()
                .path,
            r#"$[""]"#
        );
        assert_eq!(
            parse(br#"{"data": {"": {"b\u0000": 1}}}"#)
                .unwrap_err()
                .path,
            r#"data[""]"#
        );
        assert_eq!(
            parse(b"{\"data\":{}}").unwrap_err().message,
            "missing field `event`"
        );
        assert_eq!(
            parse(b"{\"event\":\"reports.generated\"}")
                .unwrap_err()
                .path,
            "data"
        );
    }

    #[test]
    fn times_no_protobuf_timestamp_can_hold_are_refused_naming_the_field() {
        let ready = |synced: &str| {
            format!(
                r#"{{"event":"reports.ready","data":{{"user":"{USER}","accounts":[{{"id":"{ACCOUNT}","last_synced_at":"{synced}"}}]}}}}"#
            )
        };
        for bad in ["2016-12-31T23:59:60Z", "0000-12-31T23:59:59Z"] {
            let error = parse(ready(bad).as_bytes()).unwrap_err();
            assert_eq!(error.path, "data.accounts[0].last_synced_at", "{bad}");
        }
        let updated = format!(
            r#"{{"event":"accounts.updated","data":{{"account":"{ACCOUNT}","user":"{USER}","resource":{{"connection":{{"status":"error","updated_at":"1990-12-31T23:59:60Z"}}}}}}}}"#
        );
        let error = parse(updated.as_bytes()).unwrap_err();
        assert_eq!(error.path, "data.resource.connection.updated_at");
        assert!(error.message.contains("leap second"), "{error}");
    }

    #[test]
    fn the_fact_key_ignores_the_subscription_name_key_order_and_white_space() {
        let a = format!(
            r#"{{"event":"reports.generated","name":"sub-a","data":{{"user":"{USER}","type":"voie"}}}}"#
        );
        let b = format!(
            r#"{{ "data": {{"type": "voie", "user": "{USER}"}}, "name": "sub-b", "event": "reports.generated" }}"#
        );
        let c = format!(
            r#"{{"event":"reports.generated","name":"sub-a","data":{{"user":"{USER}","type":"voe"}}}}"#
        );
        let key = |body: &str| parse(body.as_bytes()).unwrap().fact_key;
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn unknown_events_and_fields_are_accepted() {
        let delivery =
            parse(br#"{"event":"paystubs.partially_synced","name":"x","data":{"anything":1}}"#)
                .unwrap();
        assert_eq!(delivery.event, ArgyleEvent::Other);
        let body = format!(
            r#"{{"event":"accounts.removed","data":{{"user":"{USER}","account":"{ACCOUNT}","brand_new":[1,2]}}}}"#
        );
        assert!(matches!(
            parse(body.as_bytes()).unwrap().event,
            ArgyleEvent::Account { .. }
        ));
    }

    #[test]
    fn strings_with_nul_and_oversized_names_are_refused() {
        let body = format!(
            r#"{{"event":"accounts.failed","data":{{"user":"{USER}","account":"{ACCOUNT}","error_message":"a\u0000b"}}}}"#
        );
        assert_eq!(
            parse(body.as_bytes()).unwrap_err().path,
            "data.error_message"
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let body = format!(
            r#"{{"event":"reports.generated","data":{{"user":"{USER}","type":"{long}"}}}}"#
        );
        assert_eq!(parse(body.as_bytes()).unwrap_err().path, "data.type");
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn the_parser_never_panics_on_mutated_deliveries(
            event in proptest::sample::select(vec!["accounts.added", "accounts.connected", "accounts.failed", "accounts.updated", "accounts.removed", "reports.ready", "reports.generated", "users.fully_synced", "other"]),
            data in proptest::arbitrary::any::<String>(),
            cut in 0usize..400,
        ) {
            let body = serde_json::json!({
                "event": event,
                "data": {
                    "user": USER,
                    "account": ACCOUNT,
                    "accounts": [{"id": ACCOUNT, "last_synced_at": data}],
                    "type": data,
                    "resource": {"connection": {"status": data, "updated_at": data}},
                },
            })
            .to_string();
            // Valid JSON whatever `data` holds, so every body reaches field validation: a refusal
            // names a field inside `data`, never the body as a whole.
            if let Err(error) = parse(body.as_bytes()) {
                proptest::prop_assert!(error.path.starts_with("data."), "{error} for {body}");
            }
            let _ = parse(&body.as_bytes()[..cut.min(body.len())]);
        }
    }

    #[test]
    fn a_generated_report_may_lack_its_id() {
        let body = format!(
            r#"{{"event":"reports.generated","data":{{"user":"{USER}","type":"voe-mortgage"}}}}"#
        );
        assert_eq!(
            parse(body.as_bytes()).unwrap().event,
            ArgyleEvent::ReportGenerated {
                user: USER.parse().unwrap(),
                report_type: ReportType::VoeMortgage,
                argyle_report_id: None,
            }
        );
    }

    #[test]
    fn a_disconnection_is_read_from_the_resource() {
        let body = format!(
            r#"{{"event":"accounts.updated","data":{{"account":"{ACCOUNT}","user":"{USER}","resource":{{"connection":{{"status":"error","error_code":"auth_required","error_message":"m","updated_at":"2024-02-01T09:00:00Z"}}}}}}}}"#
        );
        let ArgyleEvent::Account { observations, .. } = parse(body.as_bytes()).unwrap().event
        else {
            panic!("expected an account event");
        };
        assert!(matches!(
            &observations[..],
            [Observation::Connection(TimedConnection {
                status: ConnectionStatus::Error,
                from_failed_event: false,
                ..
            })]
        ));
    }
}
