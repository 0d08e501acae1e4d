//! Operating the service: Prometheus metrics after real traffic, and the container health check.

use std::collections::BTreeMap;
use std::process::Command;

use readiness::grpc::pb::{self, StartPosition};

use crate::helpers::{TestApp, body, new_id, sha};

/// `name{labels} value` lines of the Prometheus text format, keyed by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            (series.as_str() == name || series.starts_with(&format!("{name}{{")))
                && labels.iter().all(|label| series.contains(label))
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn metrics_expose_the_named_series_after_real_traffic() {
    let app = TestApp::spawn().await;
    let (user, account) = (new_id(), new_id());
    let connected = body::connected(&user, &account);
    app.deliver_ok(&connected).await;
    app.deliver_ok(&connected).await;
    app.deliver_ok(&body::ready(&user, &[(&account, "2024-01-08T12:00:00Z")]))
        .await;
    assert_eq!(app.deliver("not json").await.0, 400);
    assert_eq!(
        app.post(
            connected.clone().into_bytes(),
            &[("content-type", "application/json")]
        )
        .await
        .0,
        401
    );
    let _ = app.readiness(&user).await;
    let _ = app.readiness(&user).await; // the read model holds the view now: a hit
    let mut stream = app
        .report_client()
        .await
        .stream_report_events(pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let _ = stream.message().await.unwrap(); // caught up
    app.deliver_ok(&body::generated(&user, "voie", None)).await;
    let _ = stream.message().await.unwrap(); // the live event

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let samples = samples(&text);
    let checks: Vec<(&str, Vec<&str>)> = vec![
        (
            "readiness_webhooks_received_total",
            vec!["event=\"accounts.connected\"", "outcome=\"applied\""],
        ),
        (
            "readiness_webhooks_received_total",
            vec!["outcome=\"duplicate\""],
        ),
        (
            "readiness_webhooks_received_total",
            vec!["outcome=\"invalid_event\""],
        ),
        (
            "readiness_webhook_signature_failures_total",
            vec!["reason=\"missing\""],
        ),
        ("readiness_webhook_apply_seconds_count", vec![]),
        ("readiness_webhook_duplicates_total", vec![]),
        ("readiness_ingest_batch_deliveries_count", vec![]),
        ("readiness_deliveries_quarantined_total", vec![]),
        ("readiness_users", vec!["state=\"ready\""]),
        ("readiness_streams_open", vec![]),
        ("readiness_events_streamed_total", vec![]),
        ("readiness_stream_lag_seconds_count", vec![]),
        (
            "readiness_grpc_requests_total",
            vec!["method=\"GetUserReadiness\"", "code=\"Ok\""],
        ),
        (
            "readiness_grpc_request_seconds_count",
            vec!["method=\"StreamReportEvents\""],
        ),
        (
            "readiness_read_cache_lookups_total",
            vec!["cache=\"users\"", "result=\"hit\""],
        ),
    ];
    for (name, labels) in checks {
        assert!(
            value(&samples, name, &labels) >= 1.0,
            "{name} {labels:?} missing or zero in:\n{text}"
        );
    }
    // Set at each scrape; the user's view may have been dropped by the later change, so only
    // its presence is certain.
    for cache in ["users", "reports"] {
        let series = format!("readiness_read_cache_entries{{cache=\"{cache}\"}}");
        assert!(
            samples.contains_key(&series),
            "{series} missing in:\n{text}"
        );
    }
    assert!(text.contains("# TYPE readiness_webhook_apply_seconds histogram"));
    assert!(text.contains("# TYPE readiness_ingest_batch_deliveries histogram"));
    app.stop().await;
}

#[tokio::test]
async fn a_fresh_process_exports_its_unlabelled_counters_at_zero_and_the_process_metrics() {
    use readiness::metrics::{DESCRIPTIONS, Kind};
    use std::process::Stdio;

    use crate::helpers::process::{ServeProcess, serve_command};

    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        serve_command(0, 0)
            .env("READINESS_ARGYLE_SECRETS", "s")
            .env(
                "READINESS_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
            )
            .stdin(Stdio::null()),
    );
    let text = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = samples(&text);

    for metric in DESCRIPTIONS.iter().filter(|m| m.labels.is_empty()) {
        match metric.kind {
            Kind::Counter => assert_eq!(
                samples.get(metric.name),
                Some(&0.0),
                "{} before any traffic, in:\n{text}",
                metric.name
            ),
            Kind::Gauge => assert!(
                samples.contains_key(metric.name),
                "{} missing before any traffic, in:\n{text}",
                metric.name
            ),
            Kind::Histogram => {}
        }
    }
    for name in [
        "process_cpu_seconds_total",
        "process_virtual_memory_bytes",
        "process_virtual_memory_max_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(samples.contains_key(name), "{name} missing in:\n{text}");
    }
    assert!(samples["process_resident_memory_bytes"] > 1_000_000.0);
    assert!(samples["process_threads"] >= 2.0);
    // The child inherits this process's descriptor limit.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .unwrap();
    let expected = soft.parse::<f64>().unwrap_or(0.0); // "unlimited" is exported as 0
    assert_eq!(samples["process_max_fds"], expected, "{limits}");
    drop(server);
}

