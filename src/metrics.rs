//! Prometheus metrics: one process-wide recorder (the `metrics` facade with the Prometheus
//! exporter), rendered by `GET /metrics`. Names are constants here so that call sites, tests and
//! dashboards agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Webhooks received, by `event` (or `-` before parsing) and `outcome`.
pub const WEBHOOKS_RECEIVED: &str = "readiness_webhooks_received_total";
/// Refused signatures, by `reason`.
pub const SIGNATURE_FAILURES: &str = "readiness_webhook_signature_failures_total";
/// Seconds from a verified body to its committed transaction.
pub const APPLY_SECONDS: &str = "readiness_webhook_apply_seconds";
/// Deliveries seen before (same body).
pub const DUPLICATES: &str = "readiness_webhook_duplicates_total";
/// Signed deliveries stored as `rejected` (kept for inspection, not applied).
pub const QUARANTINED: &str = "readiness_deliveries_quarantined_total";
/// Users by readiness `state`, kept current from the event log (no query per scrape).
pub const USERS: &str = "readiness_users";
/// Open event streams, by `stream`.
pub const STREAMS_OPEN: &str = "readiness_streams_open";
/// Events sent to stream subscribers.
pub const EVENTS_STREAMED: &str = "readiness_events_streamed_total";
/// Seconds from an event's commit to its delivery to a live subscriber.
pub const STREAM_LAG_SECONDS: &str = "readiness_stream_lag_seconds";
/// Times a subscriber fell behind the live broadcast and went back to reading the database.
pub const STREAM_FALLBACKS: &str = "readiness_stream_fallbacks_total";
/// Database operations that failed (unreachable, timeout, refused).
pub const DATABASE_ERRORS: &str = "readiness_database_errors_total";
/// gRPC requests, by `method` and `code`.
pub const GRPC_REQUESTS: &str = "readiness_grpc_requests_total";
/// gRPC request latency (to the first response for streams), by `method`.
pub const GRPC_SECONDS: &str = "readiness_grpc_request_seconds";
/// Outbound Argyle API requests (each attempt), by `endpoint` (a route name such as
/// `POST /reports/{type}`) and `status` (the HTTP status, or `error` when none came back).
pub const ARGYLE_CALLS: &str = "readiness_argyle_calls_total";
/// Seconds from sending an Argyle request to its answer's headers, by `endpoint`.
pub const ARGYLE_CALL_SECONDS: &str = "readiness_argyle_call_seconds";

/// Report pipeline jobs, by `kind` and `state` (refreshed every few seconds by the workers).
pub const JOBS: &str = "readiness_report_jobs";
/// Age of the oldest pending report pipeline job, in seconds (0 when none).
pub const OLDEST_PENDING_JOB_SECONDS: &str = "readiness_report_job_oldest_pending_seconds";

/// Deliveries stored per group-commit transaction.
pub const INGEST_BATCH_SIZE: &str = "readiness_ingest_batch_size";

/// Batch-size buckets: 1 to 256 deliveries.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Latency buckets in seconds: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder; installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(Matcher::Full(INGEST_BATCH_SIZE.into()), &BATCH_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a library user's); then ours stays local.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
