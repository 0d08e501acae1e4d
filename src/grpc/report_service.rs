//! `readiness.v1.ReportService`: decode → core → encode.

use tonic::{Request, Response, Status};

use super::convert;
use super::page_token::{self, PageRequest};
use super::pb::get_report_request::Report;
use super::pb::report_service_server::ReportService;
use super::pb::{
    GetReportRequest, GetReportResponse, ListReportsRequest, ListReportsResponse,
    StreamReportEventsRequest, StreamReportEventsResponse,
};
use super::status::invalid_argument;
use super::streams::{self, ServerStream};
use crate::core::{Core, ReportFilter, ReportLookup, ReportView};

pub struct ReportApi {
    core: Core,
}

impl ReportApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl ReportService for ReportApi {
    type StreamReportEventsStream = ServerStream<StreamReportEventsResponse>;

    async fn stream_report_events(
        &self,
        request: Request<StreamReportEventsRequest>,
    ) -> Result<Response<Self::StreamReportEventsStream>, Status> {
        super::metered("StreamReportEvents", async move {
            let stream = streams::stream_report_events(&self.core, request.into_inner()).await?;
            Ok(Response::new(stream))
        })
        .await
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<GetReportResponse>, Status> {
        super::metered("GetReport", async move {
            let lookup = match request.into_inner().report {
                Some(Report::Id(id)) => ReportLookup::Id(convert::uuid_field("id", &id)?),
                Some(Report::ArgyleReportId(id)) if !id.trim().is_empty() => {
                    ReportLookup::ArgyleId(id.trim().to_owned())
                }
                Some(Report::ArgyleReportId(_)) => {
                    return Err(invalid_argument("argyle_report_id", "must not be empty"));
                }
                None => return Err(invalid_argument("report", "set id or argyle_report_id")),
            };
            let report = self.core.report(&lookup).await?;
            Ok(Response::new(GetReportResponse {
                report: Some(convert::report(&report)),
            }))
        })
        .await
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        super::metered("ListReports", async move {
            let request = request.into_inner();
            let user = match request.user_id.trim() {
                "" => None,
                id => Some(convert::uuid_field("user_id", id)?),
            };
            let (known_type, unknown_types_only) = convert::report_type_filter(request.r#type)?;
            let mut filter = ReportFilter {
                user,
                type_name: known_type.map(str::to_owned),
                unknown_types_only,
            };
            if !request.type_name.is_empty() {
                if known_type.is_some_and(|name| name != request.type_name) {
                    return Err(invalid_argument("type_name", "contradicts `type`"));
                }
                filter.type_name = Some(request.type_name.clone());
            }
            let paging = PageRequest {
                token: &request.page_token,
                size: request.page_size,
                filter: format!(
                    "user={};type={};name={}",
                    request.user_id, request.r#type, request.type_name
                ),
            };
            let (reports, next_page_token) = page_token::page(
                paging,
                page_token::numeric_key,
                |view: &ReportView| view.position.to_string(),
                |after, limit| self.core.list_reports(&filter, after, limit),
            )
            .await?;
            Ok(Response::new(ListReportsResponse {
                reports: reports
                    .iter()
                    .map(|view| convert::report(&view.report))
                    .collect(),
                next_page_token,
            }))
        })
        .await
    }
}
