//! The event log's SQL: appending under the append lock, reading after a position, the end of
//! the log, and the cross-replica wake-up channel.
//!
//! **Commit order is sequence order.** Each transaction that appends events first takes one
//! transaction-scoped lock (PostgreSQL `pg_advisory_xact_lock`; on SQLite all writes are already
//! serialised), then takes its sequence values, and holds the lock until it commits. So if a
//! reader sees event `s`, every event below `s` was committed before `s`'s transaction even took
//! its sequence values, and is visible too: a reader that follows "seq > last" never skips a row
//! that commits late. Sequence values of rolled-back transactions leave holes, which readers
//! simply pass over. The lock only covers the short tail of a write (append + commit).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::{event, user};
use super::pg_rows::{Conflict, Held, RowsWrite};
use super::{Store, StoreError};
use crate::domain::ReadinessState;
use crate::domain::events::{DomainEvent, LoggedEvent};

/// The PostgreSQL channel that carries "new events" hints between replicas.
pub const NOTIFY_CHANNEL: &str = "readiness_events";
/// The advisory lock key that orders event appends (an arbitrary constant, "readiness" in hex-ish).
pub const APPEND_LOCK_KEY: i64 = 0x7265_6164_696e_6573;

/// Appends `events` in the caller's transaction: makes the `held` writes (PostgreSQL), then
/// takes the append lock and hints other replicas (PostgreSQL `NOTIFY` with `origin` as
/// payload, delivered at commit), then inserts the events, all in one statement. Returns their
/// positions, in the order of `events` (rows draw their sequence values in that order).
///
/// The lock is taken only once every held write is done: a held write may wait for another
/// transaction's row (a user another replica is creating), and waiting for it while holding
/// the lock that transaction needs for its own append would deadlock.
pub(super) async fn append(
    txn: &impl ConnectionTrait,
    held: Held,
    events: &[DomainEvent],
    at: DateTime<Utc>,
    origin: &str,
) -> Result<Vec<i64>, StoreError> {
    if events.is_empty() {
        held.send(txn).await?;
        return Ok(vec![]);
    }
    let rows = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_string(event).map_err(|error| StoreError::Corrupt {
                table: "events",
                detail: format!("event does not serialise: {error}"),
            })?;
            Ok(event::ActiveModel {
                kind: Set(event.kind().to_owned()),
                user_id: Set(event.user().to_string()),
                payload: Set(payload),
                recorded_at: Set(at),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if txn.get_database_backend() == DbBackend::Postgres {
        // One statement: the held writes, then the lock, then the rows draw their sequence
        // numbers.
        let lock = format!(
            "SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY}), \
             pg_notify('{NOTIFY_CHANNEL}', '{origin}')"
        );
        let appended = RowsWrite::new(&rows, Conflict::Fail)?
            .after(&lock)
            .returning("seq")
            .run_after(held, txn)
            .await?;
        let mut positions = appended
            .into_iter()
            .map(|row| row.try_get::<i64>("", "seq"))
            .collect::<Result<Vec<_>, _>>()?;
        positions.sort_unstable();
        return Ok(positions);
    }
    let mut positions = event::Entity::insert_many(rows)
        .exec_with_returning_keys(txn)
        .await?;
    positions.sort_unstable();
    Ok(positions)
}

pub(super) async fn last_seq(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let last = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .order_by_desc(event::Column::Seq)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(last.unwrap_or(0))
}

async fn users_by_state(
    db: &impl ConnectionTrait,
) -> Result<Vec<(ReadinessState, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = user::Entity::find()
        .select_only()
        .column(user::Column::State)
        .column_as(user::Column::UserId.count(), "count")
        .group_by(user::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    rows.into_iter()
        .map(|(state, count)| {
            Ok((
                super::rows::parse_name("users", &state)?,
                count.max(0) as u64,
            ))
        })
        .collect()
}

impl Store {
    /// Events after position `after`, in order, at most `limit`.
    pub async fn read_log(&self, after: i64, limit: u64) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows = event::Entity::find()
            .filter(event::Column::Seq.gt(after))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        rows.into_iter().map(logged).collect()
    }

    /// Events of these `kinds` after position `after` and up to `upto`, in order, at most
    /// `limit`. The others (internal entries, kinds a stream does not deliver) are skipped by
    /// the database, without being read or parsed here.
    pub async fn read_log_kinds(
        &self,
        after: i64,
        upto: i64,
        kinds: &[&str],
        limit: u64,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows = event::Entity::find()
            .filter(event::Column::Seq.gt(after))
            .filter(event::Column::Seq.lte(upto))
            .filter(event::Column::Kind.is_in(kinds.iter().copied()))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        rows.into_iter().map(logged).collect()
    }

    /// The position of the last committed event (0 for an empty log).
    pub async fn log_end(&self) -> Result<i64, StoreError> {
        last_seq(&self.db).await
    }

    /// The end of the log and the users per readiness state, read in one snapshot, so that
    /// applying the events after that position keeps the counts exact.
    pub async fn log_snapshot(&self) -> Result<(i64, Vec<(ReadinessState, u64)>), StoreError> {
        let isolation = (self.db.get_database_backend() == DbBackend::Postgres)
            .then_some(sea_orm::IsolationLevel::RepeatableRead);
        let txn = self.db.begin_with_config(isolation, None).await?;
        let last = last_seq(&txn).await?;
        let users = users_by_state(&txn).await?;
        txn.commit().await?;
        Ok((last, users))
    }

    /// On PostgreSQL, the "new events" notifications of the other replicas (and of operator
    /// commands writing to the same database). `None` on SQLite (one process).
    pub fn log_notifications(&self) -> Option<Notifications> {
        (self.db.get_database_backend() == DbBackend::Postgres).then(|| Notifications {
            pool: self.db.get_postgres_connection_pool().clone(),
            origin: self.origin.clone(),
        })
    }
}

/// A source of cross-replica wake-ups (PostgreSQL `LISTEN`).
pub struct Notifications {
    pool: sea_orm::sqlx::PgPool,
    /// This process's own notifications, passed over.
    origin: std::sync::Arc<str>,
}

impl Notifications {
    /// Listens and calls `wake` for every notification from another process until the
    /// connection fails. It also calls
    /// `wake` once `LISTEN` is in place: a commit notified before that was not heard, and the
    /// follower's read then finds it. A lost connection ends the call (rather than sqlx
    /// reconnecting unseen), so the caller listens again, with that first wake.
    pub async fn listen(&self, wake: impl Fn()) -> StoreError {
        let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(&self.pool).await
        {
            Ok(listener) => listener,
            Err(error) => return StoreError::Listen(error.to_string()),
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            return StoreError::Listen(error.to_string());
        }
        wake();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.payload() == &*self.origin => {}
                Ok(Some(_)) => wake(),
                Ok(None) => return StoreError::Listen("the connection was lost".into()),
                Err(error) => return StoreError::Listen(error.to_string()),
            }
        }
    }
}

/// A log row as an event.
fn logged(row: event::Model) -> Result<LoggedEvent, StoreError> {
    let event = serde_json::from_str(&row.payload).map_err(|error| StoreError::Corrupt {
        table: "events",
        detail: format!("event {}: {error}", row.seq),
    })?;
    Ok(LoggedEvent {
        seq: row.seq,
        recorded_at: row.recorded_at,
        event,
    })
}
