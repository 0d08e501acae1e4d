//! Prometheus metrics: one process-wide recorder (the `metrics` facade with the Prometheus
//! exporter), rendered by `GET /metrics`. Names are constants here so that call sites, tests and
//! dashboards agree; [`DESCRIPTIONS`] gives each its type, unit and help text, and the standard
//! `process_*` metrics are read from the operating system at each scrape ([`collect_process`]).

use std::sync::OnceLock;

use metrics::{KeyName, SharedString, Unit};
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

/// Read model lookups, by `cache` (users, reports, external_ids, argyle_ids) and `result`
/// (hit, miss).
pub const READ_CACHE_LOOKUPS: &str = "readiness_read_cache_lookups_total";

/// HTTP requests not served, by `reason`: `in_flight_limit` and `source_limit` (shed with 503
/// before any work), `timeout` (answered 408 or 503 after `http_request_timeout_secs`).
pub const HTTP_SHED: &str = "readiness_http_requests_shed_total";
/// 1 while this replica would answer `/readyz` with 200, else 0 (refreshed every 5 s).
pub const READY: &str = "readiness_ready";
/// How long the user longest in PENDING has been there (0 when none), refreshed every 5 s.
pub const OLDEST_PENDING_USER_SECONDS: &str = "readiness_user_oldest_pending_seconds";

/// Views held by this replica's read model, by `cache` (users, reports).
pub const READ_CACHE_ENTRIES: &str = "readiness_read_cache_entries";

/// Deliveries stored per group-commit transaction (a count of deliveries, not bytes).
pub const INGEST_BATCH_SIZE: &str = "readiness_ingest_batch_deliveries";

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// What `/metrics` says about one metric: its `# TYPE`, unit and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct Description {
    pub name: &'static str,
    pub kind: Kind,
    /// The unit the name ends with (`_seconds`), or `None` for a count of things.
    pub unit: Option<Unit>,
    /// Labels the metric carries; one without labels is exported as 0 from start-up, so that
    /// `rate()` and `increase()` see its first increment.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn describe(
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Description {
    Description {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

/// Every metric this service records (the `process_*` ones are described by their collector).
pub const DESCRIPTIONS: &[Description] = &[
    describe(
        WEBHOOKS_RECEIVED,
        Kind::Counter,
        None,
        &["event", "outcome"],
        "Webhook deliveries answered, by event name (- before parsing) and outcome (applied, ignored, duplicate, or the error code of the answer such as invalid_signature).",
    ),
    describe(
        SIGNATURE_FAILURES,
        Kind::Counter,
        None,
        &["reason"],
        "Webhook deliveries refused for their signature, by reason (missing, not_hex, wrong_length, mismatch, duplicated, no_secrets).",
    ),
    describe(
        APPLY_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        &[],
        "Seconds from a verified webhook body to its committed transaction.",
    ),
    describe(
        DUPLICATES,
        Kind::Counter,
        None,
        &[],
        "Webhook deliveries whose body was stored before (acknowledged, not applied again).",
    ),
    describe(
        QUARANTINED,
        Kind::Counter,
        None,
        &[],
        "Signed webhook deliveries stored as rejected: kept for inspection and replay, not applied.",
    ),
    describe(
        USERS,
        Kind::Gauge,
        None,
        &["state"],
        "Users by readiness state, kept current from the event log (no database query per scrape).",
    ),
    describe(
        STREAMS_OPEN,
        Kind::Gauge,
        None,
        &[],
        "Event streams (WatchReadiness, StreamReportEvents) open on this replica.",
    ),
    describe(
        EVENTS_STREAMED,
        Kind::Counter,
        None,
        &[],
        "Events sent to stream subscribers.",
    ),
    describe(
        STREAM_LAG_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        &[],
        "Seconds from an event's commit to its delivery to a live stream subscriber.",
    ),
    describe(
        STREAM_FALLBACKS,
        Kind::Counter,
        None,
        &[],
        "Times a stream subscriber fell behind the live broadcast and went back to reading the database.",
    ),
    describe(
        DATABASE_ERRORS,
        Kind::Counter,
        None,
        &[],
        "Database operations that failed because the database was unreachable, timed out or refused.",
    ),
    describe(
        GRPC_REQUESTS,
        Kind::Counter,
        None,
        &["method", "code"],
        "gRPC requests answered, by method and status code.",
    ),
    describe(
        GRPC_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        &["method"],
        "Seconds to answer a gRPC request (to the first message for streams), by method.",
    ),
    describe(
        ARGYLE_CALLS,
        Kind::Counter,
        None,
        &["endpoint", "status"],
        "Requests sent to Argyle's API (each attempt), by endpoint and HTTP status (error when none came back).",
    ),
    describe(
        ARGYLE_CALL_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        &["endpoint"],
        "Seconds from sending a request to Argyle's API to its answer's headers, by endpoint.",
    ),
    describe(
        JOBS,
        Kind::Gauge,
        None,
        &["kind", "state"],
        "Report pipeline jobs by kind (request_report, fetch_report) and state (pending, running, done, failed), refreshed every few seconds by each replica's worker.",
    ),
    describe(
        OLDEST_PENDING_JOB_SECONDS,
        Kind::Gauge,
        Some(Unit::Seconds),
        &[],
        "Age of the oldest pending report pipeline job (0 when none): jobs waiting for Argyle or for a worker.",
    ),
    describe(
        READ_CACHE_LOOKUPS,
        Kind::Counter,
        None,
        &["cache", "result"],
        "Lookups in this replica's read model, by cache (users, reports, external_ids, argyle_ids) and result (hit, miss; a miss reads the database).",
    ),
    describe(
        READ_CACHE_ENTRIES,
        Kind::Gauge,
        None,
        &["cache"],
        "Views held by this replica's read model, by cache (users, reports); at most read_cache_users each.",
    ),
    describe(
        HTTP_SHED,
        Kind::Counter,
        None,
        &["reason"],
        "HTTP requests not served, by reason: in_flight_limit and source_limit (shed with 503 and Retry-After before any work), timeout (no answer within http_request_timeout_secs).",
    ),
    describe(
        READY,
        Kind::Gauge,
        None,
        &[],
        "1 while this replica is ready (GET /readyz would answer 200: the database answers and takes writes), else 0; refreshed every 5 seconds.",
    ),
    describe(
        OLDEST_PENDING_USER_SECONDS,
        Kind::Gauge,
        Some(Unit::Seconds),
        &[],
        "Seconds since the user longest in PENDING entered it (0 when no user is pending); one indexed query every 5 seconds, not per scrape.",
    ),
    describe(
        INGEST_BATCH_SIZE,
        Kind::Histogram,
        None,
        &[],
        "Webhook deliveries stored per group-commit transaction.",
    ),
];

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
        // Another recorder may already be installed (a library user's); then ours stays local
        // and the descriptions below go to that one.
        let _ = metrics::set_global_recorder(recorder);
        describe_all();
        handle
    })
}

