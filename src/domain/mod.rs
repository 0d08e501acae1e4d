//! Pure domain: identifiers, account and readiness states, the convergent account facts, the
//! readiness rule, Argyle delivery parsing and signature checks. No I/O and no framework types:
//! `core` drives it, and the adapters (`http`, `grpc`, `store`) only convert its types. The fuzz
//! target also compiles this module on its own, by path (`fuzz/Cargo.toml`): it uses nothing
//! else of the crate, and a crate it starts to use is named there too.

pub mod account;
pub mod argyle;
pub mod events;
pub mod inbox;
pub mod readiness;
pub mod signature;
pub mod time;
pub mod user;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An Argyle user id.
    UserId
);
uuid_id!(
    /// An Argyle account id.
    AccountId
);
uuid_id!(
    /// This service's id for a generated report.
    ReportId
);

/// An enum of stable names: `ALL`, `as_str` (the name stored in the database and written in
/// events) and `FromStr` (its inverse), written once for every such enum.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The stable name stored in the database and written in events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| UnknownName(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    /// The state of one account, derived from its facts (see [`account::AccountFacts::state`]).
    AccountState {
        Added => "added",
        Connected => "connected",
        Synced => "synced",
        Failed => "failed",
        Disconnected => "disconnected",
        Removed => "removed",
    }
);

named!(
    /// Whether a report can be generated for a user now (see [`readiness::user_readiness`]).
    ReadinessState {
        NoAccounts => "no_accounts",
        Pending => "pending",
        Ready => "ready",
        Blocked => "blocked",
    }
);

named!(
    /// Where a report stands (see [`report::Report`]).
    ReportStatus {
        /// Requested by this service; Argyle has not answered yet.
        Requested => "requested",
        /// Argyle waits for the user's data to sync.
        WaitingForSync => "waiting_for_sync",
        Generating => "generating",
        Generated => "generated",
        Failed => "failed",
        /// Never sent to Argyle (its daily cap, counted here).
        Refused => "refused",
    }
);

/// Reports, announced or requested (declared after `named!`, which it uses).
pub mod report;

named!(
    /// Where a job of the report pipeline stands.
    JobState {
        /// Waiting for its next attempt.
        Pending => "pending",
        /// Taken by a worker, until the end of its lease.
        Running => "running",
        Done => "done",
        /// Gave up; see its last error.
        Failed => "failed",
    }
);

named!(
    /// What a job of the report pipeline does.
    JobKind {
        /// `POST /v2/reports/{type}` for a report this service requests.
        RequestReport => "request_report",
        /// `GET /v2/reports/{id}` (or the user's list) to enrich a report, until it is settled.
        FetchReport => "fetch_report",
    }
);

/// The report pipeline's jobs.
pub mod job;

named!(
    /// What became of a stored webhook delivery.
    DeliveryStatus {
        /// Applied to users, accounts and reports.
        Applied => "applied",
        /// An event this service does not act on; kept only.
        Ignored => "ignored",
        /// Signed but not applicable (malformed or inconsistent); kept for inspection and replay.
        Rejected => "rejected",
    }
);

/// A stored name that this version does not know (a newer version wrote it, or the data is damaged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// An Argyle report type. Unknown future values are kept verbatim in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportType {
    Voie,
    Voe,
    VoieMortgage,
    VoeMortgage,
    Other(String),
}

impl ReportType {
    /// Every type this version knows.
    pub const KNOWN: [ReportType; 4] = [
        ReportType::Voie,
        ReportType::Voe,
        ReportType::VoieMortgage,
        ReportType::VoeMortgage,
    ];

    /// Argyle's spelling of a type this version knows; `None` for [`ReportType::Other`].
    pub fn known_name(&self) -> Option<&'static str> {
        match self {
            ReportType::Voie => Some("voie"),
            ReportType::Voe => Some("voe"),
            ReportType::VoieMortgage => Some("voie-mortgage"),
            ReportType::VoeMortgage => Some("voe-mortgage"),
            ReportType::Other(_) => None,
        }
    }

    /// Argyle's spelling of the type.
    pub fn as_str(&self) -> &str {
        match self {
            ReportType::Other(name) => name,
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// Reads Argyle's spelling; never fails, unknown values become `Other`.
    pub fn from_argyle(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|known| known.known_name() == Some(name))
            .unwrap_or_else(|| ReportType::Other(name.to_owned()))
    }
}

/// (De)serializes a [`ReportType`] as Argyle's spelling.
pub mod report_type_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ReportType;

    pub fn serialize<S: Serializer>(value: &ReportType, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ReportType, D::Error> {
        String::deserialize(deserializer).map(|name| ReportType::from_argyle(&name))
    }
}

/// An external id as Argyle sends it: `null` and `""` both mean "none".
pub fn normalize_external_id(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Most bytes of a caller's input repeated in an error message: enough to recognise it, never
/// enough to bloat an answer (a 3 MB id echoed into `grpc-message` breaks the client's headers).
pub const MAX_ECHO_BYTES: usize = 128;

/// `input` quoted for an error message, cut to [`MAX_ECHO_BYTES`] (on a character boundary) with
/// its full length noted when it is longer.
pub fn echo(input: &str) -> String {
    if input.len() <= MAX_ECHO_BYTES {
        return format!("{input:?}");
    }
    format!("{:?}… ({} bytes)", clip(input, MAX_ECHO_BYTES), input.len())
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2024-01-08 at 12:MM UTC: the times of the domain's table and property tests.
    pub(crate) fn at(minute: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(&format!("2024-01-08T12:{minute:02}:00Z"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn state_names_round_trip() {
        for state in AccountState::ALL {
            assert_eq!(state.as_str().parse::<AccountState>(), Ok(state));
        }
        for state in ReadinessState::ALL {
            assert_eq!(state.as_str().parse::<ReadinessState>(), Ok(state));
        }
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
        }
    }

    #[test]
    fn unknown_report_types_are_kept_verbatim() {
        assert_eq!(
            ReportType::from_argyle("voie-mortgage"),
            ReportType::VoieMortgage
        );
        let future = ReportType::from_argyle("voa");
        assert_eq!(future, ReportType::Other("voa".into()));
        assert_eq!(future.as_str(), "voa");
    }

    #[test]
    fn echoed_input_is_cut_to_128_bytes_on_a_character_boundary() {
        assert_eq!(echo("ext-1"), "\"ext-1\"");
        let long = "é".repeat(1000);
        let echoed = echo(&long);
        assert!(echoed.len() < MAX_ECHO_BYTES + 32, "{echoed}");
        assert!(echoed.ends_with("… (2000 bytes)"), "{echoed}");
    }

    #[test]
    fn null_and_empty_external_ids_mean_none() {
        assert_eq!(normalize_external_id(None), None);
        assert_eq!(normalize_external_id(Some("")), None);
        assert_eq!(normalize_external_id(Some("  ")), None);
        assert_eq!(normalize_external_id(Some("ext-1")), Some("ext-1".into()));
    }
}
