//! How the store is opened, read back through the service's own pool: on SQLite, WAL mode and
//! `synchronous=FULL` on every pooled connection, so a committed delivery survives a power loss,
//! and each connection's page cache bounded by `database_sqlite_cache_kib`; on PostgreSQL, every
//! connection sends without Nagle's delay (`TCP_NODELAY`).

use sea_orm::{ConnectionTrait, Statement, TransactionTrait, TryGetable};

use crate::helpers::TestApp;

/// The pool's size in these tests: every connection is checked, not one connection three times.
const POOL: u32 = 3;

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_synchronous_full_on_every_pooled_connection() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let journal_modes: Vec<String> = pragma_on_every_connection(&app, "journal_mode").await;
    assert_eq!(journal_modes, ["wal"; POOL as usize]);
    // 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    let synchronous: Vec<i64> = pragma_on_every_connection(&app, "synchronous").await;
    assert_eq!(synchronous, [2; POOL as usize], "synchronous=FULL");
    app.stop().await;
}

#[tokio::test]
async fn each_sqlite_connection_caches_at_most_the_configured_kib_of_pages() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    // A negative cache_size is a size in KiB; SQLite's own default is -2000.
    let default: Vec<i64> = pragma_on_every_connection(&app, "cache_size").await;
    assert_eq!(default, [-512; POOL as usize]);
    let app = app
        .restart_with(|settings| settings.database_sqlite_cache_kib = 96)
        .await;
    let configured: Vec<i64> = pragma_on_every_connection(&app, "cache_size").await;
    assert_eq!(configured, [-96; POOL as usize]);
    app.stop().await;
}

#[tokio::test]
async fn every_postgresql_connection_sends_without_waiting_for_acknowledgements() {
    // The service holds some connections of its own on PostgreSQL (the log's follower, the
    // report workers); these three are taken at once, so they are three different ones.
    let app = TestApp::spawn_with(|settings| settings.database_max_connections = 2 * POOL).await;
    if !app.on_postgres() {
        app.stop().await;
        return;
    }
    // Each connection's own end, as PostgreSQL sees it; the connections stay open in the pool.
    let ports: Vec<i32> = on_every_connection(&app, "SELECT inet_client_port()").await;
    let nodelay: Vec<Option<bool>> = ports
        .into_iter()
        .map(|port| readiness::store::nodelay::of_local_port(u16::try_from(port).unwrap()).unwrap())
        .collect();
    assert_eq!(nodelay, [Some(true); POOL as usize]);
    app.stop().await;
}

/// The service on SQLite with a pool of `POOL`; `None` (and nothing to check) on PostgreSQL.
async fn sqlite_app() -> Option<TestApp> {
    let app = TestApp::spawn_with(|settings| settings.database_max_connections = POOL).await;
    if app.on_postgres() {
        app.stop().await;
        return None;
    }
    Some(app)
}

/// `PRAGMA name` on each of the pool's connections.
async fn pragma_on_every_connection<T: TryGetable>(app: &TestApp, name: &str) -> Vec<T> {
    on_every_connection(app, &format!("PRAGMA {name}")).await
}

/// The first column of `sql`'s row on each of `POOL` connections, all held at once (so they are
/// different ones).
async fn on_every_connection<T: TryGetable>(app: &TestApp, sql: &str) -> Vec<T> {
    let backend = app.core.db().get_database_backend();
    let mut connections = Vec::new();
    for _ in 0..POOL {
        connections.push(app.core.db().begin().await.unwrap());
    }
    let mut values = Vec::new();
    for (index, connection) in connections.iter().enumerate() {
        let row = connection
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("connection {index}: {sql} returned no row"));
        values.push(row.try_get_by_index(0).unwrap());
    }
    for connection in connections {
        connection.rollback().await.unwrap();
    }
    values
}
