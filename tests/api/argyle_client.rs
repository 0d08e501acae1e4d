//! The outbound Argyle client ([`readiness::argyle`]) against the library's fake of Argyle's API
//! over real sockets: retries (429 with `Retry-After`, 5xx, dropped connections) with the
//! retrying policy and none with the fail-fast one, no retry on other 4xx, time limits, a lost
//! POST answer, documents through the redirect, the fake's cap, paging, statuses and signed
//! `reports.generated` webhooks (accepted by the real service), `traceparent` and metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use readiness::argyle::fake::{DAILY_CAP, FakeArgyle, FakeConfig, Fault, WebhookTarget};
use readiness::argyle::{
    ArgyleClient, ArgyleError, ClientConfig, Endpoint, ReportStatus, RetryPolicy, TransportKind,
};
use readiness::domain::signature::{Secret, verify};
use readiness::domain::{ReportType, UserId};
use readiness::grpc::pb;
use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, new_id};

async fn fake_with(config: FakeConfig) -> FakeArgyle {
    FakeArgyle::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

async fn fake() -> FakeArgyle {
    fake_with(FakeConfig::default()).await
}

fn config(fake: &FakeArgyle) -> ClientConfig {
    let defaults = FakeConfig::default();
    ClientConfig::new(
        fake.base_url(),
        Secret::new(defaults.key_id),
        Secret::new(defaults.key_secret),
    )
}

/// Fail-fast client.
fn client(fake: &FakeArgyle) -> ArgyleClient {
    ArgyleClient::new(config(fake)).unwrap()
}

/// Retrying client with short backoff delays (Retry-After still honoured).
fn retrying(fake: &FakeArgyle) -> ArgyleClient {
    client(fake).with_retry(RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..RetryPolicy::retrying()
    })
}

fn user() -> UserId {
    new_id().parse().unwrap()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_retrying_client_waits_out_a_429_with_retry_after_and_a_503_then_succeeds() {
    let fake = fake().await;
    fake.script(
        Endpoint::CreateReport,
        [Fault::rate_limited("1"), Fault::status(503)],
    );
    let started = Instant::now();

    let report = retrying(&fake)
        .create_report(&ReportType::Voie, &user(), json!({"job": "j-1"}))
        .await
        .unwrap();

    assert_eq!(report.status, ReportStatus::Generating);
    assert_eq!(report.metadata, json!({"job": "j-1"}));
    assert_eq!(fake.requests_to(Endpoint::CreateReport).len(), 3);
    assert_eq!(fake.reports().len(), 1, "one report for three attempts");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_fail_fast_client_makes_one_attempt_and_reports_argyles_wait() {
    let fake = fake().await;
    let client = client(&fake);
    fake.script(Endpoint::CreateReport, [Fault::rate_limited("7")]);

    let error = client
        .create_report(&ReportType::Voe, &user(), json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)), "{error}");

    fake.script(Endpoint::GetReport, [Fault::status(503)]);
    let error = client.get_report("anything").await.unwrap_err();
    assert!(
        matches!(error, ArgyleError::Server { status: 503, .. }),
        "{error}"
    );
    assert_eq!(fake.requests_to(Endpoint::CreateReport).len(), 1);
    assert_eq!(fake.requests_to(Endpoint::GetReport).len(), 1);
    assert!(fake.reports().is_empty());
}

