//! The report pipeline's use cases and policy: with Argyle API credentials configured, a report
//! is requested once per entry into READY (`reports_auto_generate`) or per `request_id`
//! (`RequestReport`), every report Argyle announces is enriched from Argyle's API, and a
//! generated report's document is streamed from Argyle on demand. Every such change writes its
//! job in the same transaction (the outbox; `core::jobs` runs them). Without credentials none of
//! this happens and the service behaves as before.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Core, CoreError, UserLookup};
use crate::argyle::{ArgyleClient, Document};
use crate::domain::events::DomainEvent;
use crate::domain::job::NewJob;
use crate::domain::report::{Report, ReportOrigin, Request};
use crate::domain::user::User;
use crate::domain::{JobKind, ReadinessState, ReportId, ReportType, UserId, echo, time};
use crate::store::Retry;

/// Argyle's cap: reports per user per rolling 24 h.
pub const DAILY_CAP: usize = 10;

/// Namespace of the ids of reports this service requests (UUID v5 of the request's key).
const REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x2f7c_51e0_8a0b_4c5e_9b3d_7e21_aa10_7e57);

/// How the report pipeline runs.
#[derive(Clone)]
pub struct PipelineOptions {
    /// The Argyle API, with the credentials; `None` turns the pipeline off.
    pub argyle: Option<ArgyleClient>,
    /// Types requested when a user enters READY; empty: none.
    pub auto_generate: Vec<ReportType>,
    /// Attempts before a job gives up.
    pub max_attempts: u32,
    /// The first delay before a job's next attempt; it doubles each time, up to 10 minutes.
    pub retry_base: Duration,
    /// How often idle workers look for due jobs (other replicas' jobs included).
    pub poll_interval: Duration,
    /// How long a claimed job is a worker's before another may take it.
    pub lease: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            argyle: None,
            auto_generate: vec![],
            max_attempts: 10,
            retry_base: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
        }
    }
}

/// The pipeline's state shared by the ingest path and the workers.
pub(super) struct Pipeline {
    pub(super) options: PipelineOptions,
    /// Woken when a local transaction wrote a job.
    pub(super) wake: Notify,
}

impl Pipeline {
    pub(super) fn new(options: PipelineOptions) -> Arc<Self> {
        Arc::new(Self {
            options,
            wake: Notify::new(),
        })
    }

    /// True when Argyle API credentials are configured.
    pub(super) fn enabled(&self) -> bool {
        self.options.argyle.is_some()
    }

    /// The time window a batch must know the user's requests in: Argyle's cap, and matching an
    /// announcement without Argyle's id to a request.
    pub(super) fn requests_since(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.enabled().then(|| at - chrono::Duration::hours(24))
    }

    /// What a user's events cause in the pipeline, written in the same transaction: an entry
    /// into READY requests each automatic type (once per entry: the job's key is the entry; at
    /// the cap the report is REFUSED instead), and an announced report is enriched.
    pub(super) fn follow(
        &self,
        user: &mut User,
        caused: &[DomainEvent],
        at: DateTime<Utc>,
    ) -> (Vec<DomainEvent>, Vec<NewJob>) {
        let (mut events, mut jobs) = (vec![], vec![]);
        if !self.enabled() {
            return (events, jobs);
        }
        for event in caused {
            match event {
                DomainEvent::ReadinessChanged {
                    from,
                    to: ReadinessState::Ready,
                    ..
                } if *from != Some(ReadinessState::Ready) => {
                    for report_type in &self.options.auto_generate {
                        let key = format!(
                            "auto:{}:{}:{}",
                            user.id,
                            at.timestamp_micros(),
                            report_type.as_str()
                        );
                        let request = Request {
                            id: request_report_id(&key),
                            user: user.id,
                            report_type: report_type.clone(),
                            origin: ReportOrigin::Automatic,
                            request_id: None,
                            fingerprint: None,
                            metadata: serde_json::Value::Null,
                        };
                        let refusal = (user.requests_in_the_last_day(at) >= DAILY_CAP)
                            .then(|| cap_reached(user.id));
                        if refusal.is_none() {
                            jobs.push(request_job(&request, key, at));
                        }
                        events.push(user.record_request(Report::requested(request, refusal, at)));
                    }
                }
                DomainEvent::ReportGenerated { report, .. } => {
                    jobs.push(fetch_job(*report, user.id, "announced", at));
                }
                _ => {}
            }
        }
        (events, jobs)
    }
}

