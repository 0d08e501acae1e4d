//! `readiness argyle ...`: the Argyle webhook-subscription API (`/v2/webhooks`) for setting the
//! service up. Argyle has no update call, so a subscription that differs is deleted and created
//! again. Errors from Argyle become messages that say what to do.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::{ArgyleAction, ArgyleArgs, ArgyleEnvironment, WebhooksAction};

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

/// A subscription as Argyle returns it (the secret is never printed).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub url: String,
    /// Compared (so that `subscribe` with a rotated secret re-creates), never printed.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub last_sent_at: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    next: Option<String>,
    results: Vec<Subscription>,
}

/// An Argyle API failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ArgyleError {
    #[error(
        "Argyle refused the credentials ({status}): check READINESS_ARGYLE_API_KEY_ID and READINESS_ARGYLE_API_KEY_SECRET, and that they belong to the chosen environment"
    )]
    Unauthorized { status: u16 },
    #[error("Argyle is rate limiting these requests (429){}; wait and run the command again", .retry_after.as_ref().map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited { retry_after: Option<String> },
    #[error(
        "Argyle failed with {status} (a problem on their side); run the command again later: {body}"
    )]
    Server { status: u16, body: String },
    #[error("Argyle rejected the request with {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("could not reach Argyle at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("unexpected answer from Argyle: {0}")]
    BadAnswer(String),
}

/// The Argyle webhooks API.
pub struct ArgyleClient {
    http: reqwest::Client,
    base: String,
    key_id: String,
    key_secret: String,
}

impl ArgyleClient {
    pub fn new(base: &str, key_id: &str, key_secret: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .user_agent(concat!("readiness/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            key_secret: key_secret.to_owned(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ArgyleError> {
        let response = request
            .basic_auth(&self.key_id, Some(&self.key_secret))
            .send()
            .await
            .map_err(|source| ArgyleError::Transport {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(match status.as_u16() {
            401 | 403 => ArgyleError::Unauthorized {
                status: status.as_u16(),
            },
            429 => ArgyleError::RateLimited { retry_after },
            code if code >= 500 => ArgyleError::Server { status: code, body },
            code => ArgyleError::Rejected { status: code, body },
        })
    }

    /// Every subscription, following `next` links.
    pub async fn list(&self) -> Result<Vec<Subscription>, ArgyleError> {
        let mut url = format!("{}/webhooks", self.base);
        let mut all = Vec::new();
        for _ in 0..1000 {
            let response = self.send(self.http.get(&url), &url).await?;
            let page: Page = response
                .json()
                .await
                .map_err(|error| ArgyleError::BadAnswer(error.to_string()))?;
            all.extend(page.results);
            match page.next {
                Some(next) if !next.is_empty() => url = next,
                _ => return Ok(all),
            }
        }
        Err(ArgyleError::BadAnswer(
            "more than 1000 pages of subscriptions".into(),
        ))
    }

    pub async fn create(&self, body: &Value) -> Result<Subscription, ArgyleError> {
        let url = format!("{}/webhooks", self.base);
        let response = self.send(self.http.post(&url).json(body), &url).await?;
        response
            .json()
            .await
            .map_err(|error| ArgyleError::BadAnswer(error.to_string()))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ArgyleError> {
        let url = format!("{}/webhooks/{id}", self.base);
        self.send(self.http.delete(&url), &url).await.map(|_| ())
    }
}

/// What `subscribe` wants to exist.
fn desired(prefix: &str, url: &str, secret: &str) -> Vec<Value> {
    vec![
        json!({"name": format!("{prefix}-accounts"), "events": ACCOUNT_EVENTS, "url": url,
               "secret": secret, "config": {"include_resource": true}}),
        json!({"name": format!("{prefix}-reports"), "events": REPORT_EVENTS, "url": url,
               "secret": secret, "config": {}}),
    ]
}

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
            ArgyleEnvironment::Sandbox => "https://api-sandbox.argyle.com/v2".into(),
            ArgyleEnvironment::Production => "https://api.argyle.com/v2".into(),
        });
    let client = ArgyleClient::new(&base, &args.api_key_id, &args.api_key_secret)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        match args.action {
            ArgyleAction::Webhooks {
                action: WebhooksAction::List,
            } => {
                for subscription in client.list().await? {
                    println!("{}", serde_json::to_string(&subscription)?);
                }
            }
            ArgyleAction::Webhooks {
                action: WebhooksAction::Delete { id },
            } => {
                client.delete(&id).await?;
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
    let existing = client.list().await?;
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
                client.delete(&old.id).await?;
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
            let created = client.create(&wanted).await?;
            println!(
                "{}",
                json!({"name": name, "action": "created", "id": created.id})
            );
        }
    }
    Ok(())
}
