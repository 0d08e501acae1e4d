//! Crash safety: `kill -9` the server in the middle of a sustained webhook load, start it again,
//! and check that every acknowledged delivery is stored and applied exactly once, and that a
//! stream resumes from its last cursor with no gap.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use readiness::argyle::Endpoint;
use readiness::argyle::fake::{FakeArgyle, FakeConfig, Fault};
use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb::report_service_client::ReportServiceClient;
use readiness::grpc::pb::stream_report_events_response::Message;
use readiness::grpc::pb::{self, StartPosition};
use readiness::store::entities::{event, report};
use sea_orm::{Database, EntityTrait, QueryOrder};
use tokio::sync::Mutex;

use crate::helpers::process::{ServeProcess, post_signed, serve_command};
use crate::helpers::{SECRET, TestDatabase, body, free_port, new_id};

/// `readiness serve` on fixed ports (the restart reuses them), killed and reaped on drop.
fn start_server(url: &str, http: u16, grpc: u16) -> ServeProcess {
    ServeProcess::start(
        serve_command(http, grpc)
            .env("READINESS_DATABASE_URL", url)
            .env("READINESS_ARGYLE_SECRETS", SECRET)
            .env("RUST_LOG", "info"),
    )
}

async fn report_stream(
    grpc: u16,
    request: pb::StreamReportEventsRequest,
) -> tonic::Streaming<pb::StreamReportEventsResponse> {
    let mut client = ReportServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    client
        .stream_report_events(request)
        .await
        .unwrap()
        .into_inner()
}

