//! One group commit, as a straight pipeline in one transaction: dedupe the batch's bodies, keep
//! them in the inbox, load (and lock) the users they touch, apply each event to its user
//! aggregate in arrival order, write back what changed, append the domain events, commit, and
//! answer each sender. A failure anywhere rolls back everything, and no sender has an answer
//! before the commit.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::CoreError;
use super::ingest::{IngestReport, Job, Outcome};
use super::log::LogShared;
use super::reports::Pipeline;
use crate::domain::argyle::ArgyleEvent;
use crate::domain::events::{DomainEvent, LoggedEvent};
use crate::domain::user::{self, DeliveryRef, User};
use crate::domain::{DeliveryStatus, time};
use crate::store::{Batch, Inboxed, NewDelivery, Store, Wanted};

/// One new delivery to apply, with the inbox row that holds it.
pub(super) struct Input<'a> {
    pub(super) delivery_id: i64,
    pub(super) event: &'a ArgyleEvent,
    /// The delivery's fact key (its content without the subscription name): the identity of
    /// facts without an id of their own.
    pub(super) content_key: &'a str,
}

/// What applying a list of inputs did.
pub(super) struct Applied {
    /// One per input, in order: `Applied` or `Rejected` (a conflict).
    pub(super) outcomes: Vec<Outcome>,
    /// The domain events to append before commit.
    pub(super) events: Vec<DomainEvent>,
    /// Jobs written (the report pipeline's outbox): workers are woken after commit.
    pub(super) jobs: usize,
}

/// Stores a batch of deliveries in one transaction and answers each, in job order. Returns the
/// answers and the log position of the last event appended, if any (handed to `log`'s
/// follower). The work is traced under `parent` (the first delivery's `ingest` span) as `apply`
/// and `commit`.
pub(super) async fn store_batch(
    store: &Store,
    jobs: &[Job],
    parent: &tracing::Span,
    reports: &Pipeline,
    log: &LogShared,
) -> Result<(Vec<IngestReport>, Option<i64>), CoreError> {
    let at = time::now();
    let (distinct_of, firsts) = distinct_bodies(jobs);

    let batch = store.begin_batch().await?;
    let apply_span = tracing::info_span!(parent: parent, "apply", batch = jobs.len());
    let (inboxed, inputs, applied) = async {
        let rows: Vec<NewDelivery<'_>> = firsts.iter().map(|&i| inbox_row(&jobs[i], at)).collect();
        let inboxed = batch.insert_deliveries(&rows).await?;
        let inputs: Vec<Input<'_>> = firsts
            .iter()
            .zip(&inboxed)
            .filter_map(|(&i, inboxed)| match (inboxed, &jobs[i].parsed) {
                (Inboxed::New { id }, Ok(delivery)) if delivery.event != ArgyleEvent::Other => {
                    Some(Input {
                        delivery_id: *id,
                        event: &delivery.event,
                        content_key: &delivery.fact_key,
                    })
                }
                _ => None,
            })
            .collect();
        let applied = apply(&batch, at, &inputs, reports).await?;
        Ok::<_, CoreError>((inboxed, inputs, applied))
    }
    .instrument(apply_span)
    .await?;
    let commit_span = tracing::info_span!(parent: parent, "commit", batch = jobs.len());
    let last = commit(batch, applied.events, at, log)
        .instrument(commit_span)
        .await?;
    if applied.jobs > 0 {
        reports.wake.notify_one();
    }

    let mut outcomes: HashMap<i64, Outcome> = inputs
        .iter()
        .map(|input| input.delivery_id)
        .zip(applied.outcomes)
        .collect();
    let answers: Vec<IngestReport> = firsts
        .iter()
        .zip(inboxed)
        .map(|(&i, inboxed)| answer(&jobs[i], inboxed, &mut outcomes))
        .collect();
    let reports = jobs
        .iter()
        .enumerate()
        .map(|(index, job)| {
            let distinct = distinct_of[job.sha.as_str()];
            let answer = answers[distinct].clone();
            if firsts[distinct] == index {
                answer
            } else {
                copy_of(answer)
            }
        })
        .collect();
    Ok((reports, last))
}

/// One inbox row per distinct body: each body's index among the distinct ones, and the job
/// index of each distinct body's first copy (later copies get the first one's verdict).
fn distinct_bodies(jobs: &[Job]) -> (HashMap<&str, usize>, Vec<usize>) {
    let mut distinct_of: HashMap<&str, usize> = HashMap::new();
    let mut firsts: Vec<usize> = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        distinct_of.entry(job.sha.as_str()).or_insert_with(|| {
            firsts.push(index);
            firsts.len() - 1
        });
    }
    (distinct_of, firsts)
}

/// Appends `events` (under the log's append lock), commits, and hands them as logged to this
/// process's log follower (`LogShared::hand_over`); returns the position of the last one, if any.
pub(super) async fn commit(
    batch: Batch,
    events: Vec<DomainEvent>,
    at: DateTime<Utc>,
    log: &LogShared,
) -> Result<Option<i64>, CoreError> {
    let span = tracing::info_span!("append_events", count = events.len());
    let positions = batch.append(&events, at).instrument(span).await?;
    batch.commit().await?;
    let logged = positions
        .into_iter()
        .zip(events)
        .map(|(seq, event)| LoggedEvent {
            seq,
            recorded_at: at,
            event,
        })
        .collect();
    Ok(log.hand_over(logged))
}

