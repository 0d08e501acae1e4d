//! The report pipeline's jobs table: written inside a unit of work (the transactional outbox),
//! claimed by a worker with a lease (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so a job runs in one
//! replica at a time; SQLite has one process), finished or rescheduled in the unit of work that
//! records its result. A job whose worker died is claimed again when its lease ends.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use super::entities::{job, report};
use super::pg_rows::Conflict;
use super::rows::{parse_id, parse_name, report_from_row, report_row};
use super::{Batch, Store, StoreError};
use crate::domain::job::{Attempt, Job, NewJob};
use crate::domain::report::Report;
use crate::domain::{JobKind, JobState, ReportId};

fn job_from_row(row: job::Model) -> Result<Job, StoreError> {
    Ok(Job {
        id: row.id,
        kind: parse_name("jobs", &row.kind)?,
        report: parse_id("jobs", &row.report_id)?,
        user: parse_id("jobs", &row.user_id)?,
        payload: serde_json::from_str(&row.payload).map_err(|error| StoreError::Corrupt {
            table: "jobs",
            detail: format!("payload of {}: {error}", row.id),
        })?,
        state: parse_name("jobs", &row.state)?,
        attempts: row.attempts.max(0) as u32,
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        dedupe_key: row.dedupe_key,
    })
}

/// Jobs of one kind and state, for the pipeline's gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: JobKind,
    pub state: JobState,
    pub count: u64,
    /// The oldest job's creation time.
    pub oldest: Option<DateTime<Utc>>,
}

/// What an operator's retry of a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// It had failed and is pending again, as the retry left it.
    Retried(Job),
    /// It is not failed (pending, running or done): left as it is.
    NotFailed(Job),
    /// No job has that id.
    Missing,
}

#[derive(FromQueryResult)]
struct CountRow {
    kind: String,
    state: String,
    count: i64,
    oldest: Option<DateTime<Utc>>,
}

