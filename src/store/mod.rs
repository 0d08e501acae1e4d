//! Persistence with sea-orm: connecting (SQLite or PostgreSQL, chosen by URL), migrations,
//! entities, and the row ↔ domain conversions. Constraint errors are translated here only.

mod batch;
mod checks;
pub mod entities;
mod inbox;
mod jobs;
pub mod log;
pub mod migrations;
#[cfg(target_os = "linux")]
pub mod nodelay;
mod pg_rows;
mod plans;
mod reads;
mod rows;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr};
use sea_orm_migration::MigratorTrait;

pub use batch::{Batch, Inboxed, Loaded, NewDelivery, Wanted, reports_named};
pub use checks::{DatabaseFile, FileChange};
pub use inbox::Verdict;
pub use jobs::{JobCount, Retry};
pub use migrations::Migrator;
pub use plans::PreparedPlan;
pub use reads::{ReportKey, ReportQuery, UserQuery};

/// The database connection pool, as the layers above may hold it (they never name the driver).
pub type Db = DatabaseConnection;

/// The store: every SQL statement of the service goes through it. Cheap to clone; clones share
/// the pool.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// This process among the replicas: the payload of its log notifications, so that its own
    /// listener passes over them (its commits reach its follower directly).
    origin: Arc<str>,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }

    /// The pool, for tests and tools that inspect tables directly.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or refused the statement; usually passes when it returns.
    #[error("database error")]
    Database(#[from] DbErr),
    /// A row holds something this version cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The cross-replica notification channel failed (streams fall back to polling).
    #[error("LISTEN connection: {0}")]
    Listen(String),
}

impl StoreError {
    /// True when the database cannot store data: the disk is full, an I/O error, a read-only
    /// database (see `checks::is_storage_error`); not for a lost connection or a lock.
    pub fn is_storage_error(&self) -> bool {
        matches!(self, StoreError::Database(error) if checks::is_storage_error(error))
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct StoreOptions {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    /// Upper bound on pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection (and for the first connect) before failing.
    pub connect_timeout: Duration,
    /// SQLite: KiB of database pages each connection caches (`PRAGMA cache_size`).
    pub sqlite_cache_kib: u32,
}

/// Each SQLite connection's page cache, in KiB: a quarter of SQLite's own default (2,000 KiB).
/// Every pooled connection keeps its own cache, and under a random read load each fills it, so
/// the pool's size multiplies it (32 connections at SQLite's default held about 60 MiB more
/// than at this size, with the same read and ingest rates: README, Performance). The operating
/// system's page cache still holds the file.
pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 512;

/// Opens the pool and runs pending migrations.
///
/// SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives a power
/// loss: a webhook's 2xx is only sent after such a commit. A database locked by another process
/// for longer than `connect_timeout` fails the statement (503) rather than waiting forever.
///
/// A connection given back to the pool while still inside a transaction (its `COMMIT` or
/// `ROLLBACK` failed, as when SQLite rolls back by itself on a full disk) is closed, never reused:
/// see `checks::outside_transaction`.
pub async fn connect(options: &StoreOptions) -> Result<Store, DbErr> {
    let database_port = tcp_port(&options.url);
    let busy_timeout = options.connect_timeout;
    let cache_size = format!("-{}", options.sqlite_cache_kib);
    let mut connect = ConnectOptions::new(options.url.clone());
    connect
        .max_connections(options.max_connections)
        .min_connections(1)
        .connect_timeout(options.connect_timeout)
        .acquire_timeout(options.connect_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                .pragma("cache_size", cache_size.clone())
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_release(|conn, _| {
                Box::pin(async move { Ok(checks::outside_transaction(conn)) })
            })
        })
        // Outside batches each execution is planned for its values: a generic plan made while
        // a table is nearly empty can be a sequential scan, kept as the table grows. A batch's
        // transaction plans its statements once instead, never as a sequential scan
        // (`store::plans`).
        .map_sqlx_postgres_opts(|opts| opts.options([("plan_cache_mode", "force_custom_plan")]))
        .map_sqlx_postgres_pool_opts(move |pool| {
            pool.after_connect(move |_, _| {
                Box::pin(async move {
                    without_nagle(database_port);
                    Ok(())
                })
            })
            .after_release(|conn, _| Box::pin(async move { Ok(checks::outside_transaction(conn)) }))
        });
    let db = Database::connect(connect).await?;
    Migrator::up(&db, None).await?;
    Ok(Store::new(db))
}

/// Like [`connect`], but a PostgreSQL server that cannot be reached yet, or is starting up or
/// shutting down, is tried again until `wait` has passed (pauses from 250 ms, doubling up to
/// 2 s), each failure logged. This is what a replica started beside its database needs: the
/// database's container or pod is often still starting. Any other error (credentials, a missing
/// database, SQLite, a failing migration) is returned at once, as is the last one when `wait`
/// runs out.
pub async fn connect_waiting(options: &StoreOptions, wait: Duration) -> Result<Store, DbErr> {
    let postgres = options.url.starts_with("postgres");
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let attempt = async {
            if postgres {
                probe_postgres(options).await?;
            }
            connect(options).await
        };
        let error = match attempt.await {
            Ok(store) => return Ok(store),
            Err(error) => error,
        };
        let waited = started.elapsed();
        if !postgres || !checks::is_unreachable(&error) || waited + pause > wait {
            return Err(error);
        }
        tracing::warn!(
            %error,
            waited_ms = waited.as_millis() as u64,
            wait_secs = wait.as_secs(),
            "the database cannot be reached yet; trying again"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One connection to PostgreSQL outside any pool, closed at once, to learn why the server cannot
/// be reached: a pool retries a refused connection by itself until its timeout and then only
/// says that it timed out.
async fn probe_postgres(options: &StoreOptions) -> Result<(), DbErr> {
    let failed = |error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error)));
    let connect_options = PgConnectOptions::from_str(&options.url).map_err(failed)?;
    let connecting = sqlx::PgConnection::connect_with(&connect_options);
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(failed(error)),
        Err(_) => Err(failed(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {:?}", options.connect_timeout),
        )))),
    }
}

/// The TCP port of a PostgreSQL URL; none for SQLite or a Unix socket.
fn tcp_port(url: &str) -> Option<u16> {
    let options = PgConnectOptions::from_str(url).ok()?;
    options.get_socket().is_none().then(|| options.get_port())
}

/// Turns Nagle's algorithm off on the database's connections (see `store::nodelay`); a failure
/// (a sandbox that forbids `pidfd_getfd`) only costs speed, so the first one is logged.
fn without_nagle(port: Option<u16>) {
    #[cfg(target_os = "linux")]
    if let Some(port) = port
        && let Err(error) = nodelay::set_on_database_sockets(port)
    {
        static LOGGED: std::sync::Once = std::sync::Once::new();
        LOGGED.call_once(|| {
            tracing::warn!(%error, "could not set TCP_NODELAY on the database connections");
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = port;
}

impl Store {
    /// True for the single-writer backend (SQLite), whose writes the core serialises in-process.
    pub fn is_sqlite(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Sqlite
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// The smallest real write (one row's counter), committed on its own: how readiness learns
    /// that a database which refused writes takes them again.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        Ok(checks::probe_write(&self.db).await?)
    }

    /// The SQLite file this store opened (device and inode), to notice it being deleted or
    /// replaced; `None` on PostgreSQL.
    pub fn database_file(&self) -> Option<DatabaseFile> {
        DatabaseFile::opened_by(&self.db)
    }

    /// Closes the pool (at shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        Ok(self.db.close_by_ref().await?)
    }
}
