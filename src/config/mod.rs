//! Settings. Outside, one flat set of keys, layered: built-in defaults < optional TOML file <
//! `READINESS_*` environment variables < command-line flags; the flag `--http-addr`, the variable
//! `READINESS_HTTP_ADDR` and the TOML key `http_addr` are one setting ([`Settings`]). Inside, a
//! typed tree ([`Config`], in `tree`): every value parsed and checked once (durations, CIDRs,
//! token hashes, TLS material read from its files), before any listener binds.

mod tree;

pub use tree::{
    Config, DatabaseConfig, GrpcConfig, HttpConfig, IngestConfig, Security, Sources, StreamsConfig,
    TlsFiles,
};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::signature::Secret;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of `readiness serve`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Database URL: `sqlite://FILE?mode=rwc` or `postgres://USER@HOST/DB`.
    /// Default `sqlite://readiness.db?mode=rwc` (a file in the working directory).
    pub database_url: String,
    /// Address of the HTTP server (webhooks, probes). Default `127.0.0.1:8080`; port 0 picks one.
    pub http_addr: SocketAddr,
    /// Address of the gRPC server. Default `127.0.0.1:50051`; port 0 picks one.
    pub grpc_addr: SocketAddr,
    /// Webhook signing secrets, comma-separated; a delivery signed with any of them is accepted
    /// (rotation). Required: no default.
    #[serde(deserialize_with = "secrets", serialize_with = "serialize_secrets")]
    pub argyle_secrets: Vec<Secret>,
    /// Largest accepted webhook body, in bytes. Default 1048576 (1 MiB).
    pub max_body_bytes: usize,
    /// Upper bound on pooled database connections. Default 10.
    pub database_max_connections: u32,
    /// Seconds to wait for a database connection before answering 503 / UNAVAILABLE. Default 5.
    pub database_timeout_secs: u64,
    /// Seconds `serve` keeps retrying, at start, a PostgreSQL server it cannot reach yet
    /// (refused, unreachable, starting up or shutting down); 0 gives up on the first failure.
    /// Errors a retry cannot mend (credentials, a missing database, SQLite) end the start at
    /// once. Default 60.
    pub database_startup_wait_secs: u64,
    /// SQLite: KiB of database pages each pooled connection may cache in memory (its
    /// `cache_size`). Default 512. PostgreSQL ignores it.
    pub database_sqlite_cache_kib: u32,
    /// Seconds that shutdown waits for in-flight requests before giving up. Default 10.
    pub shutdown_grace_secs: u64,
    /// Milliseconds a stream may stay silent before it sends a heartbeat. Default 15000.
    pub stream_heartbeat_ms: u64,
    /// Milliseconds between event-log polls when no commit or NOTIFY woke the follower (the
    /// fallback for missed wake-ups). Default 1000.
    pub stream_poll_ms: u64,
    /// Events held in memory for live subscribers (shared by all of them); a subscriber further
    /// behind reads from the database instead. Default 4096.
    pub stream_broadcast_capacity: usize,
    /// User views (and as many reports) each replica keeps in memory, kept exact by the event
    /// log; 0 turns the read model off (every read goes to the database). Default 100000.
    pub read_cache_users: u64,
    /// Milliseconds a read with `min_cursor` waits for this replica to reach it before
    /// UNAVAILABLE ("replica behind"). Default 2000.
    pub read_wait_max_ms: u64,
    /// Concurrent ingest transactions on PostgreSQL (SQLite always uses one). Default 4.
    pub ingest_committers: usize,
    /// Most webhook deliveries stored in one group-commit transaction. Default 64.
    pub ingest_batch_max: usize,
    /// SHA-256 hashes (hex) of the bearer tokens gRPC callers must present
    /// (`authorization: Bearer <token>`); comma-separated. Empty with no token file: gRPC is open.
    #[serde(deserialize_with = "comma_list")]
    pub grpc_token_sha256: Vec<String>,
    /// File with more token hashes, one per line (`#` starts a comment). Default none.
    pub grpc_token_file: Option<PathBuf>,
    /// Leave `grpc.health.v1.Health` open when tokens are required. Default true.
    pub grpc_open_health: bool,
    /// Leave server reflection open when tokens are required. Default true.
    pub grpc_open_reflection: bool,
    /// Serve `readiness.v1.AdminService` (inbox list/show/replay). Default false.
    pub grpc_admin_enabled: bool,
    /// SHA-256 hashes (hex) of the tokens AdminService requires, comma-separated. Empty: the
    /// general `grpc_token_sha256` tokens apply (and with none at all, AdminService is open).
    #[serde(deserialize_with = "comma_list")]
    pub grpc_admin_token_sha256: Vec<String>,
    /// PEM certificate chain for TLS on the gRPC listener. Default none (plaintext).
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for `grpc_tls_cert`.
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): when set, gRPC clients must present a certificate it signed (mTLS).
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Largest gRPC request message, in bytes. Default 4194304 (4 MiB).
    pub grpc_max_message_bytes: usize,
    /// Concurrent requests (streams included) per gRPC connection. Default 256.
    pub grpc_max_concurrent_streams: u32,
    /// Seconds a new gRPC connection has to send the HTTP/2 connection preface (and, with TLS,
    /// to complete the TLS handshake) before it is closed. Default 10.
    pub grpc_handshake_timeout_secs: u64,
    /// Seconds without traffic after which the server pings a gRPC connection; a peer that does
    /// not answer within as many seconds again is disconnected (dead peers are dropped).
    /// Default 30.
    pub grpc_keepalive_secs: u64,
    /// CIDRs allowed to post webhooks, comma-separated (`34.122.50.253/32,...`). Empty: any.
    /// Probes stay reachable from anywhere.
    #[serde(deserialize_with = "comma_list")]
    pub http_allowed_cidrs: Vec<String>,
    /// CIDRs allowed to read `GET /metrics` on the HTTP listener, comma-separated (the client
    /// address is found as for webhooks). Empty: any.
    #[serde(deserialize_with = "comma_list")]
    pub metrics_allowed_cidrs: Vec<String>,
    /// Header carrying the client address from a reverse proxy (e.g. `x-forwarded-for`; its
    /// last entry is used). Only read when the direct peer is in `http_trusted_proxies`.
    pub http_client_ip_header: Option<String>,
    /// CIDRs of reverse proxies whose `http_client_ip_header` is believed. Default none.
    #[serde(deserialize_with = "comma_list")]
    pub http_trusted_proxies: Vec<String>,
    /// Seconds an HTTP request may take before it is answered 408 (nothing is acknowledged).
    /// Default 30.
    pub http_request_timeout_secs: u64,
    /// Seconds a new HTTP connection has to deliver its first request's complete headers; one
    /// that sends nothing is closed after this. Default 10.
    pub http_header_timeout_secs: u64,
    /// Seconds an idle HTTP keep-alive connection stays open waiting for its next request's
    /// complete headers. Keep it above the upstream idle timeout of a proxy in front. Default 75.
    pub http_idle_timeout_secs: u64,
    /// Seconds to receive a webhook's whole body, counted from the end of its headers; after it
    /// the request is answered 408 `body_timeout` and nothing is stored. Default 10.
    pub http_body_timeout_secs: u64,
    /// HTTP requests handled at once; beyond it requests are shed with 503 and `Retry-After`
    /// instead of queueing. Default 512.
    pub http_max_in_flight: usize,
    /// HTTP requests one client address (as the allow-list sees it) may have in flight; beyond
    /// it its requests are shed with 503 and `Retry-After`. Unset: a quarter of
    /// `http_max_in_flight` (at least 1); 0: no per-source cap.
    pub http_max_in_flight_per_source: Option<usize>,
    /// Log format: `text` or `json`. Default `text`. The filter comes from `RUST_LOG`
    /// (default `info`).
    pub log_format: LogFormat,
    /// Which Argyle API the report pipeline (and `readiness argyle`) uses: `sandbox` or
    /// `production`. Default `sandbox`.
    pub argyle_environment: ArgyleEnvironment,
    /// Another Argyle API base URL, `/v2` included (a proxy, or a fake); wins over
    /// `argyle_environment`. Default none.
    pub argyle_base_url: Option<String>,
    /// Argyle API key id (HTTP Basic user name). With the secret, turns the report pipeline on
    /// (requests, enrichment, documents); without both it is off. A secret: always redacted.
    pub argyle_api_key_id: Option<String>,
    /// Argyle API key secret (HTTP Basic password). A secret: always redacted.
    pub argyle_api_key_secret: Option<String>,
    /// Report types requested from Argyle each time a user enters READY, comma-separated (for
    /// example `voie`). Empty: none (the default).
    #[serde(deserialize_with = "comma_list")]
    pub reports_auto_generate: Vec<String>,
    /// SHA-256 hashes (hex) of the bearer tokens `RequestReport` and `GetReportDocument` require
    /// (they spend Argyle's quota and read documents), comma-separated. Empty: the general tokens.
    #[serde(deserialize_with = "comma_list")]
    pub grpc_report_request_token_sha256: Vec<String>,
    /// Attempts a report pipeline job makes before it gives up (FAILED, the reason kept).
    /// Default 10.
    pub jobs_max_attempts: u32,
    /// Milliseconds before a job's second attempt; each next wait doubles, up to 10 minutes
    /// (a 429's `Retry-After` is honoured). Default 5000.
    pub jobs_retry_base_ms: u64,
    /// Milliseconds between looks for due jobs when none was announced (jobs of other replicas,
    /// retries). Default 1000.
    pub jobs_poll_ms: u64,
    /// Seconds a worker holds a job it took; a job whose worker died is taken again after it.
    /// Keep it above an attempt's longest run (Argyle calls retry for up to 2 minutes). Default
    /// 300.
    pub jobs_lease_secs: u64,
    /// Tries of one Argyle call (429, 5xx, connection errors; with backoff and jitter, at most
    /// 2 minutes) before a job's attempt fails and waits for its next one. Default 6.
    pub argyle_call_attempts: u32,
}