#[tokio::test]
async fn the_healthcheck_command_passes_against_a_ready_service_and_fails_otherwise() {
    let app = TestApp::spawn().await;
    let check = |addr: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_readiness"))
                .args(["healthcheck", "--http-addr", &addr])
                .output()
                .unwrap()
        })
    };
    let ready = check(app.http.to_string()).await.unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );

    app.core.db().close_by_ref().await.unwrap();
    let unready = check(app.http.to_string()).await.unwrap();
    assert!(!unready.status.success());
    assert!(String::from_utf8_lossy(&unready.stderr).contains("not ready: 503"));

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = check(free.to_string()).await.unwrap();
    assert!(!nobody.status.success());
}

/// Runs `readiness inbox ...` against the app's database; returns stdout.
async fn inbox(app: &TestApp, args: &[&str]) -> String {
    let (url, args): (String, Vec<String>) = (
        app.database_url(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_readiness"))
            .arg("inbox")
            .args(&args)
            .env("READINESS_DATABASE_URL", url)
            .env_remove("READINESS_ARGYLE_SECRETS")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "inbox {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn inbox_commands_list_show_replay_and_prune_stored_deliveries() {
    use readiness::store::entities::delivery;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let app = TestApp::spawn().await;

    // A delivery that can never apply: it names another user's account.
    let (owner, intruder, account) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&owner, &account)).await;
    assert_eq!(
        app.deliver(&body::ready(
            &intruder,
            &[(&account, "2024-01-08T12:00:00Z")]
        ))
        .await
        .0,
        400
    );

    // A delivery an older version could not apply, stored as rejected: it applies now.
    let user = new_id();
    let report_id = format!("replayed-{}", new_id());
    let raw = body::generated(&user, "voie", Some(&report_id));
    delivery::Entity::insert(delivery::ActiveModel {
        body_sha256: Set(sha(&raw)),
        body: Set(raw.clone().into_bytes()),
        status: Set("rejected".into()),
        error: Set(Some("unknown shape (recorded by an older version)".into())),
        received_at: Set(chrono::Utc::now()),
        ..Default::default()
    })
    .exec(app.core.db())
    .await
    .unwrap();

    let failed = json_lines(&inbox(&app, &["list", "--status", "failed"]).await);
    assert_eq!(failed.len(), 2, "{failed:?}");
    let replayable = failed
        .iter()
        .find(|d| d["error"].as_str().unwrap().contains("older version"))
        .unwrap();
    let id = replayable["id"].as_i64().unwrap().to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&inbox(&app, &["show", &id]).await).unwrap();
    assert_eq!(shown["body"], raw);

    let replayed = json_lines(&inbox(&app, &["replay", "--failed"]).await);
    let by_id = |wanted: bool| {
        replayed
            .iter()
            .find(|d| (d["id"].as_i64().unwrap().to_string() == id) == wanted)
            .unwrap()
    };
    assert_eq!(by_id(true)["replay"]["result"], "applied");
    let still = by_id(false);
    assert_eq!(still["replay"]["result"], "rejected");
    assert!(
        still["replay"]["reason"]
            .as_str()
            .unwrap()
            .contains("belongs to user")
    );

    let report = app.report_by_argyle_id(&report_id).await;
    assert_eq!(report.user_id, user);
    let events = app.event_count().await;
    let again = json_lines(&inbox(&app, &["replay", &id]).await);
    assert_eq!(
        again[0]["replay"],
        serde_json::json!({"result": "applied", "events": 0}),
        "replay is idempotent"
    );
    assert_eq!(app.event_count().await, events);
    assert_eq!(
        json_lines(&inbox(&app, &["list", "--status", "applied"]).await).len(),
        2
    );

    assert_eq!(
        json_lines(&inbox(&app, &["list", "--since", "24h"]).await).len(),
        3,
        "all three arrived within a day"
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        inbox(&app, &["list", "--since", "10ms"]).await.is_empty(),
        "none arrived in the last 10 ms"
    );

    let kept = inbox(&app, &["prune", "--older-than", "1h"]).await;
    assert!(kept.contains("\"deleted\":0"), "{kept}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let pruned = inbox(&app, &["prune", "--older-than", "1ms"]).await;
    assert!(pruned.contains("\"deleted\":3"), "{pruned}");
    assert!(inbox(&app, &["list"]).await.is_empty());
    assert_eq!(
        app.readiness(&owner).await.accounts.len(),
        1,
        "derived state is kept"
    );
    app.stop().await;
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", "Bearer operator".parse().unwrap());
    request
}

