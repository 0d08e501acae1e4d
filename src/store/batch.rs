//! The unit of work of one group commit, with a fixed number of statements whatever the batch
//! size: the inbox rows are inserted (deduplicated by the body's SHA-256 with a unique
//! constraint, not check-then-insert), the batch's users are read and locked in user-id order
//! with their accounts, the owners of the accounts it names, and the reports it names; the
//! caller applies its events to those aggregates in memory; what changed is written back with
//! one multi-row write per table, and the domain events are appended under the log's append
//! lock (see `store::log`). On PostgreSQL the write-back is held and sent with the append as
//! one statement (see [`Batch::conn`]). Nothing is visible to anyone until [`Batch::commit`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Select, TransactionTrait, TryInsertResult,
};

use super::entities::{account, delivery, report, user, user_external_id};
use super::pg_rows::{Conflict, Held, RowsWrite, one_of};
use super::rows::{
    account_row, parse_id, parse_name, report_from_row, report_row, user_from_rows, user_row,
};
use super::{Store, StoreError};
use crate::domain::events::DomainEvent;
use crate::domain::report::Report;
use crate::domain::user::{Owners, User};
use crate::domain::{AccountId, DeliveryStatus, ReportId, UserId};

/// The columns a user's write-back changes (the id and `created_at` never change).
const USER_CHANGES: [user::Column; 5] = [
    user::Column::ExternalId,
    user::Column::ExternalIds,
    user::Column::State,
    user::Column::StateSince,
    user::Column::UpdatedAt,
];

/// The columns an account's write-back changes (its id, owner and `first_seen_at` never change).
const ACCOUNT_CHANGES: [account::Column; 6] = [
    account::Column::State,
    account::Column::Facts,
    account::Column::ErrorCode,
    account::Column::ErrorMessage,
    account::Column::LastSyncedAt,
    account::Column::UpdatedAt,
];

/// The columns a report's write-back changes (its id, user, type, origin, request and
/// `generated_at`, the time it was first recorded, never change).
const REPORT_CHANGES: [report::Column; 7] = [
    report::Column::ArgyleReportId,
    report::Column::DeliveryId,
    report::Column::Status,
    report::Column::StatusReason,
    report::Column::AnnouncedAt,
    report::Column::Details,
    report::Column::UpdatedAt,
];

/// A delivery to keep in the inbox, with the verdict known before applying it.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub body_sha256: &'a str,
    pub body: &'a [u8],
    pub event_name: Option<&'a str>,
    pub subscription: Option<&'a str>,
    pub user: Option<UserId>,
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// How the inbox took a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inboxed {
    /// Stored now, under this id.
    New { id: i64 },
    /// The same body was stored before.
    Seen {
        id: i64,
        event_name: Option<String>,
        status: DeliveryStatus,
        error: Option<String>,
    },
}

/// What a batch needs loaded before its events are applied.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub users: BTreeSet<UserId>,
    /// Every account the batch names (their owners are loaded, whoever they are).
    pub accounts: BTreeSet<AccountId>,
    /// Every report the batch names, with the user whose event names it.
    pub reports: BTreeMap<ReportId, UserId>,
    /// Deliveries that announce a report, with their user: a report a delivery announced before
    /// is known by it, whatever its id (replays of deliveries stored under an older id rule).
    pub report_deliveries: BTreeMap<i64, UserId>,
    /// Argyle report ids the batch names, with their user: a report this service requested is
    /// found by the id Argyle gave it.
    pub argyle_reports: BTreeMap<String, UserId>,
    /// Also load the batch users' reports requested since then (Argyle's daily cap).
    pub requests_since: Option<DateTime<Utc>>,
}

/// The aggregates a batch applies its events to, and who owns the accounts it names.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub users: BTreeMap<UserId, User>,
    pub owners: Owners,
}

/// One open transaction of the ingest pipeline.
pub struct Batch {
    txn: DatabaseTransaction,
    /// The store's `origin`, for the log notification.
    origin: std::sync::Arc<str>,
    /// PostgreSQL: the write-back held for the batch's next statement (see [`Batch::conn`]).
    held: Mutex<Held>,
}