/// Gives every metric its help text and unit, and starts the unlabelled counters and gauges at
/// zero.
fn describe_all() {
    metrics::with_recorder(|recorder| {
        for metric in DESCRIPTIONS {
            let (name, help) = (
                KeyName::from_const_str(metric.name),
                SharedString::const_str(metric.help),
            );
            match metric.kind {
                Kind::Counter => recorder.describe_counter(name, metric.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, metric.unit, help),
                Kind::Histogram => recorder.describe_histogram(name, metric.unit, help),
            }
        }
    });
    for metric in DESCRIPTIONS
        .iter()
        .filter(|metric| metric.labels.is_empty())
    {
        match metric.kind {
            Kind::Counter => metrics::counter!(metric.name).increment(0),
            Kind::Gauge => metrics::gauge!(metric.name).increment(0.0),
            Kind::Histogram => {}
        }
    }
    process_collector().describe();
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Updates the standard `process_*` metrics (CPU seconds, resident and virtual memory, open and
/// maximum descriptors, start time, threads) from the operating system (`/proc` on Linux: a few
/// small reads, no database work). Called by each scrape.
pub fn collect_process() {
    process_collector().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_follows_the_prometheus_conventions() {
        let mut names = std::collections::BTreeSet::new();
        for metric in DESCRIPTIONS {
            let name = metric.name;
            assert!(names.insert(name), "{name} is described twice");
            assert!(
                name.starts_with("readiness_"),
                "{name}: no readiness_ prefix"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: not snake_case"
            );
            assert_eq!(
                name.ends_with("_total"),
                metric.kind == Kind::Counter,
                "{name}: counters, and only counters, end in _total"
            );
            let base = name.trim_end_matches("_total");
            match metric.unit {
                Some(Unit::Seconds) => assert!(base.ends_with("_seconds"), "{name}: no _seconds"),
                Some(Unit::Bytes) => assert!(base.ends_with("_bytes"), "{name}: no _bytes"),
                Some(other) => panic!("{name}: use a base unit, not {other:?}"),
                None => assert!(
                    !["_seconds", "_bytes", "_size"]
                        .iter()
                        .any(|unit| base.ends_with(unit)),
                    "{name}: a unit in the name but none described"
                ),
            }
            assert!(!metric.help.is_empty(), "{name}: no help text");
        }
    }
}
