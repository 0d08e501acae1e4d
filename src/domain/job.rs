//! A job of the report pipeline: written in the transaction of the change that causes it (a
//! transactional outbox), run by a worker of any replica, retried with backoff, given up after a
//! bounded number of attempts with its reason kept.

use chrono::{DateTime, Utc};

use super::{JobKind, JobState, ReportId, UserId};

/// A job to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: JobKind,
    /// Makes the job exactly once per cause: an entry into READY and a type, a request id, a
    /// report to enrich. A second job with the same key is not written.
    pub dedupe_key: String,
    pub report: ReportId,
    pub user: UserId,
    /// What the job needs beyond its report (the metadata to send to Argyle).
    pub payload: serde_json::Value,
    pub due: DateTime<Utc>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub dedupe_key: String,
    pub report: ReportId,
    pub user: UserId,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Attempts started so far (the current one included, while running).
    pub attempts: u32,
    /// Pending: when the next attempt is due. Running: the end of the lease.
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Finished (with a note, say "still generating; the announcement will fetch again").
    Done(Option<String>),
    /// Try again at `at`, for this reason.
    Retry { at: DateTime<Utc>, error: String },
    /// Give up for good.
    Failed(String),
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub state: Option<JobState>,
    /// Only the jobs of this report.
    pub report: Option<ReportId>,
    /// Only ids below this (pages go newest first).
    pub before_id: Option<i64>,
    pub limit: u64,
}