/// The answer to the first copy of a body in its batch.
fn answer(job: &Job, inboxed: Inboxed, applied: &mut HashMap<i64, Outcome>) -> IngestReport {
    match inboxed {
        Inboxed::New { id } => IngestReport {
            delivery_id: id,
            event_name: job.parsed.as_ref().ok().map(|d| d.event_name.clone()),
            outcome: match &job.parsed {
                Err(error) => Outcome::Rejected {
                    reason: error.to_string(),
                },
                Ok(_) => applied.remove(&id).unwrap_or(Outcome::Ignored),
            },
        },
        Inboxed::Seen {
            id,
            event_name,
            status,
            error,
        } => IngestReport {
            delivery_id: id,
            event_name,
            outcome: match status {
                DeliveryStatus::Rejected => Outcome::Rejected {
                    reason: error.unwrap_or_default(),
                },
                DeliveryStatus::Applied | DeliveryStatus::Ignored => Outcome::Duplicate,
            },
        },
    }
}

/// The answer to a later copy of a body in the same batch: the same verdict, nothing changed.
fn copy_of(first: IngestReport) -> IngestReport {
    IngestReport {
        outcome: match first.outcome {
            Outcome::Rejected { reason } => Outcome::Rejected { reason },
            _ => Outcome::Duplicate,
        },
        ..first
    }
}

/// Loads what `inputs` touch, applies each to its user in order and writes back what changed,
/// all in `batch`; the caller appends the events it returns. Shared by ingest and inbox replay.
pub(super) async fn apply(
    batch: &Batch,
    at: DateTime<Utc>,
    inputs: &[Input<'_>],
    reports: &Pipeline,
) -> Result<Applied, CoreError> {
    let mut loaded = batch
        .load(&wanted(inputs, reports.requests_since(at)))
        .await?;
    let mut outcomes = Vec::with_capacity(inputs.len());
    let (mut events, mut jobs) = (Vec::new(), Vec::new());
    for input in inputs {
        let Some(owner) = input.event.user() else {
            outcomes.push(Outcome::Ignored);
            continue;
        };
        let delivery = DeliveryRef {
            id: input.delivery_id,
            content_key: input.content_key,
            at,
        };
        let user = loaded
            .users
            .entry(owner)
            .or_insert_with(|| User::new(owner, at));
        match user.apply(input.event, &delivery, &mut loaded.owners) {
            Ok(caused) => {
                let (requested, follow_up) = reports.follow(user, &caused, at);
                outcomes.push(Outcome::Applied {
                    events: caused.len() + requested.len(),
                });
                events.extend(caused);
                events.extend(requested);
                jobs.extend(follow_up);
            }
            Err(conflict) => {
                let reason = conflict.to_string();
                batch.reject(input.delivery_id, &reason).await?;
                outcomes.push(Outcome::Rejected { reason });
            }
        }
    }
    // Every change to what a query answers is in the log (the read models follow it).
    let internal = DomainEvent::uncovered_changes(&events, loaded.users.values());
    events.extend(internal);
    batch.save(loaded.users.values()).await?;
    batch.enqueue(&jobs).await?;
    Ok(Applied {
        outcomes,
        events,
        jobs: jobs.len(),
    })
}

/// What applying `inputs` needs loaded: their users, the accounts and reports they name, and
/// each user's report requests since `requests_since` (the daily cap), if any.
fn wanted(inputs: &[Input<'_>], requests_since: Option<DateTime<Utc>>) -> Wanted {
    let mut wanted = Wanted {
        requests_since,
        ..Wanted::default()
    };
    for input in inputs {
        let Some(owner) = input.event.user() else {
            continue;
        };
        wanted.users.insert(owner);
        wanted.accounts.extend(user::accounts_named(input.event));
        if let Some(report) = user::report_named(input.event, input.content_key) {
            wanted.reports.insert(report, owner);
            wanted.report_deliveries.insert(input.delivery_id, owner);
        }
        if let ArgyleEvent::ReportGenerated {
            argyle_report_id: Some(id),
            ..
        } = input.event
        {
            wanted.argyle_reports.insert(id.clone(), owner);
        }
    }
    wanted
}

/// The inbox row of a delivery, with the verdict known before applying it.
fn inbox_row(job: &Job, at: DateTime<Utc>) -> NewDelivery<'_> {
    let (status, error, event_name, subscription, user) = match &job.parsed {
        Ok(delivery) => (
            if delivery.event == ArgyleEvent::Other {
                DeliveryStatus::Ignored
            } else {
                DeliveryStatus::Applied
            },
            None,
            Some(delivery.event_name.as_str()),
            delivery.subscription.as_deref(),
            delivery.event.user(),
        ),
        Err(error) => (
            DeliveryStatus::Rejected,
            Some(error.to_string()),
            None,
            None,
            None,
        ),
    };
    NewDelivery {
        body_sha256: &job.sha,
        body: &job.body,
        event_name,
        subscription,
        user,
        status,
        error,
        received_at: at,
    }
}
