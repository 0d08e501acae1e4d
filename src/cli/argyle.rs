//! `readiness argyle ...`: the Argyle webhook-subscription API (`/v2/webhooks`) for setting the
//! service up. Argyle has no update call, so a subscription that differs is deleted and created
//! again. Errors from Argyle become messages that say what to do. A thin command over
//! [`crate::argyle::ArgyleClient`], failing fast (the operator retries).

use std::collections::BTreeSet;

use anyhow::Context;
use serde_json::{Value, json};

use crate::argyle::Subscription;
use crate::argyle::{ArgyleClient, ClientConfig, PRODUCTION_URL, RetryPolicy, SANDBOX_URL};
use crate::cli::{ArgyleAction, ArgyleArgs, ArgyleEnvironment, WebhooksAction};
use crate::domain::signature::Secret;

/// Account events, subscribed with `include_resource` so that disconnections carry their time.
pub const ACCOUNT_EVENTS: [&str; 5] = [
    "accounts.added",
    "accounts.connected",
    "accounts.failed",
    "accounts.updated",
    "accounts.removed",
];
/// Report and user events.
pub const REPORT_EVENTS: [&str; 3] = ["reports.ready", "reports.generated", "users.fully_synced"];

/// What `subscribe` wants to exist.
fn desired(prefix: &str, url: &str, secret: &str) -> Vec<Value> {
    vec![
        json!({"name": format!("{prefix}-accounts"), "events": ACCOUNT_EVENTS, "url": url,
               "secret": secret, "config": {"include_resource": true}}),
        json!({"name": format!("{prefix}-reports"), "events": REPORT_EVENTS, "url": url,
               "secret": secret, "config": {}}),
    ]
}

/// True when `existing` already is `wanted`: the same URL, events, `include_resource` and
/// secret. A subscription listed without a secret differs from ours, which always has one.
fn matches(existing: &Subscription, wanted: &Value) -> bool {
    let events: BTreeSet<&str> = existing.events.iter().map(String::as_str).collect();
    let wanted_events: BTreeSet<&str> = wanted["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let include = |config: &Value| {
        config
            .get("include_resource")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    existing.url == wanted["url"]
        && events == wanted_events
        && include(&existing.config) == include(&wanted["config"])
        && existing.secret.as_deref() == wanted["secret"].as_str()
}

fn redacted(body: &Value) -> Value {
    let mut body = body.clone();
    body["secret"] = json!("<redacted>");
    body
}

/// Runs one `argyle` command.
pub fn run(args: ArgyleArgs) -> anyhow::Result<()> {
    let base = args
        .base_url
        .clone()
        .unwrap_or_else(|| match args.environment {
            ArgyleEnvironment::Sandbox => SANDBOX_URL.into(),
            ArgyleEnvironment::Production => PRODUCTION_URL.into(),
        });
    let config = ClientConfig::new(
        &base,
        Secret::new(args.api_key_id),
        Secret::new(args.api_key_secret),
    );
    let client = ArgyleClient::new(config)?.with_retry(RetryPolicy::none());
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        match args.action {
            ArgyleAction::Webhooks {
                action: WebhooksAction::List,
            } => {
                for subscription in client.list_webhooks().await? {
                    println!("{}", serde_json::to_string(&subscription)?);
                }
            }
            ArgyleAction::Webhooks {
                action: WebhooksAction::Delete { id },
            } => {
                client.delete_webhook(&id).await?;
                println!("{}", json!({"deleted": id}));
            }
            ArgyleAction::Subscribe {
                url,
                name,
                secret,
                dry_run,
            } => {
                let secret = crate::config::signing_secret(secret)?;
                subscribe(&client, &base, &url, &name, &secret, dry_run).await?;
            }
        }
        Ok(())
    })
}

async fn subscribe(
    client: &ArgyleClient,
    base: &str,
    url: &str,
    prefix: &str,
    secret: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let existing = client.list_webhooks().await?;
    for wanted in desired(prefix, url, secret) {
        let name = wanted["name"].as_str().unwrap_or_default();
        let same_name: Vec<&Subscription> = existing.iter().filter(|s| s.name == name).collect();
        if same_name.len() == 1 && matches(same_name[0], &wanted) {
            println!(
                "{}",
                json!({"name": name, "action": "unchanged", "id": same_name[0].id})
            );
            continue;
        }
        for old in &same_name {
            if dry_run {
                println!(
                    "{}",
                    json!({"dry_run": true, "request": format!("DELETE {base}/webhooks/{}", old.id)})
                );
            } else {
                client.delete_webhook(&old.id).await?;
                println!(
                    "{}",
                    json!({"name": name, "action": "deleted", "id": old.id})
                );
            }
        }
        if dry_run {
            println!(
                "{}",
                json!({"dry_run": true, "request": format!("POST {base}/webhooks"), "body": redacted(&wanted)})
            );
        } else {
            let created = client.create_webhook(&wanted).await?;
            println!(
                "{}",
                json!({"name": name, "action": "created", "id": created.id})
            );
        }
    }
    Ok(())
}
