//! The readiness rule: a user's readiness from the states of their accounts.
//!
//! Argyle's guidance is to generate a report once every *connected* account appears in
//! `reports.ready`; failed, disconnected and removed accounts do not block.

use super::{AccountState, ReadinessState};

/// Derives a user's readiness from their accounts' states:
/// no live account → `NoAccounts`; any added/connected → `Pending`; any synced → `Ready`;
/// otherwise (only failed/disconnected left) → `Blocked`.
pub fn user_readiness(accounts: impl IntoIterator<Item = AccountState>) -> ReadinessState {
    let (mut pending, mut synced, mut broken) = (false, false, false);
    for state in accounts {
        match state {
            AccountState::Added | AccountState::Connected => pending = true,
            AccountState::Synced => synced = true,
            AccountState::Failed | AccountState::Disconnected => broken = true,
            AccountState::Removed => {}
        }
    }
    if pending {
        ReadinessState::Pending
    } else if synced {
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

    #[test]
    fn readiness_follows_the_rule_for_each_combination() {
        let cases: &[(&[AccountState], ReadinessState)] = &[
            (&[], ReadinessState::NoAccounts),
            (&[Removed, Removed], ReadinessState::NoAccounts),
            (&[Added], ReadinessState::Pending),
            (&[Connected, Synced], ReadinessState::Pending),
            (&[Synced], ReadinessState::Ready),
            (
                &[Synced, Failed, Disconnected, Removed],
                ReadinessState::Ready,
            ),
            (&[Failed], ReadinessState::Blocked),
            (&[Failed, Disconnected, Removed], ReadinessState::Blocked),
            (&[Failed, Connected], ReadinessState::Pending),
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
