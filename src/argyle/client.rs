//! [`ArgyleClient`]: every outbound call to Argyle goes through one exchange that adds the
//! credentials (only towards the API's own origin), a `traceparent`, a span, metrics and the
//! time limits, and turns every failure into an [`ArgyleError`]; retries wrap whole exchanges.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use backon::Retryable;
use bytes::Bytes;
use opentelemetry::propagation::Injector;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_stream::{Stream, StreamExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::model::Page;
use super::{
    ArgyleError, Endpoint, Report, ReportPage, RetryPolicy, Subscription, TransportKind,
    parse_retry_after,
};
use crate::domain::signature::Secret;
use crate::domain::{ReportType, UserId};
use crate::metrics;

/// Argyle's sandbox API (the default).
pub const SANDBOX_URL: &str = "https://api-sandbox.argyle.com/v2";
/// Argyle's production API.
pub const PRODUCTION_URL: &str = "https://api.argyle.com/v2";

/// Most characters of an error answer's body kept in an [`ArgyleError`].
const MAX_ERROR_BODY: usize = 300;
/// Most pages one listing follows (a guard against a `next` link that loops).
const MAX_PAGES: usize = 1000;

/// Where and how to reach Argyle.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The API base URL, `/v2` included ([`SANDBOX_URL`], [`PRODUCTION_URL`], or a proxy/fake).
    pub base_url: String,
    /// HTTP Basic user name (`api_key_id`).
    pub key_id: Secret,
    /// HTTP Basic password (`api_key_secret`).
    pub key_secret: Secret,
    /// Longest wait for a TCP + TLS connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest wait for a whole API answer, and for a document's headers and each of its
    /// chunks. Default 30 s.
    pub timeout: Duration,
    /// The `User-Agent` header. Default `readiness/<version>`.
    pub user_agent: String,
}

