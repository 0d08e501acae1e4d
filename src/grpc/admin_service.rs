//! `readiness.v1.AdminService`: the inbox and the report jobs over gRPC for operators (decode → core → encode).
//! Only mounted when `grpc_admin_enabled` is set.

use tonic::{Request, Response, Status};

use super::convert;
use super::page_token::{self, PageRequest};
use super::pb::admin_service_server::AdminService;
use super::pb::{
    Delivery, DeliveryStatus, GetDeliveryRequest, GetDeliveryResponse, Job, JobState,
    ListDeliveriesRequest, ListDeliveriesResponse, ListJobsRequest, ListJobsResponse, Replay,
    ReplayDeliveryRequest, ReplayDeliveryResponse, ReplayRejectedDeliveriesRequest,
    ReplayRejectedDeliveriesResponse, RetryJobRequest, RetryJobResponse,
};
use super::status::invalid_argument;
use crate::core::{Core, InboxFilter, Outcome, StoredDelivery};
use crate::domain::job::JobQuery;

pub struct AdminApi {
    core: Core,
}

impl AdminApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

/// A delivery status filter: `None` for UNSPECIFIED (any status).
fn status_filter(status: i32) -> Result<Option<crate::domain::DeliveryStatus>, Status> {
    use crate::domain::DeliveryStatus as Domain;
    match DeliveryStatus::try_from(status) {
        Ok(DeliveryStatus::Unspecified) => Ok(None),
        Ok(DeliveryStatus::Applied) => Ok(Some(Domain::Applied)),
        Ok(DeliveryStatus::Ignored) => Ok(Some(Domain::Ignored)),
        Ok(DeliveryStatus::Rejected) => Ok(Some(Domain::Rejected)),
        Err(_) => Err(invalid_argument(
            "status",
            format!("unknown delivery status {status}"),
        )),
    }
}

fn delivery_status(status: crate::domain::DeliveryStatus) -> DeliveryStatus {
    use crate::domain::DeliveryStatus as Domain;
    match status {
        Domain::Applied => DeliveryStatus::Applied,
        Domain::Ignored => DeliveryStatus::Ignored,
        Domain::Rejected => DeliveryStatus::Rejected,
    }
}

fn delivery(summary: &StoredDelivery, body: Vec<u8>) -> Delivery {
    Delivery {
        id: summary.id,
        status: delivery_status(summary.status).into(),
        event: summary.event.clone().unwrap_or_default(),
        user_id: summary.user_id.clone().unwrap_or_default(),
        error: summary.error.clone().unwrap_or_default(),
        body_sha256: summary.body_sha256.clone(),
        received_at: Some(convert::timestamp(summary.received_at)),
        body,
    }
}

