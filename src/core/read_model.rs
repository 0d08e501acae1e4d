//! The read model: each process keeps a bounded in-memory map of user views and reports, kept
//! exact by the event log. Every change to what a query answers appends a log entry in the same
//! transaction (an internal `view_changed` when no other event tells it), so this process's log
//! follower knows which views changed and at which position; it drops them from the map, in log
//! order, before anything else sees the entry.
//!
//! **Positions.** The model is as of `applied`, the last log position the follower has applied.
//! A view in the map reflects every event up to `applied` (a later event about it would have
//! removed it), so a hit is answered with `applied` as its cursor. A miss reads the database,
//! whose state includes everything committed; the answer's cursor is `applied` as read before
//! the database was, which the answer also reflects. A view read from the database is put in
//! the map only if no entry about it was applied meanwhile (the follower keeps a window of the
//! views its last entries changed; a fill it cannot check against the window is not kept):
//! otherwise the view might be older than the map's position. So a replica's cursors never go
//! backwards, and an answer with cursor `c` reflects every event up to `c`.
//!
//! The maps are [`moka`] caches (bounded by entries, TinyLFU admission); `read_cache_users = 0`
//! turns them off and every read goes to the database.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::watch;

use super::log::Cursor;
use super::{Core, CoreError};
use crate::domain::events::{DomainEvent, LoggedEvent};
use crate::domain::report::Report;
use crate::domain::user::UserView;
use crate::domain::{ReportId, UserId};

/// How a read may be answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Answer only from state at or after this position (a cursor the caller saw elsewhere).
    pub min_cursor: Option<Cursor>,
    /// The caller's deadline (gRPC `grpc-timeout`), for waiting on `min_cursor`.
    pub deadline: Option<tokio::time::Instant>,
}

/// What is read, with the log position it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf<T> {
    pub value: T,
    pub cursor: Cursor,
}

/// Sizes and counts of the read model, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadModelStats {
    pub users: u64,
    pub reports: u64,
    pub position: i64,
}

pub(super) struct ReadModel {
    users: Option<Cache<UserId, Arc<UserView>>>,
    reports: Option<Cache<ReportId, Arc<(i64, Report)>>>,
    /// External id → the users that ever had it (at most two are kept: more is ambiguous).
    external_ids: Option<Cache<String, Arc<[UserId]>>>,
    /// Argyle's report id → ours: set once Argyle answered, never changed afterwards.
    argyle_ids: Option<Cache<String, ReportId>>,
    /// The last log position applied and the views recent entries changed. Readers take it
    /// shared, the follower exclusively while it drops views and moves it, so a lookup and its
    /// position are consistent.
    applied: RwLock<Applied>,
    /// `applied`, for readers waiting on a `min_cursor`.
    position: watch::Sender<i64>,
    /// Longest wait for the follower to reach a `min_cursor`.
    wait_max: Duration,
}

impl ReadModel {
    /// A model of at most `capacity` user views (and as many reports), starting at `position`.
    pub(super) fn new(capacity: u64, position: i64, wait_max: Duration) -> Arc<Self> {
        Arc::new(Self {
            users: cache(capacity),
            reports: cache(capacity),
            external_ids: cache(capacity),
            argyle_ids: cache(capacity),
            applied: RwLock::new(Applied::at(position)),
            position: watch::channel(position).0,
            wait_max,
        })
    }

    /// Sets the position the follower starts from (the model is empty then).
    pub(super) fn start_at(&self, position: i64) {
        *self
            .applied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Applied::at(position);
        self.position.send_replace(position);
    }

    fn applied(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.applied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last log position applied.
    pub(super) fn position(&self) -> i64 {
        self.applied().position
    }

    /// Drops the views `events` change and moves to the last one's position. Called by the
    /// follower, in log order, before the events reach anyone else.
    pub(super) fn apply(&self, events: &[LoggedEvent]) {
        let Some(last) = events.last().map(|event| event.seq) else {
            return;
        };
        {
            let mut applied = self
                .applied
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for logged in events {
                let (seq, event) = (logged.seq, &logged.event);
                if let Some(users) = &self.users {
                    users.invalidate(&event.user());
                }
                applied.touched(seq, View::User(event.user()));
                for report in event.changed_reports() {
                    if let Some(reports) = &self.reports {
                        reports.invalidate(&report);
                    }
                    applied.touched(seq, View::Report(report));
                }
                if let DomainEvent::ViewChanged { external_ids, .. } = event {
                    for id in external_ids {
                        if let Some(cache) = &self.external_ids {
                            cache.invalidate(id);
                        }
                        applied.touched(seq, View::ExternalId(id.clone()));
                    }
                }
            }
            applied.position = applied.position.max(last);
        }
        self.position.send_replace(last);
    }

    fn count(cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        metrics::counter!(crate::metrics::READ_CACHE_LOOKUPS, "cache" => cache, "result" => result)
            .increment(1);
    }

    /// A cached value and the position it is valid at.
    fn lookup<K, V>(&self, cache: &Option<Cache<K, V>>, name: &'static str, key: &K) -> Lookup<V>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let applied = self.applied();
        let found = cache.as_ref().and_then(|cache| cache.get(key));
        if cache.is_some() {
            Self::count(name, found.is_some());
        }
        match found {
            Some(value) => Lookup::Hit(value, applied.position),
            None => Lookup::Miss(applied.position),
        }
    }

    /// Keeps a value read from the database while the model was at `read_at`, unless an entry
    /// about it may have been applied since (the value could then be older than the model).
    fn fill<K, V>(&self, cache: &Option<Cache<K, V>>, key: K, view: View, value: V, read_at: i64)
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let applied = self.applied();
        if let Some(cache) = cache
            && applied.unchanged_since(read_at, &view)
        {
            cache.insert(key, value);
        }
    }