/// Collects report events (id, cursor) from a stream until it breaks or `until` is reached.
async fn collect(
    mut stream: tonic::Streaming<pb::StreamReportEventsResponse>,
    into: Arc<Mutex<Vec<(i64, String)>>>,
    until: usize,
) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
        match message {
            Ok(Ok(Some(message))) => {
                if let Some(Message::ReportGenerated(event)) = message.message {
                    let mut seen = into.lock().await;
                    seen.push((event.event_id.parse().unwrap(), event.cursor));
                    if seen.len() >= until {
                        return;
                    }
                }
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_under_load_loses_no_acknowledged_delivery_and_streams_resume_without_gaps() {
    let (_database, url) = TestDatabase::create().await;
    let (http, grpc) = (free_port(), free_port());
    let server = start_server(&url, http, grpc);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = report_stream(
        grpc,
        pb::StreamReportEventsRequest {
            start: StartPosition::Beginning.into(),
            ..Default::default()
        },
    )
    .await;
    let before_crash = tokio::spawn(collect(stream, seen.clone(), usize::MAX));

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let user = new_id();
                while !stop.load(Ordering::Relaxed) {
                    let report_id = new_id();
                    let delivery = body::generated(&user, "voie", Some(&report_id));
                    let sent = client
                        .post(format!("http://127.0.0.1:{http}/webhooks/argyle"))
                        .header("content-type", "application/json")
                        .header(
                            "x-argyle-signature",
                            sign(&Secret::new(SECRET), delivery.as_bytes()),
                        )
                        .body(delivery)
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().await.push(report_id)
                        }
                        Ok(response) => panic!("unexpected status {}", response.status()),
                        // The crash: a request without an answer is not acknowledged.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_before_kill = acknowledged.lock().await.len();
    assert!(
        acked_before_kill > 20,
        "load was flowing ({acked_before_kill} acknowledged)"
    );
    server.kill_9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_server(&url, http, grpc);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    before_crash.await.unwrap();

    // Every acknowledged delivery is stored and applied exactly once.
    let db = Database::connect(&url).await.unwrap();
    let reports: Vec<_> = report::Entity::find().all(&db).await.unwrap();
    let mut per_report: BTreeMap<String, usize> = BTreeMap::new();
    for row in &reports {
        *per_report
            .entry(row.argyle_report_id.clone().unwrap())
            .or_default() += 1;
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() > acked_before_kill,
        "load continued after the restart"
    );
    for id in &acknowledged {
        assert_eq!(
            per_report.get(id),
            Some(&1),
            "acknowledged report {id} stored exactly once"
        );
    }
    let logged: Vec<i64> = event::Entity::find()
        .order_by_asc(event::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .filter(|row| row.kind == "report_generated")
        .map(|row| row.seq)
        .collect();
    assert_eq!(
        logged.len(),
        reports.len(),
        "one report_generated event per report"
    );

    // The stream broke with the crash; resuming from its last cursor yields the rest, no gap.
    let mut events = seen.lock().await.clone();
    let resume_from = events
        .last()
        .map(|(_, cursor)| cursor.clone())
        .unwrap_or_default();
    let remaining = logged.len() - events.len();
    let request = if resume_from.is_empty() {
        pb::StreamReportEventsRequest {
            start: StartPosition::Beginning.into(),
            ..Default::default()
        }
    } else {
        pb::StreamReportEventsRequest {
            after_cursor: resume_from,
            ..Default::default()
        }
    };
    let resumed = Arc::new(Mutex::new(Vec::new()));
    if remaining > 0 {
        collect(
            report_stream(grpc, request).await,
            resumed.clone(),
            remaining,
        )
        .await;
    }
    events.extend(resumed.lock().await.iter().cloned());
    let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids, logged,
        "before and after the crash together: every event once, in order"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    db.close().await.ok();
    server.kill_9();
}

/// Signs and posts one delivery to a server process; panics unless it is acknowledged.
async fn deliver(http: u16, delivery: String) {
    let answer = post_signed(format!("127.0.0.1:{http}"), delivery).await;
    assert_eq!(answer.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_argyle_creating_a_report_and_recording_it_asks_argyle_only_once() {
    // Argyle creates the report, then the answer is slow: the service dies waiting for it.
    let fake = FakeArgyle::start("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
        .await
        .unwrap();
    fake.script(
        Endpoint::CreateReport,
        [Fault::HoldAfterActing(Duration::from_secs(60))],
    );
    let (_database, url) = TestDatabase::create().await;
    let (http, grpc) = (free_port(), free_port());
    let start = || {
        ServeProcess::start(
            serve_command(http, grpc)
                .env("READINESS_DATABASE_URL", &url)
                .env("READINESS_ARGYLE_SECRETS", SECRET)
                .env("READINESS_ARGYLE_BASE_URL", fake.base_url())
                .env("READINESS_ARGYLE_API_KEY_ID", "key-id")
                .env("READINESS_ARGYLE_API_KEY_SECRET", "key-secret")
                .env("READINESS_REPORTS_AUTO_GENERATE", "voie")
                .env("READINESS_JOBS_LEASE_SECS", "1")
                .env("READINESS_JOBS_POLL_MS", "50"),
        )
    };
    let server = start();
    let (user, account) = (new_id(), new_id());
    deliver(
        http,
        body::connected_at(&user, &account, "2024-01-08T12:00:00Z"),
    )
    .await;
    deliver(
        http,
        body::ready(&user, &[(&account, "2024-01-08T13:00:00Z")]),
    )
    .await;

    let patience = Instant::now() + Duration::from_secs(30);
    while fake.reports().is_empty() {
        assert!(Instant::now() < patience, "Argyle never got the request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_9();
    let server = start();

    let mut client = ReportServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let argyle_id = fake.reports()[0]["id"].as_str().unwrap().to_owned();
    let recorded = loop {
        let reports = client
            .list_reports(pb::ListReportsRequest {
                user_id: user.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        if let [report] = reports.as_slice()
            && !report.argyle_report_id.is_empty()
        {
            break report.clone();
        }
        assert!(
            Instant::now() < patience,
            "the restarted service never recorded Argyle's report: {reports:?}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recorded.argyle_report_id, argyle_id);
    assert_eq!(fake.reports().len(), 1, "a second report at Argyle");
    assert_eq!(fake.requests_to(Endpoint::CreateReport).len(), 1);
    assert!(
        !fake.requests_to(Endpoint::ListReports).is_empty(),
        "the retry looked for the lost answer first"
    );

    // The job's end is on /metrics (the gauges follow the jobs table).
    let done = r#"readiness_report_jobs{kind="request_report",state="done"} 1"#;
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|line| line == done) {
            break;
        }
        assert!(Instant::now() < patience, "no {done} in {metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
