//! Checks the store runs on its own connections: a connection left inside a transaction never
//! goes back into the pool.

use sea_orm::sqlx::Connection;

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
