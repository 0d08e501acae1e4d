//! The `readiness` binary: load settings, start logging, build the app, serve until a signal.

use std::io::Read;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use readiness::app::App;
use readiness::cli::{Cli, Command, ServeArgs, SignArgs};
use readiness::config::Settings;
use readiness::domain::signature::{Secret, sign};
use readiness::telemetry;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Sign(args) => sign_body(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), &args)?;
    telemetry::init(settings.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let app = App::build(settings).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        app.run(shutdown).await
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("signal received");
    shutdown.cancel();
}

fn sign_body(args: SignArgs) -> anyhow::Result<()> {
    let secret = match args.secret {
        Some(secret) => secret,
        None => std::env::var("READINESS_ARGYLE_SECRETS")
            .ok()
            .and_then(|all| {
                all.split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .context("no secret: pass --secret or set READINESS_ARGYLE_SECRETS")?,
    };
    let mut body = Vec::new();
    match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut body)
                .context("reading standard input")?;
        }
    }
    println!("{}", sign(&Secret::new(secret), &body));
    Ok(())
}