/// Which Argyle API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ArgyleEnvironment {
    /// `https://api-sandbox.argyle.com/v2`.
    Sandbox,
    /// `https://api.argyle.com/v2`.
    Production,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://readiness.db?mode=rwc".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            argyle_secrets: vec![],
            max_body_bytes: 1024 * 1024,
            database_max_connections: 10,
            database_timeout_secs: 5,
            database_startup_wait_secs: 60,
            database_sqlite_cache_kib: crate::store::DEFAULT_SQLITE_CACHE_KIB,
            shutdown_grace_secs: 10,
            stream_heartbeat_ms: 15_000,
            stream_poll_ms: 1_000,
            stream_broadcast_capacity: 4096,
            read_cache_users: 100_000,
            read_wait_max_ms: 2_000,
            ingest_committers: 4,
            ingest_batch_max: 64,
            grpc_token_sha256: vec![],
            grpc_token_file: None,
            grpc_open_health: true,
            grpc_open_reflection: true,
            grpc_admin_enabled: false,
            grpc_admin_token_sha256: vec![],
            grpc_tls_cert: None,
            grpc_tls_key: None,
            grpc_tls_client_ca: None,
            grpc_max_message_bytes: 4 * 1024 * 1024,
            grpc_max_concurrent_streams: 256,
            grpc_handshake_timeout_secs: 10,
            grpc_keepalive_secs: 30,
            http_allowed_cidrs: vec![],
            metrics_allowed_cidrs: vec![],
            http_client_ip_header: None,
            http_trusted_proxies: vec![],
            http_request_timeout_secs: 30,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 75,
            http_body_timeout_secs: 10,
            http_max_in_flight: 512,
            http_max_in_flight_per_source: None,
            log_format: LogFormat::Text,
            argyle_environment: ArgyleEnvironment::Sandbox,
            argyle_base_url: None,
            argyle_api_key_id: None,
            argyle_api_key_secret: None,
            reports_auto_generate: vec![],
            grpc_report_request_token_sha256: vec![],
            jobs_max_attempts: 10,
            jobs_retry_base_ms: 5000,
            jobs_poll_ms: 1000,
            jobs_lease_secs: 300,
            argyle_call_attempts: 6,
        }
    }
}

