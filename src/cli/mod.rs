//! The `readiness` command line: the clap definitions of every command, and [`run`], which
//! carries one out. `serve` runs the service ([`serve`]); the operator commands talk to the
//! database (`inbox`), to Argyle (`argyle`) or to a running service (`simulate`, `reports`,
//! `healthcheck`); `sign`, `hash-token` and `config` are small tools ([`tools`]). The long ones
//! show a progress bar on a terminal ([`progress`]).

mod argyle;
mod inbox;
pub mod progress;
pub mod reports;
mod serve;
pub mod simulate;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::LogFormat;

/// Carries out one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config(args) => tools::print_config(args),
        Command::Sign(args) => tools::sign_body(args),
        Command::Healthcheck(args) => tools::healthcheck(args),
        Command::Inbox(args) => inbox::run(args),
        Command::Argyle(args) => argyle::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Reports(args) => reports::run(args),
        Command::HashToken => tools::hash_token(),
    }
}

/// Argyle webhook readiness service.
#[derive(Debug, Parser)]
#[command(name = "readiness", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP (webhooks, probes) and gRPC servers until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Print the effective settings of `serve` (same flags) as JSON, secrets redacted.
    Config(ServeArgs),
    /// Manage this service's webhook subscriptions at Argyle (credentials from the environment).
    Argyle(ArgyleArgs),
    /// Inspect, replay and prune stored webhook deliveries (uses the database settings of `serve`).
    Inbox(InboxArgs),
    /// List, show, request and retry reports through a running service's gRPC API.
    Reports(reports::ReportsArgs),
    /// Play realistic signed Argyle traffic against a running service and report throughput and
    /// acknowledgement latency (a load generator for benchmarks and rehearsals).
    Simulate(SimulateArgs),
    /// Probe a running service's `/readyz` (for container health checks): exit 0 when ready.
    Healthcheck(HealthcheckArgs),
    /// Print the SHA-256 (hex) of a gRPC bearer token read from standard input, for
    /// `grpc_token_sha256` or a token file.
    HashToken,
    /// Print the X-Argyle-Signature (hex HMAC-SHA512) of a body, as Argyle computes it.
    Sign(SignArgs),
}