impl ClientConfig {
    /// A configuration with the default time limits and user agent.
    pub fn new(base_url: impl Into<String>, key_id: Secret, key_secret: Secret) -> Self {
        Self {
            base_url: base_url.into(),
            key_id,
            key_secret,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            user_agent: concat!("readiness/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The Argyle API. Cheap to clone; clones share connections. Its `Debug` shows no credential.
#[derive(Clone)]
pub struct ArgyleClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    /// Without a trailing slash.
    base: Url,
    key_id: Secret,
    key_secret: Secret,
    timeout: Duration,
}

impl fmt::Debug for ArgyleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArgyleClient")
            .field("base", &self.inner.base.as_str())
            .field("key_id", &self.inner.key_id)
            .field("key_secret", &self.inner.key_secret)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// How long an exchange may take.
#[derive(Clone, Copy)]
enum Limit {
    /// The whole answer, body included, within the timeout (API calls).
    Whole,
    /// The headers within the timeout; the body then streams with a per-chunk limit.
    Headers,
}

impl ArgyleClient {
    /// A client that fails fast ([`RetryPolicy::none`]); see [`ArgyleClient::with_retry`].
    pub fn new(config: ClientConfig) -> anyhow::Result<Self> {
        let base = parse_base(&config.base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout)
            .user_agent(&config.user_agent)
            // Argyle's document URLs redirect. reqwest drops `Authorization` when a redirect
            // leaves the origin (scheme, host or port), so the credentials stay with Argyle.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                key_id: config.key_id,
                key_secret: config.key_secret,
                timeout: config.timeout,
            }),
            retry: RetryPolicy::none(),
        })
    }

    /// The same client with another retry policy (the connections stay shared).
    pub fn with_retry(&self, retry: RetryPolicy) -> Self {
        Self {
            inner: self.inner.clone(),
            retry,
        }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// Every webhook subscription, following `next` links.
    pub async fn list_webhooks(&self) -> Result<Vec<Subscription>, ArgyleError> {
        self.walk(Endpoint::ListWebhooks, self.url(&["webhooks"]))
            .await
    }

    /// `POST /webhooks` with `body` (`events`, `name`, `url`, `secret`, `config`).
    pub async fn create_webhook(&self, body: &Value) -> Result<Subscription, ArgyleError> {
        let url = self.url(&["webhooks"]);
        self.call_json(Endpoint::CreateWebhook, Method::POST, url, Some(body))
            .await
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<(), ArgyleError> {
        self.delete(Endpoint::DeleteWebhook, &["webhooks", id])
            .await
    }

    /// `POST /reports/{type}`: asks Argyle to generate a report (status `generating` or
    /// `waiting_for_sync`). Argyle documents no idempotency key: a POST whose answer was lost
    /// is not repeated ([`ArgyleError::outcome_unknown`]); put an id of your own in `metadata`
    /// and look for it with [`ArgyleClient::list_reports`] before asking again.
    pub async fn create_report(
        &self,
        report_type: &ReportType,
        user: &UserId,
        metadata: Value,
    ) -> Result<Report, ArgyleError> {
        let url = self.url(&["reports", report_type.as_str()]);
        let body = json!({"user": user, "metadata": metadata});
        self.call_json(Endpoint::CreateReport, Method::POST, url, Some(&body))
            .await
    }

    /// `GET /reports/{id}`; [`ArgyleError::NotFound`] for an unknown id.
    pub async fn get_report(&self, id: &str) -> Result<Report, ArgyleError> {
        let url = self.url(&["reports", id]);
        self.call_json(Endpoint::GetReport, Method::GET, url, None)
            .await
    }

    /// One page of a user's reports, newest first; `cursor` from [`ReportPage::next_cursor`].
    pub async fn list_reports(
        &self,
        user: &UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ReportPage, ArgyleError> {
        let url = self.reports_url(user, limit, cursor);
        let page: Page<Report> = self
            .call_json(Endpoint::ListReports, Method::GET, url, None)
            .await?;
        Ok(ReportPage {
            results: page.results,
            next: page.next.filter(|next| !next.is_empty()),
        })
    }

    /// Every report of a user, newest first, following `next` links (`limit` per page).
    pub async fn list_all_reports(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<Report>, ArgyleError> {
        self.walk(Endpoint::ListReports, self.reports_url(user, limit, None))
            .await
    }

    /// `DELETE /reports/{id}` (frees a slot of the daily cap if generated in the last 24 h).
    pub async fn delete_report(&self, id: &str) -> Result<(), ArgyleError> {
        self.delete(Endpoint::DeleteReport, &["reports", id]).await
    }

    async fn delete(&self, endpoint: Endpoint, path: &[&str]) -> Result<(), ArgyleError> {
        let url = self.url(path);
        self.call(endpoint, Method::DELETE, url, None)
            .await
            .map(drop)
    }

    /// Opens a report's `file_url` or `json_url`, following redirects, and returns its
    /// content type and a stream of its bytes (nothing is buffered). The credentials are sent
    /// only to the API's own origin, never to the host a redirect leads to, nor to a URL on
    /// another origin. Retried (per the policy) until the headers arrive, not mid-stream.
    pub async fn download(&self, url: &str) -> Result<Document, ArgyleError> {
        let url = Url::parse(url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| ArgyleError::BadAnswer(format!("not a document URL: {url:?}")))?;
        let response = self
            .with_retries(Endpoint::Document, true, || {
                self.exchange(Endpoint::Document, &Method::GET, &url, None, Limit::Headers)
            })
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok(Document {
            content_type,
            content_length: response.content_length(),
            url,
            response,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("the base URL is http(s)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn reports_url(&self, user: &UserId, limit: u32, cursor: Option<&str>) -> Url {
        let mut url = self.url(&["reports"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("user", &user.to_string())
                .append_pair("limit", &limit.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        url
    }

    /// Follows `next` links from `first`, collecting every page's results. A link to another
    /// origin is refused: the credentials would go with it.
    async fn walk<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        first: Url,
    ) -> Result<Vec<T>, ArgyleError> {
        let mut url = first;
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self.call_json(endpoint, Method::GET, url, None).await?;
            all.extend(page.results);
            match page.next.filter(|next| !next.is_empty()) {
                None => return Ok(all),
                Some(next) => {
                    url = Url::parse(&next)
                        .ok()
                        .filter(|next| self.same_origin(next))
                        .ok_or_else(|| {
                            ArgyleError::BadAnswer(format!(
                                "the next page {next:?} is not on {}",
                                self.base_url()
                            ))
                        })?;
                }
            }
        }
        Err(ArgyleError::BadAnswer(format!(
            "more than {MAX_PAGES} pages from {}",
            endpoint.as_str()
        )))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.base.origin()
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<T, ArgyleError> {
        let bytes = self.call(endpoint, method, url, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|error| ArgyleError::BadAnswer(format!("{}: {error}", endpoint.as_str())))
    }

    /// One API call with the client's retry policy: the whole answer's body, or the error.
    async fn call(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Bytes, ArgyleError> {
        let idempotent = method != Method::POST;
        self.with_retries(endpoint, idempotent, || async {
            let response = self
                .exchange(endpoint, &method, &url, body, Limit::Whole)
                .await?;
            response
                .bytes()
                .await
                .map_err(|error| transport_error(&url, &error))
        })
        .await
    }

    async fn with_retries<T, Fut>(
        &self,
        endpoint: Endpoint,
        idempotent: bool,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, ArgyleError>
    where
        Fut: Future<Output = Result<T, ArgyleError>>,
    {
        let started = Instant::now();
        let policy = &self.retry;
        attempt
            .retry(policy.backoff())
            .adjust(|error, scheduled| {
                policy.next_delay(error, idempotent, scheduled, started.elapsed())
            })
            .notify(|error, wait| {
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    %error,
                    "Argyle call failed; retrying"
                );
            })
            .await
    }

    /// One HTTP exchange: a span, `traceparent`, credentials for the API's origin, the time
    /// limit, metrics; a non-2xx answer becomes its error.
    async fn exchange(
        &self,
        endpoint: Endpoint,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        limit: Limit,
    ) -> Result<reqwest::Response, ArgyleError> {
        let span = tracing::info_span!(
            "argyle_call",
            otel.kind = "client",
            http.request.method = %method,
            url.path = url.path(),
            http.response.status_code = tracing::field::Empty,
            endpoint = endpoint.as_str(),
        );
        let started = Instant::now();
        let result = self
            .send(method, url, body, limit, &span)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(response) => Some(response.status().as_u16()),
            Err(error) => error.status(),
        };
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        let label = status.map_or_else(|| "error".to_owned(), |status| status.to_string());
        ::metrics::counter!(metrics::ARGYLE_CALLS, "endpoint" => endpoint.as_str(), "status" => label)
            .increment(1);
        ::metrics::histogram!(metrics::ARGYLE_CALL_SECONDS, "endpoint" => endpoint.as_str())
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        limit: Limit,
        span: &tracing::Span,
    ) -> Result<reqwest::Response, ArgyleError> {
        let mut request = self.inner.http.request(method.clone(), url.clone());
        if self.same_origin(url) {
            request = request.basic_auth(
                self.inner.key_id.expose(),
                Some(self.inner.key_secret.expose()),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in trace_headers(span) {
            request = request.header(name, value);
        }
        let response = match limit {
            Limit::Whole => request.timeout(self.inner.timeout).send().await,
            Limit::Headers => tokio::time::timeout(self.inner.timeout, request.send())
                .await
                .map_err(|_| ArgyleError::Transport {
                    url: url.to_string(),
                    kind: TransportKind::Timeout,
                    detail: format!("no answer within {:?}", self.inner.timeout),
                })?,
        }
        .map_err(|error| transport_error(url, &error))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }
}

/// A document being downloaded: its content type, then its bytes as they arrive.
#[derive(Debug)]
pub struct Document {
    /// From the final answer's `Content-Type` (`application/octet-stream` when absent).
    pub content_type: String,
    /// The size, when the answer announced it.
    pub content_length: Option<u64>,
    url: Url,
    response: reqwest::Response,
}

impl Document {
    /// The next chunk of bytes; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ArgyleError> {
        self.response
            .chunk()
            .await
            .map_err(|error| transport_error(&self.url, &error))
    }

    /// The rest of the document as a stream of chunks (for a gRPC server stream).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ArgyleError>> + Send + 'static {
        let url = self.url;
        self.response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|error| transport_error(&url, &error)))
    }
}

fn parse_base(base: &str) -> anyhow::Result<Url> {
    let url = Url::parse(base.trim_end_matches('/'))
        .with_context(|| format!("the Argyle base URL {base:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.has_host(),
        "the Argyle base URL {base:?} must be an http(s) URL"
    );
    anyhow::ensure!(
        url.username().is_empty() && url.password().is_none(),
        "the Argyle base URL must not hold credentials: use READINESS_ARGYLE_API_KEY_ID and READINESS_ARGYLE_API_KEY_SECRET"
    );
    anyhow::ensure!(
        url.query().is_none() && url.fragment().is_none(),
        "the Argyle base URL {base:?} must not have a query or fragment"
    );
    Ok(url)
}

fn transport_error(url: &Url, error: &reqwest::Error) -> ArgyleError {
    // A connect timeout is both: the request was never sent.
    let kind = if error.is_connect() {
        TransportKind::Connect
    } else if error.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Interrupted
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    ArgyleError::Transport {
        url: url.to_string(),
        kind,
        detail,
    }
}

/// The error for a non-2xx answer.
async fn refusal(response: reqwest::Response) -> ArgyleError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(MAX_ERROR_BODY)
        .collect();
    match status {
        401 | 403 => ArgyleError::Unauthorized { status },
        404 => ArgyleError::NotFound { body },
        429 => ArgyleError::RateLimited { retry_after, body },
        500.. => ArgyleError::Server { status, body },
        _ => ArgyleError::Rejected { status, body },
    }
}

/// The W3C trace context of `span` as headers, from the global propagator (none when no
/// OpenTelemetry layer is installed).
fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    struct Headers(Vec<(String, String)>);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let context = span.context();
    let mut headers = Headers(Vec::new());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> anyhow::Result<ArgyleClient> {
        ArgyleClient::new(ClientConfig::new(
            base,
            Secret::new("id-1234"),
            Secret::new("hunter2"),
        ))
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let client = client(SANDBOX_URL).unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("id-1234"),
            "{shown}"
        );
        let config = ClientConfig::new(SANDBOX_URL, Secret::new("id-1234"), Secret::new("hunter2"));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("id-1234"),
            "{shown}"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_at_construction() {
        for base in [
            "api.argyle.com/v2",
            "ftp://api.argyle.com/v2",
            "https://id:secret@api.argyle.com/v2",
            "https://api.argyle.com/v2?x=1",
        ] {
            let error = client(base).unwrap_err().to_string();
            assert!(!error.contains("secret@"), "{error}");
        }
        assert_eq!(
            client("https://api.argyle.com/v2/").unwrap().base_url(),
            "https://api.argyle.com/v2"
        );
    }

    #[test]
    fn paths_are_built_below_the_base_with_ids_escaped() {
        let client = client("http://127.0.0.1:9/proxy/v2/").unwrap();
        assert_eq!(
            client.url(&["reports", "a/b?c"]).as_str(),
            "http://127.0.0.1:9/proxy/v2/reports/a%2Fb%3Fc"
        );
        let user: UserId = "018051aa-f7a9-a0db-2f38-6cfa325e9d69".parse().unwrap();
        assert_eq!(
            client.reports_url(&user, 5, Some("x=")).as_str(),
            "http://127.0.0.1:9/proxy/v2/reports?user=018051aa-f7a9-a0db-2f38-6cfa325e9d69&limit=5&cursor=x%3D"
        );
    }

    #[test]
    fn credentials_go_only_to_the_api_origin() {
        let client = client("https://api.argyle.com/v2").unwrap();
        let same = |url: &str| client.same_origin(&Url::parse(url).unwrap());
        assert!(same("https://api.argyle.com/v2/reports/1/pdf"));
        assert!(!same("http://api.argyle.com/v2/reports/1/pdf"));
        assert!(!same("https://api.argyle.com:8443/v2/reports/1/pdf"));
        assert!(!same("https://files.argyle.com/r/1.pdf"));
    }
}
