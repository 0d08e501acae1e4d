//! `readiness.v1.ReportService`: decode → core → encode.

use tonic::{Request, Response, Status};

use super::pb::get_report_request::Report;
use super::pb::report_service_server::ReportService;
use super::pb::{
    GetReportRequest, GetReportResponse, ListReportsRequest, ListReportsResponse,
    StreamReportEventsRequest, StreamReportEventsResponse,
};
use super::status::invalid_argument;
use super::streams::{self, ServerStream};
use super::{convert, page_token};
use crate::core::{Core, ReportFilter, ReportLookup};

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
            let mut filter = ReportFilter {
                user,
                ..ReportFilter::default()
            };
            match convert::report_type_filter(request.r#type)? {
                None => {}
                Some(Some(name)) => filter.type_name = Some(name.to_owned()),
                Some(None) => filter.unknown_types_only = true,
            }
            if !request.type_name.is_empty() {
                if filter
                    .type_name
                    .as_deref()
                    .is_some_and(|name| name != request.type_name)
                {
                    return Err(invalid_argument("type_name", "contradicts `type`"));
                }
                filter.type_name = Some(request.type_name.clone());
            }
            let fingerprint = format!(
                "user={};type={};name={}",
                request.user_id, request.r#type, request.type_name
            );
            let after = page_token::decode(&request.page_token, &fingerprint)?
                .map(|key| {
                    key.parse::<i64>()
                        .map_err(|_| invalid_argument("page_token", "malformed"))
                })
                .transpose()?;
            let page = self
                .core
                .list_reports(&filter, after, page_token::page_size(request.page_size)?)
                .await?;
            let next_page_token = match page.items.last() {
                Some(last) if page.more => page_token::encode(&fingerprint, &last.seq.to_string()),
                _ => String::new(),
            };
            Ok(Response::new(ListReportsResponse {
                reports: page.items.iter().map(convert::report).collect(),
                next_page_token,
            }))
        })
        .await
    }
}