/// Flags of `serve`. Each overrides the environment and the TOML file; unset flags do not.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// Optional TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "READINESS_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Database URL [env: READINESS_DATABASE_URL] [default: sqlite://readiness.db?mode=rwc]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// HTTP listen address [env: READINESS_HTTP_ADDR] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    /// gRPC listen address [env: READINESS_GRPC_ADDR] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    /// Comma-separated webhook secrets [env: READINESS_ARGYLE_SECRETS] (required)
    #[arg(long, value_name = "SECRETS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_secrets: Option<String>,
    /// Largest webhook body in bytes [env: READINESS_MAX_BODY_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Maximum pooled database connections [env: READINESS_DATABASE_MAX_CONNECTIONS] [default: 10]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_max_connections: Option<u32>,
    /// Seconds to wait for the database [env: READINESS_DATABASE_TIMEOUT_SECS] [default: 5]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_timeout_secs: Option<u64>,
    /// Seconds the start retries a PostgreSQL server not reachable yet [env: READINESS_DATABASE_STARTUP_WAIT_SECS] [default: 60]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_startup_wait_secs: Option<u64>,
    /// KiB of pages each SQLite connection caches [env: READINESS_DATABASE_SQLITE_CACHE_KIB] [default: 512]
    #[arg(long, value_name = "KIB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_sqlite_cache_kib: Option<u32>,
    /// Seconds shutdown waits for in-flight work [env: READINESS_SHUTDOWN_GRACE_SECS] [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Stream heartbeat interval, ms [env: READINESS_STREAM_HEARTBEAT_MS] [default: 15000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_heartbeat_ms: Option<u64>,
    /// Event-log poll interval, ms [env: READINESS_STREAM_POLL_MS] [default: 1000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_poll_ms: Option<u64>,
    /// Live events kept in memory for subscribers [env: READINESS_STREAM_BROADCAST_CAPACITY] [default: 4096]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_broadcast_capacity: Option<usize>,
    /// User views kept in memory; 0: off [env: READINESS_READ_CACHE_USERS] [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_cache_users: Option<u64>,
    /// Longest wait for a read's min_cursor, ms [env: READINESS_READ_WAIT_MAX_MS] [default: 2000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_wait_max_ms: Option<u64>,
    /// Concurrent ingest transactions on PostgreSQL [env: READINESS_INGEST_COMMITTERS] [default: 4]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_committers: Option<usize>,
    /// Most deliveries per group commit [env: READINESS_INGEST_BATCH_MAX] [default: 64]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_batch_max: Option<usize>,
    /// SHA-256 hashes of accepted gRPC bearer tokens [env: READINESS_GRPC_TOKEN_SHA256]
    #[arg(long, value_name = "HEX,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_token_sha256: Option<String>,
    /// File of token hashes, one per line [env: READINESS_GRPC_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_token_file: Option<PathBuf>,
    /// Health open without a token [env: READINESS_GRPC_OPEN_HEALTH] [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_open_health: Option<bool>,
    /// Reflection open without a token [env: READINESS_GRPC_OPEN_REFLECTION] [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_open_reflection: Option<bool>,
    /// Serve AdminService [env: READINESS_GRPC_ADMIN_ENABLED] [default: false]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_admin_enabled: Option<bool>,
    /// SHA-256 hashes of AdminService tokens [env: READINESS_GRPC_ADMIN_TOKEN_SHA256]
    #[arg(long, value_name = "HEX,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_admin_token_sha256: Option<String>,
    /// PEM certificate chain for gRPC TLS [env: READINESS_GRPC_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for gRPC TLS [env: READINESS_GRPC_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA for client certificates (mTLS) [env: READINESS_GRPC_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Largest gRPC request message in bytes [env: READINESS_GRPC_MAX_MESSAGE_BYTES] [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_max_message_bytes: Option<usize>,
    /// Concurrent requests per gRPC connection [env: READINESS_GRPC_MAX_CONCURRENT_STREAMS] [default: 256]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_max_concurrent_streams: Option<u32>,
    /// Seconds to send the HTTP/2 preface (and finish TLS) [env: READINESS_GRPC_HANDSHAKE_TIMEOUT_SECS] [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_handshake_timeout_secs: Option<u64>,
    /// Silence before a keepalive ping; unanswered as long again, the connection is dropped [env: READINESS_GRPC_KEEPALIVE_SECS] [default: 30]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_keepalive_secs: Option<u64>,
    /// CIDRs allowed to post webhooks [env: READINESS_HTTP_ALLOWED_CIDRS] [default: any]
    #[arg(long, value_name = "CIDR,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_allowed_cidrs: Option<String>,
    /// CIDRs allowed to read /metrics [env: READINESS_METRICS_ALLOWED_CIDRS] [default: any]
    #[arg(long, value_name = "CIDR,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_allowed_cidrs: Option<String>,
    /// Client-address header set by a trusted proxy [env: READINESS_HTTP_CLIENT_IP_HEADER]
    #[arg(long, value_name = "HEADER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_client_ip_header: Option<String>,
    /// CIDRs of trusted reverse proxies [env: READINESS_HTTP_TRUSTED_PROXIES]
    #[arg(long, value_name = "CIDR,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_trusted_proxies: Option<String>,
    /// HTTP request timeout in seconds [env: READINESS_HTTP_REQUEST_TIMEOUT_SECS] [default: 30]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_request_timeout_secs: Option<u64>,
    /// Seconds a new connection has for its first request's headers [env: READINESS_HTTP_HEADER_TIMEOUT_SECS] [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open [env: READINESS_HTTP_IDLE_TIMEOUT_SECS] [default: 75]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_idle_timeout_secs: Option<u64>,
    /// Seconds to receive a whole webhook body (408 after) [env: READINESS_HTTP_BODY_TIMEOUT_SECS] [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_body_timeout_secs: Option<u64>,
    /// HTTP requests handled at once before shedding [env: READINESS_HTTP_MAX_IN_FLIGHT] [default: 512]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_in_flight: Option<usize>,
    /// HTTP requests one client address may have in flight; 0: no per-source cap [env: READINESS_HTTP_MAX_IN_FLIGHT_PER_SOURCE] [default: a quarter of http_max_in_flight]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_in_flight_per_source: Option<usize>,
    /// Log format [env: READINESS_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Argyle API environment [env: READINESS_ARGYLE_ENVIRONMENT] [default: sandbox]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_environment: Option<crate::config::ArgyleEnvironment>,
    /// Argyle API base URL, /v2 included [env: READINESS_ARGYLE_BASE_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_base_url: Option<String>,
    /// Argyle API key id [env: READINESS_ARGYLE_API_KEY_ID]
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_api_key_id: Option<String>,
    /// Argyle API key secret [env: READINESS_ARGYLE_API_KEY_SECRET]
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_api_key_secret: Option<String>,
    /// Report types requested when a user enters READY [env: READINESS_REPORTS_AUTO_GENERATE]
    #[arg(long, value_name = "TYPE,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_auto_generate: Option<String>,
    /// SHA-256 hashes of RequestReport tokens [env: READINESS_GRPC_REPORT_REQUEST_TOKEN_SHA256]
    #[arg(long, value_name = "HEX,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_report_request_token_sha256: Option<String>,
    /// Attempts of a report job before it gives up [env: READINESS_JOBS_MAX_ATTEMPTS] [default: 10]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_max_attempts: Option<u32>,
    /// First delay between a job's attempts, ms [env: READINESS_JOBS_RETRY_BASE_MS] [default: 5000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_retry_base_ms: Option<u64>,
    /// Interval of looks for due jobs, ms [env: READINESS_JOBS_POLL_MS] [default: 1000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_poll_ms: Option<u64>,
    /// Seconds a worker holds a job [env: READINESS_JOBS_LEASE_SECS] [default: 300]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_lease_secs: Option<u64>,
    /// Tries of one Argyle call [env: READINESS_ARGYLE_CALL_ATTEMPTS] [default: 6]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argyle_call_attempts: Option<u32>,
}

