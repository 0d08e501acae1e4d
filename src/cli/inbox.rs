//! `readiness inbox ...`: operator commands over the stored deliveries, talking to the database
//! directly with the same settings as `serve`. Output is JSON, one object per line; `replay
//! --failed` and `prune` also draw a progress bar on standard error when it is a terminal.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::cli::{InboxAction, InboxArgs, progress};
use crate::config::Settings;
use crate::core::{Core, InboxFilter, IngestOptions, Outcome, PipelineOptions, StreamOptions};
use crate::store::{self, StoreOptions};

/// Runs one inbox command to completion.
pub fn run(args: InboxArgs) -> anyhow::Result<()> {
    let settings = Settings::load_for_tools(args.settings.config.as_deref(), &args.settings)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let store = store::connect(&StoreOptions {
            url: settings.database_url.clone(),
            max_connections: 2,
            connect_timeout: Duration::from_secs(settings.database_timeout_secs),
            sqlite_cache_kib: settings.database_sqlite_cache_kib,
        })
        .await
        .with_context(|| {
            format!(
                "opening database {}",
                crate::config::redact_url(&settings.database_url)
            )
        })?;
        let core = Core::start(
            store,
            StreamOptions::default(),
            IngestOptions::default(),
            PipelineOptions::default(),
        )
        .await?;
        let result = act(&core, args.action).await;
        core.shutdown();
        result
    })
}

async fn act(core: &Core, action: InboxAction) -> anyhow::Result<()> {
    match action {
        InboxAction::List {
            status,
            since,
            after,
            limit,
        } => {
            let filter = InboxFilter {
                status: status.map(Into::into),
                since: since.as_deref().map(parse_since).transpose()?,
                after_id: after,
                limit,
            };
            for delivery in core.inbox_list(&filter).await? {
                println!("{}", serde_json::to_string(&delivery)?);
            }
        }
        InboxAction::Show { id } => {
            let (summary, body) = core.inbox_show(id).await?;
            let mut value = serde_json::to_value(&summary)?;
            value["body"] = match std::str::from_utf8(&body) {
                Ok(text) => text.into(),
                Err(_) => format!(
                    "<{} bytes, not UTF-8: hex {}>",
                    body.len(),
                    hex::encode(&body)
                )
                .into(),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        InboxAction::Replay { id: Some(id), .. } => {
            let (summary, outcome) = core.inbox_replay(id).await?;
            print_replay(&summary, &outcome)?;
        }
        InboxAction::Replay { id: None, .. } => {
            let ids = core.inbox_rejected_ids().await?;
            let bar = progress::bar(ids.len() as u64, "replaying failed deliveries");
            for id in ids {
                let (summary, outcome) = core.inbox_replay(id).await?;
                bar.suspend(|| print_replay(&summary, &outcome))?;
                bar.inc(1);
            }
            bar.finish();
        }
        InboxAction::Prune { older_than } => {
            let age = humantime::parse_duration(&older_than).with_context(|| {
                format!("--older-than {older_than:?}: expected a duration such as 30d")
            })?;
            let cutoff = Utc::now() - chrono::Duration::from_std(age)?;
            let bar = progress::bar(0, "pruning deliveries");
            let deleted = core
                .inbox_prune(cutoff, |deleted, total| {
                    bar.set_length(total.max(deleted));
                    bar.set_position(deleted);
                })
                .await?;
            bar.finish();
            println!(
                "{}",
                serde_json::json!({ "deleted": deleted, "received_before": cutoff })
            );
        }
    }
    Ok(())
}

fn print_replay(summary: &crate::core::StoredDelivery, outcome: &Outcome) -> anyhow::Result<()> {
    let result = match outcome {
        Outcome::Applied { events } => serde_json::json!({ "result": "applied", "events": events }),
        Outcome::Ignored => serde_json::json!({ "result": "ignored" }),
        Outcome::Duplicate => serde_json::json!({ "result": "duplicate" }),
        Outcome::Rejected { reason } => {
            serde_json::json!({ "result": "rejected", "reason": reason })
        }
    };
    let mut value = serde_json::to_value(summary)?;
    value["replay"] = result;
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

/// An RFC 3339 time, or a duration before now (`24h`, `30d`).
fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text).with_context(|| {
        format!("--since {text:?}: expected an RFC 3339 time or a duration such as 24h")
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(age)?)
}
