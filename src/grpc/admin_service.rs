//! `readiness.v1.AdminService`: the inbox over gRPC for operators (decode → core → encode).
//! Only mounted when `grpc_admin_enabled` is set.

use tonic::{Request, Response, Status};

use super::pb::admin_service_server::AdminService;
use super::pb::{
    Delivery, DeliveryStatus, GetDeliveryRequest, GetDeliveryResponse, ListDeliveriesRequest,
    ListDeliveriesResponse, Replay, ReplayDeliveryRequest, ReplayDeliveryResponse,
    ReplayRejectedDeliveriesRequest, ReplayRejectedDeliveriesResponse,
};
use super::status::invalid_argument;
use super::{convert, page_token};
use crate::core::{Core, DeliverySummary, InboxFilter, Outcome};

pub struct AdminApi {
    core: Core,
}

impl AdminApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

fn status_name(status: i32) -> Result<Option<&'static str>, Status> {
    match DeliveryStatus::try_from(status) {
        Ok(DeliveryStatus::Unspecified) => Ok(None),
        Ok(DeliveryStatus::Applied) => Ok(Some("applied")),
        Ok(DeliveryStatus::Ignored) => Ok(Some("ignored")),
        Ok(DeliveryStatus::Rejected) => Ok(Some("rejected")),
        Err(_) => Err(invalid_argument(
            "status",
            format!("unknown delivery status {status}"),
        )),
    }
}

fn delivery(summary: &DeliverySummary, body: Vec<u8>) -> Delivery {
    let status = match summary.status.as_str() {
        "applied" => DeliveryStatus::Applied,
        "ignored" => DeliveryStatus::Ignored,
        "rejected" => DeliveryStatus::Rejected,
        _ => DeliveryStatus::Unspecified,
    };
    Delivery {
        id: summary.id,
        status: status.into(),
        event: summary.event.clone().unwrap_or_default(),
        user_id: summary.user_id.clone().unwrap_or_default(),
        error: summary.error.clone().unwrap_or_default(),
        body_sha256: summary.body_sha256.clone(),
        received_at: Some(convert::timestamp(summary.received_at)),
        body,
    }
}

fn replay((summary, outcome): (DeliverySummary, Outcome)) -> Replay {
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
            let fingerprint = format!("status={};since={:?}", request.status, request.since);
            let after = page_token::decode(&request.page_token, &fingerprint)?
                .map(|key| {
                    key.parse::<i64>()
                        .map_err(|_| invalid_argument("page_token", "malformed"))
                })
                .transpose()?;
            let limit = page_token::page_size(request.page_size)?;
            let filter = InboxFilter {
                status: status_name(request.status)?.map(str::to_owned),
                since,
                after_id: after,
                limit: limit + 1,
            };
            let mut rows = self.core.inbox_list(&filter).await?;
            let more = rows.len() as u64 > limit;
            rows.truncate(limit as usize);
            let next_page_token = match rows.last() {
                Some(last) if more => page_token::encode(&fingerprint, &last.id.to_string()),
                _ => String::new(),
            };
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
}