/// Flags of `sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The secret to sign with; defaults to the first of READINESS_ARGYLE_SECRETS.
    #[arg(long, env = "READINESS_SIGN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the exact body bytes; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The service's HTTP address.
    #[arg(long, env = "READINESS_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// `inbox` and its settings.
#[derive(Debug, Args)]
pub struct InboxArgs {
    #[command(subcommand)]
    pub action: InboxAction,
    #[command(flatten)]
    pub settings: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum InboxAction {
    /// List deliveries (oldest first) as JSON lines.
    List {
        /// Only this status (`failed` is an alias of `rejected`).
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only deliveries received since this time (RFC 3339) or this long ago (`24h`, `30d`).
        #[arg(long)]
        since: Option<String>,
        /// Start after this delivery id.
        #[arg(long)]
        after: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Show one delivery, with its raw body.
    Show { id: i64 },
    /// Re-apply a stored delivery (or every rejected one) with this version's parser and rules.
    Replay {
        /// The delivery id.
        #[arg(required_unless_present = "rejected", conflicts_with = "rejected")]
        id: Option<i64>,
        /// Replay every rejected delivery.
        #[arg(long, alias = "failed")]
        rejected: bool,
    },
    /// Delete raw deliveries older than a duration (`30d`); derived state and the event log stay.
    Prune {
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
}

/// A delivery status on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StatusArg {
    Applied,
    Ignored,
    #[value(alias = "failed")]
    Rejected,
}

impl From<StatusArg> for crate::domain::DeliveryStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Applied => Self::Applied,
            StatusArg::Ignored => Self::Ignored,
            StatusArg::Rejected => Self::Rejected,
        }
    }
}

/// `argyle` and its connection settings.
#[derive(Debug, Args)]
pub struct ArgyleArgs {
    /// Which Argyle API to use.
    #[arg(
        long,
        value_enum,
        default_value = "sandbox",
        env = "READINESS_ARGYLE_ENVIRONMENT"
    )]
    pub environment: ArgyleEnvironment,
    /// Another API base URL (a proxy, or a fake in tests); overrides --environment.
    #[arg(long, env = "READINESS_ARGYLE_BASE_URL")]
    pub base_url: Option<String>,
    /// API key id (HTTP Basic user name).
    #[arg(long, env = "READINESS_ARGYLE_API_KEY_ID", hide_env_values = true)]
    pub api_key_id: String,
    /// API key secret (HTTP Basic password).
    #[arg(long, env = "READINESS_ARGYLE_API_KEY_SECRET", hide_env_values = true)]
    pub api_key_secret: String,
    #[command(subcommand)]
    pub action: ArgyleAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ArgyleEnvironment {
    Sandbox,
    Production,
}

#[derive(Debug, Subcommand)]
pub enum ArgyleAction {
    /// Create the subscriptions this service needs (idempotent: existing matching ones are kept,
    /// differing ones with our names are replaced).
    Subscribe {
        /// The public URL of this service's `POST /webhooks/argyle`.
        #[arg(long)]
        url: String,
        /// Prefix of the subscription names.
        #[arg(long, default_value = "readiness")]
        name: String,
        /// The signing secret; defaults to the first of READINESS_ARGYLE_SECRETS.
        #[arg(long, env = "READINESS_SIGN_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Print the requests that would change anything, and send none of them.
        #[arg(long)]
        dry_run: bool,
    },
    /// List or delete subscriptions.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Print every subscription as a JSON line (secrets omitted).
    List,
    /// Delete one subscription by id.
    Delete { id: String },
}

/// Flags of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Base URL of the service's HTTP listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Signing secret; defaults to the first of READINESS_ARGYLE_SECRETS.
    #[arg(long, env = "READINESS_SIGN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Simulated users (each with 1-3 accounts and a full event sequence).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Target deliveries per second across all senders; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Share of deliveries sent twice (0.0-1.0).
    #[arg(long, default_value_t = 0.05)]
    pub duplicates: f64,
    /// Share of users whose deliveries are shuffled (out of order).
    #[arg(long, default_value_t = 0.2)]
    pub reorder: f64,
    /// Random seed (the same seed plays the same traffic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}
