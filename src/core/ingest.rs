//! Applying a verified delivery: the raw body, the state change and the domain events it causes
//! are written in one transaction, so a 2xx (sent after commit) means all of it is durable, and
//! a failure leaves nothing behind. Duplicates are found by the SHA-256 of the body, enforced by
//! a unique constraint rather than check-then-insert.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait,
    QueryFilter, QuerySelect, TryInsertResult,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Core, CoreError};
use crate::domain::account::{AccountFacts, Observation};
use crate::domain::argyle::{self, ArgyleEvent, Delivery};
use crate::domain::events::DomainEvent;
use crate::domain::readiness::user_readiness;
use crate::domain::signature::Verified;
use crate::domain::{AccountId, AccountState, ReadinessState, ReportId, ReportType, UserId};
use crate::store::entities::{account, delivery, event, report, user};
use crate::store::{AccountRecord, StoreError, parse_name};

/// Namespace for report ids derived from Argyle report ids or delivery hashes (UUID v5).
const REPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0e57_52a4_4f0e_9d0b_6e1f_53a1_c0de);

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and applied; `events` domain events were appended.
    Applied { events: usize },
    /// Stored; an event this service does not act on.
    Ignored,
    /// The same body was stored before; nothing changed.
    Duplicate,
    /// Stored for inspection but not applied: the body is not a valid event. The sender's mistake.
    Rejected { reason: String },
}

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// The inbox row holding the raw delivery.
    pub delivery_id: i64,
    pub event_name: Option<String>,
    pub outcome: Outcome,
}

/// Stored delivery statuses.
pub(super) const APPLIED: &str = "applied";
pub(super) const IGNORED: &str = "ignored";
pub(super) const REJECTED: &str = "rejected";

/// A verified delivery, hashed and parsed before it joins a batch.
pub(super) struct Job {
    pub(super) body: Vec<u8>,
    pub(super) sha: String,
    pub(super) parsed: Result<Delivery, argyle::ParseError>,
    pub(super) received_at: DateTime<Utc>,
    /// The request's `ingest` span: the batch's work for this delivery is traced under it.
    pub(super) span: tracing::Span,
}

impl Job {
    /// The user whose row this delivery locks, if any; batches take row locks in this order.
    pub(super) fn lock_key(&self) -> Option<UserId> {
        self.parsed.as_ref().ok().and_then(|d| d.event.user())
    }
}

impl Core {
    /// Stores and applies one verified delivery. It joins the next group commit (see
    /// `core::commit`); the answer arrives only after the transaction holding it has committed.
    #[tracing::instrument(name = "ingest", skip_all)]
    pub async fn ingest(
        &self,
        body: Verified<impl AsRef<[u8]>>,
    ) -> Result<IngestReport, CoreError> {
        let body = body.get().as_ref().to_vec();
        let job = Job {
            sha: hex::encode(Sha256::digest(&body)),
            parsed: argyle::parse(&body),
            body,
            received_at: Utc::now(),
            span: tracing::Span::current(),
        };
        self.committer.submit(job).await
    }
}

