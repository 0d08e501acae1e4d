//! How the SQLite store is opened, read back through the service's own pool: WAL mode and
//! `synchronous=FULL` on every pooled connection, so a committed delivery survives a power loss.

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use crate::helpers::TestApp;

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_synchronous_full_on_every_pooled_connection() {
    const POOL: u32 = 3;
    let app = TestApp::spawn_with(|settings| settings.database_max_connections = POOL).await;
    if app.on_postgres() {
        app.stop().await;
        return;
    }
    // Every connection of the pool at once: each is checked, not one connection three times.
    let mut connections = Vec::new();
    for _ in 0..POOL {
        connections.push(app.core.db().begin().await.unwrap());
    }
    for (index, connection) in connections.iter().enumerate() {
        let pragma = |name: &str| {
            connection.query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                format!("PRAGMA {name}"),
            ))
        };
        let journal_mode: String = pragma("journal_mode")
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        assert_eq!(journal_mode, "wal", "connection {index}");
        // 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
        let synchronous: i64 = pragma("synchronous")
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        assert_eq!(synchronous, 2, "connection {index}: synchronous=FULL");
    }
    for connection in connections {
        connection.rollback().await.unwrap();
    }
    app.stop().await;
}