fn cap_reached(user: UserId) -> String {
    format!(
        "user {user} reached Argyle's cap of {DAILY_CAP} reports in 24 hours; not sent to Argyle"
    )
}

/// The id of a report this service requests under `key`.
fn request_report_id(key: &str) -> ReportId {
    ReportId(Uuid::new_v5(&REQUEST_NAMESPACE, key.as_bytes()))
}

/// The job that asks Argyle for a requested report.
fn request_job(request: &Request, key: String, at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: JobKind::RequestReport,
        dedupe_key: key,
        report: request.id,
        user: request.user,
        payload: serde_json::json!({"metadata": request.metadata}),
        due: at,
    }
}

/// The job that enriches a report from Argyle's API until it is settled.
pub(super) fn fetch_job(report: ReportId, user: UserId, why: &str, at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: JobKind::FetchReport,
        dedupe_key: format!("fetch:{report}:{why}"),
        report,
        user,
        payload: serde_json::Value::Null,
        due: at,
    }
}

/// A caller's request for a report (`RequestReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    pub user: UserLookup,
    pub report_type: ReportType,
    pub metadata: serde_json::Value,
    /// The caller's idempotency key; `None`: a new request each time.
    pub request_id: Option<String>,
}

/// Which document of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    Pdf,
    Json,
}

/// The answer to a request whose `request_id` was used before: the same report for the same
/// arguments, `InvalidArgument` for others.
fn answered_before(
    earlier: Report,
    fingerprint: &str,
    request_id: &str,
) -> Result<Report, CoreError> {
    if earlier.request_fingerprint.as_deref() == Some(fingerprint) {
        Ok(earlier)
    } else {
        Err(CoreError::InvalidArgument {
            field: "request_id",
            reason: format!(
                "{} was used with other arguments (another user, type or metadata)",
                echo(request_id)
            ),
        })
    }
}

/// Whether `user` may have a report requested now: READY, and under the daily cap.
fn may_request(user: &User, at: DateTime<Utc>) -> Result<(), CoreError> {
    if user.readiness != ReadinessState::Ready {
        return Err(CoreError::FailedPrecondition(format!(
            "user {} is {}, not ready: a report cannot be generated now",
            user.id, user.readiness
        )));
    }
    if user.requests_in_the_last_day(at) >= DAILY_CAP {
        return Err(CoreError::ResourceExhausted(cap_reached(user.id)));
    }
    Ok(())
}