    /// Waits until the model has applied `min` (within the caller's deadline and `wait_max`).
    async fn reach(
        &self,
        min: Cursor,
        deadline: Option<tokio::time::Instant>,
        end: i64,
    ) -> Result<(), CoreError> {
        if min.0 > end {
            return Err(CoreError::FailedPrecondition(format!(
                "min_cursor is ahead of this service's event log (at most {}): it was issued by \
                 another deployment or the log was reset",
                Cursor(end).encode()
            )));
        }
        let limit = tokio::time::Instant::now() + self.wait_max;
        let (until, caller_first) = match deadline {
            Some(deadline) if deadline <= limit => (deadline, true),
            _ => (limit, false),
        };
        let mut position = self.position.subscribe();
        match tokio::time::timeout_at(until, position.wait_for(|at| *at >= min.0)).await {
            Ok(_) => Ok(()),
            Err(_) if caller_first => Err(CoreError::DeadlineExceeded(format!(
                "this replica had not reached min_cursor {} before the deadline (it is at {})",
                min.encode(),
                Cursor(self.position()).encode()
            ))),
            Err(_) => Err(CoreError::Behind(format!(
                "replica behind: it had not reached min_cursor {} after {} ms (it is at {}); \
                 retry, here or on another replica",
                min.encode(),
                self.wait_max.as_millis(),
                Cursor(self.position()).encode()
            ))),
        }
    }
}

/// A view the read model keeps, as the follower names what an entry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    User(UserId),
    Report(ReportId),
    ExternalId(String),
}

/// Views changed by the last entries the follower applied (at most this many).
const WINDOW: usize = 8192;

/// The follower's position and the views its most recent entries changed.
struct Applied {
    position: i64,
    recent: std::collections::VecDeque<(i64, View)>,
    /// Every change at or below this position has left the window.
    forgotten: i64,
}

impl Applied {
    fn at(position: i64) -> Self {
        Self {
            position,
            recent: std::collections::VecDeque::with_capacity(WINDOW),
            forgotten: position,
        }
    }

    fn touched(&mut self, seq: i64, view: View) {
        if self.recent.len() == WINDOW
            && let Some((gone, _)) = self.recent.pop_front()
        {
            self.forgotten = gone;
        }
        self.recent.push_back((seq, view));
    }

    /// True when no entry after `read_at` changed `view` (as far as the window can tell).
    fn unchanged_since(&self, read_at: i64, view: &View) -> bool {
        if read_at == self.position {
            return true;
        }
        read_at >= self.forgotten
            && !self
                .recent
                .iter()
                .rev()
                .take_while(|(seq, _)| *seq > read_at)
                .any(|(_, changed)| changed == view)
    }
}

/// A cache of at most `capacity` entries; none when it is 0.
fn cache<K, V>(capacity: u64) -> Option<Cache<K, V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    (capacity > 0).then(|| Cache::new(capacity))
}

enum Lookup<V> {
    Hit(V, i64),
    Miss(i64),
}

impl Core {
    /// Waits, if `options` asks for a position this process has not applied yet.
    pub(super) async fn reach(&self, options: &ReadOptions) -> Result<(), CoreError> {
        let Some(min) = options.min_cursor else {
            return Ok(());
        };
        if self.read_model.position() >= min.0 {
            return Ok(());
        }
        let end = self.store.log_end().await?;
        self.read_model.reach(min, options.deadline, end).await
    }

