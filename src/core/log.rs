//! The ordered event log, as streams see it: one follower per process and the subscribers it
//! feeds. The log's SQL, and why its sequence order is commit order, are in `store::log`.
//!
//! **One follower per process** takes each new entry once and fans it out on a bounded
//! broadcast channel; it is woken by local commits, by PostgreSQL `NOTIFY` from other replicas
//! (a hint only), and by a poll interval (the fallback). A local commit hands its entries over
//! as it wrote them: when they follow on from the last position applied, with no hole (every
//! lower position is applied, so nothing committed in between can be missed), the follower
//! applies them without reading them back; a hole (another replica's entries, a rolled-back
//! sequence value, a commit handed over late) sends it to the database, which has everything
//! committed. Subscribers catch up from the database, then follow the broadcast; one that falls
//! behind the channel's capacity goes back to reading from the database, so a slow subscriber
//! never blocks ingestion or other subscribers and never loses events, and its memory stays
//! bounded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::read_model::ReadModel;
use super::{Core, CoreError};
use crate::domain::ReadinessState;
use crate::domain::events::{DomainEvent, LoggedEvent};
use crate::store::Store;
/// Rows read per database round trip while catching up.
const BATCH: u64 = 1000;

/// Tuning of the log follower, the streams and the read model it keeps.
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
    /// User views (and as many reports) the read model keeps; 0 turns it off.
    pub read_cache_users: u64,
    /// Longest wait for the follower to reach a read's `min_cursor`.
    pub read_wait_max: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            broadcast_capacity: 4096,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(15),
            subscriber_buffer: 64,
            read_cache_users: 100_000,
            read_wait_max: Duration::from_secs(2),
        }
    }
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

/// Local commits handed over and not yet taken by the follower; beyond this they are dropped
/// and the follower reads the database instead.
const HANDED_MAX: usize = 1024;

/// The shared half of the log: follower wake-ups and the live broadcast.
pub(super) struct LogShared {
    tail: broadcast::Sender<Arc<LoggedEvent>>,
    /// Woken by NOTIFY from other replicas and by local writes not handed over: read the log.
    wake: Notify,
    /// Entries local commits appended, as they wrote them, for the follower.
    handed: std::sync::Mutex<Vec<Vec<LoggedEvent>>>,
    /// Woken when a local commit hands its entries over.
    handed_wake: Notify,
    options: StreamOptions,
    /// Cancelled at shutdown: ends the follower and every open stream.
    stop: CancellationToken,
    /// Users per readiness state as of the log position the follower has read.
    users: UserCounts,
}

/// Users per readiness state, counted once when the follower starts (in the same snapshot as
/// the log position it starts from) and kept current from every `readiness_changed` event it
/// reads, local or from another replica; `/metrics` shows it as the `readiness_users` gauges
/// without querying the database.
#[derive(Default)]
struct UserCounts(std::sync::Mutex<std::collections::HashMap<ReadinessState, i64>>);

impl UserCounts {
    fn reset(&self, counts: Vec<(ReadinessState, u64)>) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.clear();
        map.extend(counts.into_iter().map(|(state, n)| (state, n as i64)));
    }

    fn apply(&self, event: &DomainEvent) {
        let DomainEvent::ReadinessChanged { from, to, .. } = event else {
            return;
        };
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(from) = from {
            *map.entry(*from).or_default() -= 1;
        }
        *map.entry(*to).or_default() += 1;
    }

    fn get(&self) -> Vec<(ReadinessState, i64)> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ReadinessState::ALL
            .into_iter()
            .map(|state| (state, map.get(&state).copied().unwrap_or_default()))
            .collect()
    }
}

impl LogShared {
    pub(super) fn new(options: StreamOptions) -> Arc<Self> {
        let (tail, _) = broadcast::channel(options.broadcast_capacity.max(1));
        Arc::new(Self {
            tail,
            wake: Notify::new(),
            handed: std::sync::Mutex::new(Vec::new()),
            handed_wake: Notify::new(),
            options,
            stop: CancellationToken::new(),
            users: UserCounts::default(),
        })
    }

    /// Hands the entries a local transaction appended (and committed) to the follower; returns
    /// the position of the last one, if any.
    pub(super) fn hand_over(&self, appended: Vec<LoggedEvent>) -> Option<i64> {
        let last = appended.last()?.seq;
        let mut handed = self
            .handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed.len() < HANDED_MAX {
            handed.push(appended);
            drop(handed);
            self.handed_wake.notify_one();
        } else {
            drop(handed);
            self.wake.notify_one();
        }
        Some(last)
    }

