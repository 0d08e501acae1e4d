//! The outbound Argyle API client (`/v2/webhooks`, `/v2/reports`, report documents): base URL,
//! HTTP Basic auth, timeouts, typed errors, a retry policy chosen per caller, a span, W3C
//! `traceparent` and metrics per call. The operator commands use it failing fast; background work
//! uses it with retries. [`fake`] is a faithful local stand-in of the same API for tests and
//! development. Not the webhook ingress (that is [`crate::http`]).

mod client;
mod error;
pub mod fake;
mod model;
mod retry;

pub use client::{ArgyleClient, ClientConfig, Document, PRODUCTION_URL, SANDBOX_URL};
pub use error::{ArgyleError, TransportKind, parse_retry_after};
pub use model::{Report, ReportAccount, ReportPage, ReportStatus, Subscription};
pub use retry::RetryPolicy;

/// An Argyle API route, as a low-cardinality name for metrics, spans and the fake's scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ListWebhooks,
    CreateWebhook,
    DeleteWebhook,
    CreateReport,
    GetReport,
    ListReports,
    DeleteReport,
    /// A report's `file_url` or `json_url`, wherever it points.
    Document,
}

impl Endpoint {
    /// The route name used as the `endpoint` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ListWebhooks => "GET /webhooks",
            Endpoint::CreateWebhook => "POST /webhooks",
            Endpoint::DeleteWebhook => "DELETE /webhooks/{id}",
            Endpoint::CreateReport => "POST /reports/{type}",
            Endpoint::GetReport => "GET /reports/{id}",
            Endpoint::ListReports => "GET /reports",
            Endpoint::DeleteReport => "DELETE /reports/{id}",
            Endpoint::Document => "GET document",
        }
    }

    /// The route of an API request, from its method and its path below the base URL's `/v2`
    /// (`/reports/abc`); `None` for anything else.
    pub fn recognise(method: &str, path: &str) -> Option<Endpoint> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match (method, segments.as_slice()) {
            ("GET", ["webhooks"]) => Endpoint::ListWebhooks,
            ("POST", ["webhooks"]) => Endpoint::CreateWebhook,
            ("DELETE", ["webhooks", _]) => Endpoint::DeleteWebhook,
            ("POST", ["reports", _]) => Endpoint::CreateReport,
            ("GET", ["reports"]) => Endpoint::ListReports,
            ("GET", ["reports", _]) => Endpoint::GetReport,
            ("DELETE", ["reports", _]) => Endpoint::DeleteReport,
            ("GET", ["reports", _, "pdf" | "json"]) => Endpoint::Document,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn requests_are_named_by_route_not_by_raw_path() {
        let cases = [
            ("GET", "/webhooks", Some(Endpoint::ListWebhooks)),
            ("DELETE", "/webhooks/abc", Some(Endpoint::DeleteWebhook)),
            ("POST", "/reports/voie", Some(Endpoint::CreateReport)),
            ("GET", "/reports", Some(Endpoint::ListReports)),
            ("GET", "/reports/", Some(Endpoint::ListReports)),
            ("GET", "/reports/abc", Some(Endpoint::GetReport)),
            ("DELETE", "/reports/abc", Some(Endpoint::DeleteReport)),
            ("GET", "/reports/abc/pdf", Some(Endpoint::Document)),
            ("PUT", "/reports/abc", None),
            ("GET", "/users", None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                Endpoint::recognise(method, path),
                expected,
                "{method} {path}"
            );
        }
        assert_eq!(Endpoint::CreateReport.as_str(), "POST /reports/{type}");
    }
}
