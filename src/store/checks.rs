//! What the store can tell about its own health, for readiness (`core::health`): whether an
//! error means the database refuses to store data, a one-row probe write to learn when it takes
//! writes again, the check that keeps a connection left inside a transaction out of the pool,
//! and the identity of the SQLite file that was opened, to notice it being deleted or replaced
//! underneath the process.

use std::path::{Path, PathBuf};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, RuntimeErr,
};

use super::entities::write_probe;

/// SQLite primary result codes of a database that cannot store data.
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// PostgreSQL SQLSTATEs of the same: `disk_full`, `io_error`, `read_only_sql_transaction`.
const POSTGRES_STORAGE_ERRORS: [&str; 3] = ["53100", "58030", "25006"];

/// True when `error` says the database cannot store data: the disk is full, an I/O error, a
/// read-only database (SQLite `SQLITE_FULL`, `SQLITE_IOERR*`, `SQLITE_READONLY*`,
/// `SQLITE_CANTOPEN`; PostgreSQL `53100`, `58030`, `25006`). Not for a lost connection or a
/// lock held by someone else: those are not the disk's fault.
pub(super) fn is_storage_error(error: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(error))
    | DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return false;
    };
    let sqlx::Error::Database(error) = error.as_ref() else {
        return false;
    };
    let code = error.code();
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // Extended result codes carry the primary code in their low byte.
        let primary = code
            .and_then(|code| code.parse::<i32>().ok())
            .map(|c| c & 0xff);
        return matches!(
            primary,
            Some(SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
        );
    }
    code.is_some_and(|code| POSTGRES_STORAGE_ERRORS.contains(&code.as_ref()))
}

/// PostgreSQL SQLSTATEs of a server that exists but takes no connections right now:
/// `cannot_connect_now` (starting up, shutting down, in recovery), `admin_shutdown`,
/// `crash_shutdown`, `too_many_connections`.
const POSTGRES_NOT_NOW: [&str; 4] = ["57P03", "57P01", "57P02", "53300"];

/// True when `error` says the database server could not be reached or takes no connections
/// yet, which waiting can mend: the connection was refused, reset or timed out, or the server
/// is starting up or shutting down. False for what waiting cannot mend: wrong credentials, a
/// missing database, a bad URL, a failing statement.
pub(super) fn is_unreachable(error: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(error))
    | DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return matches!(error, DbErr::ConnectionAcquire(_));
    };
    match error.as_ref() {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| POSTGRES_NOT_NOW.contains(&code.as_ref())),
        _ => false,
    }
}

/// The smallest real write: one row's counter goes up by one (the row is created by the first
/// probe), committed on its own.
pub(super) async fn probe_write(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let probes = Expr::col((write_probe::Entity, write_probe::Column::Probes)).add(1);
    write_probe::Entity::insert(write_probe::ActiveModel {
        id: Set(1),
        probes: Set(1),
    })
    .on_conflict(
        OnConflict::column(write_probe::Column::Id)
            .value(write_probe::Column::Probes, probes)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Run on every connection given back to the pool: false (close it, never reuse it) while sqlx
/// counts a transaction open on it, i.e. its `COMMIT` or `ROLLBACK` failed.
///
/// On SQLite that happens when the database rolls a transaction back by itself (a full disk,
/// an I/O error): the ROLLBACK that follows fails with "no transaction is active", sqlx keeps
/// counting one open, and, reused, it would send the next `BEGIN` as a `SAVEPOINT` and each later
/// "commit" as a `RELEASE` inside a transaction that never ends, answering 2xx for writes that are
/// never durable. A connection that passes this check starts its next transaction with a real
/// `BEGIN`, which SQLite refuses inside an open transaction, so no transaction can silently
/// nest. The count only falls on a successful COMMIT or ROLLBACK, so reading it before a queued
/// rollback has run errs towards closing a sound connection, never towards keeping a bad one; it
/// costs no round trip. On PostgreSQL a failed transaction's ROLLBACK is queued and counted at
/// once, and sqlx pings each released connection right after this check (sending that
/// ROLLBACK), closing a broken one.
pub(super) fn outside_transaction<C: Connection>(conn: &C) -> bool {
    let outside = !conn.is_in_transaction();
    if !outside {
        tracing::warn!(
            "a database connection came back inside a transaction (its COMMIT or ROLLBACK \
             failed); closing it"
        );
    }
    outside
}

/// The SQLite file the pool opened, by device and inode.
#[derive(Debug, Clone)]
pub struct DatabaseFile {
    path: PathBuf,
    identity: (u64, u64),
}

/// How the configured path stopped naming the opened file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileChange {
    #[error("the database file {0} was deleted")]
    Deleted(PathBuf),
    #[error("the database file {0} was replaced by another file")]
    Replaced(PathBuf),
    #[error("the database file {0} cannot be checked: {1}")]
    Unreadable(PathBuf, String),
}

impl DatabaseFile {
    /// The file the SQLite pool `db` opens, as it is now. `None` for PostgreSQL, an in-memory
    /// database, or a file that cannot be inspected (then nothing is checked).
    pub(super) fn opened_by(db: &DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return None;
        }
        let options = db.get_sqlite_connection_pool().connect_options();
        let path = options.get_filename();
        let identity = identity(&std::fs::metadata(path).ok()?)?;
        Some(Self {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
            identity,
        })
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ok while the configured path still names the opened file.
    pub fn check(&self) -> Result<(), FileChange> {
        match std::fs::metadata(&self.path) {
            Ok(metadata) if identity(&metadata) == Some(self.identity) => Ok(()),
            Ok(_) => Err(FileChange::Replaced(self.path.clone())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(FileChange::Deleted(self.path.clone()))
            }
            Err(error) => Err(FileChange::Unreadable(self.path.clone(), error.to_string())),
        }
    }

    /// Where this process can still read the opened file once its name is gone
    /// (`/proc/self/fd/N`, Linux), to copy it before the process exits.
    pub fn open_descriptor(&self) -> Option<PathBuf> {
        let unlinked = format!("{} (deleted)", self.path.display());
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|fd| {
                std::fs::read_link(fd)
                    .is_ok_and(|target| target.as_os_str().to_string_lossy() == unlinked)
            })
            .map(|fd| {
                PathBuf::from(format!("/proc/{}/fd", std::process::id()))
                    .join(fd.file_name().unwrap_or_default())
            })
    }
}

#[cfg(unix)]
fn identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}