    fn take_handed(&self) -> Vec<Vec<LoggedEvent>> {
        std::mem::take(
            &mut *self
                .handed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// True once shutdown has begun.
    pub(super) fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when shutdown begins.
    pub(super) async fn stopping(&self) {
        self.stop.cancelled().await;
    }
}

impl Core {
    /// When the user longest in `state` entered it, if any user is in it (one indexed query).
    pub async fn oldest_in_state(
        &self,
        state: ReadinessState,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CoreError> {
        Ok(self.store.oldest_in_state(state).await?)
    }

    /// Users per readiness state as of the log position this process has read (no query).
    pub fn users_by_state(&self) -> Vec<(ReadinessState, i64)> {
        self.log.users.get()
    }
}

impl Core {
    /// Starts the log follower (and, on PostgreSQL, the NOTIFY listener) for this process.
    pub(super) async fn start_follower(&self) -> Result<(), CoreError> {
        let (mut last, users) = self.store.log_snapshot().await?;
        self.log.users.reset(users);
        self.read_model.start_at(last);
        let (store, log, model) = (
            self.store.clone(),
            self.log.clone(),
            self.read_model.clone(),
        );
        if let Some(notifications) = store.log_notifications() {
            tokio::spawn(listen_for_replicas(notifications, log.clone()));
        }
        tokio::spawn(async move {
            let poll = log.options.poll_interval;
            // Read the database at start, when woken by anything but a handed-over commit, and
            // at least once per poll interval.
            let mut read_database = true;
            let mut last_read = tokio::time::Instant::now();
            loop {
                let (handed, complete) = follows_on(last, log.take_handed());
                apply(&model, &log, handed, &mut last);
                if read_database || !complete || last_read.elapsed() >= poll {
                    last_read = tokio::time::Instant::now();
                    loop {
                        match store.read_log(last, BATCH).await {
                            Ok(events) => {
                                let full = events.len() as u64 == BATCH;
                                apply(&model, &log, events, &mut last);
                                if full {
                                    continue;
                                }
                            }
                            Err(error) => {
                                metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                                tracing::warn!(%error, "event log follower could not read");
                            }
                        }
                        break;
                    }
                }
                read_database = tokio::select! {
                    _ = log.stop.cancelled() => return,
                    _ = log.wake.notified() => true,
                    _ = log.handed_wake.notified() => false,
                    _ = tokio::time::sleep(poll) => true,
                };
            }
        });
        Ok(())
    }

    /// The cursor a stream starting at `start` begins after, checked against the log.
    async fn resolve_start(&self, start: Start) -> Result<Cursor, CoreError> {
        match start {
            Start::Beginning => Ok(Cursor(0)),
            Start::Now => Ok(Cursor(self.store.log_end().await?)),
            Start::After(cursor) => {
                let last = self.store.log_end().await?;
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
    /// `kinds` are the event kinds `filter` can pass: catch-up reads only those from the
    /// database.
    pub async fn subscribe(
        &self,
        start: Start,
        kinds: &'static [&'static str],
        filter: EventFilter,
    ) -> Result<mpsc::Receiver<Result<StreamItem, CoreError>>, CoreError> {
        self.health.check_file()?;
        let cursor = self.resolve_start(start).await?;
        let (tx, rx) = mpsc::channel(self.log.options.subscriber_buffer.max(1));
        let subscriber = Subscriber {
            store: self.store.clone(),
            log: self.log.clone(),
            kinds,
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
    store: Store,
    log: Arc<LogShared>,
    /// The kinds `filter` can pass.
    kinds: &'static [&'static str],
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

    /// Reads from the database up to the end of the log, subscribing to the live broadcast
    /// first so that nothing committed meanwhile can fall between the two. Only the kinds the
    /// filter can pass are read; the position still advances over the others.
    async fn catch_up(&mut self) -> Result<broadcast::Receiver<Arc<LoggedEvent>>, Stop> {
        let live = self.log.tail.subscribe();
        let failed = |error: crate::store::StoreError| Stop::Failed(error.into());
        // Everything up to `end` is committed (sequence order is commit order).
        let end = self.store.log_end().await.map_err(failed)?;
        loop {
            let events = self
                .store
                .read_log_kinds(self.cursor, end, self.kinds, BATCH)
                .await
                .map_err(failed)?;
            let full = events.len() as u64 == BATCH;
            for event in events {
                self.cursor = event.seq;
                if (self.filter)(&event.event) {
                    self.send(StreamItem::Event(Arc::new(event))).await?;
                }
            }
            if !full {
                self.cursor = self.cursor.max(end);
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

/// Applies `events` (in log order, after `last`) to the read model, the user counts and the live
/// broadcast, and moves `last` to the last of them.
fn apply(model: &ReadModel, log: &LogShared, events: Vec<LoggedEvent>, last: &mut i64) {
    // Views first: a stream client may read right after an event arrives.
    model.apply(&events);
    for event in events {
        *last = event.seq;
        log.users.apply(&event.event);
        // No receivers is fine: nobody is streaming.
        let _ = log.tail.send(Arc::new(event));
    }
}

/// Of the commits handed over, the entries that follow on from `last` with no hole, in order;
/// and whether that is all of them (entries at or before `last` were applied already). `false`
/// means a hole: the rest must be read from the database.
fn follows_on(mut last: i64, mut handed: Vec<Vec<LoggedEvent>>) -> (Vec<LoggedEvent>, bool) {
    handed.sort_by_key(|entries| entries.first().map(|event| event.seq));
    let mut next = Vec::new();
    for event in handed.into_iter().flatten() {
        if event.seq <= last {
            continue;
        }
        if event.seq != last + 1 {
            return (next, false);
        }
        last = event.seq;
        next.push(event);
    }
    (next, true)
}

/// Forwards PostgreSQL notifications from other replicas as follower wake-ups. A hint only:
/// if the listener is down, the poll interval still finds every event.
async fn listen_for_replicas(notifications: crate::store::log::Notifications, log: Arc<LogShared>) {
    while !log.stop.is_cancelled() {
        tokio::select! {
            // At shutdown the pool closes too: the listener's error then is no news.
            biased;
            _ = log.stop.cancelled() => return,
            error = notifications.listen(|| log.wake.notify_one()) => {
                tracing::warn!(%error, "LISTEN connection lost; relying on polling until it returns");
            }
        }
        tokio::select! {
            _ = log.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_counts_follow_readiness_changes() {
        let counts = UserCounts::default();
        counts.reset(vec![
            (ReadinessState::Pending, 2),
            (ReadinessState::Ready, 1),
        ]);
        let user = crate::domain::UserId(uuid::Uuid::nil());
        counts.apply(&DomainEvent::ReadinessChanged {
            user,
            from: Some(ReadinessState::Pending),
            to: ReadinessState::Ready,
        });
        counts.apply(&DomainEvent::ReadinessChanged {
            user,
            from: None,
            to: ReadinessState::NoAccounts,
        });
        assert_eq!(
            counts.get(),
            vec![
                (ReadinessState::NoAccounts, 1),
                (ReadinessState::Pending, 1),
                (ReadinessState::Ready, 2),
                (ReadinessState::Blocked, 0),
            ]
        );
    }

    fn entries(positions: &[i64]) -> Vec<LoggedEvent> {
        let user = crate::domain::UserId(uuid::Uuid::nil());
        positions
            .iter()
            .map(|&seq| LoggedEvent {
                seq,
                recorded_at: chrono::DateTime::UNIX_EPOCH,
                event: DomainEvent::ViewChanged {
                    user,
                    reports: vec![],
                    external_ids: vec![],
                },
            })
            .collect()
    }

    fn positions(events: &[LoggedEvent]) -> Vec<i64> {
        events.iter().map(|event| event.seq).collect()
    }

    #[test]
    fn handed_over_commits_are_applied_in_log_order_up_to_the_first_hole() {
        // (last applied, commits handed over, applied from them, no hole)
        type Case = (i64, &'static [&'static [i64]], &'static [i64], bool);
        let cases: [Case; 7] = [
            (10, &[], &[], true),
            (10, &[&[11, 12]], &[11, 12], true),
            // Committers hand over in any order; the follower applies in log order.
            (10, &[&[13, 14], &[11, 12]], &[11, 12, 13, 14], true),
            // Already read from the database.
            (10, &[&[9, 10], &[11]], &[11], true),
            // Another replica's entry, or a rolled-back sequence value, at 11.
            (10, &[&[12, 13]], &[], false),
            (10, &[&[11], &[13]], &[11], false),
            // A hole inside one commit's positions is a hole too.
            (10, &[&[11, 13]], &[11], false),
        ];
        for (last, handed, applied, complete) in cases {
            let runs = handed.iter().map(|run| entries(run)).collect();
            let (next, all) = follows_on(last, runs);
            assert_eq!(
                (positions(&next), all),
                (applied.to_vec(), complete),
                "after {last}, handed {handed:?}"
            );
        }
    }

    #[test]
    fn commits_handed_over_beyond_the_bound_are_dropped_and_wake_a_database_read() {
        use futures_util::FutureExt;
        let log = LogShared::new(StreamOptions::default());
        for seq in 1..=HANDED_MAX as i64 {
            assert_eq!(log.hand_over(entries(&[seq])), Some(seq));
        }
        assert!(
            log.wake.notified().now_or_never().is_none(),
            "a database read was woken while the hand-over had room"
        );

        // One commit more: still answered with its position, not queued, and the follower is
        // told to read the database (where the commit is) instead.
        let over = HANDED_MAX as i64 + 1;
        assert_eq!(log.hand_over(entries(&[over])), Some(over));
        assert!(log.wake.notified().now_or_never().is_some());
        let handed = log.take_handed();
        assert_eq!(handed.len(), HANDED_MAX);
        let (next, all) = follows_on(0, handed);
        assert_eq!(
            positions(&next),
            (1..=HANDED_MAX as i64).collect::<Vec<_>>()
        );
        assert!(all);

        // Taken: there is room again.
        assert_eq!(log.hand_over(entries(&[over + 1])), Some(over + 1));
        assert_eq!(log.take_handed().len(), 1);
    }

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
