//! Use cases: apply a verified webhook delivery atomically, and answer queries. The only thing
//! `http` and `grpc` call; it owns the database handle and speaks domain types.

mod apply;
mod commit;
mod inbox;
mod ingest;
pub mod log;
mod queries;

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::Mutex;

use crate::store::{self, StoreError};

pub use commit::{IngestBacklog, IngestOptions};
pub use inbox::{DeliverySummary, InboxFilter, STATUSES};
pub use ingest::{IngestReport, Outcome};
pub use log::{Cursor, EventFilter, LoggedEvent, Start, StreamItem, StreamOptions};
pub use queries::{Page, ReportFilter, ReportLookup, UserLookup, UserView};

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
            StoreError::Database(_) => {
                metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                CoreError::Unavailable(error)
            }
            StoreError::Corrupt { .. } => CoreError::Internal(error),
        }
    }
}

impl From<sea_orm::DbErr> for CoreError {
    fn from(error: sea_orm::DbErr) -> Self {
        StoreError::from(error).into()
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

/// The application core. Cheap to clone; clones share the database pool.
#[derive(Clone)]
pub struct Core {
    db: DatabaseConnection,
    write_lock: WriteLock,
    /// The event log's follower and live broadcast, shared by every stream of this process.
    log: Arc<log::LogShared>,
    /// The group-commit queue in front of the ingest transactions.
    committer: commit::Committer,
}

impl Core {
    /// Wraps the database and starts this process's event log follower and ingest committers.
    pub async fn start(
        db: DatabaseConnection,
        streams: StreamOptions,
        ingest: IngestOptions,
    ) -> Result<Self, CoreError> {
        let sqlite = store::is_sqlite(&db);
        let write_lock = sqlite.then(|| Arc::new(Mutex::new(())));
        let log = log::LogShared::new(streams);
        let batches = commit::Batches {
            db: db.clone(),
            write_lock: write_lock.clone(),
            log: log.clone(),
            max_batch: ingest.max_batch,
        };
        let committers = if sqlite { 1 } else { ingest.committers };
        let core = Self {
            db,
            write_lock,
            log,
            committer: commit::Committer::start(batches, committers),
        };
        core.start_follower().await?;
        Ok(core)
    }

    /// Stops the follower and ends every open stream (they tell clients to resume elsewhere).
    pub fn shutdown(&self) {
        self.log.stop();
    }

    /// The database handle, for health checks and shutdown.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Where the deliveries handed to [`Core::ingest`] are: unanswered, and still queued for a
    /// committer. Lets a caller (an operator's tool, a test) wait for a batch to form.
    pub fn ingest_backlog(&self) -> IngestBacklog {
        self.committer.backlog()
    }

    /// True when the database answers a trivial query.
    pub async fn database_reachable(&self) -> bool {
        self.db.ping().await.is_ok()
    }
}