impl fmt::Debug for Settings {
    /// The redacted form `readiness config` prints: no secret, no database password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Settings {}", self.redacted())
    }
}

/// The secret to sign with: `explicit` (a `--secret` flag), else the first of
/// `READINESS_ARGYLE_SECRETS` (the one new subscriptions are signed with).
pub fn signing_secret(explicit: Option<String>) -> Result<String, ConfigError> {
    explicit
        .or_else(|| {
            let all = std::env::var("READINESS_ARGYLE_SECRETS").ok()?;
            all.split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .ok_or(ConfigError::NoSigningSecret)
}

/// The URL with any password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error(
        "no webhook secret configured: set READINESS_ARGYLE_SECRETS (comma-separated) or --argyle-secrets"
    )]
    NoSecrets,
    #[error("no signing secret: pass --secret or set READINESS_ARGYLE_SECRETS")]
    NoSigningSecret,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{setting}: {problem}")]
    Bad {
        setting: &'static str,
        problem: String,
    },
}

impl Settings {
    /// Layers defaults, the TOML file (if given), the environment and `overrides` (flags), and
    /// checks everything `serve` needs.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let settings = Self::load_for_tools(file, overrides)?;
        if settings.argyle_secrets.is_empty() {
            return Err(ConfigError::NoSecrets);
        }
        Ok(settings)
    }

    /// Like [`Settings::load`], for commands that only need the database (no webhook secret).
    pub fn load_for_tools(
        file: Option<&Path>,
        overrides: impl Serialize,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("READINESS_").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|error| ConfigError::Invalid(Box::new(error)))?;
        for (name, value) in [
            ("max_body_bytes", settings.max_body_bytes as u64),
            (
                "database_max_connections",
                u64::from(settings.database_max_connections),
            ),
            (
                "database_sqlite_cache_kib",
                u64::from(settings.database_sqlite_cache_kib),
            ),
            ("stream_heartbeat_ms", settings.stream_heartbeat_ms),
            ("stream_poll_ms", settings.stream_poll_ms),
            (
                "stream_broadcast_capacity",
                settings.stream_broadcast_capacity as u64,
            ),
            ("read_wait_max_ms", settings.read_wait_max_ms),
            ("ingest_committers", settings.ingest_committers as u64),
            ("ingest_batch_max", settings.ingest_batch_max as u64),
            (
                "grpc_handshake_timeout_secs",
                settings.grpc_handshake_timeout_secs,
            ),
            ("grpc_keepalive_secs", settings.grpc_keepalive_secs),
            (
                "http_header_timeout_secs",
                settings.http_header_timeout_secs,
            ),
            ("http_idle_timeout_secs", settings.http_idle_timeout_secs),
            ("http_body_timeout_secs", settings.http_body_timeout_secs),
            ("jobs_max_attempts", u64::from(settings.jobs_max_attempts)),
            ("jobs_retry_base_ms", settings.jobs_retry_base_ms),
            ("jobs_poll_ms", settings.jobs_poll_ms),
            ("jobs_lease_secs", settings.jobs_lease_secs),
            (
                "argyle_call_attempts",
                u64::from(settings.argyle_call_attempts),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(settings)
    }
}

