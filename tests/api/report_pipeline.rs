//! The report pipeline end to end, against the faithful fake of Argyle's API: a report requested
//! exactly once per entry into READY (through rate limits, server errors, duplicates, replicas,
//! a crash between the POST and recording its answer), Argyle's cap, enrichment of announced
//! reports (with and without Argyle's id, and a 404), jobs that survive a restart, RequestReport,
//! and the stream and document API carrying what Argyle knows.

use std::time::{Duration, Instant};

use readiness::argyle::Endpoint;
use readiness::argyle::fake::{FakeArgyle, FakeConfig, Fault, WebhookTarget};
use readiness::config::Settings;
use readiness::domain::JobState;
use readiness::domain::job::JobQuery;
use readiness::domain::signature::Secret;
use readiness::grpc::pb::admin_service_client::AdminServiceClient;
use readiness::grpc::pb::{self, ReportStatus};
use tonic::Code;

use crate::helpers::process;
use crate::helpers::{SECRET, TestApp, body, new_id};

const PATIENCE: Duration = Duration::from_secs(30);

async fn fake() -> FakeArgyle {
    FakeArgyle::start("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
        .await
        .unwrap()
}

/// The pipeline on, against `fake`, with quick retries; `auto` types requested on READY.
fn pipeline(fake: &FakeArgyle, auto: &[&str]) -> impl FnOnce(&mut Settings) + use<> {
    let (base_url, auto) = (fake.base_url().to_owned(), auto.join(","));
    move |settings: &mut Settings| {
        settings.argyle_base_url = Some(base_url);
        settings.argyle_api_key_id = Some("key-id".into());
        settings.argyle_api_key_secret = Some("key-secret".into());
        settings.reports_auto_generate = auto
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        settings.jobs_retry_base_ms = 50;
        settings.jobs_poll_ms = 50;
        settings.jobs_lease_secs = 3;
    }
}

/// Waits until `condition` holds, or fails naming `what`.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes `user` READY with one synced account (as of `synced`), through HTTP.
async fn make_ready(app: &TestApp, user: &str, account: &str, connected: &str, synced: &str) {
    app.deliver_ok(&body::connected_at(user, account, connected))
        .await;
    app.deliver_ok(&body::ready(user, &[(account, synced)]))
        .await;
}

/// Argyle's reports of one user, as the fake holds them.
fn at_argyle(fake: &FakeArgyle, user: &str) -> Vec<serde_json::Value> {
    fake.reports()
        .into_iter()
        .filter(|report| report["user"] == user)
        .collect()
}

#[tokio::test]
async fn entering_ready_requests_each_automatic_type_once_through_a_429_and_5xx() {
    let fake = fake().await;
    fake.script(
        Endpoint::CreateReport,
        [
            Fault::rate_limited("1"),
            Fault::status(503),
            Fault::status(502),
        ],
    );
    let app = TestApp::spawn_with(pipeline(&fake, &["voie"])).await;
    let (user, account) = (new_id(), new_id());

    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;

    eventually(
        "Argyle has the report and the service knows its id",
        || async {
            app.reports_of(&user)
                .await
                .first()
                .is_some_and(|r| !r.argyle_report_id.is_empty())
        },
    )
    .await;
    let reports = app.reports_of(&user).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].origin(), pb::ReportOrigin::Automatic);
    assert_eq!(reports[0].status(), ReportStatus::Generating);
    assert_eq!(at_argyle(&fake, &user).len(), 1, "one report at Argyle");
    assert_eq!(
        fake.requests_to(Endpoint::CreateReport).len(),
        4,
        "429, 503, 502, then 201"
    );
    // Routine refreshes that keep the user READY request nothing.
    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T14:00:00Z")]))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(at_argyle(&fake, &user).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn fifty_copies_of_reports_ready_in_parallel_request_one_report() {
    let fake = fake().await;
    let app = TestApp::spawn_with(pipeline(&fake, &["voie"])).await;
    let replica = if app.on_postgres() {
        Some(app.replica(pipeline(&fake, &["voie"])).await)
    } else {
        None
    };
    let (user, account) = (new_id(), new_id());
    app.deliver_ok(&body::connected_at(&user, &account, "2024-01-08T12:00:00Z"))
        .await;
    let ready = body::ready(&user, &[(&account, "2024-01-08T13:00:00Z")]);

    let mut senders = tokio::task::JoinSet::new();
    for copy in 0..50 {
        let target = match (&replica, copy % 2) {
            (Some(replica), 1) => replica.signed_request(ready.clone()),
            _ => app.signed_request(ready.clone()),
        };
        senders.spawn(async move { target.send().await.unwrap().status().as_u16() });
    }
    while let Some(status) = senders.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }

    eventually("the report reaches Argyle", || async {
        !at_argyle(&fake, &user).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(at_argyle(&fake, &user).len(), 1);
    assert_eq!(app.reports_of(&user).await.len(), 1);
    if let Some(replica) = replica {
        replica.stop().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_reconnection_and_a_newer_sync_request_a_second_report() {
    let fake = fake().await;
    let app = TestApp::spawn_with(pipeline(&fake, &["voie"])).await;
    let (user, account) = (new_id(), new_id());
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    eventually("the first report", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;

    // Reconnected (PENDING), then synced again: a new entry into READY.
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-09T12:00:00Z",
        "2024-01-09T13:00:00Z",
    )
    .await;

    eventually("the second report", || async {
        at_argyle(&fake, &user).len() == 2
    })
    .await;
    assert_eq!(app.reports_of(&user).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_daily_cap_refuses_the_eleventh_request_without_calling_argyle() {
    let fake = fake().await;
    let app = TestApp::spawn_with(pipeline(&fake, &["voie"])).await;
    let (user, account) = (new_id(), new_id());
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T10:00:00Z",
        "2024-01-08T10:30:00Z",
    )
    .await;
    let mut client = app.report_client().await;
    // One automatic request on entry, nine explicit ones: ten in 24 hours.
    for n in 0..9 {
        client
            .request_report(pb::RequestReportRequest {
                user: Some(pb::request_report_request::User::UserId(user.clone())),
                r#type: pb::ReportType::Voe.into(),
                request_id: format!("cap-{n}-{user}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let status = client
        .request_report(pb::RequestReportRequest {
            user: Some(pb::request_report_request::User::UserId(user.clone())),
            r#type: pb::ReportType::Voe.into(),
            request_id: format!("cap-10-{user}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // An automatic request at the cap is recorded REFUSED, never sent.
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-09T10:00:00Z",
        "2024-01-09T10:30:00Z",
    )
    .await;
    eventually("ten reports reach Argyle", || async {
        at_argyle(&fake, &user).len() == 10
    })
    .await;
    let reports = app.reports_of(&user).await;
    let refused: Vec<_> = reports
        .iter()
        .filter(|r| r.status() == ReportStatus::Refused)
        .collect();
    assert_eq!(refused.len(), 1, "{reports:?}");
    assert!(
        refused[0].status_reason.contains("cap"),
        "{}",
        refused[0].status_reason
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(at_argyle(&fake, &user).len(), 10);
    app.stop().await;
}

#[tokio::test]
async fn request_report_is_idempotent_by_request_id_and_checks_its_preconditions() {
    let fake = fake().await;
    let app = TestApp::spawn_with(pipeline(&fake, &[])).await;
    let (user, account) = (new_id(), new_id());
    let mut client = app.report_client().await;
    let request = |request_id: &str, metadata: Option<&str>| pb::RequestReportRequest {
        user: Some(pb::request_report_request::User::UserId(user.clone())),
        r#type: pb::ReportType::Voie.into(),
        request_id: request_id.into(),
        metadata: metadata.map(|note| prost_types::Struct {
            fields: [(
                "note".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(note.into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };

    // Unknown user, then a user who is not READY.
    let unknown = client
        .request_report(request("r-0", None))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.deliver_ok(&body::connected(&user, &account)).await;
    let pending = client
        .request_report(request("r-1", None))
        .await
        .unwrap_err();
    assert_eq!(pending.code(), Code::FailedPrecondition);
    assert!(
        pending.message().contains("not ready"),
        "{}",
        pending.message()
    );

    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T13:00:00Z")]))
        .await;
    let first = client
        .request_report(request("r-1", Some("a")))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .request_report(request("r-1", Some("a")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.report.as_ref().unwrap().id,
        again.report.as_ref().unwrap().id
    );
    assert_eq!(first.report.as_ref().unwrap().request_id, "r-1");
    let other = client
        .request_report(request("r-1", Some("b")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    assert!(
        other.message().starts_with("request_id: "),
        "{}",
        other.message()
    );

    eventually("one report at Argyle", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.requests_to(Endpoint::CreateReport).len(),
        1,
        "never a second call"
    );
    let at = &at_argyle(&fake, &user)[0];
    assert_eq!(at["metadata"]["note"], "a");
    assert_eq!(
        at["metadata"]["readiness_request"],
        first.report.unwrap().id
    );
    app.stop().await;
}

#[tokio::test]
async fn request_report_without_argyle_credentials_is_a_failed_precondition() {
    let app = TestApp::spawn().await;
    let status = app
        .report_client()
        .await
        .request_report(pb::RequestReportRequest {
            user: Some(pb::request_report_request::User::UserId(new_id())),
            r#type: pb::ReportType::Voie.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("credentials"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_announced_report_is_enriched_and_its_urls_are_streamed_and_its_document_served() {
    let fake = fake().await;
    let app = TestApp::spawn_with(pipeline(&fake, &["voie"])).await;
    fake.send_webhooks_to(WebhookTarget {
        url: app.url("/webhooks/argyle"),
        secret: Secret::new(SECRET),
        name: "readiness-reports".into(),
    });
    let (user, account) = (new_id(), new_id());
    let mut stream = app
        .report_client()
        .await
        .stream_report_events(pb::StreamReportEventsRequest {
            start: pb::StartPosition::Now.into(),
            user_id: user.clone(),
            include_updates: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The same stream without `include_updates`: announcements only.
    let mut announcements = app
        .report_client()
        .await
        .stream_report_events(pb::StreamReportEventsRequest {
            start: pb::StartPosition::Now.into(),
            user_id: user.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    eventually("Argyle has the report", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;

    let argyle_id = at_argyle(&fake, &user)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not generated yet: no document.
    let ours = app.reports_of(&user).await.remove(0).id;
    let early = app
        .report_client()
        .await
        .get_report_document(pb::GetReportDocumentRequest {
            report: Some(pb::get_report_document_request::Report::Id(ours)),
            format: pb::DocumentFormat::Pdf.into(),
        })
        .await;
    let early = match early {
        Ok(stream) => stream.into_inner().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    assert_eq!(
        early.map_err(|status| status.code()),
        Err(tonic::Code::NotFound),
        "GetReportDocument before the report is generated"
    );
    assert!(fake.generate(&argyle_id));

    // The stream: requested, Argyle's answer, the announcement, the enrichment with the URLs.
    use pb::stream_report_events_response::Message;
    let mut statuses = vec![];
    let file_url = loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("stream events in time")
            .unwrap()
            .unwrap()
            .message
            .unwrap();
        match message {
            Message::ReportUpdated(update) => {
                let report = update.report.unwrap();
                statuses.push(report.status());
                if !report.file_url.is_empty() {
                    assert!(!report.json_url.is_empty());
                    break report.file_url;
                }
            }
            Message::ReportGenerated(event) => {
                assert_eq!(event.report.unwrap().argyle_report_id, argyle_id);
                statuses.push(ReportStatus::Generated);
            }
            Message::CaughtUp(_) | Message::Heartbeat(_) => {}
        }
    };
    assert_eq!(
        statuses.first(),
        Some(&ReportStatus::Requested),
        "{statuses:?}"
    );
    assert!(file_url.starts_with(fake.base_url()), "{file_url}");
    // Every update above was committed before now; the other stream skipped them all.
    let first_event = loop {
        let message = tokio::time::timeout(PATIENCE, announcements.message())
            .await
            .expect("the announcement in time")
            .unwrap()
            .unwrap()
            .message
            .unwrap();
        if !matches!(message, Message::CaughtUp(_) | Message::Heartbeat(_)) {
            break message;
        }
    };
    assert!(
        matches!(&first_event, Message::ReportGenerated(event)
            if event.report.as_ref().unwrap().argyle_report_id == argyle_id),
        "without include_updates the first event is the announcement: {first_event:?}"
    );

    // The job that follows the request up may find the report generated (with its URLs) before
    // the announcement's webhook is applied, which is what sets `generated_at`: it comes, as the
    // fake redelivers the webhook until it is accepted.
    eventually(
        "the report has Argyle's creation time and the announcement's",
        || async {
            let found = app.report_by_argyle_id(&argyle_id).await;
            found.argyle_created_at.is_some() && found.generated_at.is_some()
        },
    )
    .await;
    let found = app.report_by_argyle_id(&argyle_id).await;
    assert_eq!(found.status(), ReportStatus::Generated);

    let mut document = app
        .report_client()
        .await
        .get_report_document(pb::GetReportDocumentRequest {
            report: Some(pb::get_report_document_request::Report::Id(
                found.id.clone(),
            )),
            format: pb::DocumentFormat::Pdf.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = document.message().await.unwrap().unwrap();
    assert_eq!(first.content_type, "application/pdf");
    let mut bytes = first.chunk;
    while let Some(more) = document.message().await.unwrap() {
        assert!(more.content_type.is_empty());
        bytes.extend(more.chunk);
    }
    assert!(
        bytes.starts_with(b"%PDF"),
        "a PDF: {:?}",
        &bytes[..bytes.len().min(16)]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_announcement_without_a_report_id_is_matched_by_type_and_a_404_stops_for_good() {
    let fake = FakeArgyle::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            send_report_id: false,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let app = TestApp::spawn_with(pipeline(&fake, &[])).await;
    fake.send_webhooks_to(WebhookTarget {
        url: app.url("/webhooks/argyle"),
        secret: Secret::new(SECRET),
        name: "readiness-reports".into(),
    });
    let (user, account) = (new_id(), new_id());
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    // Someone else asked Argyle for this report; Argyle announces it without its id.
    let created = app
        .report_client()
        .await
        .request_report(pb::RequestReportRequest {
            user: Some(pb::request_report_request::User::UserId(user.clone())),
            r#type: pb::ReportType::Voe.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    eventually("Argyle has it", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;
    let argyle_id = at_argyle(&fake, &user)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the service knows Argyle's id", || async {
        app.reports_of(&user).await[0].argyle_report_id == argyle_id
    })
    .await;
    assert!(fake.generate(&argyle_id));
    eventually(
        "the announcement is matched to the request and enriched",
        || async {
            let reports = app.reports_of(&user).await;
            reports.len() == 1 && !reports[0].file_url.is_empty()
        },
    )
    .await;
    assert_eq!(app.reports_of(&user).await[0].id, created.id);

    // A report Argyle does not have: one GET, a reason, no retry.
    let ghost = "00000000-0000-0000-0000-00000000dead";
    app.deliver_ok(&body::generated(&user, "voie", Some(ghost)))
        .await;
    eventually("the 404 is recorded", || async {
        app.reports_of(&user)
            .await
            .iter()
            .any(|r| r.argyle_report_id == ghost && r.status_reason.contains("404"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gets = fake
        .requests_to(Endpoint::GetReport)
        .into_iter()
        .filter(|r| r.path.contains(ghost))
        .count();
    assert_eq!(gets, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_job_waiting_for_argyle_survives_a_restart_and_waits_while_credentials_are_removed() {
    let fake = fake().await;
    // Argyle fails for a while.
    fake.script(Endpoint::CreateReport, (0..3).map(|_| Fault::status(503)));
    let app = TestApp::spawn_with(|settings| {
        pipeline(&fake, &["voie"])(settings);
        settings.jobs_retry_base_ms = 2000;
    })
    .await;
    let (user, account) = (new_id(), new_id());
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    eventually("a first failed attempt", || async {
        !fake.requests_to(Endpoint::CreateReport).is_empty()
    })
    .await;

    // Without credentials the pipeline is off: the job waits in the table, Argyle hears nothing.
    let app = app
        .restart_with(|settings| {
            settings.argyle_api_key_id = None;
            settings.argyle_api_key_secret = None;
        })
        .await;
    let calls = fake.requests().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fake.requests().len(), calls, "no call without credentials");
    let jobs = app
        .core
        .jobs(&JobQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Pending, "{jobs:?}");
    // Entering READY (with `voie` still automatic) and an announcement make no job meanwhile.
    let (other, other_account) = (new_id(), new_id());
    make_ready(
        &app,
        &other,
        &other_account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    app.deliver_ok(&body::generated(&other, "voie", Some(&new_id())))
        .await;
    let all_jobs = JobQuery {
        limit: 10,
        ..Default::default()
    };
    let jobs = app.core.jobs(&all_jobs).await.unwrap();
    assert_eq!(jobs.len(), 1, "no job while the pipeline is off: {jobs:?}");

    let app = app.restart_with(pipeline(&fake, &["voie"])).await;

    eventually("the job completes after the restart", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;
    let reports = app.reports_of(&user).await;
    assert_eq!(reports.len(), 1);
    eventually("the service records Argyle's answer", || async {
        !app.reports_of(&user).await[0].argyle_report_id.is_empty()
    })
    .await;
    app.stop().await;
}

/// Runs `readiness reports <args>` against `app`; its stdout as JSON values (one per line, or
/// one indented document).
async fn reports_command(app: &TestApp, args: &[&str]) -> Vec<serde_json::Value> {
    let mut command = process::readiness();
    command
        .args(["reports", "--grpc-url", &format!("http://{}", app.grpc)])
        .args(args);
    let output = tokio::task::spawn_blocking(move || process::run(&mut command, PATIENCE))
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "readiness reports {args:?}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn an_operator_requests_shows_retries_and_lists_reports_from_the_command_line() {
    let fake = fake().await;
    // Argyle fails until the job gives up.
    fake.script(Endpoint::CreateReport, (0..2).map(|_| Fault::status(503)));
    let app = TestApp::spawn_with(|settings| {
        pipeline(&fake, &[])(settings);
        settings.jobs_max_attempts = 2;
        settings.argyle_call_attempts = 1;
        settings.grpc_admin_enabled = true;
    })
    .await;
    let (user, account) = (new_id(), new_id());
    make_ready(
        &app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;

    let requested = reports_command(
        &app,
        &[
            "request",
            "--user",
            &user,
            "--type",
            "voie",
            "--metadata",
            r#"{"loan": "L-1"}"#,
            "--request-id",
            "loan-L-1",
        ],
    )
    .await;
    let report = &requested[0]["report"];
    assert_eq!(report["status"], "REPORT_STATUS_REQUESTED");
    assert_eq!(report["origin"], "REPORT_ORIGIN_REQUESTED");
    assert_eq!(report["requestId"], "loan-L-1", "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    // Read your write: the same replica answers the new report at once, from its read model.
    let read_back = app
        .report_client()
        .await
        .get_report(pb::GetReportRequest {
            report: Some(pb::get_report_request::Report::Id(id.clone())),
            ..Default::default()
        })
        .await
        .expect("the report just requested")
        .into_inner()
        .report
        .unwrap();
    assert_eq!(read_back.request_id, "loan-L-1");

    eventually("the job gives up after two attempts", || async {
        reports_command(&app, &["show", &id]).await[0]["jobs"][0]["state"] == "JOB_STATE_FAILED"
    })
    .await;
    let shown = reports_command(&app, &["show", &id]).await.remove(0);
    let job = &shown["jobs"][0];
    assert!(job["lastError"].as_str().unwrap().contains("503"), "{job}");
    assert!(at_argyle(&fake, &user).is_empty());
    // The request's report failed with it, saying why.
    let failed = app.reports_of(&user).await.remove(0);
    assert_eq!(failed.status(), pb::ReportStatus::Failed);
    assert!(failed.status_reason.contains("503"), "{failed:?}");

    let retried = reports_command(&app, &["retry", job["id"].as_str().unwrap()]).await;
    assert_eq!(retried[0]["job"]["state"], "JOB_STATE_PENDING");
    eventually("the retried job asks Argyle once", || async {
        at_argyle(&fake, &user).len() == 1
    })
    .await;
    let at_argyle = at_argyle(&fake, &user).remove(0);
    assert_eq!(at_argyle["metadata"]["loan"], "L-1");
    assert_eq!(at_argyle["metadata"]["readiness_request"], id);
    assert!(
        !fake.requests_to(Endpoint::ListReports).is_empty(),
        "the retry looked for an earlier request (a 503 may have created it) before posting"
    );

    eventually("the list shows Argyle's id", || async {
        let listed = reports_command(&app, &["list", "--user", &user]).await;
        listed.len() == 1 && listed[0]["argyleReportId"] == at_argyle["id"]
    })
    .await;
    let generating = reports_command(&app, &["list", "--status", "failed", "--user", &user]).await;
    assert!(generating.is_empty(), "{generating:?}");

    // Over gRPC: the job is listed among the finished ones, and only a failed job is retried
    // (the answer names the state it found); an unknown one is not found.
    let job_id: i64 = job["id"].as_str().unwrap().parse().unwrap();
    let mut admin = AdminServiceClient::new(app.channel().await);
    let in_state = |state: pb::JobState| pb::ListJobsRequest {
        state: state.into(),
        ..Default::default()
    };
    eventually("the retried job is done", || {
        let mut admin = admin.clone();
        async move {
            let done = admin.list_jobs(in_state(pb::JobState::Done)).await;
            done.unwrap()
                .into_inner()
                .jobs
                .iter()
                .any(|j| j.id == job_id)
        }
    })
    .await;
    let failed = admin.list_jobs(in_state(pb::JobState::Failed)).await;
    assert!(failed.unwrap().into_inner().jobs.is_empty());
    let refused = admin
        .retry_job(pb::RetryJobRequest { id: job_id })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("is done: only a failed job is retried"),
        "{}",
        refused.message()
    );
    let unknown = admin
        .retry_job(pb::RetryJobRequest { id: i64::MAX })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.stop().await;
}

/// Requests a `voie` report for a fresh READY user and waits for its request job to end
/// FAILED; returns that job as `readiness reports show` prints it.
async fn failed_request_job(app: &TestApp) -> serde_json::Value {
    let (user, account) = (new_id(), new_id());
    make_ready(
        app,
        &user,
        &account,
        "2024-01-08T12:00:00Z",
        "2024-01-08T13:00:00Z",
    )
    .await;
    let requested = reports_command(app, &["request", "--user", &user, "--type", "voie"]).await;
    let id = requested[0]["report"]["id"].as_str().unwrap().to_owned();
    eventually("the request job fails", || async {
        reports_command(app, &["show", &id]).await[0]["jobs"][0]["state"] == "JOB_STATE_FAILED"
    })
    .await;
    reports_command(app, &["show", &id]).await[0]["jobs"][0].clone()
}

#[tokio::test]
async fn a_4xx_from_argyle_fails_the_job_at_once_but_401_and_403_are_tried_again() {
    let fake = fake().await;
    let app = TestApp::spawn_with(|settings| {
        pipeline(&fake, &[])(settings);
        settings.jobs_max_attempts = 3;
        settings.argyle_call_attempts = 1;
        settings.grpc_admin_enabled = true;
    })
    .await;

    fake.script(Endpoint::CreateReport, [Fault::status(400)]);
    let job = failed_request_job(&app).await;
    assert_eq!(job["attempts"], 1, "a 400 is not tried again: {job}");
    assert!(
        job["lastError"]
            .as_str()
            .unwrap()
            .contains("Argyle refused"),
        "{job}"
    );

    for status in [401, 403] {
        fake.script(
            Endpoint::CreateReport,
            (0..3).map(|_| Fault::status(status)),
        );
        let job = failed_request_job(&app).await;
        assert_eq!(
            job["attempts"], 3,
            "a {status} waits for fixed credentials, up to jobs_max_attempts: {job}"
        );
        assert!(
            job["lastError"]
                .as_str()
                .unwrap()
                .contains("gave up after 3 attempts"),
            "{job}"
        );
    }
    app.stop().await;
}
