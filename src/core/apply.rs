//! Applying a batch of Argyle events to users, accounts and reports with a fixed number of
//! statements, whatever the batch size: the rows every event needs are read (users locked) in one
//! query per table, the events are applied one after another in memory, and what changed is
//! written back with one multi-row statement per table. The domain events are returned for the
//! caller to append in the same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::CoreError;
use crate::domain::account::{AccountFacts, Observation};
use crate::domain::argyle::ArgyleEvent;
use crate::domain::events::DomainEvent;
use crate::domain::readiness::user_readiness;
use crate::domain::{AccountId, ReadinessState, ReportId, ReportType, UserId};
use crate::store::entities::{account, report, user};
use crate::store::{AccountRecord, StoreError, parse_name};

/// Namespace for report ids derived from Argyle report ids or delivery hashes (UUID v5).
const REPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0e57_52a4_4f0e_9d0b_6e1f_53a1_c0de);

/// One event to apply, with the delivery it came from.
pub(super) struct Input<'a> {
    pub(super) event: &'a ArgyleEvent,
    pub(super) delivery_id: i64,
    pub(super) sha: &'a str,
}

/// A user as it stands in this batch.
struct UserState {
    row: user::Model,
    /// Not in the database before this batch.
    created: bool,
    /// The row must be written.
    changed: bool,
    accounts: BTreeMap<AccountId, AccountRecord>,
}

/// The batch's working state: what was read, and what changes.
pub(super) struct Changes {
    now: DateTime<Utc>,
    users: BTreeMap<UserId, UserState>,
    /// Who owns each account read or created in this batch.
    owners: HashMap<AccountId, UserId>,
    changed_accounts: BTreeSet<AccountId>,
    known_reports: HashSet<String>,
    new_reports: Vec<report::ActiveModel>,
}

/// What one event says, in the terms applying needs.
struct Effects {
    user: UserId,
    external_id: Option<String>,
    observations: Vec<(AccountId, Vec<Observation>)>,
    report: Option<(ReportType, Option<String>)>,
}

fn effects(event: &ArgyleEvent) -> Option<Effects> {
    let user = event.user()?;
    let mut effects = Effects {
        user,
        external_id: None,
        observations: vec![],
        report: None,
    };
    match event {
        ArgyleEvent::Account {
            account,
            observations,
            ..
        } => effects.observations = vec![(*account, observations.clone())],
        ArgyleEvent::ReportsReady {
            external_id,
            accounts,
            ..
        } => {
            effects.external_id.clone_from(external_id);
            effects.observations = accounts
                .iter()
                .map(|(account, observation)| (*account, vec![observation.clone()]))
                .collect();
        }
        ArgyleEvent::UserFullySynced {
            external_id,
            accounts,
            ..
        } => {
            effects.external_id.clone_from(external_id);
            effects.observations = accounts
                .iter()
                .map(|account| (*account, vec![Observation::Synced]))
                .collect();
        }
        ArgyleEvent::ReportGenerated {
            report_type,
            argyle_report_id,
            ..
        } => effects.report = Some((report_type.clone(), argyle_report_id.clone())),
        ArgyleEvent::Other => {}
    }
    Some(effects)
}

/// The report id of a `reports.generated`: from Argyle's report id when present (so repeated
/// announcements of one report collapse), else from the delivery's hash.
fn report_id(argyle_report_id: Option<&str>, sha: &str) -> ReportId {
    let name = match argyle_report_id {
        Some(id) => format!("argyle-report:{id}"),
        None => format!("delivery:{sha}"),
    };
    ReportId(Uuid::new_v5(&REPORT_NAMESPACE, name.as_bytes()))
}

