//! Shipped migrations never change the schema they build: the schema a fresh database gets is
//! compared, on the backend the suite runs on, with the one recorded in
//! `tests/fixtures/schema/`. A new migration re-records it on purpose
//! (`READINESS_RECORD_SCHEMA=1 cargo test --test api schema`, once per backend); any other
//! difference, such as a refactoring of a migration's code that alters its DDL, fails here.

use readiness::store::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;

use crate::helpers::{TestApp, TestDatabase};

/// One line per table column, index and constraint, in a stable order.
const SQLITE: &str = "SELECT type || ' ' || name || ' ON ' || tbl_name || ': ' || coalesce(sql, '') \
     AS line FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name";
const POSTGRES: &str = "\
    SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type \
        || ' nullable=' || is_nullable || ' default=' || coalesce(column_default, '-') AS line, \
        1 AS part, table_name AS t, ordinal_position::text AS k \
    FROM information_schema.columns WHERE table_schema = 'public' \
    UNION ALL \
    SELECT 'index ' || indexdef, 2, tablename, indexname \
    FROM pg_indexes WHERE schemaname = 'public' \
    UNION ALL \
    SELECT 'constraint ' || tc.table_name || ' ' || tc.constraint_type || ' ' || tc.constraint_name, \
        3, tc.table_name, tc.constraint_name \
    FROM information_schema.table_constraints tc \
    WHERE tc.table_schema = 'public' AND tc.constraint_type <> 'CHECK' \
    ORDER BY part, t, k";

#[tokio::test]
async fn a_fresh_database_gets_exactly_the_recorded_schema() {
    let app = TestApp::spawn().await;
    let (backend, schema) = schema_of(app.core.db()).await;
    app.stop().await;

    let path = format!(
        "{}/tests/fixtures/schema/{backend}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("READINESS_RECORD_SCHEMA").is_some() {
        std::fs::write(&path, &schema).unwrap();
    }
    assert_eq_to_recorded(&schema, &path);
}

#[tokio::test]
async fn every_migration_can_be_undone_and_done_again_to_the_same_schema() {
    let (_database, url) = TestDatabase::create().await;
    let db = Database::connect(&url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    let (backend, before) = schema_of(&db).await;

    Migrator::down(&db, None).await.unwrap();
    let (_, empty) = schema_of(&db).await;
    assert!(
        empty.lines().all(|line| line.contains("seaql_migrations")),
        "undoing every migration left schema behind:\n{empty}"
    );
    Migrator::up(&db, None).await.unwrap();
    let (_, after) = schema_of(&db).await;
    db.close().await.ok();

    assert!(
        after == before,
        "the schema differs after down and up on {backend}:\n{}",
        changed_lines(&before, &after)
    );
}

/// The backend's name and its schema listing, one line per table, column, index and constraint.
async fn schema_of(db: &DatabaseConnection) -> (&'static str, String) {
    let backend = db.get_database_backend();
    let (name, sql) = match backend {
        DbBackend::Postgres => ("postgres", POSTGRES),
        _ => ("sqlite", SQLITE),
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap();
    let schema = rows
        .iter()
        .map(|row| row.try_get::<String>("", "line").unwrap() + "\n")
        .collect();
    (name, schema)
}

fn assert_eq_to_recorded(schema: &str, path: &str) {
    let recorded = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!("no recorded schema at {path} ({error}); record it with READINESS_RECORD_SCHEMA=1")
    });
    assert!(
        schema == recorded,
        "the migrations build a schema other than the recorded one ({path}):\n{}",
        changed_lines(&recorded, schema)
    );
}

/// The lines only one side has, marked `-` (recorded) and `+` (built now).
fn changed_lines(recorded: &str, built: &str) -> String {
    let only = |a: &str, b: &str, mark: char| -> Vec<String> {
        a.lines()
            .filter(|line| !b.lines().any(|other| other == *line))
            .map(|line| format!("{mark} {line}"))
            .collect()
    };
    [only(recorded, built, '-'), only(built, recorded, '+')]
        .concat()
        .join("\n")
}