impl Store {
    /// Opens the unit of work of one group commit (on PostgreSQL, its statements planned as
    /// `store::plans` says).
    pub async fn begin_batch(&self) -> Result<Batch, StoreError> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(super::plans::BATCH_PLANS).await?;
        }
        Ok(Batch {
            txn,
            origin: self.origin.clone(),
            held: Mutex::default(),
        })
    }
}

impl Batch {
    /// Keeps each delivery in the inbox unless the same body is already there. `rows` must have
    /// distinct hashes; the answer has one entry per row, in order.
    pub async fn insert_deliveries(
        &self,
        rows: &[NewDelivery<'_>],
    ) -> Result<Vec<Inboxed>, StoreError> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let new = self.insert_new_deliveries(rows).await?;
        let seen: Vec<&str> = rows
            .iter()
            .map(|row| row.body_sha256)
            .filter(|sha| !new.contains_key(*sha))
            .collect();
        let mut earlier: HashMap<String, delivery::Model> = HashMap::new();
        if !seen.is_empty() {
            let seen: Vec<String> = seen.into_iter().map(str::to_owned).collect();
            for row in delivery::Entity::find()
                .filter(one_of(self.backend(), delivery::Column::BodySha256, seen))
                .all(self.conn().await?)
                .await?
            {
                earlier.insert(row.body_sha256.clone(), row);
            }
        }
        rows.iter()
            .map(|row| match new.get(row.body_sha256) {
                Some(&id) => Ok(Inboxed::New { id }),
                None => {
                    let stored =
                        earlier
                            .remove(row.body_sha256)
                            .ok_or_else(|| StoreError::Corrupt {
                                table: "deliveries",
                                detail: format!("conflicting row for {} vanished", row.body_sha256),
                            })?;
                    Ok(Inboxed::Seen {
                        id: stored.id,
                        status: parse_name("deliveries", &stored.status)?,
                        event_name: stored.event_name,
                        error: stored.error,
                    })
                }
            })
            .collect()
    }

    /// Inserts the rows whose body is not stored yet; returns their ids by body hash.
    async fn insert_new_deliveries(
        &self,
        rows: &[NewDelivery<'_>],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<delivery::ActiveModel> = rows.iter().map(delivery_row).collect();
        if self.backend() == DbBackend::Postgres {
            let key = [delivery::Column::BodySha256];
            return RowsWrite::new(&rows, Conflict::Ignore(&key))?
                .returning("body_sha256, id")
                .run(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| Ok((row.try_get("", "body_sha256")?, row.try_get("", "id")?)))
                .collect();
        }
        let inserted = delivery::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([delivery::Column::BodySha256])
            .exec_with_returning_many(self.conn().await?)
            .await?;
        Ok(match inserted {
            TryInsertResult::Inserted(rows) => {
                rows.into_iter().map(|r| (r.body_sha256, r.id)).collect()
            }
            TryInsertResult::Conflicted | TryInsertResult::Empty => HashMap::new(),
        })
    }

    /// Reads what the batch's events touch: its users (locked, in user-id order, so batches of
    /// different replicas take row locks in one global order) with all their accounts, the
    /// owners of the accounts it names, and the reports it names. Three queries at most.
    pub async fn load(&self, wanted: &Wanted) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        if wanted.users.is_empty() {
            return Ok(loaded);
        }
        let backend = self.backend();
        let user_ids: Vec<String> = wanted.users.iter().map(UserId::to_string).collect();
        let rows = user::Entity::find()
            .filter(one_of(backend, user::Column::UserId, user_ids.clone()))
            .order_by_asc(user::Column::UserId)
            .lock_exclusive()
            .all(self.conn().await?)
            .await?;

        let mut condition =
            Condition::any().add(one_of(backend, account::Column::UserId, user_ids));
        if !wanted.accounts.is_empty() {
            let account_ids = wanted.accounts.iter().map(AccountId::to_string).collect();
            condition = condition.add(one_of(backend, account::Column::AccountId, account_ids));
        }
        let mut accounts: HashMap<String, Vec<account::Model>> = HashMap::new();
        for row in account::Entity::find()
            .filter(condition)
            .all(self.conn().await?)
            .await?
        {
            loaded.owners.insert(
                parse_id("accounts", &row.account_id)?,
                parse_id("accounts", &row.user_id)?,
            );
            accounts.entry(row.user_id.clone()).or_default().push(row);
        }

        let mut reports: HashMap<UserId, Vec<Report>> = HashMap::new();
        for report in self.named_reports(wanted).await? {
            // Known to the user whose event names it, so that it is not announced again.
            let named_by = wanted
                .reports
                .get(&report.id)
                .or_else(|| {
                    let delivery = report.delivery_id?;
                    wanted.report_deliveries.get(&delivery)
                })
                .or_else(|| {
                    let argyle = report.argyle_report_id.as_ref()?;
                    wanted.argyle_reports.get(argyle)
                })
                .copied()
                .unwrap_or(report.user);
            reports.entry(named_by).or_default().push(report);
        }

        for row in rows {
            let id: UserId = parse_id("users", &row.user_id)?;
            let user = user_from_rows(
                row,
                accounts.remove(&id.to_string()).unwrap_or_default(),
                reports.remove(&id).unwrap_or_default(),
            )?;
            loaded.users.insert(id, user);
        }
        Ok(loaded)
    }

