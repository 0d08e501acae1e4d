//! The report pipeline's workers: one per process, in every replica. A worker claims the job due
//! first (with a lease; on PostgreSQL `FOR UPDATE SKIP LOCKED`, so each job runs in one replica at
//! a time), calls Argyle outside any transaction, and records the result — the report's change,
//! its `report_updated` event, follow-up jobs and the job's new state — in one transaction.
//!
//! Requesting a report is exactly once: the request carries our report id in its metadata
//! (`readiness_request`); an attempt after the first (a lost answer, a crash between the POST and
//! recording it) first looks for a report carrying that id at Argyle and adopts it instead of
//! posting again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::reports::fetch_job;
use super::{Core, CoreError};
use crate::argyle::{self, ArgyleClient, ArgyleError};
use crate::domain::events::DomainEvent;
use crate::domain::job::{Attempt, Job};
use crate::domain::report::{ArgyleDetails, Report, ReportAccount};
use crate::domain::{JobKind, JobState, ReportStatus, time};

/// The metadata key that ties a report at Argyle to this service's request.
pub const REQUEST_MARKER: &str = "readiness_request";

/// Longest wait between two attempts of a job.
const MAX_DELAY: Duration = Duration::from_secs(600);

/// How often the job gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

impl Core {
    /// Starts this process's worker (when Argyle API credentials are configured).
    pub(super) fn start_workers(&self) {
        let Some(argyle) = self.pipeline.options.argyle.clone() else {
            return;
        };
        let core = self.clone();
        let worker = tokio::spawn(async move {
            let mut gauges_at: Option<tokio::time::Instant> = None;
            loop {
                if core.log.stopped() {
                    return;
                }
                if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
                    core.refresh_job_gauges().await;
                    gauges_at = Some(tokio::time::Instant::now());
                }
                match core.run_one(&argyle).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::error_chain(&error), "report job worker");
                    }
                }
                let poll = core.pipeline.options.poll_interval;
                tokio::select! {
                    _ = core.log.stopping() => return,
                    _ = core.pipeline.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        *self
            .worker
            .lock()
            .expect("the worker slot is never poisoned") = Some(worker);
    }

    /// Completes when this process's worker has stopped (after [`Core::shutdown`]): its current
    /// attempt recorded, or abandoned and its job released.
    pub async fn workers_stopped(&self) {
        let worker = self
            .worker
            .lock()
            .expect("the worker slot is never poisoned")
            .take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
    }

    /// Claims and runs the job due first; false when none is due.
    async fn run_one(&self, argyle: &ArgyleClient) -> Result<bool, CoreError> {
        let lease = chrono::Duration::from_std(self.pipeline.options.lease).unwrap_or_default();
        let claimed = {
            let _writer = super::hold(&self.write_lock).await;
            self.store.claim_job(time::now(), lease).await?
        };
        let Some(job) = claimed else {
            return Ok(false);
        };
        let span = tracing::info_span!("report_job", job.id = job.id, job.kind = %job.kind, job.attempt = job.attempts);
        let attempt = tracing::Instrument::instrument(self.attempt(argyle, &job), span);
        tokio::select! {
            outcome = attempt => {
                self.record(&job, outcome).await?;
                Ok(true)
            }
            // Shutdown abandons the call (its outcome unknown) and gives the job back at once
            // rather than leaving it to its lease.
            _ = self.log.stopping() => {
                tracing::info!(job = job.id, "job attempt abandoned at shutdown; released");
                self.store.release_job(job.id, time::now()).await?;
                Ok(false)
            }
        }
    }

    /// One attempt of `job`: what Argyle said, as the report's new state, and what becomes of the
    /// job.
    async fn attempt(&self, argyle: &ArgyleClient, job: &Job) -> Outcome {
        let report = match self.report(&super::ReportLookup::Id(job.report)).await {
            Ok(report) => report,
            Err(error) => return Outcome::retry(self, job, error.to_string(), None),
        };
        match job.kind {
            JobKind::RequestReport => self.request_at_argyle(argyle, job, report).await,
            JobKind::FetchReport => self.fetch_from_argyle(argyle, job, report).await,
        }
    }

