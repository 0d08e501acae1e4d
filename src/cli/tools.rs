//! Small tools: `config` (the effective settings, redacted), `sign` (a body's signature as Argyle
//! computes it), `hash-token` (a bearer token's hash for the settings) and `healthcheck` (a
//! running service's `/readyz`, for container health checks).

use std::io::Read;

use anyhow::Context;

use super::{HealthcheckArgs, ServeArgs, SignArgs};
use crate::config::Settings;
use crate::domain::signature::{Secret, sign};

pub fn print_config(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), &args)?;
    // Checked as `serve` would (files read, CIDRs and hashes parsed), then printed as given.
    settings.config()?;
    println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
    Ok(())
}

pub fn sign_body(args: SignArgs) -> anyhow::Result<()> {
    let secret = crate::config::signing_secret(args.secret)?;
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

pub fn hash_token() -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("reading standard input")?;
    println!("{}", crate::grpc::hash_token(token.trim()));
    Ok(())
}

/// `GET /readyz` over plain HTTP/1.1; exits non-zero unless the answer is 200.
pub fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
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
