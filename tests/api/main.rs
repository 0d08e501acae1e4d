//! Black-box integration tests: each test starts the real service on random ports, against a
//! temporary SQLite file, or a fresh PostgreSQL database when `READINESS_TEST_DATABASE_URL`
//! names a server (`.ci/run` runs the suite both ways).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod argyle_api;
mod argyle_client;
mod cli;
mod crash;
mod database_file;
mod disk_full;
mod echoed_input;
mod failed_commits;
mod faults;
mod group_commit;
mod grpc_limits;
mod grpc_queries;
mod grpcurl;
mod helpers;
mod hostile_input;
mod k8s_manifests;
mod metrics_scrape;
mod operations;
mod process;
mod progress;
mod prometheus;
mod query_plans;
mod read_model;
mod readiness_scenarios;
mod reflection;
mod refused_writes;
mod report_pipeline;
mod reports;
mod schema;
mod security;
mod shutdown;
mod slow_clients;
mod storage;
mod stream_starts;
mod streams;
mod timeouts;
mod timestamps;
mod tracing_export;
mod user_rules;
mod webhook_answers;
