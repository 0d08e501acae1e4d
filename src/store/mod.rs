//! Persistence with sea-orm: connecting (SQLite or PostgreSQL, chosen by URL), migrations,
//! entities, and the row ↔ domain conversions. Constraint errors are translated here only.

mod checks;
pub mod entities;
pub mod migrations;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::domain::account::{AccountFacts, ErrorInfo};
use crate::domain::{AccountId, AccountState, ReadinessState, ReportId, ReportType, UserId};

pub use checks::{DatabaseFile, FileChange, is_storage_error, probe_write};
pub use migrations::Migrator;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or refused the statement; usually passes when it returns.
    #[error("database error")]
    Database(#[from] DbErr),
    /// A row holds something this version cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
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
}

/// Opens the pool and runs pending migrations.
///
/// SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives a power
/// loss: a webhook's 2xx is only sent after such a commit. A database locked by another process
/// for longer than `connect_timeout` fails the statement (503) rather than waiting forever.
///
/// A connection given back to the pool while still inside a transaction (its `COMMIT` or
/// `ROLLBACK` failed, as when SQLite rolls back by itself on a full disk) is closed, never reused:
/// see `checks::outside_transaction`.
pub async fn connect(options: &StoreOptions) -> Result<DatabaseConnection, DbErr> {
    let busy_timeout = options.connect_timeout;
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
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_release(|conn, _| {
                Box::pin(async move { Ok(checks::outside_transaction(conn)) })
            })
        })
        .map_sqlx_postgres_pool_opts(|pool| {
            pool.after_release(|conn, _| {
                Box::pin(async move { Ok(checks::outside_transaction(conn)) })
            })
        });
    let db = Database::connect(connect).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// True for the single-writer backend that needs writes serialised in-process.
pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}

/// Reads a column that holds one of our stable names.
pub(crate) fn parse_name<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("unknown name {value:?}"),
    })
}

pub(crate) fn parse_id<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("malformed id {value:?}"),
    })
}

/// An account as stored, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub account_id: AccountId,
    pub user_id: UserId,
    pub facts: AccountFacts,
    pub state: AccountState,
    pub error: Option<ErrorInfo>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<entities::account::Model> for AccountRecord {
    type Error = StoreError;
    fn try_from(row: entities::account::Model) -> Result<Self, StoreError> {
        let facts = serde_json::from_str(&row.facts).map_err(|error| StoreError::Corrupt {
            table: "accounts",
            detail: format!("facts of {}: {error}", row.account_id),
        })?;
        let error =
            (row.error_code.is_some() || row.error_message.is_some()).then_some(ErrorInfo {
                code: row.error_code,
                message: row.error_message,
            });
        Ok(Self {
            account_id: parse_id("accounts", &row.account_id)?,
            user_id: parse_id("accounts", &row.user_id)?,
            facts,
            state: parse_name("accounts", &row.state)?,
            error,
            last_synced_at: row.last_synced_at,
            first_seen_at: row.first_seen_at,
            updated_at: row.updated_at,
        })
    }
}

/// A user as stored, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub external_id: Option<String>,
    pub state: ReadinessState,
    pub state_since: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<entities::user::Model> for UserRecord {
    type Error = StoreError;
    fn try_from(row: entities::user::Model) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: parse_id("users", &row.user_id)?,
            external_id: row.external_id,
            state: parse_name("users", &row.state)?,
            state_since: row.state_since,
            updated_at: row.updated_at,
        })
    }
}

/// A report as stored, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRecord {
    /// Position in insertion order; the pagination key.
    pub seq: i64,
    pub id: ReportId,
    pub argyle_report_id: Option<String>,
    pub user_id: UserId,
    pub report_type: ReportType,
    pub generated_at: DateTime<Utc>,
}

impl TryFrom<entities::report::Model> for ReportRecord {
    type Error = StoreError;
    fn try_from(row: entities::report::Model) -> Result<Self, StoreError> {
        Ok(Self {
            seq: row.seq,
            id: parse_id("reports", &row.id)?,
            argyle_report_id: row.argyle_report_id,
            user_id: parse_id("reports", &row.user_id)?,
            report_type: ReportType::from_argyle(&row.report_type),
            generated_at: row.generated_at,
        })
    }
}
