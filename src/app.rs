//! Start-up and shutdown. [`App::build`] connects, migrates and binds both listeners (port 0
//! allowed, the bound addresses are exposed); [`App::run`] serves HTTP and gRPC on one runtime
//! until the shutdown token is cancelled or either server stops, then drains both within the
//! grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::{Settings, redact_url};
use crate::core::{Core, IngestOptions, StreamOptions};
use crate::grpc;
use crate::http::{self, HttpState};
use crate::store::{self, StoreOptions};

/// How often the database is pinged to keep gRPC health in step with it.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A built, bound, not yet serving service.
pub struct App {
    settings: Settings,
    core: Core,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
}

impl App {
    /// Connects to the database, runs migrations and binds both listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records.
        crate::metrics::handle();
        let options = StoreOptions {
            url: settings.database_url.clone(),
            max_connections: settings.database_max_connections,
            connect_timeout: Duration::from_secs(settings.database_timeout_secs),
        };
        let db = store::connect(&options)
            .await
            .with_context(|| format!("opening database {}", redact_url(&settings.database_url)))?;
        let http_listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP address {}", settings.http_addr))?;
        let grpc_listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC address {}", settings.grpc_addr))?;
        let streams = StreamOptions {
            poll_interval: Duration::from_millis(settings.stream_poll_ms),
            heartbeat_interval: Duration::from_millis(settings.stream_heartbeat_ms),
            broadcast_capacity: settings.stream_broadcast_capacity,
            ..StreamOptions::default()
        };
        let ingest = IngestOptions {
            committers: settings.ingest_committers,
            max_batch: settings.ingest_batch_max,
        };
        let core = Core::start(db, streams, ingest)
            .await
            .context("starting the event log follower")?;
        Ok(Self {
            settings,
            core,
            http_listener,
            grpc_listener,
        })
    }

    /// The application core (tests and tools inspect the store through it).
    pub fn core(&self) -> Core {
        self.core.clone()
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled or a server fails, then drains both. Returns an error
    /// if a server failed, or if requests still in flight at the end of the grace period had to
    /// be cut off.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.settings.shutdown_grace_secs);
        tracing::info!(
            http = %self.http_addr(),
            grpc = %self.grpc_addr(),
            database = %redact_url(&self.settings.database_url),
            "serving"
        );

        let (mut reporter, health_service) = tonic_health::server::health_reporter();
        grpc::set_health(&reporter, true).await;
        let security = self.settings.security()?;
        let access = grpc::Access {
            auth: grpc::BearerAuth::new(&security.token_hashes),
            open_health: self.settings.grpc_open_health,
            open_reflection: self.settings.grpc_open_reflection,
            max_message_bytes: self.settings.grpc_max_message_bytes,
            admin: self.settings.grpc_admin_enabled.then(|| {
                grpc::BearerAuth::new(&security.admin_token_hashes)
                    .or_else(|| grpc::BearerAuth::new(&security.token_hashes))
            }),
        };
        if matches!(access.admin, Some(None)) {
            tracing::warn!(
                "AdminService is enabled without any token: anyone reaching gRPC can replay deliveries"
            );
        }
        let routes = grpc::routes(self.core.clone(), health_service, &access)?;
        let mut grpc_server = tonic::transport::Server::builder()
            .trace_fn(|request| {
                let span = tracing::info_span!("grpc_request", rpc.method = %request.uri().path());
                crate::telemetry::set_remote_parent(&span, request.headers());
                span
            })
            .max_concurrent_streams(self.settings.grpc_max_concurrent_streams)
            .concurrency_limit_per_connection(self.settings.grpc_max_concurrent_streams as usize);
        if let Some(tls) = &security.tls {
            let mut config = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&tls.cert, &tls.key));
            if let Some(ca) = &tls.client_ca {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            grpc_server = grpc_server
                .tls_config(config)
                .context("gRPC TLS configuration")?;
        }

        let http_state = HttpState {
            core: self.core.clone(),
            secrets: Arc::from(self.settings.argyle_secrets.clone()),
            max_body_bytes: self.settings.max_body_bytes,
            shutdown: shutdown.clone(),
            sources: Arc::new(http::SourcePolicy {
                allowed: security.allowed.clone(),
                trusted_proxies: security.trusted_proxies.clone(),
                client_ip_header: self.settings.http_client_ip_header.clone(),
            }),
        };
        let limits = http::Limits {
            request_timeout: Duration::from_secs(self.settings.http_request_timeout_secs),
            max_in_flight: self.settings.http_max_in_flight,
        };
        let http_shutdown = shutdown.clone();
        let mut http = tokio::spawn(async move {
            let router = http::router(http_state, &limits);
            // Small answers go out at once rather than waiting on Nagle's algorithm.
            let listener = self.http_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
            .context("HTTP server")
        });
        let grpc_shutdown = shutdown.clone();
        // Without TCP_NODELAY a unary answer can wait ~40 ms for the client's delayed ACK.
        let incoming = TcpIncoming::from(self.grpc_listener).with_nodelay(Some(true));
        let mut grpc = tokio::spawn(async move {
            grpc_server
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
                .await
                .context("gRPC server")
        });
        let probe = tokio::spawn(follow_database_health(
            self.core.clone(),
            reporter.clone(),
            shutdown.clone(),
        ));

        // Whichever ends first (a signal or a failed server) stops the other.
        let (mut http_done, mut grpc_done) = (None, None);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            result = &mut http => http_done = Some(result),
            result = &mut grpc => grpc_done = Some(result),
        }
        shutdown.cancel();
        // Ends open streams, or tonic's drain would wait for them forever.
        self.core.shutdown();
        grpc::set_health(&reporter, false).await;
        // Health watchers have seen NOT_SERVING; their streams would hold up the drain.
        grpc::end_health_watches(&mut reporter).await;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");

        let drained = tokio::time::timeout(grace, async {
            let http_result = match http_done {
                Some(result) => result,
                None => (&mut http).await,
            };
            let grpc_result = match grpc_done {
                Some(result) => result,
                None => (&mut grpc).await,
            };
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
        if let Err(error) = self.core.db().close_by_ref().await {
            tracing::warn!(%error, "closing the database pool");
        }
        tracing::info!("stopped");
        result
    }
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

/// Keeps gRPC health in step with the database: NOT_SERVING while it does not answer.
async fn follow_database_health(
    core: Core,
    reporter: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut interval = tokio::time::interval(HEALTH_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let reachable = core.database_reachable().await;
        if reachable != serving && !shutdown.is_cancelled() {
            serving = reachable;
            tracing::warn!(reachable, "database reachability changed");
            grpc::set_health(&reporter, serving).await;
        }
    }
}