impl Core {
    /// Asks Argyle for a report for a READY user, once per `request_id` (the same key with the
    /// same arguments answers the same report; with others, `InvalidArgument`). The report is
    /// recorded REQUESTED with its job in one transaction; the answer comes before Argyle is
    /// called.
    pub async fn request_report(&self, request: ReportRequest) -> Result<Report, CoreError> {
        self.health.check_file()?;
        if !self.pipeline.enabled() {
            return Err(CoreError::FailedPrecondition(
                "no Argyle API credentials are configured (READINESS_ARGYLE_API_KEY_ID and \
                 READINESS_ARGYLE_API_KEY_SECRET): this service cannot request reports"
                    .into(),
            ));
        }
        let user_id = self
            .user_readiness(&request.user, &Default::default())
            .await?
            .value
            .id;
        let fingerprint = fingerprint(user_id, &request);
        let request_id = request
            .request_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let key = format!("request:{request_id}");
        let at = time::now();
        let _writer = super::hold(&self.write_lock).await;
        let batch = self.store.begin_batch().await?;
        if let Some(earlier) = batch.report_by_request_id(&request_id).await? {
            return answered_before(earlier, &fingerprint, &request_id);
        }
        let wanted = crate::store::Wanted {
            users: [user_id].into(),
            requests_since: Some(at - chrono::Duration::hours(24)),
            ..Default::default()
        };
        let mut loaded = batch.load(&wanted).await?;
        let user = loaded
            .users
            .get_mut(&user_id)
            .ok_or_else(|| CoreError::NotFound(format!("user {user_id}")))?;
        may_request(user, at)?;
        let request = Request {
            id: request_report_id(&key),
            user: user_id,
            report_type: request.report_type,
            origin: ReportOrigin::Requested,
            request_id: Some(request_id),
            fingerprint: Some(fingerprint),
            metadata: request.metadata,
        };
        let job = request_job(&request, key, at);
        let report = Report::requested(request, None, at);
        let event = user.record_request(report.clone());
        batch.save(loaded.users.values()).await?;
        batch.enqueue(&[job]).await?;
        let last = super::pipeline::commit(batch, vec![event], at, &self.log).await?;
        self.pipeline.wake.notify_one();
        self.settle(last).await;
        Ok(report)
    }

    /// Opens a generated report's document at Argyle (with this service's credentials): its
    /// content type and its bytes as they come. `NotFound` before the report is generated.
    pub async fn report_document(
        &self,
        lookup: &super::ReportLookup,
        format: DocumentFormat,
    ) -> Result<Document, CoreError> {
        let argyle = self.pipeline.options.argyle.clone().ok_or_else(|| {
            CoreError::FailedPrecondition(
                "no Argyle API credentials are configured: documents cannot be fetched".into(),
            )
        })?;
        let report = self.report(lookup).await?;
        let url = match format {
            DocumentFormat::Pdf => report.details.file_url.clone(),
            DocumentFormat::Json => report.details.json_url.clone(),
        };
        let not_yet = || {
            CoreError::NotFound(format!(
                "a document of report {} (status {}; it is fetched once the report is generated \
                 and enriched from Argyle's API)",
                report.id, report.status
            ))
        };
        let url = match (url, report.status) {
            (Some(url), crate::domain::ReportStatus::Generated) => url,
            _ => return Err(not_yet()),
        };
        argyle.download(&url).await.map_err(|error| match error {
            crate::argyle::ArgyleError::NotFound { .. } => not_yet(),
            other => CoreError::Upstream(other.to_string()),
        })
    }
}

impl Core {
    /// The pipeline's jobs, newest first.
    pub async fn jobs(
        &self,
        query: &crate::domain::job::JobQuery,
    ) -> Result<Vec<crate::domain::job::Job>, CoreError> {
        self.health.check_file()?;
        Ok(self.store.jobs(query).await?)
    }

    /// Runs a job that gave up again, from its first attempt (an operator's retry).
    pub async fn retry_job(&self, id: i64) -> Result<crate::domain::job::Job, CoreError> {
        self.health.check_file()?;
        let _writer = super::hold(&self.write_lock).await;
        match self.store.retry_job(id, time::now()).await? {
            Retry::Retried(job) => {
                self.pipeline.wake.notify_one();
                Ok(job)
            }
            Retry::NotFailed(job) => Err(CoreError::FailedPrecondition(format!(
                "job {id} is {}: only a failed job is retried",
                job.state
            ))),
            Retry::Missing => Err(CoreError::NotFound(format!("job {id}"))),
        }
    }
}

/// A hash of what a request asks for: the same `request_id` must come with the same.
fn fingerprint(user: UserId, request: &ReportRequest) -> String {
    let canonical = serde_json::json!({
        "user": user,
        "type": request.report_type.as_str(),
        "metadata": request.metadata,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
