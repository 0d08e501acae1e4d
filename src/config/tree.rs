//! The settings as the service uses them: a typed tree grouped by concern, built once from the
//! flat [`Settings`] by [`Settings::config`], which reads every file it names and reports the
//! first bad value by its setting's name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::{ConfigError, LogFormat, Settings, redact_url};
use crate::domain::ReportType;
use crate::domain::signature::Secret;

/// Every setting of `readiness serve`, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub security: Security,
    pub ingest: IngestConfig,
    pub streams: StreamsConfig,
    pub argyle: ArgyleConfig,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
}

/// Where the data lives.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `sqlite://FILE?mode=rwc` or `postgres://USER@HOST/DB` (may hold a password: see Debug).
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a connection (or a SQLite lock) before answering 503 / UNAVAILABLE.
    pub timeout: Duration,
    /// How long the start keeps retrying a PostgreSQL server it cannot reach yet.
    pub startup_wait: Duration,
    /// SQLite: each connection's page cache, in KiB.
    pub sqlite_cache_kib: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .field("startup_wait", &self.startup_wait)
            .field("sqlite_cache_kib", &self.sqlite_cache_kib)
            .finish()
    }
}

/// Which client addresses may use an endpoint, and how to find the client's address.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Allowed networks; empty allows any.
    pub allowed: Vec<IpNet>,
    /// Proxies whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Header carrying the original client address (last entry), set by a trusted proxy.
    pub client_ip_header: Option<String>,
}

impl Sources {
    /// The address a request comes from: the peer, or, when the peer is a trusted proxy, the
    /// last address in the configured header.
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let Some(name) = &self.client_ip_header else {
            return peer;
        };
        if !self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return peer;
        }
        headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .next_back()
            .unwrap_or(peer)
    }

    /// True when `client` may use the endpoint.
    pub fn allows(&self, client: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&client))
    }
}

/// The webhook and probe listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// A new connection's first request headers must arrive within this.
    pub header_timeout: Duration,
    /// A kept-alive connection may wait this long for its next request.
    pub idle_timeout: Duration,
    /// A webhook's whole body must arrive within this of its headers.
    pub body_timeout: Duration,
    pub max_in_flight: usize,
    /// Requests one client address may have in flight; `None`: no per-source cap.
    pub max_in_flight_per_source: Option<usize>,
    /// Who may post webhooks.
    pub webhook_sources: Sources,
    /// Who may read `/metrics`.
    pub metrics_sources: Sources,
}

/// The gRPC listener and who may call what.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    /// A new connection must send the HTTP/2 preface (or finish TLS) within this.
    pub handshake_timeout: Duration,
    /// Silence before a keepalive ping, and how long the ping may go unanswered.
    pub keepalive: Duration,
    pub tls: Option<TlsFiles>,
    /// Health stays open when tokens are required.
    pub open_health: bool,
    /// Reflection stays open when tokens are required.
    pub open_reflection: bool,
    /// Serve AdminService.
    pub admin_enabled: bool,
}

/// Secrets and credentials, checked.
#[derive(Clone)]
pub struct Security {
    /// Accepted webhook signing secrets (several during rotation).
    pub webhook_secrets: Vec<Secret>,
    /// SHA-256 of accepted gRPC bearer tokens; empty means gRPC is open.
    pub token_hashes: Vec<[u8; 32]>,
    /// SHA-256 of AdminService tokens; empty means the general tokens apply.
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// SHA-256 of the tokens RequestReport and GetReportDocument require; empty: the general.
    pub report_token_hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("webhook_secrets", &self.webhook_secrets)
            .field("token_hashes", &self.token_hashes.len())
            .field("admin_token_hashes", &self.admin_token_hashes.len())
            .field("report_token_hashes", &self.report_token_hashes.len())
            .finish()
    }
}

/// PEM contents for the gRPC listener, read once at start-up.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &"<redacted>")
            .field("client_ca", &self.client_ca.as_ref().map(Vec::len))
            .finish()
    }
}

