//! Admitting TCP connections on both listeners: a cap per listener derived from the descriptor
//! limit (RLIMIT_NOFILE), so `accept` never runs the process out of descriptors, and accept
//! errors handled with a brief back-off and a rate-limited log line instead of a busy loop.
//! Used by the HTTP server loop (`http::serve`) and the gRPC incoming stream (`grpc::incoming`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept back for everything but accepted connections: standard streams, the runtime
/// (epoll, eventfd, signal pipe), the two listening sockets, the PostgreSQL LISTEN connection,
/// log and OTLP sockets, with room to spare.
pub const FIXED_RESERVE: u64 = 64;

/// Descriptors kept back per pooled database connection (a SQLite connection holds the database
/// file and its WAL, plus the shared-memory file; a PostgreSQL connection one socket).
pub const RESERVE_PER_DATABASE_CONNECTION: u64 = 3;

/// Below this many connections per listener the start-up log warns that the limit is too low.
const COMFORTABLE_CAP: usize = 64;

/// The fewest connections a listener is allowed, whatever the limit says.
const MIN_CAP: usize = 8;

/// How many connections each listener may hold open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// The soft RLIMIT_NOFILE read at start-up (`None`: unlimited or unknown).
    pub descriptor_limit: Option<u64>,
    /// Open HTTP connections at most.
    pub http: usize,
    /// Open gRPC connections at most.
    pub grpc: usize,
}

impl ConnectionCaps {
    /// Splits what the descriptor limit leaves after the reserve evenly between the listeners:
    /// `(limit - 64 - 3 × database_max_connections) / 2` each, at least 8.
    pub fn from_limit(descriptor_limit: Option<u64>, database_max_connections: u32) -> Self {
        let reserve =
            FIXED_RESERVE + RESERVE_PER_DATABASE_CONNECTION * u64::from(database_max_connections);
        let per_listener = match descriptor_limit {
            Some(limit) => {
                let share = limit.saturating_sub(reserve) / 2;
                usize::try_from(share)
                    .unwrap_or(usize::MAX)
                    .clamp(MIN_CAP, Semaphore::MAX_PERMITS)
            }
            None => Semaphore::MAX_PERMITS,
        };
        Self {
            descriptor_limit,
            http: per_listener,
            grpc: per_listener,
        }
    }

    /// The caps for this process's current descriptor limit.
    pub fn for_this_process(database_max_connections: u32) -> Self {
        Self::from_limit(descriptor_limit(), database_max_connections)
    }

    /// True when the limit leaves so few connections that it should be raised.
    pub fn too_low(&self) -> bool {
        self.http.min(self.grpc) < COMFORTABLE_CAP
    }
}

/// The soft limit on open descriptors (`None` when unlimited or not known on this platform).
#[cfg(unix)]
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The soft limit on open descriptors (`None` when unlimited or not known on this platform).
#[cfg(not(unix))]
pub fn descriptor_limit() -> Option<u64> {
    None
}

/// A listener that hands out at most `cap` connections at a time: while the cap is reached it
/// stops accepting, so further clients wait in the kernel's listen backlog until a connection
/// closes.
pub struct Admission {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    name: &'static str,
    errors: ErrorLog,
}

/// One admitted connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    /// `name` labels log lines (`"HTTP"`, `"gRPC"`).
    pub fn new(listener: TcpListener, cap: usize, name: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(cap)),
            name,
            errors: ErrorLog::default(),
        }
    }

    /// Waits for a free place, then for a connection (with `TCP_NODELAY` set: small answers go
    /// out at once rather than waiting on Nagle's algorithm and the peer's delayed ACK). Errors
    /// that concern one connection are skipped; others (out of descriptors, memory or buffers)
    /// are logged at most every few seconds and retried after a growing pause of up to 1 s.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the admission semaphore is never closed");
        let mut pause = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, Slot(permit));
                }
                Err(error) if concerns_one_connection(&error) => continue,
                Err(error) => {
                    self.errors.record(self.name, &error);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Errors about a connection that was already gone when it was accepted.
fn concerns_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    )
}

/// How often a persisting accept error is logged.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Logs accept errors at most once per [`ERROR_LOG_INTERVAL`], with the number left out.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn record(&mut self, listener: &str, error: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::error!(
            listener,
            %error,
            unlogged_since_last = self.suppressed,
            "accept failed; backing off (logged at most every 5 s)"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_gets_half_of_what_the_reserve_leaves() {
        let caps = ConnectionCaps::from_limit(Some(1024), 10);
        assert_eq!((caps.http, caps.grpc), (465, 465));
        let caps = ConnectionCaps::from_limit(Some(300), 10);
        assert_eq!((caps.http, caps.grpc), (103, 103));
        assert!(!caps.too_low());
    }

    #[test]
    fn a_tiny_limit_still_leaves_a_few_connections_and_is_reported() {
        let caps = ConnectionCaps::from_limit(Some(50), 10);
        assert_eq!((caps.http, caps.grpc), (MIN_CAP, MIN_CAP));
        assert!(caps.too_low());
    }

    #[test]
    fn no_limit_means_no_cap_beyond_the_semaphore_maximum() {
        let caps = ConnectionCaps::from_limit(None, 10);
        assert_eq!(caps.http, Semaphore::MAX_PERMITS);
    }
}
