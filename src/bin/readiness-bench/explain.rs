//! The query plans of the statements on the hot paths, built with the same sea-orm entities the
//! service uses and run against a seeded store: PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)`, SQLite
//! `EXPLAIN QUERY PLAN`. Every plan should be an index lookup or an index range scan.

use clap::Args;
use readiness::domain::{ReportId, UserId};
use readiness::store::entities::{account, delivery, event, user, user_external_id};
use readiness::store::{Wanted, reports_named};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Statement,
};
use serde_json::{Map, Value};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Database URL of a seeded store.
    #[arg(long, env = "READINESS_DATABASE_URL")]
    database_url: String,
    /// Seeded users (a user in the middle of the range is looked up).
    #[arg(long)]
    users: u64,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<Value> {
    let db = crate::open_database(&args.database_url, 1).await?;
    let backend = db.get_database_backend();
    let middle = args.users / 2;
    let user_id = crate::seed::user_id(middle).to_string();
    let wanted = batch_naming_reports(UserId(crate::seed::user_id(middle)));
    let statements: Vec<(&str, Statement)> = vec![
        (
            "GetUserReadiness: users that ever had an external id",
            user::Entity::find()
                .filter(
                    user::Column::UserId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(user_external_id::Column::UserId)
                            .from(user_external_id::Entity)
                            .and_where(
                                user_external_id::Column::ExternalId.eq(format!("bench-{middle}")),
                            )
                            .to_owned(),
                    ),
                )
                .order_by_asc(user::Column::UserId)
                .limit(2)
                .build(backend),
        ),
        (
            "GetUserReadiness: the user with its accounts (one LEFT JOIN)",
            user::Entity::find_by_id(user_id.clone())
                .find_with_related(account::Entity)
                .build(backend),
        ),
        (
            "ingest: the user's accounts and the accounts a delivery names",
            account::Entity::find()
                .filter(
                    Condition::any()
                        .add(account::Column::UserId.eq(user_id.clone()))
                        .add(
                            account::Column::AccountId.is_in([crate::seed::account_id(
                                middle + 1,
                                0,
                            )
                            .to_string()]),
                        ),
                )
                .build(backend),
        ),
        (
            "ingest: lock the user row",
            user::Entity::find_by_id(user_id.clone())
                .lock_exclusive()
                .build(backend),
        ),
        (
            "ingest: duplicate lookup by body hash",
            delivery::Entity::find()
                .filter(delivery::Column::BodySha256.eq("0".repeat(64)))
                .limit(1)
                .build(backend),
        ),
        (
            "ingest: the reports a batch names (by id, announcing delivery, Argyle id) and its users' recent requests",
            reports_named(&wanted, backend)
                .expect("the batch names reports")
                .build(backend),
        ),
        (
            "ListUsers: one page of users in a state",
            user::Entity::find()
                .filter(user::Column::State.eq("ready"))
                .filter(user::Column::UserId.gt(user_id.clone()))
                .order_by_asc(user::Column::UserId)
                .limit(101)
                .build(backend),
        ),
        (
            "streams: events after a position",
            event::Entity::find()
                .filter(event::Column::Seq.gt(args.users as i64))
                .order_by_asc(event::Column::Seq)
                .limit(1000)
                .build(backend),
        ),
    ];
    let mut plans = Map::new();
    for (name, statement) in statements {
        let (prefix, column) = match backend {
            DbBackend::Postgres => ("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ", "QUERY PLAN"),
            _ => ("EXPLAIN QUERY PLAN ", "detail"),
        };
        let explain = Statement {
            sql: format!("{prefix}{}", statement.sql),
            ..statement
        };
        let lines = db
            .query_all_raw(explain)
            .await?
            .into_iter()
            .map(|row| row.try_get::<String>("", column))
            .collect::<Result<Vec<_>, _>>()?;
        plans.insert(name.to_owned(), Value::from(lines));
    }
    db.close().await?;
    Ok(Value::Object(plans))
}

/// What a batch of one user's `reports.*` deliveries asks the store to load: every branch of the
/// batch's report query is taken.
fn batch_naming_reports(user: UserId) -> Wanted {
    Wanted {
        users: [user].into(),
        reports: [(ReportId(uuid::Uuid::nil()), user)].into(),
        report_deliveries: [(1, user)].into(),
        argyle_reports: [("argyle-report".to_owned(), user)].into(),
        requests_since: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        ..Wanted::default()
    }
}