impl Changes {
    /// Reads (and on PostgreSQL locks, in user-id order) every row the inputs touch: three
    /// queries at most.
    pub(super) async fn load(
        txn: &DatabaseTransaction,
        now: DateTime<Utc>,
        inputs: &[Input<'_>],
    ) -> Result<Self, CoreError> {
        let all: Vec<(Effects, &str)> = inputs
            .iter()
            .filter_map(|input| effects(input.event).map(|e| (e, input.sha)))
            .collect();
        let mut changes = Changes {
            now,
            users: BTreeMap::new(),
            owners: HashMap::new(),
            changed_accounts: BTreeSet::new(),
            known_reports: HashSet::new(),
            new_reports: vec![],
        };
        if all.is_empty() {
            return Ok(changes);
        }
        let user_ids: BTreeSet<String> = all.iter().map(|(e, _)| e.user.to_string()).collect();
        for row in user::Entity::find()
            .filter(user::Column::UserId.is_in(user_ids.iter().cloned()))
            .order_by_asc(user::Column::UserId)
            .lock_exclusive()
            .all(txn)
            .await?
        {
            let id = crate::store::parse_id("users", &row.user_id)?;
            changes.users.insert(
                id,
                UserState {
                    row,
                    created: false,
                    changed: false,
                    accounts: BTreeMap::new(),
                },
            );
        }

        let named: BTreeSet<String> = all
            .iter()
            .flat_map(|(e, _)| e.observations.iter().map(|(a, _)| a.to_string()))
            .collect();
        let mut wanted = Condition::any().add(account::Column::UserId.is_in(user_ids));
        if !named.is_empty() {
            wanted = wanted.add(account::Column::AccountId.is_in(named));
        }
        for row in account::Entity::find().filter(wanted).all(txn).await? {
            let record = AccountRecord::try_from(row)?;
            changes.owners.insert(record.account_id, record.user_id);
            if let Some(user) = changes.users.get_mut(&record.user_id) {
                user.accounts.insert(record.account_id, record);
            }
        }

        let reports: Vec<String> = all
            .iter()
            .filter_map(|(e, sha)| {
                let (_, argyle_id) = e.report.as_ref()?;
                Some(report_id(argyle_id.as_deref(), sha).to_string())
            })
            .collect();
        if !reports.is_empty() {
            let known: Vec<String> = report::Entity::find()
                .select_only()
                .column(report::Column::Id)
                .filter(report::Column::Id.is_in(reports))
                .into_tuple()
                .all(txn)
                .await?;
            changes.known_reports.extend(known);
        }
        Ok(changes)
    }

    /// Applies one event in memory. Returns the domain events it causes, or why it is rejected
    /// (then nothing of it is applied).
    pub(super) fn apply(
        &mut self,
        input: &Input<'_>,
    ) -> Result<Result<Vec<DomainEvent>, String>, CoreError> {
        let Some(effects) = effects(input.event) else {
            return Ok(Ok(vec![]));
        };
        let user_id = effects.user;
        // An account may belong to one user only.
        for (account, _) in &effects.observations {
            if let Some(owner) = self.owners.get(account).filter(|owner| **owner != user_id) {
                return Ok(Err(format!(
                    "account {account} belongs to user {owner}, not {user_id}"
                )));
            }
        }
        let now = self.now;
        let user = self.users.entry(user_id).or_insert_with(|| UserState {
            row: user::Model {
                user_id: user_id.to_string(),
                external_id: None,
                state: ReadinessState::NoAccounts.as_str().to_owned(),
                state_since: now,
                created_at: now,
                updated_at: now,
            },
            created: true,
            changed: false,
            accounts: BTreeMap::new(),
        });
        let new_user = user.created && !user.changed;

        let mut events = Vec::new();
        if let Some((report_type, argyle_report_id)) = effects.report {
            let id = report_id(argyle_report_id.as_deref(), input.sha);
            if self.known_reports.insert(id.to_string()) {
                self.new_reports.push(report::ActiveModel {
                    id: Set(id.to_string()),
                    argyle_report_id: Set(argyle_report_id.clone()),
                    user_id: Set(user_id.to_string()),
                    report_type: Set(report_type.as_str().to_owned()),
                    generated_at: Set(now),
                    delivery_id: Set(input.delivery_id),
                    ..Default::default()
                });
                events.push(DomainEvent::ReportGenerated {
                    report: id,
                    user: user_id,
                    report_type: report_type.as_str().to_owned(),
                    argyle_report_id,
                });
            }
        }

        for (account_id, observations) in effects.observations {
            let existing = user.accounts.get(&account_id);
            let mut facts: AccountFacts = existing.map(|a| a.facts.clone()).unwrap_or_default();
            for observation in &observations {
                facts.observe(observation);
            }
            if existing.is_some_and(|a| a.facts == facts) {
                continue;
            }
            let derived = facts.state();
            let record = AccountRecord {
                account_id,
                user_id,
                last_synced_at: facts.synced_at,
                state: derived.state,
                error: derived.error.cloned(),
                first_seen_at: existing.map_or(now, |a| a.first_seen_at),
                updated_at: now,
                facts,
            };
            if existing.map(|a| a.state) != Some(record.state) {
                events.push(DomainEvent::AccountChanged {
                    user: user_id,
                    account: account_id,
                    from: existing.map(|a| a.state),
                    to: record.state,
                });
            }
            self.owners.insert(account_id, user_id);
            self.changed_accounts.insert(account_id);
            user.accounts.insert(account_id, record);
        }

        let previous: ReadinessState = parse_name("users", &user.row.state)?;
        let readiness = user_readiness(user.accounts.values().map(|a| a.state));
        if new_user || readiness != previous {
            events.push(DomainEvent::ReadinessChanged {
                user: user_id,
                from: (!new_user).then_some(previous),
                to: readiness,
            });
        }
        let external_id = merge_external_id(user.row.external_id.clone(), effects.external_id);
        if !events.is_empty() || external_id != user.row.external_id {
            user.changed = true;
            user.row.updated_at = now;
            user.row.external_id = external_id;
            if readiness != previous {
                user.row.state = readiness.as_str().to_owned();
                user.row.state_since = now;
            }
        }
        Ok(Ok(events))
    }

    /// Writes what changed: one multi-row statement per table at most.
    pub(super) async fn write(self, txn: &DatabaseTransaction) -> Result<(), CoreError> {
        let (created, updated): (Vec<&UserState>, Vec<&UserState>) = self
            .users
            .values()
            .filter(|user| user.changed)
            .partition(|user| user.created);
        let model = |user: &UserState| user::ActiveModel::from(user.row.clone());
        if !created.is_empty() {
            // A plain insert: a user created meanwhile by another replica fails the batch, which
            // is then retried delivery by delivery.
            user::Entity::insert_many(created.into_iter().map(model))
                .exec_without_returning(txn)
                .await?;
        }
        upsert(
            txn,
            updated.into_iter().map(model).collect(),
            user::Column::UserId,
            [
                user::Column::ExternalId,
                user::Column::State,
                user::Column::StateSince,
                user::Column::UpdatedAt,
            ],
        )
        .await?;
        let accounts = self
            .users
            .values()
            .flat_map(|user| user.accounts.values())
            .filter(|record| self.changed_accounts.contains(&record.account_id))
            .map(account_model)
            .collect::<Result<Vec<_>, _>>()?;
        upsert(
            txn,
            accounts,
            account::Column::AccountId,
            [
                account::Column::State,
                account::Column::Facts,
                account::Column::ErrorCode,
                account::Column::ErrorMessage,
                account::Column::LastSyncedAt,
                account::Column::UpdatedAt,
            ],
        )
        .await?;
        if !self.new_reports.is_empty() {
            report::Entity::insert_many(self.new_reports)
                .exec_without_returning(txn)
                .await?;
        }
        Ok(())
    }
}

/// Inserts `rows`, or updates `columns` of those whose `key` exists: one statement, none if empty.
async fn upsert<A>(
    txn: &DatabaseTransaction,
    rows: Vec<A>,
    key: <A::Entity as EntityTrait>::Column,
    columns: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
) -> Result<(), CoreError>
where
    A: ActiveModelTrait + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    if rows.is_empty() {
        return Ok(());
    }
    <A::Entity as EntityTrait>::insert_many(rows)
        .on_conflict(OnConflict::column(key).update_columns(columns).to_owned())
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Loads, applies and writes one event (replaying a stored delivery).
pub(super) async fn apply_one(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    input: &Input<'_>,
) -> Result<Result<Vec<DomainEvent>, String>, CoreError> {
    let mut changes = Changes::load(txn, now, std::slice::from_ref(input)).await?;
    let applied = changes.apply(input)?;
    if applied.is_ok() {
        changes.write(txn).await?;
    }
    Ok(applied)
}

fn account_model(record: &AccountRecord) -> Result<account::ActiveModel, CoreError> {
    let facts = serde_json::to_string(&record.facts).map_err(|error| {
        CoreError::Internal(StoreError::Corrupt {
            table: "accounts",
            detail: format!("facts of {} do not serialise: {error}", record.account_id),
        })
    })?;
    Ok(account::ActiveModel {
        account_id: Set(record.account_id.to_string()),
        user_id: Set(record.user_id.to_string()),
        state: Set(record.state.as_str().to_owned()),
        facts: Set(facts),
        error_code: Set(record.error.as_ref().and_then(|e| e.code.clone())),
        error_message: Set(record.error.as_ref().and_then(|e| e.message.clone())),
        last_synced_at: Set(record.last_synced_at),
        first_seen_at: Set(record.first_seen_at),
        updated_at: Set(record.updated_at),
    })
}

/// External ids should never change; if Argyle ever reports two, keep the greater one so that
/// the answer does not depend on delivery order.
fn merge_external_id(current: Option<String>, incoming: Option<String>) -> Option<String> {
    match (current, incoming) {
        (Some(a), Some(b)) => Some(Ord::max(a, b)),
        (a, b) => a.or(b),
    }
}
