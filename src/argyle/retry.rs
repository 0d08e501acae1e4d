//! When an Argyle call is tried again: exponential backoff with jitter (the `backon` crate), a
//! bound on attempts and on total time, and Argyle's `Retry-After` honoured up to a cap. Chosen
//! per caller: the operator commands fail fast, background jobs retry.

use std::time::Duration;

use backon::ExponentialBuilder;

use super::ArgyleError;

/// How often and how patiently a failed call is repeated. Which failures qualify is
/// [`ArgyleError::is_retryable`]; this decides how long to wait and when to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 never retries.
    pub max_attempts: usize,
    /// The first backoff delay; each next one doubles, plus up to 100 % random jitter.
    pub min_delay: Duration,
    /// The largest backoff delay before jitter.
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt began
    /// (including the wait before it).
    pub max_elapsed: Duration,
    /// The longest `Retry-After` waited for in-process. Argyle asking for longer ends the
    /// retries at once: the error carries the wait, for a caller that can reschedule.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Fail fast: one attempt (the operator commands, whose operator retries).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::retrying()
        }
    }

    /// The default for background work: up to 6 attempts over at most 2 minutes, delays from
    /// 0.5 s doubling to 30 s with jitter, `Retry-After` honoured up to 60 s.
    pub fn retrying() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// The backoff schedule (delays between attempts).
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1))
    }

    /// The wait before the next attempt after `error`, or `None` to give up. `scheduled` is the
    /// backoff's next delay (`None` once the attempts are spent); `elapsed` is the time since
    /// the first attempt began.
    pub(crate) fn next_delay(
        &self,
        error: &ArgyleError,
        idempotent: bool,
        scheduled: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        if !error.is_retryable(idempotent) {
            return None;
        }
        let mut delay = scheduled?;
        if let Some(asked) = error.retry_after() {
            if asked > self.max_retry_after {
                return None;
            }
            delay = delay.max(asked);
        }
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    fn rate_limited(seconds: u64) -> ArgyleError {
        ArgyleError::RateLimited {
            retry_after: Some(Duration::from_secs(seconds)),
            body: String::new(),
        }
    }

    fn server() -> ArgyleError {
        ArgyleError::Server {
            status: 503,
            body: String::new(),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn fail_fast_schedules_no_retry_and_retrying_schedules_a_growing_jittered_one() {
        assert_eq!(RetryPolicy::none().backoff().build().next(), None);
        let policy = RetryPolicy::retrying();
        let delays: Vec<Duration> = policy.backoff().build().collect();
        assert_eq!(delays.len(), 5, "6 attempts: 5 waits");
        for (n, delay) in delays.iter().enumerate() {
            let base = policy.min_delay * 2u32.pow(n as u32);
            let base = base.min(policy.max_delay);
            assert!(*delay >= base && *delay <= base * 2, "{n}: {delay:?}");
        }
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_never_beyond_the_cap() {
        let policy = RetryPolicy::retrying();
        let soon = Some(Duration::from_millis(500));
        assert_eq!(
            policy.next_delay(&rate_limited(7), false, soon, S(0)),
            Some(S(7))
        );
        assert_eq!(
            policy.next_delay(&rate_limited(0), false, soon, S(0)),
            soon,
            "a shorter Retry-After keeps the backoff"
        );
        assert_eq!(
            policy.next_delay(&rate_limited(61), false, soon, S(0)),
            None,
            "longer than max_retry_after: give up and let the caller reschedule"
        );
    }

    #[test]
    fn attempts_and_total_time_bound_the_retries() {
        let policy = RetryPolicy::retrying();
        assert_eq!(policy.next_delay(&server(), true, None, S(0)), None);
        assert_eq!(
            policy.next_delay(&server(), true, Some(S(10)), S(110)),
            Some(S(10))
        );
        assert_eq!(
            policy.next_delay(&server(), true, Some(S(11)), S(110)),
            None
        );
    }

    #[test]
    fn errors_that_retrying_cannot_fix_stop_at_once() {
        let policy = RetryPolicy::retrying();
        let rejected = ArgyleError::Rejected {
            status: 400,
            body: String::new(),
        };
        assert_eq!(policy.next_delay(&rejected, true, Some(S(1)), S(0)), None);
        let lost = ArgyleError::Transport {
            url: String::new(),
            kind: super::super::TransportKind::Interrupted,
            detail: String::new(),
        };
        assert_eq!(policy.next_delay(&lost, false, Some(S(1)), S(0)), None);
        assert_eq!(policy.next_delay(&lost, true, Some(S(1)), S(0)), Some(S(1)));
    }
}
