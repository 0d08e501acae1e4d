//! The ordered event log and the streams that read it.
//!
//! **Commit order is sequence order.** Each transaction that appends events first takes one
//! transaction-scoped lock (PostgreSQL `pg_advisory_xact_lock`; on SQLite all writes are already
//! serialised in-process), then takes its sequence values, and holds the lock until it commits.
//! So if a reader sees event `s`, every event below `s` was committed before `s`'s transaction
//! even took its sequence values, and is visible too: a follower that reads "seq > last" never
//! skips a row that commits late. Sequence values of rolled-back transactions leave holes, which
//! readers simply pass over. The lock only covers the short tail of a write (append + commit).
//!
//! **One follower per process** reads new rows once and fans them out on a bounded broadcast
//! channel; it is woken by local commits, by PostgreSQL `NOTIFY` from other replicas (a hint
//! only), and by a poll interval (the fallback). Subscribers catch up from the database, then
//! follow the broadcast; one that falls behind the channel's capacity goes back to reading from
//! the database, so a slow subscriber never blocks ingestion or other subscribers and never loses
//! events, and its memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Core, CoreError};
use crate::domain::events::DomainEvent;
use crate::store::StoreError;
use crate::store::entities::event;

/// The PostgreSQL channel that carries "new events" hints between replicas.
pub const NOTIFY_CHANNEL: &str = "readiness_events";
/// The advisory lock key that orders event appends (an arbitrary constant, "readiness" in hex-ish).
pub const APPEND_LOCK_KEY: i64 = 0x7265_6164_696e_6573;
/// Rows read per database round trip while catching up.
const BATCH: u64 = 1000;

/// Tuning of the log follower and streams.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Events the shared broadcast channel holds; a subscriber further behind reads the database.
    pub broadcast_capacity: usize,
    /// How often the follower polls the log when nothing woke it.
    pub poll_interval: Duration,
    /// How long a stream may stay silent before it sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// Messages buffered per subscriber before it is considered slow.
    pub subscriber_buffer: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            broadcast_capacity: 4096,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(15),
            subscriber_buffer: 64,
        }
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log: the stable event id and the basis of cursors.
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub event: DomainEvent,
}

/// An opaque, resumable position in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}", self.0))
    }

    /// Parses a cursor this service issued; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let seq: i64 = text.strip_prefix("v1:")?.parse().ok()?;
        (seq >= 0).then_some(Cursor(seq))
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    Now,
    After(Cursor),
}

/// What a stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// An event that passed the filter.
    Event(Arc<LoggedEvent>),
    /// Every stored event up to this cursor has been delivered; live events follow.
    CaughtUp(Cursor),
    /// Nothing delivered for a while; the position read so far.
    Heartbeat(Cursor),
}

/// Which events a stream delivers.
pub type EventFilter = Arc<dyn Fn(&DomainEvent) -> bool + Send + Sync>;

/// The shared half of the log: follower wake-ups and the live broadcast.
pub(super) struct LogShared {
    tail: broadcast::Sender<Arc<LoggedEvent>>,
    /// Woken after a local commit that appended events (and by NOTIFY from other replicas).
    wake: Notify,
    options: StreamOptions,
    /// Cancelled at shutdown: ends the follower and every open stream.
    stop: CancellationToken,
}

impl LogShared {
    pub(super) fn new(options: StreamOptions) -> Arc<Self> {
        let (tail, _) = broadcast::channel(options.broadcast_capacity.max(1));
        Arc::new(Self {
            tail,
            wake: Notify::new(),
            options,
            stop: CancellationToken::new(),
        })
    }

    /// Tells the follower that new events were committed.
    pub(super) fn committed(&self) {
        self.wake.notify_one();
    }

    pub(super) fn stop(&self) {
        self.stop.cancel();
    }
}

/// Takes the append lock for the current transaction (see the module documentation) and hints
/// other replicas (PostgreSQL `NOTIFY`, delivered at commit) that events follow: one statement.
pub(super) async fn lock_for_append(txn: &impl ConnectionTrait) -> Result<(), CoreError> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY}), pg_notify('{NOTIFY_CHANNEL}', '')"
            ),
        ))
        .await?;
    }
    Ok(())
}

