//! tonic gRPC API (`readiness.v1`): thin services over `core`, pb ↔ domain conversions, one
//! `CoreError` → `Status` mapping, plus standard health and reflection (v1 and v1alpha).

mod convert;
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

    /// Encoded descriptors of `proto/`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("readiness_descriptor");
}

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

/// Builds our gRPC services and reflection in both protocol versions (health is added by the app).
pub fn routes(core: Core) -> Result<Routes, tonic_reflection::server::Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    // Each builder lists only its own reflection protocol; register the other's descriptors so
    // both versions show in `list`.
    let reflection_v1 = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(Routes::new(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::readiness_service_server::ReadinessServiceServer::new(
            ReadinessApi::new(core.clone()),
        ))
        .add_service(pb::report_service_server::ReportServiceServer::new(
            ReportApi::new(core),
        )))
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
