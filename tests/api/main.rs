//! Black-box integration tests: each test starts the real service on random ports, against a
//! temporary SQLite file, or a fresh PostgreSQL database when `READINESS_TEST_DATABASE_URL`
//! names a server (`.ci/run` runs the suite both ways).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod argyle_api;
mod cli;
mod crash;
mod faults;
mod group_commit;
mod grpc_limits;
mod grpc_queries;
mod grpcurl;
mod helpers;
mod hostile_input;
mod operations;
mod readiness_scenarios;
mod reports;
mod security;
mod shutdown;
mod storage;
mod stream_starts;
mod streams;
mod tracing_export;
mod webhook_answers;
