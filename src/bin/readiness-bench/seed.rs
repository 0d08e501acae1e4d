//! Seeding a store directly (through the service's own migrations and entities), far faster than
//! through webhooks: users `from..to` with 1-3 accounts each (2.5 on average), their state derived
//! by the service's own rules, and optionally report events appended to the log. Progress goes
//! to standard error when it is a terminal.

use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use clap::Args;
use readiness::cli::progress;
use readiness::domain::account::{AccountFacts, ErrorInfo, Observation};
use readiness::domain::events::DomainEvent;
use readiness::domain::readiness::user_readiness;
use readiness::domain::{ReportId, UserId};
use readiness::store::entities::{account, event, user, user_external_id};
use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait, TransactionTrait};
use serde_json::{Value, json};
use uuid::Uuid;

/// Namespace of the seeded ids (UUID v5), so `query` can name seeded users without a lookup.
const NAMESPACE: Uuid = Uuid::from_u128(0x0be7_c4a1_2f3e_4b5c_8d6e_7f80_9a1b_2c3d);
/// Users written per transaction.
const CHUNK: u64 = 1000;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Database URL (the service's own schema is created or migrated first).
    #[arg(long, env = "READINESS_DATABASE_URL")]
    database_url: String,
    /// First seeded user index (to grow a store in steps).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// One past the last seeded user index.
    #[arg(long)]
    to: u64,
    /// Report events to append to the log.
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Internal log entries (`view_changed`, never streamed) appended after each report event,
    /// as ingest writes them when a delivery changes a view and nothing else: catch-up must
    /// skip them.
    #[arg(long, default_value_t = 0)]
    internal_per_event: u64,
}

/// The id of seeded user `index`.
pub fn user_id(index: u64) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("user-{index}").as_bytes())
}

/// The id of seeded user `user`'s account `k`.
pub fn account_id(user: u64, k: u64) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("account-{user}-{k}").as_bytes())
}

/// A fixed clock, so seeded rows do not depend on when they were written.
fn at(index: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + (index % 2_000_000) as i64, 0)
        .single()
        .unwrap_or_default()
}

/// One user's rows: most accounts connected and synced, some failed, some still connecting.
fn user_rows(index: u64) -> anyhow::Result<(user::ActiveModel, Vec<account::ActiveModel>)> {
    let mut rng = fastrand::Rng::with_seed(index);
    let count = match rng.u8(0..10) {
        0 => 1,
        1..=3 => 2,
        _ => 3,
    };
    let now = at(index);
    let mut states = Vec::new();
    let mut accounts = Vec::new();
    for k in 0..count {
        let mut facts = AccountFacts::default();
        facts.observe(&Observation::Added);
        match rng.u8(0..20) {
            0..=2 => facts.observe(&Observation::Failed(ErrorInfo {
                code: Some("invalid_credentials".into()),
                message: Some("The credentials are not valid.".into()),
            })),
            3 => {}
            _ => {
                facts.observe(&Observation::Connected);
                facts.observe(&Observation::SyncedAt(now));
            }
        }
        let derived = facts.state();
        let error = derived.error;
        states.push(facts.standing());
        accounts.push(account::ActiveModel {
            account_id: Set(account_id(index, k).to_string()),
            user_id: Set(user_id(index).to_string()),
            state: Set(derived.state.as_str().to_owned()),
            facts: Set(serde_json::to_string(&facts)?),
            error_code: Set(error.as_ref().and_then(|e| e.code.clone())),
            error_message: Set(error.and_then(|e| e.message)),
            last_synced_at: Set(facts.synced_at),
            first_seen_at: Set(now),
            updated_at: Set(now),
        });
    }
    let user = user::ActiveModel {
        user_id: Set(user_id(index).to_string()),
        external_id: Set(Some(format!("bench-{index}"))),
        external_ids: Set(format!("[\"bench-{index}\"]")),
        state: Set(user_readiness(states).as_str().to_owned()),
        state_since: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok((user, accounts))
}

pub async fn run(args: SeedArgs) -> anyhow::Result<Value> {
    let db = crate::open_database(&args.database_url, 2).await?;
    let started = Instant::now();
    let bar = progress::bar(args.to.saturating_sub(args.from), "seeding users");
    let mut start = args.from;
    while start < args.to {
        let end = (start + CHUNK).min(args.to);
        let mut users = Vec::new();
        let mut accounts = Vec::new();
        let mut external_ids = Vec::new();
        for index in start..end {
            let (user, mut owned) = user_rows(index)?;
            users.push(user);
            accounts.append(&mut owned);
            external_ids.push(user_external_id::ActiveModel {
                external_id: Set(format!("bench-{index}")),
                user_id: Set(user_id(index).to_string()),
            });
        }
        let txn = db.begin().await?;
        user::Entity::insert_many(users)
            .exec_without_returning(&txn)
            .await?;
        user_external_id::Entity::insert_many(external_ids)
            .exec_without_returning(&txn)
            .await?;
        account::Entity::insert_many(accounts)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        bar.inc(end - start);
        start = end;
    }
    bar.finish();
    let users_seconds = started.elapsed();

    let started = Instant::now();
    let bar = match args.events {
        0 => progress::ProgressBar::hidden(),
        events => progress::bar(events, "appending events"),
    };
    let mut written = 0;
    while written < args.events {
        // At most CHUNK rows per statement (SQLite takes at most 32,766 bound values).
        let per_chunk = (CHUNK / (1 + args.internal_per_event)).max(1);
        let batch = per_chunk.min(args.events - written);
        let mut rows = Vec::new();
        for n in written..written + batch {
            let owner = user_id(n % args.to.max(1));
            let report = Uuid::new_v5(&NAMESPACE, format!("report-{n}").as_bytes());
            let generated = DomainEvent::ReportGenerated {
                report: ReportId(report),
                user: UserId(owner),
                report_type: "voie".into(),
                argyle_report_id: Some(format!("bench-report-{n}")),
                snapshot: None,
            };
            let internal = DomainEvent::ViewChanged {
                user: UserId(owner),
                reports: vec![],
                external_ids: vec![],
            };
            let entries = std::iter::once(&generated).chain(std::iter::repeat_n(
                &internal,
                args.internal_per_event as usize,
            ));
            for entry in entries {
                rows.push(event::ActiveModel {
                    kind: Set(entry.kind().to_owned()),
                    user_id: Set(owner.to_string()),
                    payload: Set(serde_json::to_string(entry)?),
                    recorded_at: Set(at(n)),
                    ..Default::default()
                });
            }
        }
        event::Entity::insert_many(rows)
            .exec_without_returning(&db)
            .await?;
        written += batch;
        bar.inc(batch);
    }
    bar.finish();
    let summary = json!({
        "users_written": args.to.saturating_sub(args.from),
        "users_seconds": crate::stats::secs(users_seconds),
        "events_written": args.events,
        "events_seconds": crate::stats::secs(started.elapsed()),
        "users_in_store": user::Entity::find().count(&db).await?,
        "accounts_in_store": account::Entity::find().count(&db).await?,
        "events_in_store": event::Entity::find().count(&db).await?,
    });
    db.close().await?;
    Ok(summary)
}