    /// The reports `wanted` names and the batch users' recent requests (see [`reports_named`]):
    /// one query, none if nothing is named.
    async fn named_reports(&self, wanted: &Wanted) -> Result<Vec<Report>, StoreError> {
        let Some(query) = reports_named(wanted, self.backend()) else {
            return Ok(vec![]);
        };
        query
            .all(self.conn().await?)
            .await?
            .into_iter()
            .map(|row| report_from_row(row).map(|(_, report)| report))
            .collect()
    }

    /// Marks a stored delivery rejected: kept for inspection, not applied.
    pub async fn reject(&self, delivery_id: i64, reason: &str) -> Result<(), StoreError> {
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::Status,
                DeliveryStatus::Rejected.as_str().into(),
            )
            .col_expr(delivery::Column::Error, reason.into())
            .filter(delivery::Column::Id.eq(delivery_id))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Writes back what changed in `users`: one multi-row statement per table at most, on
    /// PostgreSQL held back to travel with the batch's next statement (see [`Batch::conn`]).
    pub async fn save<'u>(
        &self,
        users: impl IntoIterator<Item = &'u User>,
    ) -> Result<(), StoreError> {
        let (mut created, mut updated, mut accounts, mut reports) =
            (vec![], vec![], vec![], vec![]);
        let mut external_ids = vec![];
        for user in users {
            let changes = user.changes();
            if changes.user {
                if user.is_new() {
                    created.push(user_row(user));
                } else {
                    updated.push(user_row(user));
                }
            }
            for id in &changes.accounts {
                if let Some(account) = user.accounts.get(id) {
                    accounts.push(account_row(user, account)?);
                }
            }
            for id in &changes.reports {
                if let Some(report) = user.reports.get(id) {
                    reports.push(report_row(report)?);
                }
            }
            external_ids.extend(changes.new_external_ids.iter().map(|id| {
                user_external_id::ActiveModel {
                    external_id: Set(id.clone()),
                    user_id: Set(user.id.to_string()),
                }
            }));
        }
        // A plain insert: a user created meanwhile by another replica fails the batch, which is
        // then retried delivery by delivery.
        self.write(created, Conflict::Fail).await?;
        self.write(
            updated,
            Conflict::Update(user::Column::UserId, &USER_CHANGES),
        )
        .await?;
        self.write(
            accounts,
            Conflict::Update(account::Column::AccountId, &ACCOUNT_CHANGES),
        )
        .await?;
        self.write(
            reports,
            Conflict::Update(report::Column::Id, &REPORT_CHANGES),
        )
        .await?;
        let key = [
            user_external_id::Column::ExternalId,
            user_external_id::Column::UserId,
        ];
        self.write(external_ids, Conflict::Ignore(&key)).await
    }

    /// Appends events to the log under the append lock (see `store::log`); returns their
    /// positions, in order.
    pub async fn append(
        &self,
        events: &[DomainEvent],
        at: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        super::log::append(&self.txn, self.take_held(), events, at, &self.origin).await
    }

    /// Commits everything; only then may the senders be answered.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.conn().await?;
        self.txn.commit().await?;
        Ok(())
    }

    pub(super) fn backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    /// The open transaction, for a statement of the batch (here and in the other store modules
    /// that work inside a batch), once the writes held back are sent: so every statement sees
    /// the writes made before it, and a write-back followed by the log append (the ingest
    /// pipeline's usual end) is one round trip, which carries the writes as data-modifying CTEs
    /// ahead of the append (see `store::log::append`).
    pub(super) async fn conn(&self) -> Result<&DatabaseTransaction, StoreError> {
        self.take_held().send(&self.txn).await?;
        Ok(&self.txn)
    }

    fn take_held(&self) -> Held {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes `rows` as `conflict` says: one statement, none if empty. On PostgreSQL the
    /// statement's text does not depend on how many rows there are (see `store::pg_rows`), and
    /// it is held back for the batch's next statement.
    pub(super) async fn write<A>(
        &self,
        rows: Vec<A>,
        conflict: Conflict<'_, A::Entity>,
    ) -> Result<(), StoreError>
    where
        A: ActiveModelTrait + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        if self.backend() == DbBackend::Postgres {
            let write = RowsWrite::new(&rows, conflict)?;
            write.hold(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner));
            return Ok(());
        }
        let txn = self.conn().await?;
        let insert = <A::Entity as EntityTrait>::insert_many(rows);
        match conflict {
            Conflict::Fail => {
                insert.exec_without_returning(txn).await?;
            }
            Conflict::Ignore(key) => {
                insert
                    .on_conflict_do_nothing_on(key.iter().copied())
                    .exec_without_returning(txn)
                    .await?;
            }
            Conflict::Update(key, columns) => {
                let update = OnConflict::column(key)
                    .update_columns(columns.iter().copied())
                    .to_owned();
                insert
                    .on_conflict(update)
                    .exec_without_returning(txn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The query of the reports `wanted` names (by id, announcing delivery or Argyle id), and of the
/// batch users' reports requested since `wanted.requests_since`; `None` if nothing is named.
/// Every branch is an index lookup (`readiness-bench explain` shows the plan, and a test checks
/// it), so a batch never reads the whole reports table.
pub fn reports_named(wanted: &Wanted, backend: DbBackend) -> Option<Select<report::Entity>> {
    let mut named = Condition::any();
    if !wanted.reports.is_empty() {
        let ids = wanted.reports.keys().map(ReportId::to_string).collect();
        let deliveries = wanted.report_deliveries.keys().copied().collect();
        named = named
            .add(one_of(backend, report::Column::Id, ids))
            .add(one_of(backend, report::Column::DeliveryId, deliveries));
    }
    if !wanted.argyle_reports.is_empty() {
        let argyle_ids = wanted.argyle_reports.keys().cloned().collect();
        named = named.add(one_of(backend, report::Column::ArgyleReportId, argyle_ids));
    }
    if let Some(since) = wanted.requests_since {
        let users = wanted.users.iter().map(UserId::to_string).collect();
        named = named.add(
            Condition::all()
                .add(one_of(backend, report::Column::UserId, users))
                .add(report::Column::RequestedAt.gt(since)),
        );
    }
    (!named.is_empty()).then(|| report::Entity::find().filter(named))
}

fn delivery_row(row: &NewDelivery<'_>) -> delivery::ActiveModel {
    delivery::ActiveModel {
        body_sha256: Set(row.body_sha256.to_owned()),
        body: Set(row.body.to_vec()),
        event_name: Set(row.event_name.map(str::to_owned)),
        subscription: Set(row.subscription.map(str::to_owned)),
        user_id: Set(row.user.map(|user| user.to_string())),
        status: Set(row.status.as_str().to_owned()),
        error: Set(row.error.clone()),
        received_at: Set(row.received_at),
        ..Default::default()
    }
}