/// Events after `after`, in order, at most `limit`.
async fn read_after(
    db: &DatabaseConnection,
    after: i64,
    limit: u64,
) -> Result<Vec<LoggedEvent>, CoreError> {
    event::Entity::find()
        .filter(event::Column::Seq.gt(after))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|row| {
            let event = serde_json::from_str(&row.payload).map_err(|error| {
                CoreError::Internal(StoreError::Corrupt {
                    table: "events",
                    detail: format!("event {}: {error}", row.seq),
                })
            })?;
            Ok(LoggedEvent {
                seq: row.seq,
                recorded_at: row.recorded_at,
                event,
            })
        })
        .collect()
}

async fn last_seq(db: &DatabaseConnection) -> Result<i64, CoreError> {
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

impl Core {
    /// Starts the log follower (and, on PostgreSQL, the NOTIFY listener) for this process.
    pub(super) async fn start_follower(&self) -> Result<(), CoreError> {
        let mut last = last_seq(&self.db).await?;
        let (db, log) = (self.db.clone(), self.log.clone());
        if db.get_database_backend() == DbBackend::Postgres {
            tokio::spawn(listen_for_replicas(db.clone(), log.clone()));
        }
        tokio::spawn(async move {
            loop {
                match read_after(&db, last, BATCH).await {
                    Ok(events) => {
                        let full = events.len() as u64 == BATCH;
                        for event in events {
                            last = event.seq;
                            // No receivers is fine: nobody is streaming.
                            let _ = log.tail.send(Arc::new(event));
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "event log follower could not read"),
                }
                tokio::select! {
                    _ = log.stop.cancelled() => return,
                    _ = log.wake.notified() => {}
                    _ = tokio::time::sleep(log.options.poll_interval) => {}
                }
            }
        });
        Ok(())
    }

    /// The cursor a stream starting at `start` begins after, checked against the log.
    async fn resolve_start(&self, start: Start) -> Result<Cursor, CoreError> {
        match start {
            Start::Beginning => Ok(Cursor(0)),
            Start::Now => Ok(Cursor(last_seq(&self.db).await?)),
            Start::After(cursor) => {
                let last = last_seq(&self.db).await?;
                if cursor.0 > last {
                    Err(CoreError::FailedPrecondition(format!(
                        "the cursor is ahead of this service's event log (at most {}): it was \
                         issued by another deployment or the log was reset; start again from the \
                         beginning or from now",
                        Cursor(last).encode()
                    )))
                } else {
                    Ok(cursor)
                }
            }
        }
    }

    /// Opens a stream of the events that pass `filter`, starting at `start`. The receiver yields
    /// the catch-up, one `CaughtUp`, then live events and heartbeats; it ends with an error at
    /// shutdown (`Unavailable`) so that clients reconnect and resume from their last cursor.
    pub async fn subscribe(
        &self,
        start: Start,
        filter: EventFilter,
    ) -> Result<mpsc::Receiver<Result<StreamItem, CoreError>>, CoreError> {
        let cursor = self.resolve_start(start).await?;
        let (tx, rx) = mpsc::channel(self.log.options.subscriber_buffer.max(1));
        let subscriber = Subscriber {
            db: self.db.clone(),
            log: self.log.clone(),
            filter,
            tx,
            cursor: cursor.0,
        };
        tokio::spawn(subscriber.run());
        Ok(rx)
    }
}

/// Why a subscriber stops early.
enum Stop {
    /// The client went away.
    Gone,
    /// The stream must end with this error.
    Failed(CoreError),
}

struct Subscriber {
    db: DatabaseConnection,
    log: Arc<LogShared>,
    filter: EventFilter,
    tx: mpsc::Sender<Result<StreamItem, CoreError>>,
    /// The last log position read (delivered or filtered out).
    cursor: i64,
}

impl Subscriber {
    async fn run(mut self) {
        let open = metrics::gauge!(crate::metrics::STREAMS_OPEN);
        open.increment(1.0);
        let stop = self.log.stop.clone();
        let outcome = tokio::select! {
            _ = stop.cancelled() => Stop::Failed(CoreError::ShuttingDown),
            outcome = self.follow() => outcome,
        };
        if let Stop::Failed(error) = outcome {
            let _ = self.tx.send(Err(error)).await;
        }
        open.decrement(1.0);
    }

    async fn send(&self, item: StreamItem) -> Result<(), Stop> {
        let span = match &item {
            StreamItem::Event(event) => {
                metrics::counter!(crate::metrics::EVENTS_STREAMED).increment(1);
                tracing::info_span!("stream_delivery", event.seq = event.seq)
            }
            _ => tracing::Span::none(),
        };
        tracing::Instrument::instrument(self.tx.send(Ok(item)), span)
            .await
            .map_err(|_| Stop::Gone)
    }

    /// Reads from the database until the end of the log, subscribing to the live broadcast
    /// first so that nothing committed meanwhile can fall between the two.
    async fn catch_up(&mut self) -> Result<broadcast::Receiver<Arc<LoggedEvent>>, Stop> {
        let live = self.log.tail.subscribe();
        loop {
            let events = read_after(&self.db, self.cursor, BATCH)
                .await
                .map_err(Stop::Failed)?;
            let full = events.len() as u64 == BATCH;
            for event in events {
                self.cursor = event.seq;
                if (self.filter)(&event.event) {
                    self.send(StreamItem::Event(Arc::new(event))).await?;
                }
            }
            if !full {
                return Ok(live);
            }
        }
    }

    async fn follow(&mut self) -> Stop {
        match self.follow_inner().await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn follow_inner(&mut self) -> Result<std::convert::Infallible, Stop> {
        let mut live = self.catch_up().await?;
        self.send(StreamItem::CaughtUp(Cursor(self.cursor))).await?;
        let heartbeat = self.log.options.heartbeat_interval;
        let mut quiet_until = tokio::time::Instant::now() + heartbeat;
        loop {
            tokio::select! {
                _ = self.tx.closed() => return Err(Stop::Gone),
                _ = tokio::time::sleep_until(quiet_until) => {
                    self.send(StreamItem::Heartbeat(Cursor(self.cursor))).await?;
                    quiet_until = tokio::time::Instant::now() + heartbeat;
                }
                received = live.recv() => match received {
                    Ok(event) if event.seq <= self.cursor => {}
                    Ok(event) => {
                        self.cursor = event.seq;
                        if (self.filter)(&event.event) {
                            let lag = (Utc::now() - event.recorded_at).num_microseconds().unwrap_or(0);
                            metrics::histogram!(crate::metrics::STREAM_LAG_SECONDS)
                                .record(lag.max(0) as f64 / 1e6);
                            self.send(StreamItem::Event(event)).await?;
                            quiet_until = tokio::time::Instant::now() + heartbeat;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "slow subscriber reads from the database");
                        metrics::counter!(crate::metrics::STREAM_FALLBACKS).increment(1);
                        live = self.catch_up().await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Stop::Failed(CoreError::ShuttingDown));
                    }
                }
            }
        }
    }
}

/// Forwards PostgreSQL notifications from other replicas as follower wake-ups. A hint only:
/// if the listener is down, the poll interval still finds every event.
async fn listen_for_replicas(db: DatabaseConnection, log: Arc<LogShared>) {
    let pool = db.get_postgres_connection_pool().clone();
    while !log.stop.is_cancelled() {
        tokio::select! {
            _ = log.stop.cancelled() => return,
            result = listen_once(&pool, &log) => {
                let error = match result { Err(error) => error, Ok(never) => match never {} };
                tracing::warn!(%error, "LISTEN connection lost; relying on polling until it returns");
            }
        }
        tokio::select! {
            _ = log.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_once(
    pool: &sea_orm::sqlx::PgPool,
    log: &LogShared,
) -> Result<std::convert::Infallible, sea_orm::sqlx::Error> {
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    loop {
        listener.recv().await?;
        log.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        for seq in [0, 1, 42, i64::MAX] {
            assert_eq!(Cursor::decode(&Cursor(seq).encode()), Some(Cursor(seq)));
        }
        for bad in ["", "42", "djE6LTE", "not base64!", "djI6MQ"] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }
}