impl Batch {
    /// Writes `jobs` in this unit of work (held back like the write-back, see `Batch::conn`); one
    /// whose `dedupe_key` exists is not written again.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let rows = jobs
            .iter()
            .map(|new| {
                Ok(job::ActiveModel {
                    kind: Set(new.kind.as_str().to_owned()),
                    dedupe_key: Set(new.dedupe_key.clone()),
                    report_id: Set(new.report.to_string()),
                    user_id: Set(new.user.to_string()),
                    payload: Set(new.payload.to_string()),
                    state: Set(JobState::Pending.as_str().to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(new.due),
                    last_error: Set(None),
                    created_at: Set(new.due),
                    updated_at: Set(new.due),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(rows, Conflict::Ignore(&[job::Column::DedupeKey]))
            .await
    }

    /// One report, locked for this unit of work.
    pub async fn report_for_update(&self, id: ReportId) -> Result<Option<Report>, StoreError> {
        report::Entity::find()
            .filter(report::Column::Id.eq(id.to_string()))
            .lock_exclusive()
            .one(self.conn().await?)
            .await?
            .map(|row| report_from_row(row).map(|(_, report)| report))
            .transpose()
    }

    /// A user's reports (to match an announcement without an id against Argyle's list).
    pub async fn reports_of(&self, user: crate::domain::UserId) -> Result<Vec<Report>, StoreError> {
        report::Entity::find()
            .filter(report::Column::UserId.eq(user.to_string()))
            .all(self.conn().await?)
            .await?
            .into_iter()
            .map(|row| report_from_row(row).map(|(_, report)| report))
            .collect()
    }

    /// Writes one report back.
    pub async fn save_report(&self, report: &Report) -> Result<(), StoreError> {
        report::Entity::update_many()
            .set(report_row(report)?)
            .filter(report::Column::Id.eq(report.id.to_string()))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// The report requested under `request_id`, if any.
    pub async fn report_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<Report>, StoreError> {
        report::Entity::find()
            .filter(report::Column::RequestId.eq(request_id))
            .one(self.conn().await?)
            .await?
            .map(|row| report_from_row(row).map(|(_, report)| report))
            .transpose()
    }

    /// Records what became of a job's attempt.
    pub async fn finish_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (state, due, error) = match attempt {
            Attempt::Done(note) => (JobState::Done, at, note.clone()),
            Attempt::Retry { at: due, error } => (JobState::Pending, *due, Some(error.clone())),
            Attempt::Failed(error) => (JobState::Failed, at, Some(error.clone())),
        };
        job::Entity::update_many()
            .col_expr(job::Column::State, state.as_str().into())
            .col_expr(job::Column::NextAttemptAt, due.into())
            .col_expr(job::Column::LastError, error.into())
            .col_expr(job::Column::UpdatedAt, at.into())
            .filter(job::Column::Id.eq(id))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Takes the job due first (pending and due, or running with its lease over) for `lease`:
    /// it becomes running, its attempts grow by one, and no other worker takes it before the
    /// lease ends. `None` when nothing is due.
    pub async fn claim_job(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError> {
        let backend = self.db.get_database_backend();
        let skip_locked = if backend == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let (p1, p2, p3, p4) = match backend {
            DbBackend::Postgres => ("$1", "$2", "$3", "$4"),
            _ => ("?", "?", "?", "?"),
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, next_attempt_at = {p1}, \
             updated_at = {p2} WHERE id = (SELECT id FROM jobs WHERE state IN ('pending', 'running') \
             AND next_attempt_at <= {p3} ORDER BY next_attempt_at, id LIMIT 1{skip_locked}) \
             AND next_attempt_at <= {p4} RETURNING *"
        );
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [(now + lease).into(), now.into(), now.into(), now.into()],
        );
        let row = job::Model::find_by_statement(statement)
            .one(&self.db)
            .await?;
        row.map(job_from_row).transpose()
    }

    /// Gives back a running job whose attempt was abandoned (at shutdown): due again now, its
    /// attempt counted (the next one looks before acting again).
    pub async fn release_job(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        job::Entity::update_many()
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::State.eq(JobState::Running.as_str()))
            .col_expr(job::Column::State, JobState::Pending.as_str().into())
            .col_expr(job::Column::NextAttemptAt, now.into())
            .col_expr(job::Column::UpdatedAt, now.into())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, query: &crate::domain::job::JobQuery) -> Result<Vec<Job>, StoreError> {
        let mut select = job::Entity::find().order_by_desc(job::Column::Id);
        if let Some(state) = query.state {
            select = select.filter(job::Column::State.eq(state.as_str()));
        }
        if let Some(report) = query.report {
            select = select.filter(job::Column::ReportId.eq(report.to_string()));
        }
        if let Some(before) = query.before_id {
            select = select.filter(job::Column::Id.lt(before));
        }
        select
            .limit(query.limit.max(1))
            .all(&self.db)
            .await?
            .into_iter()
            .map(job_from_row)
            .collect()
    }

    /// Makes a failed job pending again, from its first attempt, in one statement (a job in
    /// another state is left as it is).
    pub async fn retry_job(&self, id: i64, now: DateTime<Utc>) -> Result<Retry, StoreError> {
        // The job as this statement left it: a worker may take it the moment it is pending.
        let retried = job::Entity::update_many()
            .filter(job::Column::State.eq(JobState::Failed.as_str()))
            .col_expr(job::Column::State, JobState::Pending.as_str().into())
            .col_expr(job::Column::Attempts, 0.into())
            .col_expr(job::Column::NextAttemptAt, now.into())
            .col_expr(job::Column::UpdatedAt, now.into())
            .filter(job::Column::Id.eq(id))
            .exec_with_returning(&self.db)
            .await?;
        if let Some(row) = retried.into_iter().next() {
            return Ok(Retry::Retried(job_from_row(row)?));
        }
        Ok(match job::Entity::find_by_id(id).one(&self.db).await? {
            Some(row) => Retry::NotFailed(job_from_row(row)?),
            None => Retry::Missing,
        })
    }

    /// Jobs per kind and state, with the oldest creation time of each.
    pub async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        let rows = job::Entity::find()
            .select_only()
            .column(job::Column::Kind)
            .column(job::Column::State)
            .column_as(job::Column::Id.count(), "count")
            .column_as(job::Column::CreatedAt.min(), "oldest")
            .group_by(job::Column::Kind)
            .group_by(job::Column::State)
            .into_model::<CountRow>()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(JobCount {
                    kind: parse_name("jobs", &row.kind)?,
                    state: parse_name("jobs", &row.state)?,
                    count: row.count.max(0) as u64,
                    oldest: row.oldest,
                })
            })
            .collect()
    }
}