fn replay((summary, outcome): (StoredDelivery, Outcome)) -> Replay {
    let (outcome, events, reason) = match outcome {
        Outcome::Applied { events } => (DeliveryStatus::Applied, events as u32, String::new()),
        Outcome::Ignored | Outcome::Duplicate => (DeliveryStatus::Ignored, 0, String::new()),
        Outcome::Rejected { reason } => (DeliveryStatus::Rejected, 0, reason),
    };
    Replay {
        delivery: Some(delivery(&summary, vec![])),
        outcome: outcome.into(),
        events,
        reason,
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        super::metered("ListDeliveries", async move {
            let request = request.into_inner();
            let since = request
                .since
                .map(|at| {
                    chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
                        .ok_or_else(|| invalid_argument("since", "out of range"))
                })
                .transpose()?;
            let status = status_filter(request.status)?;
            let paging = PageRequest {
                token: &request.page_token,
                size: request.page_size,
                filter: format!("status={};since={:?}", request.status, request.since),
            };
            let (rows, next_page_token) = page_token::page(
                paging,
                page_token::numeric_key,
                |row: &StoredDelivery| row.id.to_string(),
                |after_id, limit| {
                    let filter = InboxFilter {
                        status,
                        since,
                        after_id,
                        limit,
                    };
                    async move { self.core.inbox_list(&filter).await }
                },
            )
            .await?;
            Ok(Response::new(ListDeliveriesResponse {
                deliveries: rows.iter().map(|row| delivery(row, vec![])).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn get_delivery(
        &self,
        request: Request<GetDeliveryRequest>,
    ) -> Result<Response<GetDeliveryResponse>, Status> {
        super::metered("GetDelivery", async move {
            let (summary, body) = self.core.inbox_show(request.into_inner().id).await?;
            Ok(Response::new(GetDeliveryResponse {
                delivery: Some(delivery(&summary, body)),
            }))
        })
        .await
    }

    async fn replay_delivery(
        &self,
        request: Request<ReplayDeliveryRequest>,
    ) -> Result<Response<ReplayDeliveryResponse>, Status> {
        super::metered("ReplayDelivery", async move {
            let result = self.core.inbox_replay(request.into_inner().id).await?;
            Ok(Response::new(ReplayDeliveryResponse {
                replay: Some(replay(result)),
            }))
        })
        .await
    }

    async fn replay_rejected_deliveries(
        &self,
        _request: Request<ReplayRejectedDeliveriesRequest>,
    ) -> Result<Response<ReplayRejectedDeliveriesResponse>, Status> {
        super::metered("ReplayRejectedDeliveries", async move {
            let results = self.core.inbox_replay_rejected().await?;
            Ok(Response::new(ReplayRejectedDeliveriesResponse {
                replays: results.into_iter().map(replay).collect(),
            }))
        })
        .await
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        super::metered("ListJobs", async move {
            let request = request.into_inner();
            let state = job_state_filter(request.state)?;
            let report = match request.report_id.trim() {
                "" => None,
                id => Some(convert::uuid_field("report_id", id)?),
            };
            let paging = PageRequest {
                token: &request.page_token,
                size: request.page_size,
                filter: format!(
                    "state={};report={}",
                    request.state,
                    request.report_id.trim()
                ),
            };
            let (jobs, next_page_token) = page_token::page(
                paging,
                page_token::numeric_key,
                |job: &crate::domain::job::Job| job.id.to_string(),
                |before_id, limit| async move {
                    let query = JobQuery {
                        state,
                        report,
                        before_id,
                        limit,
                    };
                    self.core.jobs(&query).await
                },
            )
            .await?;
            Ok(Response::new(ListJobsResponse {
                jobs: jobs.iter().map(job).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn retry_job(
        &self,
        request: Request<RetryJobRequest>,
    ) -> Result<Response<RetryJobResponse>, Status> {
        super::metered("RetryJob", async move {
            let retried = self.core.retry_job(request.into_inner().id).await?;
            Ok(Response::new(RetryJobResponse {
                job: Some(job(&retried)),
            }))
        })
        .await
    }
}

/// A job state filter: `None` for UNSPECIFIED (any state).
fn job_state_filter(state: i32) -> Result<Option<crate::domain::JobState>, Status> {
    use crate::domain::JobState as Domain;
    let wanted = JobState::try_from(state)
        .map_err(|_| invalid_argument("state", format!("unknown job state {state}")))?;
    Ok(Domain::ALL
        .into_iter()
        .find(|domain| job_state(*domain) == wanted))
}

fn job_state(state: crate::domain::JobState) -> JobState {
    use crate::domain::JobState as Domain;
    match state {
        Domain::Pending => JobState::Pending,
        Domain::Running => JobState::Running,
        Domain::Done => JobState::Done,
        Domain::Failed => JobState::Failed,
    }
}

fn job(job: &crate::domain::job::Job) -> Job {
    Job {
        id: job.id,
        kind: job.kind.as_str().to_owned(),
        state: job_state(job.state).into(),
        report_id: job.report.to_string(),
        user_id: job.user.to_string(),
        attempts: job.attempts,
        next_attempt_at: Some(convert::timestamp(job.next_attempt_at)),
        last_error: job.last_error.clone().unwrap_or_default(),
        created_at: Some(convert::timestamp(job.created_at)),
        updated_at: Some(convert::timestamp(job.updated_at)),
    }
}