#[tokio::test]
async fn client_errors_other_than_429_are_never_retried() {
    let fake = fake().await;
    let client = retrying(&fake);

    let unknown = client.get_report(&new_id()).await.unwrap_err();
    assert!(matches!(unknown, ArgyleError::NotFound { .. }), "{unknown}");
    let bad_type = client
        .create_report(&ReportType::Other("nope".into()), &user(), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(bad_type, ArgyleError::Rejected { status: 400, .. }),
        "{bad_type}"
    );
    let wrong_key = ArgyleClient::new(ClientConfig::new(
        fake.base_url(),
        Secret::new("key-id"),
        Secret::new("wrong"),
    ))
    .unwrap()
    .with_retry(RetryPolicy::retrying());
    let refused = wrong_key.list_webhooks().await.unwrap_err();
    assert!(
        matches!(refused, ArgyleError::Unauthorized { status: 401 }),
        "{refused}"
    );
    assert!(!refused.to_string().contains("wrong"), "{refused}");

    assert_eq!(fake.requests_to(Endpoint::GetReport).len(), 1);
    assert_eq!(fake.requests_to(Endpoint::CreateReport).len(), 1);
    assert_eq!(fake.requests_to(Endpoint::ListWebhooks).len(), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_a_read_is_retried_after_it() {
    let fake = fake().await;
    let created = client(&fake)
        .create_report(&ReportType::Voie, &user(), json!({}))
        .await
        .unwrap();
    let mut config = config(&fake);
    config.timeout = Duration::from_millis(300);
    let impatient = ArgyleClient::new(config).unwrap();
    fake.script(Endpoint::GetReport, [Fault::Delay(Duration::from_secs(3))]);

    let started = Instant::now();
    let error = impatient.get_report(&created.id).await.unwrap_err();
    assert!(
        matches!(
            error,
            ArgyleError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    fake.script(
        Endpoint::GetReport,
        [Fault::Delay(Duration::from_secs(3)), Fault::Drop],
    );
    let again = impatient
        .with_retry(RetryPolicy {
            min_delay: Duration::from_millis(10),
            ..RetryPolicy::retrying()
        })
        .get_report(&created.id)
        .await
        .unwrap();
    assert_eq!(again.id, created.id);
    assert_eq!(fake.requests_to(Endpoint::GetReport).len(), 4);
}

#[tokio::test]
async fn a_lost_answer_to_a_post_is_not_repeated_and_the_report_is_found_by_its_metadata() {
    let fake = fake().await;
    let client = retrying(&fake);
    let user = user();
    fake.script(Endpoint::CreateReport, [Fault::DropAfterActing]);

    let error = client
        .create_report(&ReportType::Voie, &user, json!({"job": "j-42"}))
        .await
        .unwrap_err();

    assert!(error.outcome_unknown(), "{error}");
    assert_eq!(fake.requests_to(Endpoint::CreateReport).len(), 1);
    let found: Vec<_> = client
        .list_all_reports(&user, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|report| report.metadata["job"] == "j-42")
        .collect();
    assert_eq!(found.len(), 1, "Argyle acted on the lost POST");

    // A connection dropped before acting is also not retried for a POST (the client cannot
    // tell the two apart), but is for a read.
    fake.script(Endpoint::CreateReport, [Fault::Drop]);
    let error = client
        .create_report(&ReportType::Voie, &user, json!({}))
        .await
        .unwrap_err();
    assert!(error.outcome_unknown(), "{error}");
    fake.script(Endpoint::ListReports, [Fault::Drop]);
    assert_eq!(
        client
            .list_reports(&user, 10, None)
            .await
            .unwrap()
            .results
            .len(),
        1
    );
}

#[tokio::test]
async fn a_document_downloads_through_the_redirect_without_its_host_seeing_the_credentials() {
    let fake = fake().await;
    let client = client(&fake);
    let created = client
        .create_report(&ReportType::VoieMortgage, &user(), json!({}))
        .await
        .unwrap();
    assert!(created.file_url.is_none(), "no document before generation");
    assert!(fake.generate(&created.id));
    let report = client.get_report(&created.id).await.unwrap();
    assert_eq!(report.status, ReportStatus::Generated);

    let mut pdf = client
        .download(report.file_url.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(pdf.content_type, "application/pdf");
    let mut bytes = Vec::new();
    while let Some(chunk) = pdf.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    assert!(bytes.starts_with(b"%PDF-") && bytes.ends_with(b"%%EOF\n"));
    assert!(String::from_utf8_lossy(&bytes).contains(&created.id));

    let json = client
        .download(report.json_url.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(json.content_type, "application/json");
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(json.into_stream());
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let document: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["id"], created.id.as_str());

    let requests = fake.requests();
    let api: Vec<_> = requests
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::Document))
        .collect();
    let documents: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/documents/"))
        .collect();
    assert_eq!((api.len(), documents.len()), (2, 2));
    assert!(
        api.iter().all(|r| r.authorization),
        "Argyle's URL gets them"
    );
    assert!(
        documents.iter().all(|r| !r.authorization),
        "the document host never sees the credentials"
    );

    // A URL on another origin is fetched without credentials (its host answers).
    let elsewhere = format!("{}/documents/{}/pdf", fake.documents_url(), created.id);
    client.download(&elsewhere).await.unwrap();
    assert!(!fake.requests().last().unwrap().authorization);
}

#[tokio::test]
async fn a_document_is_not_found_before_the_report_is_generated() {
    let fake = fake().await;
    let client = client(&fake);
    let created = client
        .create_report(&ReportType::Voie, &user(), json!({}))
        .await
        .unwrap();
    let url = format!("{}/reports/{}/pdf", fake.base_url(), created.id);
    let error = client.download(&url).await.unwrap_err();
    assert!(matches!(error, ArgyleError::NotFound { .. }), "{error}");
}

#[tokio::test]
async fn the_fake_caps_reports_at_ten_per_user_per_day_and_a_delete_frees_a_slot() {
    let fake = fake().await;
    let client = retrying(&fake);
    let (user, other) = (user(), user());
    let mut first = None;
    for _ in 0..DAILY_CAP {
        let report = client
            .create_report(&ReportType::Voie, &user, json!({}))
            .await
            .unwrap();
        first.get_or_insert(report.id);
    }

    let refused = client
        .create_report(&ReportType::Voie, &user, json!({}))
        .await
        .unwrap_err();

    let wait = refused.retry_after().expect("Retry-After on the cap");
    assert!(
        wait > Duration::from_secs(23 * 3600) && wait <= Duration::from_secs(24 * 3600),
        "{wait:?}"
    );
    assert_eq!(
        fake.requests_to(Endpoint::CreateReport).len(),
        DAILY_CAP + 1,
        "a wait beyond the policy's cap is not slept through: one attempt"
    );
    client
        .create_report(&ReportType::Voie, &other, json!({}))
        .await
        .expect("the cap is per user");
    client
        .delete_report(first.as_deref().unwrap())
        .await
        .unwrap();
    client
        .create_report(&ReportType::Voie, &user, json!({}))
        .await
        .expect("a deleted report frees its slot");
    let gone = client
        .get_report(first.as_deref().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(gone, ArgyleError::NotFound { .. }), "{gone}");
}

#[tokio::test]
async fn reports_are_listed_newest_first_one_page_at_a_time() {
    let fake = fake().await;
    let client = client(&fake);
    let (user, other) = (user(), user());
    let mut ids = Vec::new();
    for n in 0..5 {
        let report = client
            .create_report(&ReportType::Voe, &user, json!({"n": n}))
            .await
            .unwrap();
        ids.push(report.id);
    }
    client
        .create_report(&ReportType::Voe, &other, json!({}))
        .await
        .unwrap();
    ids.reverse();

    let first = client.list_reports(&user, 2, None).await.unwrap();
    let cursor = first.next_cursor().expect("more pages");
    let second = client.list_reports(&user, 2, Some(&cursor)).await.unwrap();
    let third = client
        .list_reports(&user, 2, second.next_cursor().as_deref())
        .await
        .unwrap();
    let all = client.list_all_reports(&user, 2).await.unwrap();

    let paged: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| page.results.iter().map(|report| report.id.clone()))
        .collect();
    assert_eq!(paged, ids);
    assert_eq!(third.next, None);
    let walked: Vec<String> = all.into_iter().map(|report| report.id).collect();
    assert_eq!(walked, ids);
    assert_eq!(fake.requests_to(Endpoint::ListReports).len(), 6);
}

#[tokio::test]
async fn reports_become_generated_by_themselves_or_stay_failed_or_waiting_when_told() {
    let fake = fake_with(FakeConfig {
        generate_after: Some(Duration::from_millis(100)),
        ..FakeConfig::default()
    })
    .await;
    let client = client(&fake);
    let user = user();
    let create = || client.create_report(&ReportType::Voie, &user, json!({}));
    let (generated, failed, waiting) = (
        create().await.unwrap(),
        create().await.unwrap(),
        create().await.unwrap(),
    );
    assert!(fake.fail(&failed.id));
    assert!(fake.wait_for_sync(&waiting.id));

    eventually("generation", || {
        fake.report(&generated.id).unwrap()["status"] == "generated"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = |id: &str| {
        let client = client.clone();
        let id = id.to_owned();
        async move { client.get_report(&id).await.unwrap().status }
    };
    assert_eq!(status(&generated.id).await, ReportStatus::Generated);
    assert_eq!(status(&failed.id).await, ReportStatus::Failed);
    assert_eq!(status(&waiting.id).await, ReportStatus::WaitingForSync);
    let report = client.get_report(&generated.id).await.unwrap();
    assert!(report.file_url.unwrap().ends_with("/pdf"));
    assert!(report.json_url.unwrap().ends_with("/json"));
    assert!(!fake.generate(&failed.id), "a failed report stays failed");
    assert!(fake.generate(&waiting.id));
    assert_eq!(status(&waiting.id).await, ReportStatus::Generated);
}

/// A webhook receiver that answers 503 to the first `failures` deliveries, then 200.
async fn receiver(
    failures: usize,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let signature = headers["x-argyle-signature"].to_str().unwrap().to_owned();
                let mut seen = seen.lock().unwrap();
                seen.push((signature, body));
                if seen.len() <= failures {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn a_generated_report_is_announced_by_a_signed_webhook_redelivered_until_accepted() {
    let (url, received) = receiver(2).await;
    let fake = fake_with(FakeConfig {
        webhook: Some(WebhookTarget {
            url,
            secret: Secret::new("hook-secret"),
            name: "readiness-reports".into(),
        }),
        webhook_retry_delay: Duration::from_millis(20),
        ..FakeConfig::default()
    })
    .await;
    let user = user();
    let report = client(&fake)
        .create_report(&ReportType::Voe, &user, json!({}))
        .await
        .unwrap();

    fake.generate(&report.id);
    eventually("delivery", || {
        fake.deliveries().first().is_some_and(|d| d.delivered)
    })
    .await;

    let delivery = &fake.deliveries()[0];
    assert_eq!(delivery.statuses, [Some(503), Some(503), Some(200)]);
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    for (signature, body) in &received {
        assert_eq!(body, &delivery.body, "the same bytes every time");
        verify(
            &[Secret::new("hook-secret")],
            Some(signature.as_bytes()),
            body.as_bytes(),
        )
        .expect("signed as Argyle signs");
    }
    let body: Value = serde_json::from_str(&received[0].1).unwrap();
    assert_eq!(
        body,
        json!({"event": "reports.generated", "name": "readiness-reports",
               "data": {"user": user.to_string(), "type": "voe", "report_id": report.id}})
    );
}

#[tokio::test]
async fn the_service_records_the_report_the_fake_announces_with_or_without_its_id() {
    let app = TestApp::spawn().await;
    for send_report_id in [true, false] {
        let fake = fake_with(FakeConfig {
            webhook: Some(WebhookTarget {
                url: format!("http://{}/webhooks/argyle", app.http),
                secret: Secret::new(SECRET),
                name: "readiness-reports".into(),
            }),
            generate_after: Some(Duration::from_millis(10)),
            send_report_id,
            ..FakeConfig::default()
        })
        .await;
        let user = user();
        let report = client(&fake)
            .create_report(&ReportType::Voie, &user, json!({}))
            .await
            .unwrap();
        eventually("delivery", || {
            fake.deliveries().first().is_some_and(|d| d.delivered)
        })
        .await;
        let body: Value = serde_json::from_str(&fake.deliveries()[0].body).unwrap();
        assert_eq!(body["data"].get("report_id").is_some(), send_report_id);

        let listed = app
            .report_client()
            .await
            .list_reports(pb::ListReportsRequest {
                user_id: user.to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        assert_eq!(listed.len(), 1);
        let expected = if send_report_id {
            report.id.as_str()
        } else {
            ""
        };
        assert_eq!(listed[0].argyle_report_id, expected);
    }
    app.stop().await;
}

/// The value of one Prometheus sample whose labels include `labels`, or 0.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn every_call_is_counted_by_route_and_status_and_timed() {
    let handle = readiness::metrics::handle();
    let fake = fake().await;
    let client = client(&fake);
    let calls = [("endpoint", "DELETE /reports/{id}"), ("status", "404")];
    let timed = [("endpoint", "DELETE /reports/{id}")];
    let before = handle.render();

    for _ in 0..2 {
        client.delete_report(&new_id()).await.unwrap_err();
    }

    let after = handle.render();
    let counted = |text: &str| sample(text, "readiness_argyle_calls_total", &calls);
    let observed = |text: &str| sample(text, "readiness_argyle_call_seconds_count", &timed);
    assert!(counted(&after) - counted(&before) >= 2.0, "{after}");
    assert!(observed(&after) - observed(&before) >= 2.0, "{after}");
    let routes: Vec<&str> = [
        Endpoint::ListWebhooks,
        Endpoint::CreateWebhook,
        Endpoint::DeleteWebhook,
        Endpoint::CreateReport,
        Endpoint::GetReport,
        Endpoint::ListReports,
        Endpoint::DeleteReport,
        Endpoint::Document,
    ]
    .map(Endpoint::as_str)
    .to_vec();
    for line in after
        .lines()
        .filter(|l| l.starts_with("readiness_argyle_calls_total{"))
    {
        assert!(
            routes
                .iter()
                .any(|route| line.contains(&format!("endpoint=\"{route}\""))),
            "a route name, never a raw path: {line}"
        );
    }
}

#[tokio::test]
async fn every_call_carries_the_current_trace_as_traceparent() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    // tracing caches whether a callsite is enabled, process-wide. While only one dispatcher is
    // registered, a callsite first reached on another test's thread (which has no subscriber)
    // is cached as never enabled, and the client's span here would be disabled (a flake seen in
    // CI). With two registered, a callsite's first use asks both, and this test's is one.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let fake = fake().await;
    // The hazard, made certain: another thread, with no subscriber, reaches the client's span
    // first.
    let elsewhere = client(&fake);
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(elsewhere.list_webhooks())
            .unwrap();
    })
    .await
    .unwrap();
    let root = tracing::info_span!("caller");
    let trace_id = root.context().span().span_context().trace_id();

    client(&fake)
        .list_webhooks()
        .instrument(root)
        .await
        .unwrap();

    let traceparent = fake.requests()[1].traceparent.clone().expect("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1],
        trace_id.to_string(),
        "the caller's trace continues at Argyle"
    );
}

#[tokio::test]
async fn unknown_fields_and_fake_state_survive_the_round_trip() {
    let fake = fake().await;
    fake.set_accounts(
        "018051aa-f7a9-a0db-2f38-6cfa325e9d69",
        vec![
            json!({"id": "0187c66e-e7e5-811c-b006-2232f00f426a", "item": "item_000012345",
                    "last_synced_at": "2024-01-08T12:58:06.023659Z"}),
        ],
    );
    let user: UserId = "018051aa-f7a9-a0db-2f38-6cfa325e9d69".parse().unwrap();
    let report = client(&fake)
        .create_report(&ReportType::Voie, &user, json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(report.accounts.len(), 1);
    assert_eq!(
        report.last_synced_at.unwrap().to_rfc3339(),
        "2024-01-08T12:58:06.023659+00:00"
    );
    let served: HashMap<String, Value> =
        serde_json::from_value(fake.report(&report.id).unwrap()).unwrap();
    assert!(served.contains_key("reference_id") && served.contains_key("generated_at"));
}
