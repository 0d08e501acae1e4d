//! `readiness.v1.ReportService`: decode → core → encode.

use tonic::{Request, Response, Status};

use super::convert;
use super::page_token::{self, PageRequest};
use super::pb::report_service_server::ReportService;
use super::pb::{
    DocumentFormat, GetReportDocumentRequest, GetReportDocumentResponse, GetReportRequest,
    GetReportResponse, ListReportsRequest, ListReportsResponse, RequestReportRequest,
    RequestReportResponse, StreamReportEventsRequest, StreamReportEventsResponse,
};
use super::status::invalid_argument;
use super::streams::{self, ServerStream};
use tokio_stream::StreamExt;

use crate::core::{self, Core, ReportFilter, ReportRequest, ReportView};
use crate::domain::ReportType;
use crate::domain::argyle::MAX_NAME_LEN;

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
        super::read("GetReport", request, |request, options| async move {
            let lookup = convert::report_lookup(request.report.map(Into::into))?;
            let report = self.core.report_as_of(&lookup, &options).await?;
            Ok(GetReportResponse {
                report: Some(convert::report(&report.value)),
                cursor: report.cursor.encode(),
            })
        })
        .await
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        super::read("ListReports", request, |request, options| async move {
            let user = match request.user_id.trim() {
                "" => None,
                id => Some(convert::uuid_field("user_id", id)?),
            };
            let (known_type, unknown_types_only) = convert::report_type_filter(request.r#type)?;
            let mut filter = ReportFilter {
                user,
                type_name: known_type.map(str::to_owned),
                unknown_types_only,
                status: convert::report_status_filter(request.status)?,
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
                    "user={};type={};name={};status={}",
                    request.user_id, request.r#type, request.type_name, request.status
                ),
            };
            let (reports, next_page_token, cursor) = page_token::page_as_of(
                paging,
                page_token::numeric_key,
                |view: &ReportView| view.position.to_string(),
                |after, limit| self.core.list_reports(&filter, after, limit, &options),
            )
            .await?;
            Ok(ListReportsResponse {
                reports: reports
                    .iter()
                    .map(|view| convert::report(&view.report))
                    .collect(),
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn request_report(
        &self,
        request: Request<RequestReportRequest>,
    ) -> Result<Response<RequestReportResponse>, Status> {
        super::metered("RequestReport", async move {
            let request = request.into_inner();
            let user = convert::user_lookup(request.user.map(Into::into))?;
            let request_id = request.request_id.trim();
            if request_id.len() > MAX_NAME_LEN {
                return Err(invalid_argument(
                    "request_id",
                    format!("longer than {MAX_NAME_LEN} bytes"),
                ));
            }
            let report = self
                .core
                .request_report(ReportRequest {
                    user,
                    report_type: requested_type(request.r#type, &request.type_name)?,
                    metadata: convert::json_metadata(request.metadata),
                    request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
                })
                .await?;
            Ok(Response::new(RequestReportResponse {
                report: Some(convert::report(&report)),
            }))
        })
        .await
    }

    type GetReportDocumentStream = ServerStream<GetReportDocumentResponse>;

    async fn get_report_document(
        &self,
        request: Request<GetReportDocumentRequest>,
    ) -> Result<Response<Self::GetReportDocumentStream>, Status> {
        super::metered("GetReportDocument", async move {
            let request = request.into_inner();
            let lookup = convert::report_lookup(request.report.map(Into::into))?;
            let format = match DocumentFormat::try_from(request.format) {
                Ok(DocumentFormat::Pdf) => core::DocumentFormat::Pdf,
                Ok(DocumentFormat::Json) => core::DocumentFormat::Json,
                _ => {
                    return Err(invalid_argument(
                        "format",
                        "choose DOCUMENT_FORMAT_PDF or DOCUMENT_FORMAT_JSON",
                    ));
                }
            };
            let document = self.core.report_document(&lookup, format).await?;
            let content_type = document.content_type.clone();
            let mut first = true;
            let chunks = document.into_stream().map(move |chunk| {
                let chunk = chunk.map_err(|error| {
                    Status::unavailable(format!(
                        "Argyle failed while sending the document: {error}"
                    ))
                })?;
                let content_type = if first {
                    content_type.clone()
                } else {
                    String::new()
                };
                first = false;
                Ok(GetReportDocumentResponse {
                    content_type,
                    chunk: chunk.to_vec(),
                })
            });
            let stream: Self::GetReportDocumentStream = Box::pin(chunks);
            Ok(Response::new(stream))
        })
        .await
    }
}

/// The type to request: a known `type`, or `type_name` (which must agree with a known `type`).
fn requested_type(value: i32, type_name: &str) -> Result<ReportType, Status> {
    let (known, unknown) = convert::report_type_filter(value)?;
    let name = type_name.trim();
    match (known, unknown, name) {
        (Some(known), _, "") => Ok(ReportType::from_argyle(known)),
        (Some(known), _, name) if name == known => Ok(ReportType::from_argyle(known)),
        (Some(_), _, _) => Err(invalid_argument("type_name", "contradicts `type`")),
        (None, _, "") => Err(invalid_argument(
            "type",
            "set type (or type_name for a type this version does not know)",
        )),
        (None, _, name) if name.len() > MAX_NAME_LEN => Err(invalid_argument(
            "type_name",
            format!("longer than {MAX_NAME_LEN} bytes"),
        )),
        (None, _, name) => {
            if name
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(invalid_argument(
                    "type_name",
                    "only letters, digits, `-` and `_`",
                ));
            }
            let _ = unknown;
            Ok(ReportType::from_argyle(name))
        }
    }
}