    /// Waits until this process's read model has applied a commit whose last event is at `last`
    /// (`pipeline::commit` handed it to the follower), so that whatever answers the writer next
    /// (a webhook's 2xx, a request's reply) is followed by reads that see the write. The wait
    /// is bounded by `read_wait_max_ms`: the write is durable either way, and a follower that
    /// slow is reported by the follower itself.
    pub(super) async fn settle(&self, last: Option<i64>) {
        let Some(last) = last else {
            return;
        };
        let mut position = self.read_model.position.subscribe();
        let limit = self.read_model.wait_max;
        let applied = async {
            tokio::select! {
                _ = position.wait_for(|at| *at >= last) => true,
                // The follower stops at shutdown: nothing will apply the write here.
                _ = self.log.stopping() => true,
            }
        };
        if tokio::time::timeout(limit, applied).await.is_err() {
            tracing::warn!(
                position = last,
                "the read model had not applied a commit after read_wait_max_ms; answering anyway"
            );
        }
    }

    /// One user's view from the read model, or from the database (then kept).
    pub(super) async fn user_view(
        &self,
        id: UserId,
    ) -> Result<Option<AsOf<Arc<UserView>>>, CoreError> {
        let model = &self.read_model;
        match model.lookup(&model.users, "users", &id) {
            Lookup::Hit(user, at) => Ok(Some(AsOf {
                value: user,
                cursor: Cursor(at),
            })),
            Lookup::Miss(at) => {
                let Some(user) = self.store.user(id).await? else {
                    return Ok(None);
                };
                let user = Arc::new(UserView::from(&user));
                model.fill(&model.users, id, View::User(id), user.clone(), at);
                Ok(Some(AsOf {
                    value: user,
                    cursor: Cursor(at),
                }))
            }
        }
    }

    /// The users that ever had `external_id` (at most two: more is ambiguous).
    pub(super) async fn holders(&self, external_id: &str) -> Result<Arc<[UserId]>, CoreError> {
        let model = &self.read_model;
        let key = external_id.to_owned();
        match model.lookup(&model.external_ids, "external_ids", &key) {
            Lookup::Hit(holders, _) => Ok(holders),
            Lookup::Miss(at) => {
                let holders: Arc<[UserId]> = self
                    .store
                    .users_by_external_id(external_id, 2)
                    .await?
                    .iter()
                    .map(|user| user.id)
                    .collect();
                let view = View::ExternalId(key.clone());
                model.fill(&model.external_ids, key, view, holders.clone(), at);
                Ok(holders)
            }
        }
    }

    /// One report (with its position in report order) from the read model, or from the
    /// database (then kept).
    pub(super) async fn report_view(
        &self,
        key: crate::store::ReportKey<'_>,
    ) -> Result<Option<AsOf<Arc<(i64, Report)>>>, CoreError> {
        use crate::store::ReportKey;
        let model = &self.read_model;
        let id = match key {
            ReportKey::Id(id) => Some(id),
            ReportKey::Argyle(argyle) => {
                match model.lookup(&model.argyle_ids, "argyle_ids", &argyle.to_owned()) {
                    Lookup::Hit(id, _) => Some(id),
                    Lookup::Miss(_) => None,
                }
            }
        };
        if let Some(id) = id
            && let Lookup::Hit(report, at) = model.lookup(&model.reports, "reports", &id)
        {
            return Ok(Some(AsOf {
                value: report,
                cursor: Cursor(at),
            }));
        }
        let at = model.position();
        let Some(found) = self.store.report(key).await? else {
            return Ok(None);
        };
        let (id, argyle) = (found.1.id, found.1.argyle_report_id.clone());
        let found = Arc::new(found);
        model.fill(&model.reports, id, View::Report(id), found.clone(), at);
        if let Some(argyle) = argyle {
            // Set once Argyle answered, never changed: always safe to keep.
            model.fill(&model.argyle_ids, argyle, View::Report(id), id, at);
        }
        Ok(Some(AsOf {
            value: found,
            cursor: Cursor(at),
        }))
    }

    /// The read model's sizes and position (counts are exact after pending evictions run).
    pub fn read_model_stats(&self) -> ReadModelStats {
        let model = &self.read_model;
        let count = |cache: Option<u64>| cache.unwrap_or(0);
        ReadModelStats {
            users: count(model.users.as_ref().map(|cache| {
                cache.run_pending_tasks();
                cache.entry_count()
            })),
            reports: count(model.reports.as_ref().map(|cache| {
                cache.run_pending_tasks();
                cache.entry_count()
            })),
            position: model.position(),
        }
    }

    /// A user as the database holds it now, bypassing the read model (for tests and tools
    /// that compare the two).
    pub async fn stored_user(&self, user: UserId) -> Result<Option<UserView>, CoreError> {
        Ok(self.store.user(user).await?.as_ref().map(UserView::from))
    }

    /// The cached view of `user`, if any, without touching the database (for tests that
    /// compare the model with a fresh read).
    pub fn cached_user(&self, user: UserId) -> Option<Arc<UserView>> {
        self.read_model.users.as_ref()?.get(&user)
    }

    /// Every user the read model holds.
    pub fn cached_users(&self) -> Vec<UserId> {
        self.read_model
            .users
            .as_ref()
            .map(|cache| cache.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }
}
