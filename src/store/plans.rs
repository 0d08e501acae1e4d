//! How PostgreSQL plans the statements of a batch.
//!
//! Every statement a batch sends has one text whatever the batch (keys as arrays, rows as a few
//! array and JSON parameters, see `store::pg_rows`), and each looks rows up by key. sqlx prepares
//! each once per connection, so PostgreSQL can plan each once and reuse the plan (a generic plan)
//! instead of planning every execution for its values (a custom plan), which cost PostgreSQL about
//! 15 % of its CPU per delivery under ingest (README, Performance). Left to itself
//! (`plan_cache_mode = auto`) it makes the generic plan after five executions, on a young database
//! while the tables are still nearly empty, where a sequential scan looks cheapest; that plan then
//! stays while the tables grow, until autovacuum next analyzes them, and made ingest about 30 %
//! slower (bench/results/compare/2026-12-01-any/). So a batch's transaction asks for generic plans
//! from the first execution and prices sequential scans out: each is planned once, by index,
//! whatever the tables hold. Statements outside batches (queries, the read model's fills) keep the
//! connection's `force_custom_plan` (see `store::connect`); `SET LOCAL` ends with the transaction.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{Batch, StoreError};

/// Sent at the start of every batch's transaction on PostgreSQL.
pub(super) const BATCH_PLANS: &str =
    "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// A statement prepared on a batch's connection, and how PostgreSQL has planned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPlan {
    pub statement: String,
    /// Executions that used the cached generic plan.
    pub generic_plans: i64,
    /// Executions planned for their own values.
    pub custom_plans: i64,
    /// The plan an execution in this batch uses now (`EXPLAIN (COSTS OFF) EXECUTE`), one line per
    /// entry.
    pub plan: Vec<String>,
}

impl Batch {
    /// PostgreSQL: every statement this batch's connection has prepared, with how it was
    /// planned (`pg_prepared_statements`); nothing on SQLite. For tests and tools that check
    /// the batch's plans.
    pub async fn prepared_plans(&self) -> Result<Vec<PreparedPlan>, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(vec![]);
        }
        let conn = self.conn().await?;
        let prepared = conn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT name, statement, generic_plans, custom_plans, \
                 cardinality(parameter_types) AS parameters \
                 FROM pg_prepared_statements WHERE NOT from_sql ORDER BY prepare_time",
            ))
            .await?;
        let mut plans = Vec::with_capacity(prepared.len());
        for row in prepared {
            let name: String = row.try_get("", "name")?;
            let parameters: i32 = row.try_get("", "parameters")?;
            // Any values will do: the plan shown is the cached generic one.
            let values = vec!["NULL"; usize::try_from(parameters).unwrap_or_default()];
            let execute = if values.is_empty() {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                format!("\"{}\"({})", name.replace('"', "\"\""), values.join(", "))
            };
            let plan = conn
                .query_all_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("EXPLAIN (COSTS OFF) EXECUTE {execute}"),
                ))
                .await?
                .into_iter()
                .map(|line| line.try_get::<String>("", "QUERY PLAN"))
                .collect::<Result<_, _>>()?;
            plans.push(PreparedPlan {
                statement: row.try_get("", "statement")?,
                generic_plans: row.try_get("", "generic_plans")?,
                custom_plans: row.try_get("", "custom_plans")?,
                plan,
            });
        }
        Ok(plans)
    }
}
