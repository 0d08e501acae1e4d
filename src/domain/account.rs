//! The convergent model of one Argyle account.
//!
//! Argyle promises neither order nor uniqueness of deliveries, so an account is not a state that
//! each event overwrites. It is a set of facts that only grow (flags that only turn on, times
//! that only move forward), and its state is a pure function of those facts. Merging an
//! observation is a join (max/or per field): commutative, associative and idempotent, so every
//! order and repetition of the same deliveries yields the same facts and therefore the same state.
//!
//! The rule, in order ([`AccountFacts::state`]):
//! 1. Removed is final (Argyle does not reuse account ids).
//! 2. If Argyle told us *when* the connection last changed (`resource.connection.updated_at`,
//!    sent with `include_resource`), the latest such observation decides, and a sync
//!    (`reports.ready` `last_synced_at`) at or after it makes the account synced. A
//!    reconnection newer than the last sync is pending again until a newer `reports.ready`.
//! 3. Otherwise only bare facts are known, with no time: any sync evidence wins (a late bare
//!    `accounts.connected` never un-readies a synced account), then a failure, then a connection,
//!    then "added". A failure outranks a bare connection because that answer corrects itself
//!    when the next `reports.ready` arrives, while a wrong "pending" would never end.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AccountState;
use super::readiness::AccountStanding;

/// Argyle's error code and message for a failed or disconnected account.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// The status Argyle reports in `resource.connection.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    Connecting,
    Connected,
    Error,
}

/// A connection status with Argyle's own time for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimedConnection {
    pub at: DateTime<Utc>,
    pub status: ConnectionStatus,
    /// True when the observation came with `accounts.failed` (an authentication failure),
    /// false when it came with another account event (a later disconnection).
    pub from_failed_event: bool,
    pub error: ErrorInfo,
}

/// One thing a delivery tells us about an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Observation {
    /// `accounts.added`: credentials submitted.
    Added,
    /// `accounts.connected` without a timestamped resource.
    Connected,
    /// `accounts.failed` (or an error status) without a timestamped resource.
    Failed(ErrorInfo),
    /// `resource.connection` with its `updated_at`.
    Connection(TimedConnection),
    /// Listed in `reports.ready` with this `last_synced_at`.
    SyncedAt(DateTime<Utc>),
    /// Listed as synced without a time (`users.fully_synced`, or `reports.ready` with a null time).
    Synced,
    /// `accounts.removed`.
    Removed,
}

/// A timestamped error, ordered by time, then authentication failures above disconnections,
/// then by code and message so that equal times still merge deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimedError {
    pub at: DateTime<Utc>,
    pub from_failed_event: bool,
    pub error: ErrorInfo,
}

/// Everything known about one account; every field only grows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountFacts {
    pub added: bool,
    /// A bare `accounts.connected` was seen (no time known).
    pub connected: bool,
    /// The greatest bare failure seen (no time known).
    pub failure: Option<ErrorInfo>,
    /// Latest time Argyle reported the connection as `connecting`.
    pub connecting_at: Option<DateTime<Utc>>,
    /// Latest time Argyle reported the connection as `connected`.
    pub connected_at: Option<DateTime<Utc>>,
    /// Latest connection error Argyle reported with a time.
    pub error: Option<TimedError>,
    /// The latest timed error that carried a code or a message: an error reported again
    /// without them (a resource copy with `error_code: null`) never erases what is known.
    pub explained_error: Option<TimedError>,
    /// Latest `last_synced_at` from `reports.ready`.
    pub synced_at: Option<DateTime<Utc>>,
    /// Listed as synced without a time.
    pub synced: bool,
    pub removed: bool,
}

/// The state derived from an account's facts, with the error that explains it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub state: AccountState,
    pub error: Option<ErrorInfo>,
}

fn keep_max<T: Ord>(slot: &mut Option<T>, value: T) {
    if slot.as_ref().is_none_or(|current| value > *current) {
        *slot = Some(value);
    }
}

/// The latest timestamped connection observation.
enum Latest<'a> {
    Connecting(DateTime<Utc>),
    Connected(DateTime<Utc>),
    Error(&'a TimedError),
}

impl Latest<'_> {
    fn key(&self) -> (DateTime<Utc>, u8) {
        match self {
            Latest::Connecting(at) => (*at, 0),
            Latest::Connected(at) => (*at, 1),
            Latest::Error(error) => (error.at, 2),
        }
    }
}

