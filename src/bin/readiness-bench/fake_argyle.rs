//! `readiness-bench fake-argyle`: runs the library's fake of Argyle's API
//! ([`readiness::argyle::fake`]) until Ctrl-C, for trying the service (and the README's worked
//! example) without Argyle: point `READINESS_ARGYLE_BASE_URL` at the printed base URL.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use readiness::argyle::fake::{FakeArgyle, FakeConfig, WebhookTarget};
use readiness::domain::signature::Secret;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct FakeArgyleArgs {
    /// Listen address of the API (documents are served on another port of the same address).
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// The API key id that requests must carry (HTTP Basic user name).
    #[arg(long, default_value = "key-id")]
    key_id: String,
    /// The API key secret that requests must carry (HTTP Basic password).
    #[arg(long, default_value = "key-secret")]
    key_secret: String,
    /// Where to POST the signed `reports.generated` when a report is generated.
    #[arg(long, requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// The secret that signs those webhooks (one of the service's READINESS_ARGYLE_SECRETS).
    #[arg(long, requires = "webhook_url")]
    webhook_secret: Option<String>,
    /// The subscription name echoed in those webhooks.
    #[arg(long, default_value = "readiness-reports")]
    webhook_name: String,
    /// Milliseconds a new report stays `generating` before it is `generated`.
    #[arg(long, default_value_t = 2000)]
    generate_after_ms: u64,
    /// Send `reports.generated` without `report_id` (Argyle's field is unconfirmed).
    #[arg(long)]
    no_report_id: bool,
}

pub async fn run(args: FakeArgyleArgs) -> anyhow::Result<Value> {
    let webhook = args
        .webhook_url
        .zip(args.webhook_secret)
        .map(|(url, secret)| WebhookTarget {
            url,
            secret: Secret::new(secret),
            name: args.webhook_name,
        });
    let config = FakeConfig {
        key_id: args.key_id,
        key_secret: args.key_secret,
        webhook,
        generate_after: Some(Duration::from_millis(args.generate_after_ms)),
        send_report_id: !args.no_report_id,
        webhook_retry_delay: Duration::from_millis(500),
        log_requests: true,
    };
    let fake = FakeArgyle::start(args.addr, config).await?;
    println!(
        "{}",
        json!({"base_url": fake.base_url(), "documents_url": fake.documents_url()})
    );
    tokio::signal::ctrl_c().await?;
    let deliveries = fake.deliveries();
    Ok(json!({
        "requests": fake.requests().len(),
        "reports": fake.reports().len(),
        "webhooks_sent": deliveries.len(),
        "webhooks_delivered": deliveries.iter().filter(|d| d.delivered).count(),
    }))
}
