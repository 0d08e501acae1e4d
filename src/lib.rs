//! readiness: turns Argyle payroll webhooks into a per-user answer to "can a verification report
//! be generated now?", and records every generated report, served over gRPC (`readiness.v1`).
//!
//! # Layout
//! - [`domain`]: pure types and rules: account facts and states, the readiness rule, Argyle
//!   delivery parsing, signatures, domain events. No I/O.
//! - [`core`]: use cases (apply a delivery in one transaction, answer queries); the only thing
//!   the transports call.
//! - [`store`]: sea-orm entities, migrations, row ↔ domain conversions.
//! - [`http`]: axum ingress: `POST /webhooks/argyle`, health probes.
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
