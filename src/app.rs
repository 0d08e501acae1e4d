//! Start-up and shutdown. [`App::build`] does all the wiring: it checks every setting (the typed
//! [`Config`]), connects and migrates, starts the core, binds both listeners (port 0 allowed; the
//! bound addresses are exposed) and assembles both servers. [`App::run`] only serves, until the
//! shutdown token is cancelled or either server stops, then drains both within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::accept::{Admission, ConnectionCaps};
use crate::argyle::{ArgyleClient, ClientConfig, RetryPolicy};
use crate::config::{Config, Settings, redact_url};
use crate::core::{Core, IngestOptions, PipelineOptions, StreamOptions};
use crate::grpc;
use crate::http::{self, HttpState};
use crate::store::{self, StoreOptions};

/// How often the database is checked to keep gRPC health in step with it.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A built, bound, not yet serving service.
pub struct App {
    config: Config,
    core: Core,
    http_admission: Admission,
    grpc_admission: Admission,
    http_router: axum::Router,
    grpc_server: tonic::transport::Server,
    grpc_routes: Routes,
    health: HealthReporter,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    draining: CancellationToken,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
}

impl App {
    /// Checks the settings, connects to the database (retrying a PostgreSQL server not reachable
    /// yet for up to `database_startup_wait_secs`), runs migrations, starts the core, binds
    /// both listeners and assembles both servers. Every configuration error is reported before
    /// anything is opened.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let config = settings.config()?;
        // Install the metrics recorder before anything records.
        crate::metrics::handle();
        let options = StoreOptions {
            url: config.database.url.clone(),
            max_connections: config.database.max_connections,
            connect_timeout: config.database.timeout,
            sqlite_cache_kib: config.database.sqlite_cache_kib,
        };
        let store = store::connect_waiting(&options, config.database.startup_wait)
            .await
            .with_context(|| format!("opening database {}", redact_url(&config.database.url)))?;
        let http_listener = TcpListener::bind(config.http.addr)
            .await
            .with_context(|| format!("binding HTTP address {}", config.http.addr))?;
        let grpc_listener = TcpListener::bind(config.grpc.addr)
            .await
            .with_context(|| format!("binding gRPC address {}", config.grpc.addr))?;
        let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);
        let streams = StreamOptions {
            poll_interval: config.streams.poll,
            heartbeat_interval: config.streams.heartbeat,
            broadcast_capacity: config.streams.broadcast_capacity,
            read_cache_users: config.streams.read_cache_users,
            read_wait_max: config.streams.read_wait_max,
            ..StreamOptions::default()
        };
        let ingest = IngestOptions {
            committers: config.ingest.committers,
            max_batch: config.ingest.batch_max,
        };
        let core = Core::start(store, streams, ingest, pipeline_options(&config)?)
            .await
            .context("starting the event log follower")?;

        let caps = connection_caps(&config);
        warn_about_exposure(&config);
        let draining = CancellationToken::new();
        let (health, health_service) = tonic_health::server::health_reporter();
        let grpc_routes = grpc::routes(core.clone(), health_service, &grpc_access(&config))?;
        Ok(Self {
            http_router: http_router(&config, core.clone(), draining.clone()),
            grpc_server: grpc_server(&config)?,
            grpc_routes,
            health,
            http_admission: Admission::new(http_listener, caps.http, "HTTP"),
            grpc_admission: Admission::new(grpc_listener, caps.grpc, "gRPC"),
            draining,
            http_addr,
            grpc_addr,
            core,
            config,
        })
    }

    /// The application core (tests and tools inspect the store through it).
    pub fn core(&self) -> Core {
        self.core.clone()
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled or a server fails, then drains both. Returns an error
    /// if a server failed, or if requests still in flight at the end of the grace period had to
    /// be cut off.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            http = %self.http_addr,
            grpc = %self.grpc_addr,
            database = %redact_url(&self.config.database.url),
            "serving"
        );
        grpc::set_health(&self.health, true).await;
        let timeouts = http::ConnectionTimeouts {
            first_headers: self.config.http.header_timeout,
            idle: self.config.http.idle_timeout,
        };
        let mut http = tokio::spawn(http::serve(
            self.http_admission,
            self.http_router,
            timeouts,
            self.draining.clone(),
        ));
        let incoming = grpc::incoming(self.grpc_admission, self.config.grpc.handshake_timeout);
        let grpc_stop = self.draining.clone();
        let mut grpc_server = self.grpc_server;
        let mut grpc = tokio::spawn(async move {
            grpc_server
                .add_routes(self.grpc_routes)
                .serve_with_incoming_shutdown(incoming, grpc_stop.cancelled_owned())
                .await
                .context("gRPC server")
        });
        let probe = tokio::spawn(follow_database_health(
            self.core.clone(),
            self.health.clone(),
            self.draining.clone(),
        ));

        // Whichever ends first (a signal or a failed server) stops the other.
        let (mut http_done, mut grpc_done) = (None, None);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            result = &mut http => http_done = Some(result.map(Ok)),
            result = &mut grpc => grpc_done = Some(result),
        }
        self.draining.cancel();
        // Ends open streams, or tonic's drain would wait for them forever.
        self.core.shutdown();
        let mut health = self.health;
        grpc::set_health(&health, false).await;
        // Health watchers have seen NOT_SERVING; their streams would hold up the drain.
        grpc::end_health_watches(&mut health).await;
        let grace = self.config.shutdown_grace;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");

        let drained = tokio::time::timeout(grace, async {
            let http_result = match http_done {
                Some(result) => result,
                None => (&mut http).await.map(Ok),
            };
            let grpc_result = match grpc_done {
                Some(result) => result,
                None => (&mut grpc).await,
            };
            self.core.workers_stopped().await;
            outcome("HTTP", http_result).and(outcome("gRPC", grpc_result))
        })
        .await;
        probe.abort();
        let result = match drained {
            Ok(result) => result,
            Err(_) => {
                http.abort();
                grpc.abort();
                // Visible to operators twice: this line, and a failed exit status of `serve`.
                tracing::error!(
                    grace_secs = grace.as_secs(),
                    "in-flight requests did not finish within the grace period; cut off"
                );
                Err(anyhow::anyhow!(
                    "shutdown forced: in-flight requests were cut off after the {} s grace period",
                    grace.as_secs()
                ))
            }
        };
        if let Err(error) = self.core.close().await {
            tracing::warn!(%error, "closing the database pool");
        }
        tracing::info!("stopped");
        result
    }
}