/// The Argyle API and the report pipeline.
#[derive(Clone)]
pub struct ArgyleConfig {
    /// The API base URL, `/v2` included.
    pub base_url: String,
    /// The API key id and secret; `None` turns the report pipeline off.
    pub credentials: Option<(Secret, Secret)>,
    /// Types requested when a user enters READY.
    pub auto_generate: Vec<ReportType>,
    pub jobs_max_attempts: u32,
    pub jobs_retry_base: Duration,
    pub jobs_poll: Duration,
    pub jobs_lease: Duration,
    /// Tries of one Argyle call.
    pub call_attempts: u32,
}

impl fmt::Debug for ArgyleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArgyleConfig")
            .field("base_url", &self.base_url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("auto_generate", &self.auto_generate)
            .field("jobs_max_attempts", &self.jobs_max_attempts)
            .field("jobs_retry_base", &self.jobs_retry_base)
            .field("jobs_poll", &self.jobs_poll)
            .field("jobs_lease", &self.jobs_lease)
            .field("call_attempts", &self.call_attempts)
            .finish()
    }
}

/// Group commit.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Concurrent ingest transactions on PostgreSQL (SQLite always uses one).
    pub committers: usize,
    pub batch_max: usize,
}

/// The event-log follower and streams.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    pub heartbeat: Duration,
    pub poll: Duration,
    pub broadcast_capacity: usize,
    /// User views (and as many reports) in the read model; 0: off.
    pub read_cache_users: u64,
    pub read_wait_max: Duration,
}

impl Settings {
    /// The typed tree: every value parsed and checked, every file read (once). The error names
    /// the setting.
    pub fn config(&self) -> Result<Config, ConfigError> {
        if self.argyle_secrets.is_empty() {
            return Err(ConfigError::NoSecrets);
        }
        let secs = Duration::from_secs;
        let trusted_proxies = cidrs("http_trusted_proxies", &self.http_trusted_proxies)?;
        let sources = |setting, allowed: &[String]| -> Result<Sources, ConfigError> {
            Ok(Sources {
                allowed: cidrs(setting, allowed)?,
                trusted_proxies: trusted_proxies.clone(),
                client_ip_header: self.http_client_ip_header.clone(),
            })
        };
        Ok(Config {
            database: DatabaseConfig {
                url: self.database_url.clone(),
                max_connections: self.database_max_connections,
                timeout: secs(self.database_timeout_secs),
                startup_wait: secs(self.database_startup_wait_secs),
                sqlite_cache_kib: self.database_sqlite_cache_kib,
            },
            http: HttpConfig {
                addr: self.http_addr,
                max_body_bytes: self.max_body_bytes,
                request_timeout: secs(self.http_request_timeout_secs),
                header_timeout: secs(self.http_header_timeout_secs),
                idle_timeout: secs(self.http_idle_timeout_secs),
                body_timeout: secs(self.http_body_timeout_secs),
                max_in_flight: self.http_max_in_flight,
                max_in_flight_per_source: match self.http_max_in_flight_per_source {
                    None => Some(self.http_max_in_flight.div_ceil(4).max(1)),
                    Some(0) => None,
                    Some(cap) => Some(cap),
                },
                webhook_sources: sources("http_allowed_cidrs", &self.http_allowed_cidrs)?,
                metrics_sources: sources("metrics_allowed_cidrs", &self.metrics_allowed_cidrs)?,
            },
            grpc: GrpcConfig {
                addr: self.grpc_addr,
                max_message_bytes: self.grpc_max_message_bytes,
                max_concurrent_streams: self.grpc_max_concurrent_streams,
                handshake_timeout: secs(self.grpc_handshake_timeout_secs),
                keepalive: secs(self.grpc_keepalive_secs),
                tls: self.tls()?,
                open_health: self.grpc_open_health,
                open_reflection: self.grpc_open_reflection,
                admin_enabled: self.grpc_admin_enabled,
            },
            security: Security {
                webhook_secrets: self.argyle_secrets.clone(),
                token_hashes: token_hashes("grpc_token_sha256", &self.token_hash_entries()?)?,
                admin_token_hashes: token_hashes(
                    "grpc_admin_token_sha256",
                    &self.grpc_admin_token_sha256,
                )?,
                report_token_hashes: token_hashes(
                    "grpc_report_request_token_sha256",
                    &self.grpc_report_request_token_sha256,
                )?,
            },
            argyle: self.argyle()?,
            ingest: IngestConfig {
                committers: self.ingest_committers,
                batch_max: self.ingest_batch_max,
            },
            streams: StreamsConfig {
                heartbeat: Duration::from_millis(self.stream_heartbeat_ms),
                poll: Duration::from_millis(self.stream_poll_ms),
                broadcast_capacity: self.stream_broadcast_capacity,
                read_cache_users: self.read_cache_users,
                read_wait_max: Duration::from_millis(self.read_wait_max_ms),
            },
            shutdown_grace: secs(self.shutdown_grace_secs),
            log_format: self.log_format,
        })
    }

