//! `readiness reports ...`: the report pipeline from a shell, as a gRPC client of a running
//! service. Each command is one RPC (`show` adds the report's jobs when AdminService answers), so
//! the service's checks, tokens and idempotency apply exactly as to any other client. Output is
//! the messages in the protobuf JSON mapping (as `grpcurl` prints them): one object per line for
//! lists, indented for a single answer.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::grpc::pb::{self, admin_service_client::AdminServiceClient};
use crate::grpc::pb::{ReportStatus, report_service_client::ReportServiceClient};

#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// The service's gRPC endpoint (`https://` for TLS).
    #[arg(
        long,
        env = "READINESS_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub grpc_url: String,
    /// Bearer token: RequestReport's own token (`grpc_report_request_token_sha256`) or a general
    /// one; `retry` and the jobs of `show` need an AdminService token.
    #[arg(long, env = "READINESS_GRPC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (with `https://`).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key, when the server requires one (`grpc_tls_client_ca`).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    #[command(subcommand)]
    pub action: ReportsAction,
}

#[derive(Debug, Subcommand)]
pub enum ReportsAction {
    /// List reports, newest first, one JSON object per line (ListReports, following pages).
    List {
        /// Only this user's reports.
        #[arg(long)]
        user: Option<String>,
        /// Only this status (requested, waiting_for_sync, generating, generated, failed, refused).
        #[arg(long)]
        status: Option<String>,
        /// Only this report type (Argyle's name, for example `voie`).
        #[arg(long = "type")]
        report_type: Option<String>,
        /// At most this many reports.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one report (GetReport) and its jobs (AdminService.ListJobs), as JSON.
    Show {
        /// Our report id, or Argyle's with `--argyle`.
        id: String,
        /// `id` is Argyle's report id.
        #[arg(long)]
        argyle: bool,
    },
    /// Request a report from Argyle for a READY user (RequestReport); prints the report.
    Request {
        /// The user (Argyle's user id).
        #[arg(
            long,
            required_unless_present = "external_id",
            conflicts_with = "external_id"
        )]
        user: Option<String>,
        /// The user, by an external id Argyle reported for them.
        #[arg(long)]
        external_id: Option<String>,
        /// The report type (Argyle's name, for example `voie` or `voe`).
        #[arg(long = "type")]
        report_type: String,
        /// Metadata stored with the report at Argyle: a JSON object.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// Idempotency key: the same key with the same arguments returns the same report and
        /// never asks Argyle twice. A fresh one is made (and printed on stderr) when omitted.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Write a generated report's document (GetReportDocument), fetched from Argyle by the
    /// service, to standard output or a file.
    Document {
        /// Our report id, or Argyle's with `--argyle`.
        id: String,
        /// `id` is Argyle's report id.
        #[arg(long)]
        argyle: bool,
        /// The document: `pdf` (`file_url`) or `json` (`json_url`).
        #[arg(long, default_value = "pdf", value_parser = ["pdf", "json"])]
        format: String,
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Run a job that gave up (FAILED) again from its first attempt (AdminService.RetryJob).
    Retry {
        /// The job's id (from `show` or AdminService.ListJobs).
        job: i64,
    },
}

/// Runs one `reports` command to completion.
pub fn run(args: ReportsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let client = Client::connect(&args).await?;
        client.act(args.action).await
    })
}

struct Client {
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    json: Json,
}