impl Settings {
    /// The settings as JSON with every secret and database password replaced, safe to print.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["database_url"] = redact_url(&self.database_url).into();
        value["argyle_secrets"] = serde_json::json!(vec!["<redacted>"; self.argyle_secrets.len()]);
        for key in ["argyle_api_key_id", "argyle_api_key_secret"] {
            if !value[key].is_null() {
                value[key] = "<redacted>".into();
            }
        }
        value
    }
}

/// Accepts `"a,b"` (environment, flags) or `["a", "b"]` (TOML); trims, drops empty entries.
fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let values = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(joined) => joined.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(values) => values,
    };
    Ok(values
        .into_iter()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect())
}

/// Secrets as a comma-separated string or a TOML list.
fn secrets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Secret>, D::Error> {
    Ok(comma_list(deserializer)?
        .into_iter()
        .map(Secret::new)
        .collect())
}

fn serialize_secrets<S: serde::Serializer>(secrets: &[Secret], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(Secret::expose))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/readiness"),
            "postgres://app:***@db:5432/readiness"
        );
        assert_eq!(
            redact_url("sqlite://readiness.db?mode=rwc"),
            "sqlite://readiness.db?mode=rwc"
        );
    }

    #[test]
    fn the_per_source_cap_defaults_to_a_quarter_of_the_global_one_and_zero_turns_it_off() {
        let mut settings = Settings {
            argyle_secrets: vec![Secret::new("s")],
            ..Settings::default()
        };
        let cap = |settings: &Settings| settings.config().unwrap().http.max_in_flight_per_source;
        assert_eq!(cap(&settings), Some(128));
        settings.http_max_in_flight = 6;
        assert_eq!(cap(&settings), Some(2));
        settings.http_max_in_flight_per_source = Some(5);
        assert_eq!(cap(&settings), Some(5));
        settings.http_max_in_flight_per_source = Some(0);
        assert_eq!(cap(&settings), None);
    }

    #[test]
    fn the_typed_tree_names_the_setting_of_a_bad_value_and_hides_secrets() {
        let settings = Settings {
            argyle_secrets: vec![Secret::new("hunter2")],
            database_url: "postgres://u:pw@h/db".into(),
            metrics_allowed_cidrs: vec!["10.0.0.0/8".into(), "not-a-net".into()],
            ..Settings::default()
        };
        let error = settings.config().unwrap_err().to_string();
        assert!(error.starts_with("metrics_allowed_cidrs: "), "{error}");
        let config = Settings {
            metrics_allowed_cidrs: vec![],
            ..settings
        }
        .config()
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains(":pw@"),
            "{debug}"
        );
        assert_eq!(
            config.http.request_timeout,
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn settings_debug_output_hides_secrets() {
        let settings = Settings {
            argyle_secrets: vec![Secret::new("hunter2")],
            database_url: "postgres://u:pw@h/db".into(),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains(":pw@"),
            "{debug}"
        );
    }
}