/// The report pipeline: on with Argyle API credentials (its client retries transient failures),
/// off without them.
fn pipeline_options(config: &Config) -> anyhow::Result<PipelineOptions> {
    let argyle = &config.argyle;
    let client = match &argyle.credentials {
        Some((id, secret)) => {
            let client = ArgyleClient::new(ClientConfig::new(
                argyle.base_url.clone(),
                id.clone(),
                secret.clone(),
            ))
            .context("argyle_base_url")?;
            tracing::info!(base_url = %argyle.base_url, auto_generate = ?argyle.auto_generate, "report pipeline on");
            let retry = RetryPolicy {
                max_attempts: argyle.call_attempts as usize,
                ..RetryPolicy::retrying()
            };
            Some(client.with_retry(retry))
        }
        None => {
            if !argyle.auto_generate.is_empty() {
                tracing::warn!(
                    "reports_auto_generate is set but no Argyle API credentials are: no report is requested (set READINESS_ARGYLE_API_KEY_ID and READINESS_ARGYLE_API_KEY_SECRET)"
                );
            }
            None
        }
    };
    Ok(PipelineOptions {
        argyle: client,
        auto_generate: argyle.auto_generate.clone(),
        max_attempts: argyle.jobs_max_attempts,
        retry_base: argyle.jobs_retry_base,
        poll_interval: argyle.jobs_poll,
        lease: argyle.jobs_lease,
    })
}

/// The caps per listener, from the descriptor limit, logged (with a warning when low).
fn connection_caps(config: &Config) -> ConnectionCaps {
    let caps = ConnectionCaps::for_this_process(config.database.max_connections);
    tracing::info!(
        descriptor_limit = ?caps.descriptor_limit,
        http = caps.http,
        grpc = caps.grpc,
        "connection caps per listener"
    );
    if caps.too_low() {
        tracing::warn!(
            descriptor_limit = ?caps.descriptor_limit,
            "the descriptor limit leaves few connections per listener; raise it (ulimit -n, LimitNOFILE)"
        );
    }
    caps
}