    async fn request_at_argyle(&self, argyle: &ArgyleClient, job: &Job, report: Report) -> Outcome {
        let marker = report.id.to_string();
        // After a first try (this job's, or one before an operator's retry) the report may be
        // at Argyle already.
        if job.attempts > 1 || job.last_error.is_some() {
            // An earlier attempt may have reached Argyle without its answer reaching us.
            match self.find_request(argyle, &report, &marker).await {
                Ok(Some(found)) => return Outcome::learnt(found, "adopted"),
                Ok(None) => {}
                Err(error) => return Outcome::from_argyle(self, job, error),
            }
        }
        let mut metadata = match &report.details.metadata {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        metadata.insert(REQUEST_MARKER.into(), marker.into());
        match argyle
            .create_report(&report.report_type, &report.user, metadata.into())
            .await
        {
            Ok(answer) => Outcome::learnt(answer, "requested"),
            Err(error) => Outcome::from_argyle(self, job, error),
        }
    }

    /// The report at Argyle whose metadata carries our `marker`, if any.
    async fn find_request(
        &self,
        argyle: &ArgyleClient,
        report: &Report,
        marker: &str,
    ) -> Result<Option<argyle::Report>, ArgyleError> {
        let listed = argyle.list_all_reports(&report.user, 100).await?;
        Ok(listed.into_iter().find(|candidate| {
            candidate
                .metadata
                .get(REQUEST_MARKER)
                .and_then(|v| v.as_str())
                == Some(marker)
        }))
    }

    async fn fetch_from_argyle(&self, argyle: &ArgyleClient, job: &Job, report: Report) -> Outcome {
        let answer = match &report.argyle_report_id {
            Some(id) => argyle.get_report(id).await,
            None => match self.match_announcement(argyle, &report).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => {
                    return Outcome::retry(
                        self,
                        job,
                        format!(
                            "no {} report of user {} at Argyle that this service does not know yet",
                            report.report_type.as_str(),
                            report.user
                        ),
                        None,
                    );
                }
                Err(error) => Err(error),
            },
        };
        match answer {
            Ok(found) => {
                let settled = matches!(
                    found.status,
                    argyle::ReportStatus::Generated | argyle::ReportStatus::Failed
                );
                let attempt = if settled {
                    Attempt::Done(None)
                } else if job.attempts >= self.pipeline.options.max_attempts {
                    Attempt::Done(Some(
                        "still generating after every check; reports.generated fetches it again"
                            .into(),
                    ))
                } else {
                    // Still generating: this job looks again later.
                    Outcome::retry(
                        self,
                        job,
                        "Argyle is still generating the report".into(),
                        None,
                    )
                    .attempt
                };
                Outcome {
                    change: Change::Learnt(Box::new(found)),
                    attempt,
                    follow_up: None,
                }
            }
            Err(ArgyleError::NotFound { .. }) => Outcome {
                change: Change::Note(format!(
                    "Argyle has no report {} (404): not fetched again",
                    report.argyle_report_id.as_deref().unwrap_or("-")
                )),
                attempt: Attempt::Failed("Argyle answered 404 for the report".into()),
                follow_up: None,
            },
            Err(error) => Outcome::from_argyle(self, job, error),
        }
    }

    /// For an announcement without Argyle's id: the newest report of its user and type at
    /// Argyle that no report of this service already is.
    async fn match_announcement(
        &self,
        argyle: &ArgyleClient,
        report: &Report,
    ) -> Result<Option<argyle::Report>, ArgyleError> {
        let known: Vec<String> = self
            .store
            .reports(
                &crate::store::ReportQuery {
                    user: Some(report.user),
                    ..Default::default()
                },
                None,
                10_000,
            )
            .await
            .map(|reports| {
                reports
                    .into_iter()
                    .filter_map(|(_, r)| r.argyle_report_id)
                    .collect()
            })
            .unwrap_or_default();
        let listed = argyle.list_all_reports(&report.user, 100).await?;
        // Argyle lists newest first.
        Ok(listed.into_iter().find(|candidate| {
            candidate.report_type == report.report_type && !known.contains(&candidate.id)
        }))
    }

    /// Records an attempt's outcome in one transaction: the report's change and its event, a
    /// follow-up job, and the job's new state.
    async fn record(&self, job: &Job, outcome: Outcome) -> Result<(), CoreError> {
        let at = self.now();
        if let Attempt::Failed(reason) = &outcome.attempt {
            tracing::warn!(job = job.id, kind = %job.kind, reason, "report job gave up");
        }
        let _writer = super::hold(&self.write_lock).await;
        let batch = self.store.begin_batch().await?;
        let mut events = vec![];
        if let Some(mut report) = batch.report_for_update(job.report).await? {
            let changed = match outcome.change {
                Change::None => false,
                Change::Learnt(found) => {
                    let status = status_of(&found.status);
                    report.learn(&found.id, status, details_of(&found), at)
                }
                Change::Note(reason) => report.note(reason, at),
            };
            let changed = changed
                | match &outcome.attempt {
                    Attempt::Failed(reason) if job.kind == JobKind::RequestReport => {
                        report.fail(reason.clone(), at)
                    }
                    _ => false,
                };
            if changed {
                batch.save_report(&report).await?;
                events.push(DomainEvent::ReportUpdated {
                    report: Box::new(report.clone()),
                });
            }
            if let Some(why) = outcome.follow_up
                && !report.settled()
            {
                batch
                    .enqueue(&[fetch_job(report.id, report.user, why, at)])
                    .await?;
            }
        }
        batch.finish_attempt(job.id, &outcome.attempt, at).await?;
        super::pipeline::commit(batch, events, at, &self.log).await?;
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        time::now()
    }

