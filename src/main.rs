//! The `readiness` binary: load settings, start logging, build the app, serve until a signal.

use std::io::Read;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use readiness::app::App;
use readiness::cli::{Cli, Command, HealthcheckArgs, ServeArgs, SignArgs};
use readiness::config::Settings;
use readiness::domain::signature::{Secret, sign};
use readiness::telemetry;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Config(args) => {
            let settings = Settings::load(args.config.as_deref(), &args)?;
            println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
            Ok(())
        }
        Command::Sign(args) => sign_body(args),
        Command::Healthcheck(args) => healthcheck(args),
        Command::Inbox(args) => readiness::inbox_cli::run(args),
        Command::Argyle(args) => readiness::argyle_cli::run(args),
        Command::Simulate(args) => readiness::simulate::run(args),
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("reading standard input")?;
            println!("{}", readiness::grpc::hash_token(token.trim()));
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), &args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let telemetry = telemetry::init(settings.log_format)?;
        if telemetry.exporting() {
            tracing::info!("exporting traces over OTLP");
        }
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone())?;
        let result = match App::build(settings).await {
            Ok(app) => app.run(shutdown).await,
            Err(error) => Err(error),
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

fn sign_body(args: SignArgs) -> anyhow::Result<()> {
    let secret = readiness::config::signing_secret(args.secret)?;
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

/// `GET /readyz` over plain HTTP/1.1; exits non-zero unless the answer is 200.
fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
    let mut stream = std::net::TcpStream::connect_timeout(&args.http_addr, timeout)
        .with_context(|| format!("connecting to {}", args.http_addr))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.http_addr
    )?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the answer")?;
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    let reason = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    if status == "200" {
        println!("ready");
        Ok(())
    } else {
        anyhow::bail!("not ready: {status} {reason}")
    }
}
