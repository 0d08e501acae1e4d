//! `readiness serve`: load settings, start logging, build the app, serve until SIGINT or
//! SIGTERM, flush telemetry.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::ServeArgs;
use crate::app::App;
use crate::config::Settings;
use crate::telemetry;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), &args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let telemetry = telemetry::init(settings.log_format)?;
        if telemetry.exporting() {
            tracing::info!("exporting traces over OTLP");
        }
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone())?;
        // A signal during the start (which may be waiting for the database) stops it at once.
        let result = tokio::select! {
            built = App::build(settings) => match built {
                Ok(app) => app.run(shutdown).await,
                Err(error) => Err(error),
            },
            () = shutdown.cancelled() => {
                tracing::info!("stopped before the service was up");
                Ok(())
            }
        };
        // Flush spans before exiting, whatever the outcome.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        result
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM. The handlers are registered before this returns,
/// so a signal that arrives once the service is up is never missed.
#[cfg(unix)]
fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
        shutdown.cancel();
    });
    Ok(())
}

#[cfg(not(unix))]
fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    Ok(())
}