    async fn refresh_job_gauges(&self) {
        match self.store.job_counts().await {
            Ok(counts) => {
                let now = time::now();
                let mut oldest_pending = 0.0;
                for kind in [JobKind::RequestReport, JobKind::FetchReport] {
                    for state in JobState::ALL {
                        let found = counts.iter().find(|c| c.kind == kind && c.state == state);
                        metrics::gauge!(crate::metrics::JOBS, "kind" => kind.as_str(), "state" => state.as_str())
                            .set(found.map_or(0, |c| c.count) as f64);
                        if state == JobState::Pending
                            && let Some(oldest) = found.and_then(|c| c.oldest)
                        {
                            let age = (now - oldest).num_milliseconds().max(0) as f64 / 1000.0;
                            oldest_pending = f64::max(oldest_pending, age);
                        }
                    }
                }
                metrics::gauge!(crate::metrics::OLDEST_PENDING_JOB_SECONDS).set(oldest_pending);
            }
            Err(error) => tracing::debug!(%error, "job gauges"),
        }
    }
}

/// What an attempt changes of the report.
enum Change {
    None,
    /// Argyle's report object.
    Learnt(Box<argyle::Report>),
    /// A reason to keep, without a new status.
    Note(String),
}

/// What an attempt produced.
struct Outcome {
    change: Change,
    attempt: Attempt,
    /// Enrich the report afterwards (until it is settled), with this reason as the job's key.
    follow_up: Option<&'static str>,
}

impl Outcome {
    /// Argyle's answer to a request: recorded, and the report enriched until it is settled.
    fn learnt(found: argyle::Report, why: &'static str) -> Self {
        Self {
            change: Change::Learnt(Box::new(found)),
            attempt: Attempt::Done(None),
            follow_up: Some(why),
        }
    }

    /// Try again later (backoff from the job's attempts, or Argyle's `Retry-After`), or give up
    /// once the attempts are spent.
    fn retry(core: &Core, job: &Job, error: String, wait: Option<Duration>) -> Self {
        let options = &core.pipeline.options;
        let attempt = if job.attempts >= options.max_attempts {
            Attempt::Failed(format!("gave up after {} attempts: {error}", job.attempts))
        } else {
            let delay = retry_delay(options.retry_base, job.attempts, wait, fastrand::f64());
            Attempt::Retry {
                at: time::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                error,
            }
        };
        Self {
            change: Change::None,
            attempt,
            follow_up: None,
        }
    }

    /// An Argyle failure: retried when it may pass (rate limit, server error, no connection,
    /// an answer lost in transit), given up at once when it cannot (another 4xx).
    fn from_argyle(core: &Core, job: &Job, error: ArgyleError) -> Self {
        let transient = error.is_retryable(true) || error.outcome_unknown();
        if transient || matches!(error, ArgyleError::Unauthorized { .. }) {
            let wait = error.retry_after();
            Self::retry(core, job, error.to_string(), wait)
        } else {
            Self {
                change: Change::None,
                attempt: Attempt::Failed(format!("Argyle refused: {error}")),
                follow_up: None,
            }
        }
    }
}

fn status_of(status: &argyle::ReportStatus) -> Option<ReportStatus> {
    match status {
        argyle::ReportStatus::WaitingForSync => Some(ReportStatus::WaitingForSync),
        argyle::ReportStatus::Generating => Some(ReportStatus::Generating),
        argyle::ReportStatus::Generated => Some(ReportStatus::Generated),
        argyle::ReportStatus::Failed => Some(ReportStatus::Failed),
        argyle::ReportStatus::Other(_) => None,
    }
}

fn details_of(found: &argyle::Report) -> ArgyleDetails {
    ArgyleDetails {
        file_url: found.file_url.clone(),
        json_url: found.json_url.clone(),
        created_at: found.created_at,
        last_synced_at: found.last_synced_at,
        accounts: found
            .accounts
            .iter()
            .map(|account| ReportAccount {
                account: account.id,
                item: account.item.clone(),
                last_synced_at: account.last_synced_at,
            })
            .collect(),
        metadata: found.metadata.clone(),
        external_id: found.external_id.clone(),
    }
}

/// How long a job waits after its `attempts`-th failed attempt: `base` doubling with each
/// attempt up to 10 minutes, plus up to a quarter more (`jitter` in 0..1) so that jobs failed
/// together do not retry together; or what Argyle asked for (`Retry-After`) when that is longer
/// than the doubling.
fn retry_delay(base: Duration, attempts: u32, asked: Option<Duration>, jitter: f64) -> Duration {
    let backoff = base
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_DELAY);
    asked.map_or(
        backoff + backoff.mul_f64(jitter.clamp(0.0, 1.0) * 0.25),
        |asked| asked.max(backoff),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);

    #[test]
    fn the_wait_doubles_with_each_attempt_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=10)
            .map(|attempts| retry_delay(BASE, attempts, None, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(retry_delay(BASE, u32::MAX, None, 0.0), MAX_DELAY);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        assert_eq!(
            retry_delay(BASE, 2, None, 1.0),
            Duration::from_millis(12_500)
        );
        assert_eq!(retry_delay(BASE, 9, None, 1.0), Duration::from_secs(750));
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_doubling_and_a_shorter_one_does_not() {
        let asked = Some(Duration::from_secs(90));
        assert_eq!(retry_delay(BASE, 1, asked, 0.5), Duration::from_secs(90));
        assert_eq!(retry_delay(BASE, 6, asked, 0.5), Duration::from_secs(160));
    }
}