impl Client {
    async fn connect(args: &ReportsArgs) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(args.grpc_url.clone())
            .with_context(|| format!("--grpc-url {:?}", args.grpc_url))?
            .connect_timeout(std::time::Duration::from_secs(10));
        if args.grpc_url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &args.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.grpc_url))?;
        let token = args
            .token
            .as_deref()
            .map(|token| format!("Bearer {}", token.trim()).parse())
            .transpose()
            .context("--token: not a valid header value")?;
        Ok(Self {
            channel,
            token,
            json: Json::new()?,
        })
    }

    /// `message` with the bearer token, if any.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    fn reports(&self) -> ReportServiceClient<Channel> {
        ReportServiceClient::new(self.channel.clone())
    }

    fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    async fn act(&self, action: ReportsAction) -> anyhow::Result<()> {
        match action {
            ReportsAction::List {
                user,
                status,
                report_type,
                limit,
            } => self.list(user, status, report_type, limit).await,
            ReportsAction::Show { id, argyle } => self.show(id, argyle).await,
            ReportsAction::Request {
                user,
                external_id,
                report_type,
                metadata,
                request_id,
            } => {
                let user = match (user, external_id) {
                    (Some(user), _) => pb::request_report_request::User::UserId(user),
                    (None, Some(id)) => pb::request_report_request::User::ExternalId(id),
                    (None, None) => anyhow::bail!("--user or --external-id is required"),
                };
                let request_id = request_id.unwrap_or_else(|| {
                    let id = uuid::Uuid::new_v4().to_string();
                    eprintln!("request_id: {id} (pass --request-id {id} to retry safely)");
                    id
                });
                let request = pb::RequestReportRequest {
                    user: Some(user),
                    type_name: report_type,
                    metadata: metadata
                        .as_deref()
                        .map(|m| self.json.r#struct(m))
                        .transpose()?,
                    request_id,
                    ..Default::default()
                };
                let answer = self
                    .reports()
                    .request_report(self.request(request))
                    .await
                    .map_err(rpc_error("RequestReport"))?;
                self.json
                    .print_pretty("RequestReportResponse", &answer.into_inner())
            }
            ReportsAction::Document {
                id,
                argyle,
                format,
                output,
            } => self.document(id, argyle, &format, output).await,
            ReportsAction::Retry { job } => {
                let answer = self
                    .admin()
                    .retry_job(self.request(pb::RetryJobRequest { id: job }))
                    .await
                    .map_err(rpc_error("RetryJob"))?;
                self.json
                    .print_pretty("RetryJobResponse", &answer.into_inner())
            }
        }
    }

    async fn list(
        &self,
        user: Option<String>,
        status: Option<String>,
        report_type: Option<String>,
        limit: usize,
    ) -> anyhow::Result<()> {
        let status = match status {
            None => ReportStatus::Unspecified,
            Some(name) => ReportStatus::from_str_name(&format!(
                "REPORT_STATUS_{}",
                name.trim().to_ascii_uppercase()
            ))
            .with_context(|| format!("--status {name:?}: not a report status"))?,
        };
        let mut request = pb::ListReportsRequest {
            user_id: user.unwrap_or_default(),
            type_name: report_type.unwrap_or_default(),
            status: status.into(),
            page_size: i32::try_from(limit.min(500)).unwrap_or(500),
            ..Default::default()
        };
        let mut printed = 0;
        while printed < limit {
            let page = self
                .reports()
                .list_reports(self.request(request.clone()))
                .await
                .map_err(rpc_error("ListReports"))?
                .into_inner();
            for report in page.reports.iter().take(limit - printed) {
                self.json.print_line("Report", report)?;
                printed += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        Ok(())
    }

    async fn show(&self, id: String, argyle: bool) -> anyhow::Result<()> {
        use pb::get_report_request::Report as Which;
        let which = if argyle {
            Which::ArgyleReportId(id)
        } else {
            Which::Id(id)
        };
        let report = self
            .reports()
            .get_report(self.request(pb::GetReportRequest {
                report: Some(which),
                ..Default::default()
            }))
            .await
            .map_err(rpc_error("GetReport"))?
            .into_inner();
        let mut shown = self.json.value("GetReportResponse", &report)?;
        let report_id = report.report.map(|r| r.id).unwrap_or_default();
        let jobs = self
            .admin()
            .list_jobs(self.request(pb::ListJobsRequest {
                report_id,
                page_size: 500,
                ..Default::default()
            }))
            .await;
        match jobs {
            Ok(jobs) => {
                shown["jobs"] =
                    self.json.value("ListJobsResponse", &jobs.into_inner())?["jobs"].take()
            }
            // Jobs are operator data: without AdminService (or its token) the report alone.
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unimplemented | Code::PermissionDenied | Code::Unauthenticated
                ) =>
            {
                shown["jobs_unavailable"] =
                    format!("AdminService.ListJobs: {}", status.message()).into();
            }
            Err(status) => return Err(rpc_error("ListJobs")(status)),
        }
        println!("{}", serde_json::to_string_pretty(&shown)?);
        Ok(())
    }

    async fn document(
        &self,
        id: String,
        argyle: bool,
        format: &str,
        output: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        use pb::get_report_document_request::Report as Which;
        use std::io::Write;
        let request = pb::GetReportDocumentRequest {
            report: Some(if argyle {
                Which::ArgyleReportId(id)
            } else {
                Which::Id(id)
            }),
            format: match format {
                "json" => pb::DocumentFormat::Json,
                _ => pb::DocumentFormat::Pdf,
            }
            .into(),
        };
        let mut chunks = self
            .reports()
            .get_report_document(self.request(request))
            .await
            .map_err(rpc_error("GetReportDocument"))?
            .into_inner();
        let mut sink: Box<dyn Write> = match &output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut bytes = 0;
        while let Some(message) = chunks
            .message()
            .await
            .map_err(rpc_error("GetReportDocument"))?
        {
            if !message.content_type.is_empty() {
                eprintln!("content type: {}", message.content_type);
            }
            sink.write_all(&message.chunk)?;
            bytes += message.chunk.len();
        }
        sink.flush()?;
        if let Some(path) = output {
            eprintln!("{bytes} bytes written to {}", path.display());
        }
        Ok(())
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// An RPC's failure as the command's error: the method, the code and the server's message.
fn rpc_error(method: &'static str) -> impl Fn(Status) -> anyhow::Error {
    move |status| anyhow::anyhow!("{method}: {:?}: {}", status.code(), status.message())
}

/// The protobuf JSON mapping of our messages, from the compiled descriptors.
struct Json {
    pool: DescriptorPool,
}

impl Json {
    fn new() -> anyhow::Result<Self> {
        let mut pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .context("decoding the API's descriptors")?;
        pool.decode_file_descriptor_set(pb::ADMIN_FILE_DESCRIPTOR_SET)
            .context("decoding AdminService's descriptors")?;
        Ok(Self { pool })
    }

    /// `message` (of the API type `name`, without the package) in the JSON mapping.
    fn value(&self, name: &str, message: &impl Message) -> anyhow::Result<serde_json::Value> {
        let name = format!("readiness.v1.{name}");
        let descriptor = self
            .pool
            .get_message_by_name(&name)
            .with_context(|| format!("no descriptor for {name}"))?;
        let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
        let options = SerializeOptions::new().skip_default_fields(true);
        Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
    }

    fn print_line(&self, name: &str, message: &impl Message) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(&self.value(name, message)?)?);
        Ok(())
    }

    fn print_pretty(&self, name: &str, message: &impl Message) -> anyhow::Result<()> {
        println!(
            "{}",
            serde_json::to_string_pretty(&self.value(name, message)?)?
        );
        Ok(())
    }

    /// A JSON object as a `google.protobuf.Struct`.
    fn r#struct(&self, text: &str) -> anyhow::Result<prost_types::Struct> {
        let value: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("--metadata is not JSON: {text:?}"))?;
        anyhow::ensure!(value.is_object(), "--metadata must be a JSON object");
        let descriptor = self
            .pool
            .get_message_by_name("google.protobuf.Struct")
            .context("no descriptor for google.protobuf.Struct")?;
        let dynamic = DynamicMessage::deserialize(descriptor, value)?;
        Ok(prost_types::Struct::decode(
            dynamic.encode_to_vec().as_slice(),
        )?)
    }
}
