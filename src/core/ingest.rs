//! Applying a verified delivery: the raw body, the state change and the domain events it causes
//! are written in one transaction, so a 2xx (sent after commit) means all of it is durable, and
//! a failure leaves nothing behind. Duplicates are found by the SHA-256 of the body, enforced by
//! a unique constraint rather than check-then-insert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    TryInsertResult,
};
use sha2::{Digest, Sha256};

use super::apply::{Changes, Input};
use super::{Core, CoreError};
use crate::domain::UserId;
use crate::domain::argyle::{self, ArgyleEvent, Delivery};
use crate::domain::events::DomainEvent;
use crate::domain::signature::Verified;
use crate::store::StoreError;
use crate::store::entities::{delivery, event};

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and applied; `events` domain events were appended.
    Applied { events: usize },
    /// Stored; an event this service does not act on.
    Ignored,
    /// The same body was stored before; nothing changed.
    Duplicate,
    /// Stored for inspection but not applied: the body is not a valid event. The sender's mistake.
    Rejected { reason: String },
}

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// The inbox row holding the raw delivery.
    pub delivery_id: i64,
    pub event_name: Option<String>,
    pub outcome: Outcome,
}

/// Stored delivery statuses.
pub(super) const APPLIED: &str = "applied";
pub(super) const IGNORED: &str = "ignored";
pub(super) const REJECTED: &str = "rejected";

/// A verified delivery, hashed and parsed before it joins a batch.
pub(super) struct Job {
    pub(super) body: Vec<u8>,
    pub(super) sha: String,
    pub(super) parsed: Result<Delivery, argyle::ParseError>,
    pub(super) received_at: DateTime<Utc>,
    /// The request's `ingest` span: the batch's work for this delivery is traced under it.
    pub(super) span: tracing::Span,
}

impl Job {
    /// The user whose row this delivery locks, if any; batches take row locks in this order.
    pub(super) fn lock_key(&self) -> Option<UserId> {
        self.parsed.as_ref().ok().and_then(|d| d.event.user())
    }
}

impl Core {
    /// Stores and applies one verified delivery. It joins the next group commit (see
    /// `core::commit`); the answer arrives only after the transaction holding it has committed.
    #[tracing::instrument(name = "ingest", skip_all)]
    pub async fn ingest(
        &self,
        body: Verified<impl AsRef<[u8]>>,
    ) -> Result<IngestReport, CoreError> {
        self.health.check_file()?;
        let body = body.get().as_ref().to_vec();
        let job = Job {
            sha: hex::encode(Sha256::digest(&body)),
            parsed: argyle::parse(&body),
            body,
            received_at: Utc::now(),
            span: tracing::Span::current(),
        };
        self.committer.submit(job).await
    }
}