    /// The Argyle API: base URL, credentials (both or neither), automatic report types.
    fn argyle(&self) -> Result<ArgyleConfig, ConfigError> {
        let base_url =
            self.argyle_base_url
                .clone()
                .unwrap_or_else(|| match self.argyle_environment {
                    super::ArgyleEnvironment::Sandbox => crate::argyle::SANDBOX_URL.to_owned(),
                    super::ArgyleEnvironment::Production => {
                        crate::argyle::PRODUCTION_URL.to_owned()
                    }
                });
        let credentials = match (&self.argyle_api_key_id, &self.argyle_api_key_secret) {
            (Some(id), Some(secret)) => {
                Some((Secret::new(id.clone()), Secret::new(secret.clone())))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Bad {
                    setting: "argyle_api_key_id",
                    problem: "set both argyle_api_key_id and argyle_api_key_secret, or neither"
                        .into(),
                });
            }
        };
        let auto_generate = self
            .reports_auto_generate
            .iter()
            .map(|name| ReportType::from_argyle(name))
            .collect();
        Ok(ArgyleConfig {
            base_url,
            credentials,
            auto_generate,
            jobs_max_attempts: self.jobs_max_attempts,
            jobs_retry_base: Duration::from_millis(self.jobs_retry_base_ms),
            jobs_poll: Duration::from_millis(self.jobs_poll_ms),
            jobs_lease: Duration::from_secs(self.jobs_lease_secs),
            call_attempts: self.argyle_call_attempts,
        })
    }

    /// `grpc_token_sha256` and the lines of `grpc_token_file` (`#` starts a comment).
    fn token_hash_entries(&self) -> Result<Vec<String>, ConfigError> {
        let mut hashes = self.grpc_token_sha256.clone();
        if let Some(file) = &self.grpc_token_file {
            let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Bad {
                setting: "grpc_token_file",
                problem: format!("{}: {error}", file.display()),
            })?;
            hashes.extend(
                text.lines()
                    .map(|line| line.split('#').next().unwrap_or_default().trim())
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(hashes)
    }

    /// The gRPC TLS material, read from its files.
    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let read = |setting: &'static str, path: &Option<PathBuf>| {
            path.as_ref()
                .map(|path| {
                    std::fs::read(path).map_err(|error| ConfigError::Bad {
                        setting,
                        problem: format!("{}: {error}", path.display()),
                    })
                })
                .transpose()
        };
        match (
            read("grpc_tls_cert", &self.grpc_tls_cert)?,
            read("grpc_tls_key", &self.grpc_tls_key)?,
        ) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca: read("grpc_tls_client_ca", &self.grpc_tls_client_ca)?,
            })),
            (None, None) if self.grpc_tls_client_ca.is_none() => Ok(None),
            _ => Err(ConfigError::Bad {
                setting: "grpc_tls_cert",
                problem: "TLS needs both grpc_tls_cert and grpc_tls_key (and they are required by grpc_tls_client_ca)".into(),
            }),
        }
    }
}

/// CIDRs or single addresses.
fn cidrs(setting: &'static str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    values
        .iter()
        .map(|value| {
            value
                .parse::<IpNet>()
                .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Bad {
                    setting,
                    problem: format!("{value:?} is not a CIDR or address"),
                })
        })
        .collect()
}

/// SHA-256 hashes, 64 hex digits each.
fn token_hashes(setting: &'static str, hashes: &[String]) -> Result<Vec<[u8; 32]>, ConfigError> {
    hashes
        .iter()
        .map(|hash| {
            hex::decode(hash)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| ConfigError::Bad {
                    setting,
                    problem: "each entry must be 64 hex digits (readiness hash-token prints one)"
                        .into(),
                })
        })
        .collect()
}
