//! One error type for every Argyle call, worded for the operator (the `readiness argyle` commands
//! print it as is), and the facts a retry policy needs: is it worth retrying, and after how long
//! Argyle asked us to wait (`Retry-After`). Never holds credentials.

use std::time::{Duration, SystemTime};

/// How an exchange failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection was made (refused, DNS, TLS): the request was certainly not sent.
    Connect,
    /// No complete answer within the time limit: Argyle may have acted on the request.
    Timeout,
    /// The connection failed after the request was sent: Argyle may have acted on it.
    Interrupted,
}

/// An Argyle API failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ArgyleError {
    /// 401 or 403.
    #[error(
        "Argyle refused the credentials ({status}): check READINESS_ARGYLE_API_KEY_ID and READINESS_ARGYLE_API_KEY_SECRET, and that they belong to the chosen environment"
    )]
    Unauthorized { status: u16 },
    /// 404: the id (or the route) is unknown to Argyle.
    #[error("Argyle rejected the request with 404: {body}")]
    NotFound { body: String },
    /// 429, with Argyle's `Retry-After` when it sent a readable one.
    #[error("Argyle is rate limiting these requests (429){}; wait and run the command again", .retry_after.map(|wait| format!(", retry after {} s", wait.as_secs())).unwrap_or_default())]
    RateLimited {
        retry_after: Option<Duration>,
        body: String,
    },
    /// 5xx.
    #[error(
        "Argyle failed with {status} (a problem on their side); run the command again later: {body}"
    )]
    Server { status: u16, body: String },
    /// Any other 4xx (and unexpected 1xx/3xx): our request is wrong; retrying cannot help.
    #[error("Argyle rejected the request with {status}: {body}")]
    Rejected { status: u16, body: String },
    /// No answer: see [`TransportKind`]. `detail` is the cause chain.
    #[error("could not reach Argyle at {url}: {detail}")]
    Transport {
        url: String,
        kind: TransportKind,
        detail: String,
    },
    /// A 2xx whose body is not what the API documents, or a link that leaves the API's origin.
    #[error("unexpected answer from Argyle: {0}")]
    BadAnswer(String),
}

impl ArgyleError {
    /// The HTTP status Argyle answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArgyleError::Unauthorized { status }
            | ArgyleError::Server { status, .. }
            | ArgyleError::Rejected { status, .. } => Some(*status),
            ArgyleError::NotFound { .. } => Some(404),
            ArgyleError::RateLimited { .. } => Some(429),
            ArgyleError::Transport { .. } | ArgyleError::BadAnswer(_) => None,
        }
    }

    /// How long Argyle asked us to wait (429 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ArgyleError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may be sent again. Rate limits, server errors and failed
    /// connections may; other 4xx and malformed answers never do. A request that was sent but
    /// got no answer (timeout, dropped connection) may be sent again only when repeating it
    /// is harmless (`idempotent`: GET, DELETE); a lost answer to a POST must be looked up
    /// instead (see [`ArgyleError::outcome_unknown`]).
    pub fn is_retryable(&self, idempotent: bool) -> bool {
        match self {
            ArgyleError::RateLimited { .. } | ArgyleError::Server { .. } => true,
            ArgyleError::Transport { kind, .. } => match kind {
                TransportKind::Connect => true,
                TransportKind::Timeout | TransportKind::Interrupted => idempotent,
            },
            ArgyleError::Unauthorized { .. }
            | ArgyleError::NotFound { .. }
            | ArgyleError::Rejected { .. }
            | ArgyleError::BadAnswer(_) => false,
        }
    }

    /// True when the request was sent and no answer came back: Argyle may have acted on it.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ArgyleError::Transport {
                kind: TransportKind::Timeout | TransportKind::Interrupted,
                ..
            }
        )
    }
}

/// Reads a `Retry-After` value: delay-seconds (`"7"`) or an HTTP date (any of the three formats
/// of RFC 9110), measured from `now`. A date in the past means "now" (zero). `None` when the
/// value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(kind: TransportKind) -> ArgyleError {
        ArgyleError::Transport {
            url: "https://api-sandbox.argyle.com/v2/reports/voie".into(),
            kind,
            detail: "boom".into(),
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let cases = [
            ("7", Some(7)),
            (" 120 ", Some(120)),
            ("0", Some(0)),
            ("Sun, 06 Nov 1994 08:50:07 GMT", Some(30)),
            ("Sunday, 06-Nov-94 08:50:07 GMT", Some(30)),
            ("Sun Nov  6 08:50:07 1994", Some(30)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(0)),
            ("-3", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn only_rate_limits_server_errors_and_unsent_requests_are_retried() {
        let cases: Vec<(ArgyleError, bool, bool)> = vec![
            // (error, retried when idempotent, retried when not)
            (
                ArgyleError::RateLimited {
                    retry_after: None,
                    body: String::new(),
                },
                true,
                true,
            ),
            (
                ArgyleError::Server {
                    status: 503,
                    body: String::new(),
                },
                true,
                true,
            ),
            (transport(TransportKind::Connect), true, true),
            (transport(TransportKind::Timeout), true, false),
            (transport(TransportKind::Interrupted), true, false),
            (ArgyleError::Unauthorized { status: 401 }, false, false),
            (ArgyleError::Unauthorized { status: 403 }, false, false),
            (
                ArgyleError::NotFound {
                    body: String::new(),
                },
                false,
                false,
            ),
            (
                ArgyleError::Rejected {
                    status: 400,
                    body: String::new(),
                },
                false,
                false,
            ),
            (
                ArgyleError::Rejected {
                    status: 409,
                    body: String::new(),
                },
                false,
                false,
            ),
            (ArgyleError::BadAnswer("x".into()), false, false),
        ];
        for (error, idempotent, not_idempotent) in cases {
            assert_eq!(error.is_retryable(true), idempotent, "{error:?}");
            assert_eq!(error.is_retryable(false), not_idempotent, "{error:?}");
        }
        assert!(transport(TransportKind::Timeout).outcome_unknown());
        assert!(!transport(TransportKind::Connect).outcome_unknown());
    }

    #[test]
    fn the_rate_limit_message_gives_the_wait_in_seconds() {
        let error = ArgyleError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            body: String::new(),
        };
        assert!(error.to_string().contains("retry after 7 s"), "{error}");
        let error = ArgyleError::RateLimited {
            retry_after: None,
            body: String::new(),
        };
        assert!(!error.to_string().contains("retry after"), "{error}");
    }
}
