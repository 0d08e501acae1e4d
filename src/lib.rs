//! readiness: turns Argyle payroll webhooks into a per-user answer to "can a verification report
//! be generated now?", requests and tracks the reports themselves, and serves both over gRPC
//! (`readiness.v1`).
//!
//! # Layout
//! - [`domain`]: pure types and rules: the user aggregate (accounts, readiness, reports,
//!   external ids, the events a delivery causes), account facts, report and job states, Argyle
//!   delivery parsing, signatures, domain events. No I/O.
//! - [`core`]: use cases (ingest through group commit, queries through the read model, streams
//!   over the event log, the report pipeline's requests and worker, inbox repair, health); the
//!   only thing the transports call. It names no sea-orm or SQL item.
//! - [`store`]: every SQL statement: the unit of work of a batch, reads, the event log, jobs,
//!   the inbox; sea-orm entities, migrations, row ↔ domain conversions.
//! - [`http`]: axum ingress: `POST /webhooks/argyle`, health probes, `/metrics`, limits.
//! - [`argyle`]: the outbound Argyle API client (webhook subscriptions, reports, documents)
//!   with retries, and a faithful fake of that API for tests and development.
//! - [`grpc`]: tonic services over `core`, pb ↔ domain conversions, one `Status` mapping.
//! - [`config`], [`telemetry`], [`metrics`], [`app`], [`cli`]: settings, logging, Prometheus
//!   metrics, start-up and shutdown, commands.
//! - [`accept`]: connection caps from the descriptor limit, accept with back-off (both listeners).

pub mod accept;
pub mod app;
pub mod argyle;
pub mod cli;
pub mod config;
pub mod core;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod store;
pub mod telemetry;