#[tokio::test]
async fn the_admin_service_is_off_by_default_and_behind_its_own_tokens_when_on() {
    use readiness::grpc::hash_token;
    use readiness::grpc::pb::admin_service_client::AdminServiceClient;
    use tonic::Code;

    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let off = AdminServiceClient::new(channel)
        .list_deliveries(pb::ListDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(off.code(), Code::Unimplemented);
    app.stop().await;

    let app = TestApp::spawn_with(|settings| {
        settings.grpc_admin_enabled = true;
        settings.grpc_admin_token_sha256 = vec![hash_token("operator")];
    })
    .await;
    let (owner, intruder, account) = (new_id(), new_id(), new_id());
    app.deliver_ok(&body::connected(&owner, &account)).await;
    assert_eq!(
        app.deliver(&body::ready(
            &intruder,
            &[(&account, "2024-01-08T12:00:00Z")]
        ))
        .await
        .0,
        400
    );

    let channel = app.channel().await;
    let mut admin = AdminServiceClient::new(channel);
    let denied = admin
        .list_deliveries(pb::ListDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    let rejected = admin
        .list_deliveries(authorized(pb::ListDeliveriesRequest {
            status: pb::DeliveryStatus::Rejected.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].error.contains("belongs to user"));

    let shown = admin
        .get_delivery(authorized(pb::GetDeliveryRequest { id: rejected[0].id }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8(shown.delivery.unwrap().body)
            .unwrap()
            .contains("reports.ready")
    );
    let replay = admin
        .replay_delivery(authorized(pb::ReplayDeliveryRequest { id: rejected[0].id }))
        .await
        .unwrap()
        .into_inner()
        .replay
        .unwrap();
    assert_eq!(
        replay.outcome(),
        pb::DeliveryStatus::Rejected,
        "still inconsistent: stays rejected"
    );
    assert!(replay.reason.contains("belongs to user"));
    let all = admin
        .replay_rejected_deliveries(authorized(pb::ReplayRejectedDeliveriesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.replays.len(), 1);
    let missing = admin
        .get_delivery(authorized(pb::GetDeliveryRequest { id: 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn simulate_plays_signed_traffic_that_is_all_acknowledged() {
    let app = TestApp::spawn().await;
    let target = format!("http://{}", app.http);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_readiness"))
            .args([
                "simulate",
                "--target",
                &target,
                "--users",
                "25",
                "--concurrency",
                "4",
                "--secret",
            ])
            .arg(crate::helpers::SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let deliveries = summary["deliveries"].as_u64().unwrap();
    assert!(deliveries >= 25 * 2, "{summary}");
    assert_eq!(
        summary["statuses"],
        serde_json::json!({"200": deliveries}),
        "{summary}"
    );
    assert!(summary["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let users = app
        .readiness_client()
        .await
        .list_users(pb::ListUsersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 25);
    app.stop().await;
}
