//! The readiness rule: a user's readiness from their accounts' states and whether each holds
//! synced data.
//!
//! Argyle's guidance is to generate a report once every *connected* account appears in
//! `reports.ready`; failed, disconnected and removed accounts do not block. Argyle also keeps the
//! data it retrieved: an account that synced and has since been disconnected, or whose
//! re-authentication failed, still contributes that data ("data as of" its `last_synced_at`),
//! while it keeps its state and error so that a consumer can ask the user to reconnect.

use super::{AccountState, ReadinessState};

/// One account as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountStanding {
    pub state: AccountState,
    /// Argyle retrieved data from it (a `reports.ready` time or other sync evidence).
    pub has_synced_data: bool,
}

impl AccountStanding {
    /// True when the account's data would go into a report generated now: synced, or failed or
    /// disconnected after a sync. Removed accounts never count.
    pub fn counts(self) -> bool {
        match self.state {
            AccountState::Synced => true,
            AccountState::Failed | AccountState::Disconnected => self.has_synced_data,
            AccountState::Added | AccountState::Connected | AccountState::Removed => false,
        }
    }
}

/// Derives a user's readiness:
/// - `NoAccounts`: no account, or every one removed;
/// - `Pending`: any account added or connected (data still coming; a reconnection newer than the
///   last sync is connected, so pending again);
/// - `Ready`: nothing pending and at least one account whose data counts ([`AccountStanding::counts`]);
/// - `Blocked`: nothing pending, no data, and at least one account failed or disconnected.
pub fn user_readiness(accounts: impl IntoIterator<Item = AccountStanding>) -> ReadinessState {
    let (mut pending, mut data, mut broken) = (false, false, false);
    for account in accounts {
        data |= account.counts();
        match account.state {
            AccountState::Added | AccountState::Connected => pending = true,
            AccountState::Failed | AccountState::Disconnected => broken = true,
            AccountState::Synced | AccountState::Removed => {}
        }
    }
    if pending {
        ReadinessState::Pending
    } else if data {
        ReadinessState::Ready
    } else if broken {
        ReadinessState::Blocked
    } else {
        ReadinessState::NoAccounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountState::*;

    fn with(state: AccountState, has_synced_data: bool) -> AccountStanding {
        AccountStanding {
            state,
            has_synced_data,
        }
    }

    #[test]
    fn readiness_follows_the_rule_for_each_combination() {
        let plain = |state| with(state, state == Synced);
        let cases: &[(&[AccountStanding], ReadinessState)] = &[
            (&[], ReadinessState::NoAccounts),
            (
                &[plain(Removed), plain(Removed)],
                ReadinessState::NoAccounts,
            ),
            (&[with(Removed, true)], ReadinessState::NoAccounts),
            (&[plain(Added)], ReadinessState::Pending),
            (&[plain(Connected), plain(Synced)], ReadinessState::Pending),
            (&[with(Connected, true)], ReadinessState::Pending),
            (&[plain(Synced)], ReadinessState::Ready),
            (
                &[
                    plain(Synced),
                    plain(Failed),
                    plain(Disconnected),
                    plain(Removed),
                ],
                ReadinessState::Ready,
            ),
            (&[with(Disconnected, true)], ReadinessState::Ready),
            (&[with(Failed, true), plain(Failed)], ReadinessState::Ready),
            (&[plain(Failed)], ReadinessState::Blocked),
            (
                &[plain(Failed), plain(Disconnected), plain(Removed)],
                ReadinessState::Blocked,
            ),
            (&[plain(Failed), plain(Connected)], ReadinessState::Pending),
        ];
        for (accounts, expected) in cases {
            assert_eq!(
                user_readiness(accounts.iter().copied()),
                *expected,
                "accounts: {accounts:?}"
            );
        }
    }
}