/// Stores a batch of deliveries and applies the new ones, in the caller's transaction, with a
/// fixed number of statements (see `core::apply`). Returns one answer per job, in job order, and
/// the domain events to append before commit.
pub(super) async fn store_batch(
    txn: &DatabaseTransaction,
    jobs: &[Job],
) -> Result<(Vec<IngestReport>, Vec<DomainEvent>), CoreError> {
    let now = Utc::now();
    // One row per distinct body; later copies in the batch get the first one's answer.
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut firsts = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        first_of.entry(job.sha.as_str()).or_insert_with(|| {
            firsts.push(index);
            index
        });
    }
    let inserted = delivery::Entity::insert_many(firsts.iter().map(|&i| delivery_row(&jobs[i])))
        .on_conflict_do_nothing_on([delivery::Column::BodySha256])
        .exec_with_returning_many(txn)
        .await?;
    let ids: HashMap<String, i64> = match inserted {
        TryInsertResult::Inserted(rows) => {
            rows.into_iter().map(|r| (r.body_sha256, r.id)).collect()
        }
        TryInsertResult::Conflicted | TryInsertResult::Empty => HashMap::new(),
    };
    // Bodies stored before this batch: duplicates.
    let seen: Vec<&str> = firsts
        .iter()
        .map(|&i| jobs[i].sha.as_str())
        .filter(|sha| !ids.contains_key(*sha))
        .collect();
    let mut earlier: HashMap<String, delivery::Model> = HashMap::new();
    if !seen.is_empty() {
        for row in delivery::Entity::find()
            .filter(delivery::Column::BodySha256.is_in(seen))
            .all(txn)
            .await?
        {
            earlier.insert(row.body_sha256.clone(), row);
        }
    }

    // Apply the new deliveries that carry an event we act on, in order.
    let inputs: Vec<Input<'_>> = firsts
        .iter()
        .filter_map(|&i| {
            let job = &jobs[i];
            let delivery_id = *ids.get(&job.sha)?;
            let delivery = job.parsed.as_ref().ok()?;
            (delivery.event != ArgyleEvent::Other).then_some(Input {
                event: &delivery.event,
                delivery_id,
                sha: &job.sha,
            })
        })
        .collect();
    let mut changes = Changes::load(txn, now, &inputs).await?;
    let mut applied: HashMap<i64, Outcome> = HashMap::new();
    let mut events = Vec::new();
    for input in &inputs {
        let outcome = match changes.apply(input)? {
            Ok(caused) => {
                let outcome = Outcome::Applied {
                    events: caused.len(),
                };
                events.extend(caused);
                outcome
            }
            Err(reason) => {
                // A consistency conflict: keep the delivery for inspection, marked as rejected.
                delivery::Entity::update_many()
                    .col_expr(delivery::Column::Status, REJECTED.into())
                    .col_expr(delivery::Column::Error, reason.clone().into())
                    .filter(delivery::Column::Id.eq(input.delivery_id))
                    .exec(txn)
                    .await?;
                Outcome::Rejected { reason }
            }
        };
        applied.insert(input.delivery_id, outcome);
    }
    changes.write(txn).await?;

    let mut answers: Vec<Option<IngestReport>> = vec![None; jobs.len()];
    for &index in &firsts {
        let job = &jobs[index];
        answers[index] = Some(match ids.get(&job.sha) {
            Some(&delivery_id) => IngestReport {
                delivery_id,
                event_name: job.parsed.as_ref().ok().map(|d| d.event_name.clone()),
                outcome: match &job.parsed {
                    Err(error) => Outcome::Rejected {
                        reason: error.to_string(),
                    },
                    Ok(_) => applied.remove(&delivery_id).unwrap_or(Outcome::Ignored),
                },
            },
            None => {
                let row = earlier.remove(&job.sha).ok_or_else(|| {
                    CoreError::Internal(StoreError::Corrupt {
                        table: "deliveries",
                        detail: format!("conflicting row for {} vanished", job.sha),
                    })
                })?;
                IngestReport {
                    delivery_id: row.id,
                    event_name: row.event_name,
                    outcome: if row.status == REJECTED {
                        Outcome::Rejected {
                            reason: row.error.unwrap_or_default(),
                        }
                    } else {
                        Outcome::Duplicate
                    },
                }
            }
        });
    }
    let reports = jobs
        .iter()
        .enumerate()
        .map(|(index, job)| {
            let first = first_of[job.sha.as_str()];
            let answer = answers[first].clone().ok_or_else(|| {
                CoreError::Internal(StoreError::Corrupt {
                    table: "deliveries",
                    detail: "a batch answer is missing".into(),
                })
            })?;
            Ok(if first == index {
                answer
            } else {
                // A copy of an earlier body of this batch: the same verdict, nothing changed.
                IngestReport {
                    outcome: match answer.outcome {
                        Outcome::Rejected { reason } => Outcome::Rejected { reason },
                        _ => Outcome::Duplicate,
                    },
                    ..answer
                }
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    Ok((reports, events))
}

/// The inbox row of a delivery, with the verdict known before applying it.
fn delivery_row(job: &Job) -> delivery::ActiveModel {
    let (status, error, event_name, subscription, user_id) = match &job.parsed {
        Ok(delivery) => (
            if delivery.event == ArgyleEvent::Other {
                IGNORED
            } else {
                APPLIED
            },
            None,
            Some(delivery.event_name.clone()),
            delivery.subscription.clone(),
            delivery.event.user().map(|user| user.to_string()),
        ),
        Err(error) => (REJECTED, Some(error.to_string()), None, None, None),
    };
    delivery::ActiveModel {
        body_sha256: Set(job.sha.clone()),
        body: Set(job.body.clone()),
        event_name: Set(event_name),
        subscription: Set(subscription),
        user_id: Set(user_id),
        status: Set(status.to_owned()),
        error: Set(error),
        received_at: Set(job.received_at),
        ..Default::default()
    }
}

/// Appends events to the log in the caller's transaction, under the append lock that makes
/// sequence order equal commit order (see `core::log`).
#[tracing::instrument(name = "append_events", skip_all, fields(count = events.len()))]
pub(super) async fn append_events(
    txn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    events: &[DomainEvent],
) -> Result<usize, CoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let rows = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_string(event).map_err(|error| {
                CoreError::Internal(StoreError::Corrupt {
                    table: "events",
                    detail: format!("event does not serialise: {error}"),
                })
            })?;
            Ok(event::ActiveModel {
                kind: Set(event.kind().to_owned()),
                user_id: Set(event.user().to_string()),
                payload: Set(payload),
                recorded_at: Set(now),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    super::log::lock_for_append(txn).await?;
    event::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(events.len())
}