/// The webhook and probe routes with their protection.
fn http_router(config: &Config, core: Core, draining: CancellationToken) -> axum::Router {
    let state = HttpState {
        core,
        secrets: Arc::from(config.security.webhook_secrets.clone()),
        max_body_bytes: config.http.max_body_bytes,
        shutdown: draining,
        sources: Arc::new(config.http.webhook_sources.clone()),
        metrics_sources: Arc::new(config.http.metrics_sources.clone()),
        body_timeout: config.http.body_timeout,
    };
    let limits = http::Limits {
        request_timeout: config.http.request_timeout,
        max_in_flight: config.http.max_in_flight,
        max_in_flight_per_source: config.http.max_in_flight_per_source,
    };
    http::router(state, &limits)
}

/// Who may call what over gRPC.
fn grpc_access(config: &Config) -> grpc::Access {
    let security = &config.security;
    let access = grpc::Access {
        auth: grpc::BearerAuth::new(&security.token_hashes),
        open_health: config.grpc.open_health,
        open_reflection: config.grpc.open_reflection,
        max_message_bytes: config.grpc.max_message_bytes,
        admin: config.grpc.admin_enabled.then(|| {
            grpc::BearerAuth::new(&security.admin_token_hashes)
                .or_else(|| grpc::BearerAuth::new(&security.token_hashes))
        }),
        report_requests: grpc::BearerAuth::new(&security.report_token_hashes),
    };
    if matches!(access.admin, Some(None)) {
        tracing::warn!(
            "AdminService is enabled without any token: anyone reaching gRPC can replay deliveries"
        );
    }
    access
}

/// The gRPC server: tracing, per-connection limits, keepalive, TLS.
fn grpc_server(config: &Config) -> anyhow::Result<tonic::transport::Server> {
    let keepalive = config.grpc.keepalive;
    let mut server = tonic::transport::Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!("grpc_request", rpc.method = %request.uri().path());
            crate::telemetry::set_remote_parent(&span, request.headers());
            span
        })
        .max_concurrent_streams(config.grpc.max_concurrent_streams)
        .concurrency_limit_per_connection(config.grpc.max_concurrent_streams as usize)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive));
    if let Some(tls) = &config.grpc.tls {
        let mut tls_config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&tls.cert, &tls.key))
            .timeout(config.grpc.handshake_timeout);
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        server = server
            .tls_config(tls_config)
            .context("gRPC TLS configuration")?;
    }
    Ok(server)
}

fn outcome(
    name: &str,
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_cancelled() => Ok(()),
        Err(error) => Err(anyhow::anyhow!("{name} server panicked: {error}")),
    }
}

/// Start-up warnings for listeners reachable beyond this machine without their protection.
fn warn_about_exposure(config: &Config) {
    if !config.http.addr.ip().is_loopback() && config.http.webhook_sources.allowed.is_empty() {
        tracing::warn!(
            http = %config.http.addr,
            "the HTTP listener is not on loopback and http_allowed_cidrs is empty: anyone who can reach it can hold request slots (up to http_max_in_flight_per_source per address); list Argyle's addresses in http_allowed_cidrs"
        );
    }
    let security = &config.security;
    let tokens = !security.token_hashes.is_empty()
        || (config.grpc.admin_enabled && !security.admin_token_hashes.is_empty());
    if tokens && config.grpc.tls.is_none() && !config.grpc.addr.ip().is_loopback() {
        tracing::warn!(
            grpc = %config.grpc.addr,
            "gRPC bearer tokens are configured on a plaintext listener that is not on loopback: tokens cross the network unencrypted; set grpc_tls_cert and grpc_tls_key"
        );
    }
}

/// Keeps gRPC health in step with the database: NOT_SERVING while it does not answer, refuses
/// writes, or is no longer the file that was opened (see `Core::ready`).
async fn follow_database_health(core: Core, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut serving = true;
    let mut interval = tokio::time::interval(HEALTH_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let ready = core.ready().await;
        if ready.is_ok() != serving && !shutdown.is_cancelled() {
            serving = ready.is_ok();
            let reason = ready.err().map_or("ready", |not_ready| not_ready.reason());
            tracing::warn!(serving, reason, "gRPC health changed");
            grpc::set_health(&reporter, serving).await;
        }
    }
}