/// Stores one delivery and applies it inside the batch's transaction. Returns the answer for the
/// sender and the domain events to append when the batch commits.
pub(super) async fn stage(
    txn: &DatabaseTransaction,
    job: &Job,
) -> Result<(IngestReport, Vec<DomainEvent>), CoreError> {
    let (status, error, event_name, subscription, user_id) = match &job.parsed {
        Ok(delivery) => (
            if delivery.event == ArgyleEvent::Other {
                IGNORED
            } else {
                APPLIED
            },
            None,
            Some(delivery.event_name.clone()),
            delivery.subscription.clone(),
            delivery.event.user().map(|user| user.to_string()),
        ),
        Err(error) => (REJECTED, Some(error.to_string()), None, None, None),
    };
    let inserted = delivery::Entity::insert(delivery::ActiveModel {
        body_sha256: Set(job.sha.clone()),
        body: Set(job.body.clone()),
        event_name: Set(event_name.clone()),
        subscription: Set(subscription),
        user_id: Set(user_id),
        status: Set(status.to_owned()),
        error: Set(error),
        received_at: Set(job.received_at),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([delivery::Column::BodySha256])
    .exec(txn)
    .await?;
    let delivery_id = match inserted {
        TryInsertResult::Inserted(result) => result.last_insert_id,
        TryInsertResult::Conflicted | TryInsertResult::Empty => {
            return Ok((duplicate(txn, &job.sha).await?, vec![]));
        }
    };

    let (outcome, events) = match &job.parsed {
        Err(error) => (
            Outcome::Rejected {
                reason: error.to_string(),
            },
            vec![],
        ),
        Ok(Delivery {
            event: ArgyleEvent::Other,
            ..
        }) => (Outcome::Ignored, vec![]),
        Ok(delivery) => {
            let applied = apply(
                txn,
                job.received_at,
                delivery_id,
                &job.sha,
                delivery.event.clone(),
            )
            .await?;
            match applied {
                Ok(events) => (
                    Outcome::Applied {
                        events: events.len(),
                    },
                    events,
                ),
                Err(reason) => {
                    // A consistency conflict found before any write: keep the delivery for
                    // inspection, marked as rejected.
                    delivery::Entity::update_many()
                        .col_expr(delivery::Column::Status, REJECTED.into())
                        .col_expr(delivery::Column::Error, reason.clone().into())
                        .filter(delivery::Column::Id.eq(delivery_id))
                        .exec(txn)
                        .await?;
                    (Outcome::Rejected { reason }, vec![])
                }
            }
        }
    };
    let report = IngestReport {
        delivery_id,
        event_name,
        outcome,
    };
    Ok((report, events))
}

/// The answer for a body stored before (possibly earlier in the same batch): the same verdict,
/// nothing changed.
async fn duplicate(txn: &DatabaseTransaction, sha: &str) -> Result<IngestReport, CoreError> {
    let existing = delivery::Entity::find()
        .filter(delivery::Column::BodySha256.eq(sha))
        .one(txn)
        .await?
        .ok_or_else(|| {
            CoreError::Internal(StoreError::Corrupt {
                table: "deliveries",
                detail: format!("conflicting row for {sha} vanished"),
            })
        })?;
    let outcome = match existing.status.as_str() {
        REJECTED => Outcome::Rejected {
            reason: existing.error.unwrap_or_default(),
        },
        _ => Outcome::Duplicate,
    };
    Ok(IngestReport {
        delivery_id: existing.id,
        event_name: existing.event_name,
        outcome,
    })
}

/// The per-user work of one event. Returns the domain events it causes (the caller appends them),
/// or a reason to reject the delivery (checked before anything is written).
pub(super) async fn apply(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    delivery_id: i64,
    sha: &str,
    event: ArgyleEvent,
) -> Result<Result<Vec<DomainEvent>, String>, CoreError> {
    let Some(user_id) = event.user() else {
        return Ok(Ok(vec![]));
    };
    let mut external_id = None;
    let mut report = None;
    let observations: Vec<(AccountId, Vec<Observation>)> = match event {
        ArgyleEvent::Account {
            account,
            observations,
            ..
        } => vec![(account, observations)],
        ArgyleEvent::ReportsReady {
            external_id: ext,
            accounts,
            ..
        } => {
            external_id = ext;
            accounts
                .into_iter()
                .map(|(account, observation)| (account, vec![observation]))
                .collect()
        }
        ArgyleEvent::UserFullySynced {
            external_id: ext,
            accounts,
            ..
        } => {
            external_id = ext;
            accounts
                .into_iter()
                .map(|account| (account, vec![Observation::Synced]))
                .collect()
        }
        ArgyleEvent::ReportGenerated {
            report_type,
            argyle_report_id,
            ..
        } => {
            report = Some((report_type, argyle_report_id));
            vec![]
        }
        ArgyleEvent::Other => vec![],
    };
    let (user_row, created) = lock_user(txn, user_id, now).await?;
    // Under the user's lock, one read: the user's accounts and any account this delivery names.
    let mut named = Condition::any().add(account::Column::UserId.eq(user_id.to_string()));
    if !observations.is_empty() {
        named = named.add(
            account::Column::AccountId
                .is_in(observations.iter().map(|(account, _)| account.to_string())),
        );
    }
    let rows = account::Entity::find().filter(named).all(txn).await?;
    // An account may belong to one user only: a delivery that names another user's account is
    // rejected, leaving nothing of it behind.
    if let Some(row) = rows.iter().find(|row| row.user_id != user_row.user_id) {
        let reason = format!(
            "account {} belongs to user {}, not {user_id}",
            row.account_id, row.user_id
        );
        if created {
            user::Entity::delete_by_id(user_id.to_string())
                .exec(txn)
                .await?;
        }
        return Ok(Err(reason));
    }
    let mut accounts: BTreeMap<AccountId, AccountRecord> = rows
        .into_iter()
        .map(|row| AccountRecord::try_from(row).map(|record| (record.account_id, record)))
        .collect::<Result<_, _>>()?;

    let mut events = Vec::new();
    if let Some((report_type, argyle_report_id)) = report {
        let inserted = insert_report(
            txn,
            now,
            delivery_id,
            sha,
            user_id,
            report_type,
            argyle_report_id,
        );
        events.extend(inserted.await?);
    }

    for (account_id, observations) in observations {
        let existing = accounts.get(&account_id);
        let mut facts = existing.map(|a| a.facts.clone()).unwrap_or_default();
        for observation in &observations {
            facts.observe(observation);
        }
        if existing.is_some_and(|a| a.facts == facts) {
            continue;
        }
        let record = save_account(txn, now, user_id, account_id, facts, existing).await?;
        if existing.map(|a| a.state) != Some(record.state) {
            events.push(DomainEvent::AccountChanged {
                user: user_id,
                account: account_id,
                from: existing.map(|a| a.state),
                to: record.state,
            });
        }
        accounts.insert(account_id, record);
    }

    let previous: ReadinessState = parse_name("users", &user_row.state)?;
    let readiness = user_readiness(accounts.values().map(|a| a.state));
    if created || readiness != previous {
        events.push(DomainEvent::ReadinessChanged {
            user: user_id,
            from: (!created).then_some(previous),
            to: readiness,
        });
    }
    let merged_external_id = merge_external_id(user_row.external_id.clone(), external_id);
    let changed = !events.is_empty() || merged_external_id != user_row.external_id;
    if changed {
        let mut update = user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, now.into())
            .col_expr(user::Column::ExternalId, merged_external_id.into())
            .filter(user::Column::UserId.eq(user_id.to_string()));
        if readiness != previous {
            update = update
                .col_expr(user::Column::State, readiness.as_str().into())
                .col_expr(user::Column::StateSince, now.into());
        }
        update.exec(txn).await?;
    }
    Ok(Ok(events))
}

/// External ids should never change; if Argyle ever reports two, keep the greater one so that
/// the answer does not depend on delivery order.
fn merge_external_id(current: Option<String>, incoming: Option<String>) -> Option<String> {
    match (current, incoming) {
        (Some(a), Some(b)) => Some(Ord::max(a, b)),
        (a, b) => a.or(b),
    }
}

/// Locks the user's row until commit (PostgreSQL `FOR UPDATE`; SQLite writes are already
/// serialised), creating it first if new, so concurrent deliveries for one user apply one at a
/// time. One statement for a known user; an insert (whose new row is ours) for a new one.
async fn lock_user(
    txn: &DatabaseTransaction,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<(user::Model, bool), CoreError> {
    let find = || {
        user::Entity::find_by_id(user_id.to_string())
            .lock_exclusive()
            .one(txn)
    };
    if let Some(row) = find().await? {
        return Ok((row, false));
    }
    let new = user::Model {
        user_id: user_id.to_string(),
        external_id: None,
        state: ReadinessState::NoAccounts.as_str().to_owned(),
        state_since: now,
        created_at: now,
        updated_at: now,
    };
    let inserted = user::Entity::insert(user::ActiveModel::from(new.clone()))
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
    if matches!(inserted, TryInsertResult::Inserted(1)) {
        return Ok((new, true));
    }
    // Created meanwhile by another transaction (another replica): wait for it and lock.
    let row = find().await?.ok_or_else(|| {
        CoreError::Internal(StoreError::Corrupt {
            table: "users",
            detail: format!("user {user_id} vanished after a conflicting insert"),
        })
    })?;
    Ok((row, false))
}

async fn save_account(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    user_id: UserId,
    account_id: AccountId,
    facts: AccountFacts,
    existing: Option<&AccountRecord>,
) -> Result<AccountRecord, CoreError> {
    let derived = facts.state();
    let state: AccountState = derived.state;
    let error = derived.error.cloned();
    let json = serde_json::to_string(&facts).map_err(|error| {
        CoreError::Internal(StoreError::Corrupt {
            table: "accounts",
            detail: format!("facts of {account_id} do not serialise: {error}"),
        })
    })?;
    let first_seen_at = existing.map_or(now, |a| a.first_seen_at);
    let model = account::ActiveModel {
        account_id: Set(account_id.to_string()),
        user_id: Set(user_id.to_string()),
        state: Set(state.as_str().to_owned()),
        facts: Set(json),
        error_code: Set(error.as_ref().and_then(|e| e.code.clone())),
        error_message: Set(error.as_ref().and_then(|e| e.message.clone())),
        last_synced_at: Set(facts.synced_at),
        first_seen_at: Set(first_seen_at),
        updated_at: Set(now),
    };
    account::Entity::insert(model)
        .on_conflict(
            OnConflict::column(account::Column::AccountId)
                .update_columns([
                    account::Column::State,
                    account::Column::Facts,
                    account::Column::ErrorCode,
                    account::Column::ErrorMessage,
                    account::Column::LastSyncedAt,
                    account::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(AccountRecord {
        account_id,
        user_id,
        last_synced_at: facts.synced_at,
        facts,
        state,
        error,
        first_seen_at,
        updated_at: now,
    })
}

/// Records a generated report once. Its id is derived from Argyle's report id when present (so
/// repeated announcements of one report collapse), else from the delivery's hash.
async fn insert_report(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    delivery_id: i64,
    sha: &str,
    user_id: UserId,
    report_type: ReportType,
    argyle_report_id: Option<String>,
) -> Result<Option<DomainEvent>, CoreError> {
    let name = match &argyle_report_id {
        Some(id) => format!("argyle-report:{id}"),
        None => format!("delivery:{sha}"),
    };
    let id = ReportId(Uuid::new_v5(&REPORT_NAMESPACE, name.as_bytes()));
    let inserted = report::Entity::insert(report::ActiveModel {
        id: Set(id.to_string()),
        argyle_report_id: Set(argyle_report_id.clone()),
        user_id: Set(user_id.to_string()),
        report_type: Set(report_type.as_str().to_owned()),
        generated_at: Set(now),
        delivery_id: Set(delivery_id),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([report::Column::Id])
    .exec_without_returning(txn)
    .await?;
    Ok(
        matches!(inserted, TryInsertResult::Inserted(1)).then(|| DomainEvent::ReportGenerated {
            report: id,
            user: user_id,
            report_type: report_type.as_str().to_owned(),
            argyle_report_id,
        }),
    )
}

/// Appends events to the log in the caller's transaction, under the append lock that makes
/// sequence order equal commit order (see `core::log`).
#[tracing::instrument(name = "append_events", skip_all, fields(count = events.len()))]
pub(super) async fn append_events(
    txn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    events: &[DomainEvent],
) -> Result<usize, CoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let rows = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_string(event).map_err(|error| {
                CoreError::Internal(StoreError::Corrupt {
                    table: "events",
                    detail: format!("event does not serialise: {error}"),
                })
            })?;
            Ok(event::ActiveModel {
                kind: Set(event.kind().to_owned()),
                user_id: Set(event.user().to_string()),
                payload: Set(payload),
                recorded_at: Set(now),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    super::log::lock_for_append(txn).await?;
    event::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(events.len())
}
