//! The per-source in-flight cap: one client address (the address the allow-list judges, so a
//! trusted proxy's client header counts) may hold at most `cap` requests at once. Beyond it its
//! requests are shed with 503 `overloaded` and `Retry-After`, as the global limit sheds, so one
//! address cannot take every slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, SourcePolicy};

/// Requests in flight per client address.
pub struct PerSource {
    policy: Arc<SourcePolicy>,
    cap: usize,
    /// Only addresses with a request in flight have an entry.
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    pub fn new(policy: Arc<SourcePolicy>, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            policy,
            cap,
            in_flight: Mutex::default(),
        })
    }

    fn try_hold(self: &Arc<Self>, client: IpAddr) -> Option<Held> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = in_flight.entry(client).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Held {
            limiter: self.clone(),
            client,
        })
    }
}

/// One request's place under its source's cap; dropping it frees the place.
struct Held {
    limiter: Arc<PerSource>,
    client: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut in_flight = self
            .limiter
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.client);
            }
        }
    }
}

/// Middleware: runs the request while its source is under the cap, else sheds it.
pub async fn limit(
    State(limiter): State<Arc<PerSource>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = limiter.policy.client(peer.ip(), request.headers());
    let Some(held) = limiter.try_hold(client) else {
        metrics::counter!(crate::metrics::HTTP_SHED, "reason" => "source_limit").increment(1);
        return ApiError::Overloaded.into_response();
    };
    let response = next.run(request).await;
    drop(held);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_cap_and_a_released_place_can_be_taken_again() {
        let limiter = PerSource::new(Arc::new(SourcePolicy::default()), 2);
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        let first = limiter.try_hold(a).expect("first");
        let _second = limiter.try_hold(a).expect("second");
        assert!(limiter.try_hold(a).is_none(), "third from the same source");
        assert!(
            limiter.try_hold(b).is_some(),
            "another source is not affected"
        );
        drop(first);
        assert!(limiter.try_hold(a).is_some(), "a freed place is reusable");
    }

    #[test]
    fn sources_without_requests_in_flight_leave_no_entry() {
        let limiter = PerSource::new(Arc::new(SourcePolicy::default()), 1);
        drop(limiter.try_hold(IpAddr::from([10, 0, 0, 1])));
        assert!(limiter.in_flight.lock().expect("not poisoned").is_empty());
    }
}