impl AccountFacts {
    /// Adds one observation. Order and repetition do not matter.
    pub fn observe(&mut self, observation: &Observation) {
        match observation {
            Observation::Added => self.added = true,
            Observation::Connected => self.connected = true,
            Observation::Failed(error) => keep_max(&mut self.failure, error.clone()),
            Observation::Connection(connection) => match connection.status {
                ConnectionStatus::Connecting => keep_max(&mut self.connecting_at, connection.at),
                ConnectionStatus::Connected => keep_max(&mut self.connected_at, connection.at),
                ConnectionStatus::Error => {
                    let error = TimedError {
                        at: connection.at,
                        from_failed_event: connection.from_failed_event,
                        error: connection.error.clone(),
                    };
                    if error.error.code.is_some() || error.error.message.is_some() {
                        keep_max(&mut self.explained_error, error.clone());
                    }
                    keep_max(&mut self.error, error);
                }
            },
            Observation::SyncedAt(at) => keep_max(&mut self.synced_at, *at),
            Observation::Synced => self.synced = true,
            Observation::Removed => self.removed = true,
        }
    }

    fn latest_timed(&self) -> Option<Latest<'_>> {
        [
            self.connecting_at.map(Latest::Connecting),
            self.connected_at.map(Latest::Connected),
            self.error.as_ref().map(Latest::Error),
        ]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.key().cmp(&b.key()))
    }

    fn ever_connected(&self) -> bool {
        self.connected || self.connected_at.is_some() || self.synced_at.is_some() || self.synced
    }

    /// True when Argyle has retrieved data from the account (a `reports.ready` time, or sync
    /// evidence without a time): Argyle keeps that data and can still build a report from it,
    /// whatever has happened to the connection since.
    pub fn has_synced_data(&self) -> bool {
        self.synced_at.is_some() || self.synced
    }

    /// The account as the readiness rule sees it.
    pub fn standing(&self) -> AccountStanding {
        AccountStanding {
            state: self.state().state,
            has_synced_data: self.has_synced_data(),
        }
    }

    /// `error` with a missing code or message filled from the latest error that had one (a
    /// timed one, else a bare failure): a copy reported without them never erases them.
    fn explain(&self, error: &ErrorInfo) -> ErrorInfo {
        let known = [
            self.explained_error.as_ref().map(|timed| &timed.error),
            self.failure.as_ref(),
        ];
        let first = |field: fn(&ErrorInfo) -> &Option<String>| {
            field(error)
                .clone()
                .or_else(|| known.iter().flatten().find_map(|e| field(e).clone()))
        };
        ErrorInfo {
            code: first(|e| &e.code),
            message: first(|e| &e.message),
        }
    }

    /// The account's state: a pure function of the facts (see the module documentation).
    pub fn state(&self) -> Derived {
        let plain = |state| Derived { state, error: None };
        if self.removed {
            return plain(AccountState::Removed);
        }
        let synced_since = |at: DateTime<Utc>, ordering: &[Ordering]| {
            self.synced_at
                .is_some_and(|synced| ordering.contains(&synced.cmp(&at)))
        };
        match self.latest_timed() {
            Some(Latest::Connecting(at)) => {
                if synced_since(at, &[Ordering::Equal, Ordering::Greater]) {
                    plain(AccountState::Synced)
                } else {
                    plain(AccountState::Added)
                }
            }
            Some(Latest::Connected(at)) => {
                let synced_without_time = self.synced_at.is_none() && self.synced;
                if synced_since(at, &[Ordering::Equal, Ordering::Greater]) || synced_without_time {
                    plain(AccountState::Synced)
                } else {
                    plain(AccountState::Connected)
                }
            }
            Some(Latest::Error(error)) => {
                if synced_since(error.at, &[Ordering::Greater]) {
                    plain(AccountState::Synced)
                } else {
                    let state = if error.from_failed_event || !self.ever_connected() {
                        AccountState::Failed
                    } else {
                        AccountState::Disconnected
                    };
                    Derived {
                        state,
                        error: Some(self.explain(&error.error)),
                    }
                }
            }
            None => {
                if self.synced_at.is_some() || self.synced {
                    plain(AccountState::Synced)
                } else if let Some(failure) = &self.failure {
                    Derived {
                        state: AccountState::Failed,
                        error: Some(failure.clone()),
                    }
                } else if self.connected {
                    plain(AccountState::Connected)
                } else {
                    plain(AccountState::Added)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::domain::tests::at;

    fn timed(minute: u32, status: ConnectionStatus, from_failed_event: bool) -> Observation {
        Observation::Connection(TimedConnection {
            at: at(minute),
            status,
            from_failed_event,
            error: if status == ConnectionStatus::Error {
                ErrorInfo {
                    code: Some("auth_required".into()),
                    message: None,
                }
            } else {
                ErrorInfo::default()
            },
        })
    }

    fn state_after(observations: &[Observation]) -> AccountState {
        let mut facts = AccountFacts::default();
        for observation in observations {
            facts.observe(observation);
        }
        facts.state().state
    }

    fn failed() -> Observation {
        Observation::Failed(ErrorInfo {
            code: Some("invalid_credentials".into()),
            message: Some("The credentials are not valid.".into()),
        })
    }

    #[test]
    fn the_state_follows_the_rule_for_each_case() {
        use AccountState::*;
        use ConnectionStatus as C;
        use Observation as O;
        let cases: Vec<(&str, Vec<Observation>, AccountState)> = vec![
            ("nothing known yet", vec![], Added),
            ("credentials submitted", vec![O::Added], Added),
            ("bare connection", vec![O::Added, O::Connected], Connected),
            ("bare failure", vec![O::Added, failed()], Failed),
            (
                "failure outranks a bare connection",
                vec![O::Connected, failed()],
                Failed,
            ),
            (
                "bare connection then ready",
                vec![O::Connected, O::SyncedAt(at(5))],
                Synced,
            ),
            (
                "ready before connected",
                vec![O::SyncedAt(at(5)), O::Connected],
                Synced,
            ),
            (
                "ready wins over a bare failure",
                vec![failed(), O::SyncedAt(at(5))],
                Synced,
            ),
            (
                "fully synced without a time",
                vec![O::Connected, O::Synced],
                Synced,
            ),
            (
                "removed is final",
                vec![O::SyncedAt(at(5)), O::Removed],
                Removed,
            ),
            (
                "timed connection, no sync",
                vec![timed(1, C::Connected, false)],
                Connected,
            ),
            (
                "timed connection, then a later sync",
                vec![timed(1, C::Connected, false), O::SyncedAt(at(2))],
                Synced,
            ),
            (
                "reconnection newer than the last sync is pending",
                vec![
                    timed(1, C::Connected, false),
                    O::SyncedAt(at(2)),
                    timed(3, C::Connected, false),
                ],
                Connected,
            ),
            (
                "a newer ready after the reconnection",
                vec![
                    timed(1, C::Connected, false),
                    O::SyncedAt(at(2)),
                    timed(3, C::Connected, false),
                    O::SyncedAt(at(4)),
                ],
                Synced,
            ),
            (
                "disconnection after a sync",
                vec![
                    timed(1, C::Connected, false),
                    O::SyncedAt(at(2)),
                    timed(3, C::Error, false),
                ],
                Disconnected,
            ),
            (
                "an error without any connection is a failure",
                vec![timed(3, C::Error, false)],
                Failed,
            ),
            ("timed failure", vec![timed(1, C::Error, true)], Failed),
            (
                "failure and its accounts.updated twin at the same time",
                vec![
                    timed(1, C::Error, false),
                    timed(1, C::Error, true),
                    O::Connected,
                ],
                Failed,
            ),
            (
                "a sync after the error",
                vec![timed(1, C::Error, false), O::SyncedAt(at(2))],
                Synced,
            ),
            (
                "still connecting",
                vec![timed(1, C::Connecting, false)],
                Added,
            ),
            (
                "a bare connected never un-readies a timed sync",
                vec![
                    timed(1, C::Connected, false),
                    O::SyncedAt(at(2)),
                    O::Connected,
                ],
                Synced,
            ),
        ];
        for (name, observations, expected) in cases {
            assert_eq!(state_after(&observations), expected, "case: {name}");
        }
    }

    #[test]
    fn the_error_shown_is_the_one_that_explains_the_state() {
        let mut facts = AccountFacts::default();
        facts.observe(&failed());
        let derived = facts.state();
        assert_eq!(derived.state, AccountState::Failed);
        assert_eq!(
            derived.error.and_then(|e| e.code).as_deref(),
            Some("invalid_credentials")
        );
    }

    #[test]
    fn an_error_repeated_without_its_code_never_erases_it() {
        let code = |facts: &AccountFacts| facts.state().error.and_then(|e| e.code);
        let failed_with_resource = |minute, code: Option<&str>| {
            Observation::Connection(TimedConnection {
                at: at(minute),
                status: ConnectionStatus::Error,
                from_failed_event: true,
                error: ErrorInfo {
                    code: code.map(str::to_owned),
                    message: None,
                },
            })
        };
        let twin = |minute| {
            Observation::Connection(TimedConnection {
                at: at(minute),
                status: ConnectionStatus::Error,
                from_failed_event: false,
                error: ErrorInfo::default(),
            })
        };
        for order in [
            vec![
                failed_with_resource(1, Some("mfa_timeout")),
                twin(1),
                twin(2),
            ],
            vec![
                twin(2),
                twin(1),
                failed_with_resource(1, Some("mfa_timeout")),
            ],
        ] {
            let mut facts = AccountFacts::default();
            for observation in &order {
                facts.observe(observation);
            }
            assert_eq!(code(&facts).as_deref(), Some("mfa_timeout"), "{order:?}");
        }
        // A bare failure's code explains a later timed error without one.
        let mut facts = AccountFacts::default();
        facts.observe(&failed());
        facts.observe(&twin(3));
        assert_eq!(code(&facts).as_deref(), Some("invalid_credentials"));
    }

    fn observation() -> impl Strategy<Value = Observation> {
        let status = prop_oneof![
            Just(ConnectionStatus::Connecting),
            Just(ConnectionStatus::Connected),
            Just(ConnectionStatus::Error)
        ];
        let code = prop_oneof![
            Just(None),
            Just(Some("a".to_owned())),
            Just(Some("b".to_owned()))
        ];
        prop_oneof![
            Just(Observation::Added),
            Just(Observation::Connected),
            code.clone().prop_map(|code| Observation::Failed(ErrorInfo {
                code,
                message: None
            })),
            (0u32..6, status, any::<bool>(), code).prop_map(
                |(minute, status, from_failed_event, code)| {
                    Observation::Connection(TimedConnection {
                        at: at(minute),
                        status,
                        from_failed_event,
                        error: ErrorInfo {
                            code,
                            message: None,
                        },
                    })
                }
            ),
            (0u32..6).prop_map(|minute| Observation::SyncedAt(at(minute))),
            Just(Observation::Synced),
            Just(Observation::Removed),
        ]
    }

    /// Observations for up to three accounts of one user, the same list shuffled with some
    /// entries delivered again.
    type Deliveries = Vec<(usize, Observation)>;

    fn deliveries_and_a_reordering() -> impl Strategy<Value = (Deliveries, Deliveries)> {
        proptest::collection::vec((0usize..3, observation()), 0..12).prop_flat_map(|deliveries| {
            let len = deliveries.len();
            let duplicates = proptest::collection::vec(0..len.max(1), 0..4);
            (Just(deliveries.clone()), duplicates).prop_flat_map(move |(deliveries, duplicates)| {
                let mut replayed = deliveries.clone();
                if !deliveries.is_empty() {
                    replayed.extend(duplicates.iter().map(|&i| deliveries[i].clone()));
                }
                (Just(deliveries), Just(replayed).prop_shuffle())
            })
        })
    }

    fn readiness_after(
        deliveries: &[(usize, Observation)],
    ) -> (Vec<AccountFacts>, super::super::ReadinessState) {
        let mut accounts = vec![None::<AccountFacts>; 3];
        for (account, observation) in deliveries {
            accounts[*account]
                .get_or_insert_with(AccountFacts::default)
                .observe(observation);
        }
        let readiness = super::super::readiness::user_readiness(
            accounts.iter().flatten().map(AccountFacts::standing),
        );
        (
            accounts
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            readiness,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_order_and_repetition_of_deliveries_converge_to_the_same_answer(
            (deliveries, replayed) in deliveries_and_a_reordering()
        ) {
            let (facts, readiness) = readiness_after(&deliveries);
            let (replayed_facts, replayed_readiness) = readiness_after(&replayed);
            prop_assert_eq!(replayed_facts, facts);
            prop_assert_eq!(replayed_readiness, readiness);
        }
    }
}
