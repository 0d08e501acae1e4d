//! Use cases: apply verified webhook deliveries atomically, answer queries, stream the event log,
//! and operate the inbox. The only thing `http` and `grpc` call; it speaks domain types and its
//! own views, and leaves every SQL statement to `store`.
//!
//! Ingest is a straight pipeline: `ingest` (hash and parse a verified body) → `commit` (the
//! group-commit queue) → `pipeline` (dedupe, load, apply, write, append, answer, in one
//! transaction).

mod commit;
mod health;
mod inbox;
mod ingest;
mod jobs;
pub mod log;
mod pipeline;
mod queries;
mod read_model;
mod reports;

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::{self, Store, StoreError};

pub use crate::argyle::Document;
pub use commit::{IngestBacklog, IngestOptions};
pub use health::{NotReady, PROBE_INTERVAL};
pub use ingest::{IngestReport, Outcome};
pub use jobs::REQUEST_MARKER;
pub use log::{Cursor, EventFilter, Start, StreamItem, StreamOptions};
pub use queries::{ReportFilter, ReportLookup, ReportView, UserFilter, UserLookup};
pub use read_model::{AsOf, ReadModelStats, ReadOptions};
pub use reports::{DAILY_CAP, DocumentFormat, PipelineOptions, ReportRequest};

pub use crate::domain::events::LoggedEvent;
pub use crate::domain::inbox::{InboxFilter, StoredDelivery};
pub use crate::domain::report::Report;
pub use crate::domain::user::{Account, AccountView, User, UserView};

/// Why a use case failed, in terms both transports map once.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The database is unreachable or failing; the caller should retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    /// A request field is malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well-formed but cannot be answered in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The SQLite file was deleted or replaced while the service ran; nothing is read or
    /// written until a restart (logged once, when found).
    #[error("the database file was deleted or replaced while the service ran")]
    DatabaseFileChanged,
    /// The caller's deadline passed while this replica caught up with a `min_cursor`.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// This replica did not reach a `min_cursor` within `read_wait_max_ms`; retry.
    #[error("{0}")]
    Behind(String),
    /// A limit was reached (Argyle's daily cap of reports per user).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Argyle failed while answering for the caller (a document download).
    #[error("Argyle failed: {0}")]
    Upstream(String),
    /// The service is shutting down; retry against another replica or after restart.
    #[error("the service is shutting down; resume from your last cursor")]
    ShuttingDown,
    /// A bug or damaged data; never the caller's fault.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for CoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(_) | StoreError::Listen(_) => CoreError::Unavailable(error),
            StoreError::Corrupt { .. } => CoreError::Internal(error),
        }
    }
}

/// SQLite allows one writer: serialising writes in-process avoids `SQLITE_BUSY` on lock
/// upgrades. PostgreSQL needs none (rows are locked per user instead).
type WriteLock = Option<Arc<Mutex<()>>>;

/// Waits for the SQLite write lock; nothing to wait for on PostgreSQL.
async fn hold(lock: &WriteLock) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    match lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    }
}

/// The application core. Cheap to clone; clones share the store and the log follower.
#[derive(Clone)]
pub struct Core {
    store: Store,
    write_lock: WriteLock,
    /// Whether the database takes writes and is still the file that was opened.
    health: Arc<health::Health>,
    /// The event log's follower and live broadcast, shared by every stream of this process.
    log: Arc<log::LogShared>,
    /// The group-commit queue in front of the ingest transactions.
    committer: commit::Committer,
    /// The report pipeline (off without Argyle API credentials).
    pipeline: Arc<reports::Pipeline>,
    /// This process's views of users and reports, kept exact by the log follower.
    read_model: Arc<read_model::ReadModel>,
    /// This process's pipeline worker, once started.
    worker: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Core {
    /// Starts this process's event log follower and ingest committers over `store`.
    pub async fn start(
        store: Store,
        streams: StreamOptions,
        ingest: IngestOptions,
        reports: PipelineOptions,
    ) -> Result<Self, CoreError> {
        let single_writer = store.is_sqlite();
        let write_lock = single_writer.then(|| Arc::new(Mutex::new(())));
        let read_model =
            read_model::ReadModel::new(streams.read_cache_users, 0, streams.read_wait_max);
        let log = log::LogShared::new(streams);
        let health = Arc::new(health::Health::new(store.database_file()));
        let pipeline = reports::Pipeline::new(reports);
        let committers = if single_writer { 1 } else { ingest.committers };
        let batches = commit::Batches {
            store: store.clone(),
            write_lock: write_lock.clone(),
            health: health.clone(),
            reports: pipeline.clone(),
            log: log.clone(),
            max_batch: ingest.max_batch,
        };
        let core = Self {
            store,
            write_lock,
            health,
            log,
            committer: commit::Committer::start(batches, committers),
            pipeline,
            read_model,
            worker: Arc::default(),
        };
        core.start_follower().await?;
        core.start_workers();
        core.start_health_gauges();
        Ok(core)
    }

    /// Stops the follower and ends every open stream (they tell clients to resume elsewhere).
    pub fn shutdown(&self) {
        self.log.stop();
    }

    /// The database pool, for tests and tools that inspect tables directly, and for closing it.
    pub fn db(&self) -> &store::Db {
        self.store.db()
    }

    /// Closes the database pool (at shutdown).
    pub async fn close(&self) -> Result<(), CoreError> {
        Ok(self.store.close().await?)
    }

    /// Where the deliveries handed to [`Core::ingest`] are: unanswered, and still queued for a
    /// committer. Lets a caller (an operator's tool, a test) wait for a batch to form.
    pub fn ingest_backlog(&self) -> IngestBacklog {
        self.committer.backlog()
    }

    /// True when the database answers a trivial query.
    pub async fn database_reachable(&self) -> bool {
        self.store.ping().await
    }
}
