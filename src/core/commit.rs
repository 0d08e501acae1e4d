//! Group commit: verified deliveries queue up, and a few committer tasks each take everything
//! waiting (up to a batch limit) and store and apply it in **one** transaction, appending the
//! batch's events under one append lock. Each sender is answered only after that transaction has
//! committed, so a 2xx still means "durably stored". Nothing waits for a batch to fill: a
//! committer takes what is queued the moment it is free, so a lone delivery commits at once and
//! batches grow only when deliveries arrive faster than commits finish.
//!
//! If a batch fails (a lost connection, a deadlock between committers, a bug one delivery
//! triggers), it is rolled back and each of its deliveries is retried in a transaction of its
//! own, so one bad delivery cannot fail the others.
//!
//! Each user's deliveries always go to the same committer (by a hash of the user id), so the
//! committers of one process never contend for a row; on PostgreSQL they run in parallel. Within
//! a batch deliveries are applied in user-id order, so that batches of different replicas take
//! user row locks in one global order. (Two replicas given copies of one body at the same moment
//! can still deadlock on the inbox's unique index; PostgreSQL breaks that after
//! `deadlock_timeout`, and the batch is retried one by one as above.)

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::health::Health;
use super::ingest::{IngestReport, Job};
use super::pipeline::store_batch;
use super::{CoreError, WriteLock};
use crate::store::Store;

/// How ingestion batches deliveries.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Concurrent committer tasks (each with one transaction open at a time). SQLite has one
    /// writer, so it always uses one.
    pub committers: usize,
    /// Most deliveries stored in one transaction.
    pub max_batch: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            committers: 4,
            max_batch: 64,
        }
    }
}

/// Where the deliveries handed to ingestion are at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestBacklog {
    /// Handed to `Core::ingest` and not answered yet.
    pub unanswered: usize,
    /// Of those, still waiting in a committer's queue (the others are in a transaction, or just
    /// being answered).
    pub queued: usize,
}

/// A queued delivery and where its answer goes.
struct Pending {
    job: Job,
    /// The answer, and the log position of the last event its batch appended.
    reply: oneshot::Sender<Result<(IngestReport, Option<i64>), CoreError>>,
}

/// The queues in front of the committers. Cheap to clone; when the last clone is dropped the
/// committers finish what is queued and stop.
#[derive(Clone)]
pub(super) struct Committer {
    queues: Arc<[mpsc::Sender<Pending>]>,
    /// Deliveries submitted and not yet answered (see [`IngestBacklog`]).
    unanswered: Arc<AtomicUsize>,
}

/// Counts a delivery as unanswered for as long as it lives, even if its caller gives up.
struct Unanswered<'a>(&'a AtomicUsize);

impl<'a> Unanswered<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a committer task needs: the store, the SQLite writer lock, health and the report pipeline.
#[derive(Clone)]
pub(super) struct Batches {
    pub(super) store: Store,
    pub(super) write_lock: WriteLock,
    pub(super) health: Arc<Health>,
    pub(super) reports: Arc<super::reports::Pipeline>,
    pub(super) log: Arc<super::log::LogShared>,
    pub(super) max_batch: usize,
}

impl Committer {
    /// Starts `committers` tasks, each draining its own queue.
    pub(super) fn start(batches: Batches, committers: usize) -> Self {
        let max_batch = batches.max_batch.max(1);
        let queues = (0..committers.max(1))
            .map(|_| {
                let (queue, mut receiver) = mpsc::channel::<Pending>(max_batch * 4);
                let batches = batches.clone();
                tokio::spawn(async move {
                    while let Some(batch) = next_batch(&mut receiver, max_batch).await {
                        batches.commit(batch).await;
                    }
                });
                queue
            })
            .collect();
        Self {
            queues,
            unanswered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many deliveries are unanswered, and how many of those are still queued.
    pub(super) fn backlog(&self) -> IngestBacklog {
        IngestBacklog {
            unanswered: self.unanswered.load(Ordering::SeqCst),
            queued: self
                .queues
                .iter()
                .map(|queue| queue.max_capacity() - queue.capacity())
                .sum(),
        }
    }

    /// Queues one delivery and waits until its batch has committed (or failed).
    ///
    /// Every delivery for one user (and every copy of one body) goes to the same committer, so
    /// within a process two transactions never wait for each other's row locks, and cannot
    /// deadlock.
    pub(super) async fn submit(&self, job: Job) -> Result<(IngestReport, Option<i64>), CoreError> {
        let _unanswered = Unanswered::count(&self.unanswered);
        let mut hasher = std::hash::DefaultHasher::new();
        match job.lock_key() {
            Some(user) => user.hash(&mut hasher),
            None => job.sha.hash(&mut hasher),
        }
        let queue = &self.queues[(hasher.finish() % self.queues.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        queue
            .send(Pending { job, reply })
            .await
            .map_err(|_| CoreError::ShuttingDown)?;
        answer.await.map_err(|_| CoreError::ShuttingDown)?
    }
}

/// Waits for one delivery, then takes whatever else is already queued, up to `max`.
async fn next_batch(receiver: &mut mpsc::Receiver<Pending>, max: usize) -> Option<Vec<Pending>> {
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    Some(batch)
}

impl Batches {
    /// Commits one batch and answers each of its senders.
    async fn commit(&self, mut batch: Vec<Pending>) {
        batch.sort_by_key(|pending| pending.job.lock_key());
        metrics::histogram!(crate::metrics::INGEST_BATCH_SIZE).record(batch.len() as f64);
        let (jobs, replies): (Vec<Job>, Vec<_>) = batch
            .into_iter()
            .map(|pending| (pending.job, pending.reply))
            .unzip();
        let _writer = super::hold(&self.write_lock).await;
        match self.store(&jobs).await {
            Ok((reports, last)) => {
                for (reply, report) in replies.into_iter().zip(reports) {
                    let _ = reply.send(Ok((report, last)));
                }
            }
            Err(error) if jobs.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    batch = jobs.len(),
                    "batch failed; retrying its deliveries one by one"
                );
                for (job, reply) in jobs.iter().zip(replies) {
                    let answer = self.store(std::slice::from_ref(job)).await;
                    let _ = reply.send(answer.map(|(mut reports, last)| (reports.remove(0), last)));
                }
            }
        }
    }

    /// One transaction: the batch stored and applied, its events appended, then commit; answered
    /// only if the configured database file is still the one written to (a 503 is safe: the
    /// sender retries, and a delivery stored twice is a duplicate).
    async fn store(&self, jobs: &[Job]) -> Result<(Vec<IngestReport>, Option<i64>), CoreError> {
        self.health.check_file()?;
        let stored = store_batch(&self.store, jobs, &jobs[0].span, &self.reports, &self.log).await;
        self.health
            .record_ingest(stored.as_ref().map(|(reports, _)| reports.as_slice()));
        // Handed to the follower; each sender's `Core::settle` waits for it to apply them.
        let (reports, last) = stored?;
        self.health.check_file()?;
        Ok((reports, last))
    }
}
