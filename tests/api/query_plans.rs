//! The ingest batch's report query stays an index lookup on every branch, on the backend the suite
//! runs on: a branch without an index made every batch that names a report read the whole
//! reports table (found by profiling `bench/ingest.sh`; fixed by migration 000008). On
//! PostgreSQL a batch plans its lookups once, by index, even while the tables are empty.

use std::time::Duration;

use readiness::domain::{AccountId, ReportId, UserId};
use readiness::store::{self, StoreOptions, Wanted, reports_named};
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement, TransactionTrait};

use crate::helpers::TestApp;

#[tokio::test]
async fn a_batch_naming_reports_finds_them_by_index_never_by_reading_the_whole_table() {
    let app = TestApp::spawn().await;
    let user = UserId(uuid::Uuid::new_v4());
    let wanted = Wanted {
        users: [user].into(),
        reports: [(ReportId(uuid::Uuid::new_v4()), user)].into(),
        report_deliveries: [(7, user)].into(),
        argyle_reports: [("argyle-report-7".to_owned(), user)].into(),
        requests_since: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        ..Wanted::default()
    };
    let backend = app.core.db().get_database_backend();
    let query = reports_named(&wanted, app.core.db().get_database_backend())
        .expect("every branch is named")
        .build(backend);

    let txn = app.core.db().begin().await.unwrap();
    let (prefix, column, full_scan) = if backend == DbBackend::Postgres {
        // The reports table is tiny here, so let the plan show whether an index *can* serve
        // every branch: with sequential scans priced out, a branch without one still scans.
        txn.execute_unprepared("SET LOCAL enable_seqscan = off")
            .await
            .unwrap();
        ("EXPLAIN (COSTS OFF) ", "QUERY PLAN", "Seq Scan")
    } else {
        ("EXPLAIN QUERY PLAN ", "detail", "SCAN reports")
    };
    // Run the query itself first: a pooled SQLite connection opened before the last migration
    // keeps its old schema (without the newer indexes) until a statement that reads a table
    // notices the change, and an EXPLAIN alone does not, so its plan could be of a table without
    // them (seen once in about a hundred runs).
    txn.query_all_raw(query.clone()).await.unwrap();
    let plan: Vec<String> = txn
        .query_all_raw(Statement {
            sql: format!("{prefix}{}", query.sql),
            ..query
        })
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get::<String>("", column).unwrap())
        .collect();
    txn.rollback().await.unwrap();

    assert!(
        !plan.iter().any(|line| line.contains(full_scan)),
        "the batch's report query reads the whole table:\n{}",
        plan.join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn postgres_sessions_plan_each_statement_for_its_values() {
    let app = TestApp::spawn().await;
    if app.core.db().get_database_backend() == DbBackend::Postgres {
        assert_eq!(plan_cache_mode(app.core.db()).await, "force_custom_plan");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_batch_on_postgresql_plans_its_lookups_once_and_by_index_even_while_the_tables_are_empty()
{
    let app = TestApp::spawn().await;
    if !app.on_postgres() {
        // SQLite plans a statement when it is prepared, once.
        app.stop().await;
        return;
    }
    // A pool of one connection: the statements prepared on it are this test's.
    let store = store::connect(&StoreOptions {
        url: app.database_url(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(10),
        sqlite_cache_kib: store::DEFAULT_SQLITE_CACHE_KIB,
    })
    .await
    .unwrap();

    let batch = store.begin_batch().await.unwrap();
    for _ in 0..3 {
        let user = UserId(uuid::Uuid::new_v4());
        let wanted = Wanted {
            users: [user].into(),
            accounts: [AccountId(uuid::Uuid::new_v4())].into(),
            reports: [(ReportId(uuid::Uuid::new_v4()), user)].into(),
            ..Wanted::default()
        };
        batch.load(&wanted).await.unwrap();
    }
    let plans = batch.prepared_plans().await.unwrap();
    drop(batch);

    let lookups: Vec<_> = plans
        .iter()
        .filter(|prepared| {
            ["users", "accounts", "reports"]
                .iter()
                .any(|table| prepared.statement.contains(&format!("FROM \"{table}\"")))
        })
        .collect();
    assert_eq!(lookups.len(), 3, "one lookup per table: {plans:#?}");
    for lookup in lookups {
        assert_eq!(
            (lookup.generic_plans, lookup.custom_plans),
            (3, 0),
            "planned once and reused: {lookup:#?}"
        );
        assert!(
            !lookup.plan.iter().any(|line| line.contains("Seq Scan")),
            "planned as a sequential scan: {lookup:#?}"
        );
    }

    // Outside a batch the same connection plans each execution for its values again.
    assert_eq!(plan_cache_mode(store.db()).await, "force_custom_plan");
    store.db().clone().close().await.unwrap();
    app.stop().await;
}

async fn plan_cache_mode(db: &impl ConnectionTrait) -> String {
    db.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SHOW plan_cache_mode",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<String>("", "plan_cache_mode")
    .unwrap()
}
