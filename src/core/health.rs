//! Whether the database can be used: it answers, it takes writes, and it is still the file
//! that was opened. Readiness (`/readyz`, gRPC health) asks [`Core::ready`]; ingestion reports
//! each write here. After a write fails with a storage error (disk full, I/O error, read-only)
//! the service stays not ready until a write succeeds again: a delivery, or a probe (one row
//! updated) made at most every [`PROBE_INTERVAL`]. A SQLite file deleted or replaced while
//! running is final: every use case is refused until restart, and it is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ingest::{IngestReport, Outcome};
use super::{Core, CoreError};
use crate::domain::{ReadinessState, time};
use crate::store::DatabaseFile;

/// Least time between two probe writes while the database refuses writes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How often the health gauges (`readiness_ready`, the oldest PENDING user) are refreshed:
/// one readiness check and one indexed query per interval, however often `/metrics` is scraped.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the service should not take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The SQLite file was deleted or replaced while the service ran; until restart.
    FileChanged,
    /// The database does not answer.
    Unreachable,
    /// A write failed with a storage error, and none has succeeded since.
    RefusesWrites,
}

impl NotReady {
    /// A short reason, for probes and logs.
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::FileChanged => "database file deleted or replaced",
            NotReady::Unreachable => "database unreachable",
            NotReady::RefusesWrites => "database refuses writes",
        }
    }
}

/// What the core knows about the database beyond "it answers".
pub(super) struct Health {
    /// The SQLite file the pool opened (`None` on PostgreSQL).
    file: Option<DatabaseFile>,
    /// Set once the file is found deleted or replaced; never cleared.
    file_changed: AtomicBool,
    writes: Mutex<Writes>,
    /// Held by the one probe in progress.
    probing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Writes {
    /// Set by a write that failed with a storage error, cleared by one that succeeded.
    refused: bool,
    /// When a write or probe last failed: the next probe waits [`PROBE_INTERVAL`] after it.
    last_failure: Option<Instant>,
}

impl Health {
    pub(super) fn new(file: Option<DatabaseFile>) -> Self {
        Self {
            file,
            file_changed: AtomicBool::new(false),
            writes: Mutex::new(Writes::default()),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    fn writes(&self) -> MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ok while the configured database file is the one opened (a `stat`, no I/O on the
    /// database). The first time it is not, says so in one error log line.
    pub(super) fn check_file(&self) -> Result<(), CoreError> {
        if self.file_changed.load(Ordering::Acquire) {
            return Err(CoreError::DatabaseFileChanged);
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let Err(change) = file.check() else {
            return Ok(());
        };
        if !self.file_changed.swap(true, Ordering::AcqRel) {
            let open_file = file
                .open_descriptor()
                .map_or_else(|| "-".to_owned(), |path| path.display().to_string());
            tracing::error!(
                %change,
                %open_file,
                "the database file changed underneath the service: every request is now refused \
                 (503, UNAVAILABLE, not ready) until the service is restarted on the right file. \
                 Deliveries acknowledged before this are in the file the service has open; if it \
                 was removed by mistake, copy it from open_file (with the -wal file next to the \
                 configured path) before stopping the service"
            );
        }
        Err(CoreError::DatabaseFileChanged)
    }

    /// Takes note of an ingest transaction's outcome. Only a transaction that stored a row counts
    /// as a successful write (a batch of duplicates writes nothing).
    pub(super) fn record_ingest(&self, outcome: Result<&[IngestReport], &CoreError>) {
        match outcome {
            Ok(reports) if reports.iter().any(|r| r.outcome != Outcome::Duplicate) => {
                self.write_succeeded();
            }
            Ok(_) => {}
            Err(error) => self.write_failed(error),
        }
    }

    fn write_succeeded(&self) {
        let mut writes = self.writes();
        if writes.refused {
            writes.refused = false;
            tracing::warn!("the database takes writes again: ready");
        }
    }

    fn write_failed(&self, error: &CoreError) {
        let CoreError::Unavailable(cause) = error else {
            return;
        };
        if !cause.is_storage_error() {
            return;
        }
        let mut writes = self.writes();
        if !writes.refused {
            tracing::error!(
                error = %crate::telemetry::error_chain(cause),
                "the database refuses writes: not ready until a write succeeds (probed every {} s)",
                PROBE_INTERVAL.as_secs()
            );
        }
        writes.refused = true;
        writes.last_failure = Some(Instant::now());
    }
}

impl Core {
    /// Starts the task that keeps the health gauges current until shutdown. Each refresh is
    /// bounded by the interval, so a hung database leaves the replica counted as not ready.
    pub(super) fn start_health_gauges(&self) {
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                let ready = matches!(
                    tokio::time::timeout(GAUGE_INTERVAL, core.ready()).await,
                    Ok(Ok(()))
                );
                metrics::gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
                let pending = core.store.oldest_in_state(ReadinessState::Pending);
                if let Ok(Ok(oldest)) = tokio::time::timeout(GAUGE_INTERVAL, pending).await {
                    let age = oldest.map_or(0.0, |since| {
                        (time::now() - since).num_milliseconds().max(0) as f64 / 1000.0
                    });
                    metrics::gauge!(crate::metrics::OLDEST_PENDING_USER_SECONDS).set(age);
                }
                tokio::select! {
                    _ = core.log.stopping() => {
                        metrics::gauge!(crate::metrics::READY).set(0.0);
                        return;
                    }
                    _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
                }
            }
        });
    }

    /// Whether to take traffic: the database file is the one opened, the database answers, and
    /// it takes writes. While it refuses writes, a caller finding the last failure at least
    /// [`PROBE_INTERVAL`] old makes one tiny write to find out whether that has changed.
    pub async fn ready(&self) -> Result<(), NotReady> {
        if self.health.check_file().is_err() {
            return Err(NotReady::FileChanged);
        }
        if !self.store.ping().await {
            return Err(NotReady::Unreachable);
        }
        let due = {
            let writes = self.health.writes();
            if !writes.refused {
                return Ok(());
            }
            writes
                .last_failure
                .is_none_or(|at| at.elapsed() >= PROBE_INTERVAL)
        };
        if due {
            self.probe_writes().await;
        }
        if self.health.writes().refused {
            Err(NotReady::RefusesWrites)
        } else {
            Ok(())
        }
    }

    /// One probe write, unless one is already running or a delivery is being written (its
    /// outcome will tell).
    async fn probe_writes(&self) {
        let Ok(_probing) = self.health.probing.try_lock() else {
            return;
        };
        let _writer = match &self.write_lock {
            Some(lock) => match lock.try_lock() {
                Ok(writer) => Some(writer),
                Err(_) => return,
            },
            None => None,
        };
        match self.store.probe_write().await {
            Ok(()) => self.health.write_succeeded(),
            Err(error) => {
                tracing::debug!(%error, "write probe failed");
                let error = CoreError::from(error);
                self.health.write_failed(&error);
                // Whatever the cause, wait a full interval before the next probe.
                self.health.writes().last_failure = Some(Instant::now());
            }
        }
    }
}
