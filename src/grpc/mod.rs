//! tonic gRPC API (`readiness.v1`): thin services over `core`, pb ↔ domain conversions, one
//! `CoreError` → `Status` mapping, plus standard health and reflection (v1 and v1alpha).

mod admin_service;
mod auth;
mod convert;
mod incoming;
mod page_token;
mod readiness_service;
mod report_service;
mod status;
mod streams;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::core::Core;

/// Generated protobuf types and service stubs.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("readiness.v1");

    /// Encoded descriptors of the public API (`readiness.proto`), for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("readiness_descriptor");
    /// Encoded descriptors of `admin.proto`, registered with reflection only when AdminService
    /// is served.
    pub const ADMIN_FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("admin_descriptor");
}

pub use auth::{BearerAuth, MethodAuth, hash_token};
pub use incoming::{Connection, incoming};
pub use readiness_service::ReadinessApi;
pub use report_service::ReportApi;

/// Default and largest page sizes of the list methods (AIP-158).
pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

/// The fully-qualified names of our services, as health reports them.
pub const SERVICE_NAMES: [&str; 2] = [
    "readiness.v1.ReadinessService",
    "readiness.v1.ReportService",
];

/// Who may call what over gRPC, and how large a request may be.
#[derive(Clone)]
pub struct Access {
    /// Required bearer token, if any.
    pub auth: Option<BearerAuth>,
    /// Health stays open when tokens are required.
    pub open_health: bool,
    /// Reflection stays open when tokens are required.
    pub open_reflection: bool,
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// Mount `AdminService`, behind this check (`None`: open).
    pub admin: Option<Option<BearerAuth>>,
    /// Tokens of `RequestReport` and `GetReportDocument` (`None`: the general ones).
    pub report_requests: Option<BearerAuth>,
}

/// Adds `service`, behind the token check when `auth` is set.
fn add<S>(routes: Routes, service: S, auth: Option<&BearerAuth>) -> Routes
where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
{
    match auth {
        Some(auth) => routes.add_service(tonic::service::interceptor::InterceptedService::new(
            service,
            auth.clone(),
        )),
        None => routes.add_service(service),
    }
}

/// Builds every gRPC service: ours, health, and reflection in both protocol versions.
pub fn routes(
    core: Core,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    access: &Access,
) -> Result<Routes, tonic_reflection::server::Error> {
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
        // Reflection describes whole files: AdminService (and its raw-body read) is only
        // described where it is served.
        match access.admin {
            Some(_) => builder.register_encoded_file_descriptor_set(pb::ADMIN_FILE_DESCRIPTOR_SET),
            None => builder,
        }
    };
    // Each builder lists only its own reflection protocol; register the other's descriptors so
    // both versions show in `list`.
    let reflection_v1 = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let auth = access.auth.as_ref();
    let reflection_auth = auth.filter(|_| !access.open_reflection);
    let limit = access.max_message_bytes;
    let mut routes = Routes::default();
    routes = add(routes, health, auth.filter(|_| !access.open_health));
    routes = add(routes, reflection_v1, reflection_auth);
    routes = add(routes, reflection_v1alpha, reflection_auth);
    let readiness =
        pb::readiness_service_server::ReadinessServiceServer::new(ReadinessApi::new(core.clone()))
            .max_decoding_message_size(limit);
    let core_for_admin = core.clone();
    let reports = pb::report_service_server::ReportServiceServer::new(ReportApi::new(core))
        .max_decoding_message_size(limit);
    routes = add(routes, readiness, auth);
    // RequestReport spends Argyle's quota and GetReportDocument reads documents: they may need
    // tokens of their own.
    routes = routes.add_service(MethodAuth::new(
        reports,
        auth.cloned(),
        access.report_requests.clone(),
        &["RequestReport", "GetReportDocument"],
    ));
    if let Some(admin_auth) = &access.admin {
        let admin = pb::admin_service_server::AdminServiceServer::new(
            admin_service::AdminApi::new(core_for_admin),
        )
        .max_decoding_message_size(limit);
        routes = add(routes, admin, admin_auth.as_ref());
    }
    Ok(routes)
}

/// Runs one RPC, counting it by method and status code and timing it (to the first response
/// for streams).
pub(crate) async fn metered<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let started = std::time::Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::counter!(crate::metrics::GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    metrics::histogram!(crate::metrics::GRPC_SECONDS, "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A read request: it may name the least log position its answer must reflect.
pub(crate) trait ReadRequest {
    fn min_cursor(&self) -> &str;
}

macro_rules! read_requests {
    ($($request:ident),+ $(,)?) => {$(
        impl ReadRequest for pb::$request {
            fn min_cursor(&self) -> &str {
                &self.min_cursor
            }
        }
    )+};
}

read_requests!(
    GetUserReadinessRequest,
    ListUsersRequest,
    GetReportRequest,
    ListReportsRequest,
);

/// Answers a read RPC, [`metered`]: `answer` gets the request and its [`ReadOptions`] (its
/// `min_cursor` and the caller's deadline).
pub(crate) async fn read<T: ReadRequest, R, Fut>(
    method: &'static str,
    request: tonic::Request<T>,
    answer: impl FnOnce(T, crate::core::ReadOptions) -> Fut,
) -> Result<tonic::Response<R>, tonic::Status>
where
    Fut: std::future::Future<Output = Result<R, tonic::Status>>,
{
    metered(method, async move {
        let (metadata, _, request) = request.into_parts();
        let options = convert::read_options(&metadata, request.min_cursor())?;
        Ok(tonic::Response::new(answer(request, options).await?))
    })
    .await
}

/// Ends every open `grpc.health.v1.Health/Watch` stream, after the status it last sent: such a
/// stream never ends by itself, so a graceful shutdown would otherwise wait for it for the whole
/// grace period. Call it after marking the services not serving, at shutdown only.
pub async fn end_health_watches(reporter: &mut HealthReporter) {
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        reporter.clear_service_status(name).await;
    }
}

/// Marks our services (and the server as a whole, `""`) serving or not in `grpc.health.v1`.
pub async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        reporter.set_service_status(name, status).await;
    }
}
