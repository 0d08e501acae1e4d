//! `/metrics` as Prometheus' own tools read it: `promtool check metrics` on a scrape taken after
//! real traffic, and a real Prometheus server (Debian's `prometheus` package) scraping a running
//! `readiness serve` every second and answering queries about it. Both need the package's
//! binaries: without them the tests say so and skip, unless `READINESS_TEST_REQUIRE_PROMETHEUS=1`
//! (set by `.ci/run`) makes that a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use readiness::grpc::pb::report_service_client::ReportServiceClient;
use readiness::grpc::pb::{self, StartPosition};
use serde_json::Value;

use crate::helpers::process::ChildProcess;
use crate::helpers::{SECRET, body, new_id};
use crate::process::ServeProcess;

/// Long enough for Prometheus to start, scrape once a second and compact nothing on a loaded
/// machine; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// The path of one of the `prometheus` package's binaries, found on `PATH`. When it is missing,
/// says so and returns `None`, unless `READINESS_TEST_REQUIRE_PROMETHEUS=1` makes it a failure.
fn prometheus_tool(name: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "{test}: `{name}` is not on PATH (Debian package `prometheus`: apt-get install prometheus)"
        );
        if std::env::var("READINESS_TEST_REQUIRE_PROMETHEUS").is_ok_and(|value| value == "1") {
            panic!("{message}, and READINESS_TEST_REQUIRE_PROMETHEUS=1 requires it");
        }
        eprintln!("{message}: skipped");
    }
    found
}

/// `readiness serve` on a fresh SQLite file in `dir`: its metrics are its own traffic only (the
/// in-process apps of other tests share one recorder).
async fn serve(dir: &Path) -> ServeProcess {
    let url = format!("sqlite://{}?mode=rwc", dir.join("readiness.db").display());
    ServeProcess::start(&url, &dir.join("serve.log")).await
}

/// Posts `body` signed (or with no signature); returns the status.
async fn post(server: &ServeProcess, body: &str, signed: bool) -> u16 {
    let mut request = reqwest::Client::new()
        .post(server.url("/webhooks/argyle"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if signed {
        request = request.header(
            "x-argyle-signature",
            sign(&Secret::new(SECRET), body.as_bytes()),
        );
    }
    request.send().await.unwrap().status().as_u16()
}

async fn scrape(server: &ServeProcess) -> String {
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn promtool_accepts_the_metrics_after_real_traffic() {
    let test = "promtool_accepts_the_metrics_after_real_traffic";
    let Some(promtool) = prometheus_tool("promtool", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;

    // Traffic that records every kind of metric: counters with and without labels, labelled
    // gauges, histograms with and without labels.
    let (user, account) = (new_id(), new_id());
    let connected = body::connected(&user, &account);
    assert_eq!(post(&server, &connected, true).await, 200);
    assert_eq!(post(&server, &connected, true).await, 200, "a duplicate");
    assert_eq!(post(&server, &connected, false).await, 401);
    assert_eq!(post(&server, "{\"event\": 1}", true).await, 400);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ReadinessServiceClient::new(channel.clone())
        .get_user_readiness(pb::GetUserReadinessRequest {
            user: Some(pb::get_user_readiness_request::User::UserId(user.clone())),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = ReportServiceClient::new(channel)
        .stream_report_events(pb::StreamReportEventsRequest {
            start: StartPosition::Now.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let _ = stream.message().await.unwrap(); // caught up
    assert_eq!(
        post(&server, &body::generated(&user, "voie", None), true).await,
        200
    );
    let _ = stream.message().await.unwrap(); // the live event
    let text = scrape(&server).await;
    for series in [
        "readiness_webhook_signature_failures_total{",
        "readiness_deliveries_quarantined_total ",
        "readiness_users{",
        "readiness_stream_lag_seconds_bucket{",
        "readiness_grpc_request_seconds_bucket{",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "process_virtual_memory_bytes ",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(series)),
            "no {series}... in the scrape:\n{text}"
        );
    }

    let scraped = dir.path().join("scrape.txt");
    std::fs::write(&scraped, &text).unwrap();
    let check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scraped).unwrap())
        .output()
        .unwrap();

    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success() && findings.trim().is_empty(),
        "promtool check metrics ({}):\n{findings}\non:\n{text}",
        check.status
    );
    drop(stream);
}

/// A Prometheus server on loopback, scraping `target` every second, with its data in `dir`.
struct Prometheus {
    process: ChildProcess,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, dir: &Path, target: std::net::SocketAddr) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: readiness\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port: bound, read and released just before Prometheus binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let output = std::fs::File::create(&log).unwrap();
        let process = ChildProcess::spawn(
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output),
        );
        Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`, or `None` while Prometheus is not answering yet.
    async fn api(&mut self, path: &str) -> Option<Value> {
        if let Some(status) = self.process.0.try_wait().unwrap() {
            panic!("prometheus exited with {status}:\n{}", self.log());
        }
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let answer: Value = response.json().await.ok()?;
        assert_eq!(answer["status"], "success", "{path}: {answer}");
        Some(answer["data"].clone())
    }

    /// The instant vector `query` evaluates to, once it has at least one sample.
    async fn query_until_present(&mut self, query: &str) -> Vec<Value> {
        let started = Instant::now();
        let path = format!("query?query={}", urlencode(query));
        loop {
            if let Some(data) = self.api(&path).await {
                let result = data["result"].as_array().cloned().unwrap_or_default();
                if !result.is_empty() {
                    return result;
                }
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{query}: no sample after {PATIENCE:?}; targets: {:?}\n{}",
                self.api("targets").await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Percent-encodes a PromQL query for a URL's query string.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant-vector sample (`"value": [time, "1.5"]`).
fn sample_value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_service_and_answers_queries_about_it() {
    let test = "a_real_prometheus_scrapes_the_service_and_answers_queries_about_it";
    let Some(binary) = prometheus_tool("prometheus", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let (user, account) = (new_id(), new_id());
    assert_eq!(
        post(&server, &body::connected(&user, &account), true).await,
        200
    );

    let mut prometheus = Prometheus::start(&binary, dir.path(), server.http);

    let received = prometheus
        .query_until_present(
            r#"readiness_webhooks_received_total{job="readiness",event="accounts.connected",outcome="applied"}"#,
        )
        .await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(sample_value(&received[0]), 1.0, "one signed webhook");
    let memory = prometheus
        .query_until_present(r#"process_resident_memory_bytes{job="readiness"}"#)
        .await;
    assert!(
        sample_value(&memory[0]) > 1_000_000.0,
        "a running service holds more than 1 MB: {memory:?}"
    );
    let descriptors = prometheus
        .query_until_present(
            r#"process_open_fds{job="readiness"} < process_max_fds{job="readiness"}"#,
        )
        .await;
    assert!(sample_value(&descriptors[0]) > 0.0, "{descriptors:?}");
    let targets = prometheus.api("targets").await.unwrap();
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{targets}");
    assert_eq!(target["lastError"], "", "{targets}");
}

/// The repository's alert rules and dashboard.
fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every alert rule's name and PromQL expression in `deploy/prometheus/alerts.yaml`.
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_file("prometheus/alerts.yaml")).unwrap();
    let rules: Value = serde_norway::from_str(&text).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().clone())
        .map(|rule| {
            (
                rule["alert"].as_str().unwrap().to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every panel's title and query in `deploy/grafana/readiness.json`, with the dashboard's
/// variables replaced as Grafana would (`$job` by `readiness`, `$__rate_interval` by 30s).
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_file("grafana/readiness.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| {
                    let expr = target["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$job", "readiness")
                        .replace("$__rate_interval", "30s");
                    (title.clone(), expr)
                })
        })
        .collect()
}

/// The metric names an expression reads (`readiness_*` and `process_*`, histogram series
/// suffixes removed).
fn metrics_named(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("readiness_") || word.starts_with("process_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_read_is_one_the_service_exports() {
    let exported: Vec<&str> = readiness::metrics::DESCRIPTIONS
        .iter()
        .map(|description| description.name)
        .chain([
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ])
        .collect();
    let expressions: Vec<(String, String)> = alert_expressions()
        .into_iter()
        .chain(dashboard_queries())
        .collect();
    assert!(expressions.len() > 30, "{expressions:?}");
    for (name, expr) in &expressions {
        let read = metrics_named(expr);
        assert!(
            !read.is_empty() || expr.starts_with("up{"),
            "{name}: reads no metric of ours: {expr}"
        );
        for metric in read {
            assert!(
                exported.contains(&metric.as_str()),
                "{name} reads {metric}, which the service does not export: {expr}"
            );
        }
    }
    let dashboard = dashboard_queries();
    for family in [
        "readiness_webhooks_received_total",
        "readiness_webhook_apply_seconds",
        "readiness_ingest_batch_deliveries",
        "readiness_users",
        "readiness_streams_open",
        "readiness_stream_lag_seconds",
        "readiness_grpc_requests_total",
        "readiness_grpc_request_seconds",
        "readiness_report_jobs",
        "readiness_argyle_calls_total",
    ] {
        assert!(
            dashboard
                .iter()
                .any(|(_, expr)| metrics_named(expr).iter().any(|m| m == family)),
            "the dashboard has no panel on {family}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let test = "the_alert_rules_pass_promtool_check_and_their_unit_tests";
    let Some(promtool) = prometheus_tool("promtool", test) else {
        return;
    };
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let run = Command::new(&promtool)
            .args(args)
            .current_dir(deploy_file("prometheus"))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[tokio::test]
async fn a_real_prometheus_evaluates_every_alert_and_dashboard_query_on_the_services_metrics() {
    let test =
        "a_real_prometheus_evaluates_every_alert_and_dashboard_query_on_the_services_metrics";
    let Some(binary) = prometheus_tool("prometheus", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut prometheus = Prometheus::start(&binary, dir.path(), server.http);
    prometheus
        .query_until_present(r#"count_over_time(readiness_ready{job="readiness"}[1m]) >= 2"#)
        .await;
    // Traffic across several scrapes, so that rates have two samples to work on.
    let user = new_id();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ReadinessServiceClient::new(channel);
    for _ in 0..4 {
        assert_eq!(
            post(&server, &body::connected(&user, &new_id()), true).await,
            200
        );
        assert_eq!(post(&server, "{}", false).await, 401);
        client
            .get_user_readiness(pb::GetUserReadinessRequest {
                user: Some(pb::get_user_readiness_request::User::UserId(user.clone())),
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }

    // What this traffic must show, through the dashboard's own queries.
    let shown = prometheus
        .query_until_present(
            r#"max by (state) (readiness_users{job="readiness",state="pending"}) == 1"#,
        )
        .await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let ready = prometheus
        .query_until_present(r#"readiness_ready{job="readiness"} == 1"#)
        .await;
    assert_eq!(ready.len(), 1, "the replica is ready: {ready:?}");
    let pending = prometheus
        .query_until_present(r#"readiness_user_oldest_pending_seconds{job="readiness"} > 0"#)
        .await;
    assert!(sample_value(&pending[0]) < 600.0, "{pending:?}");

    prometheus
        .query_until_present(
            r#"sum(rate(readiness_webhooks_received_total{job="readiness"}[30s])) > 0"#,
        )
        .await;

    let mut with_data = Vec::new();
    for (name, expr) in alert_expressions().into_iter().chain(dashboard_queries()) {
        // `api` fails the test on anything but "success": a parse or evaluation error.
        let data = prometheus
            .api(&format!("query?query={}", urlencode(&expr)))
            .await
            .unwrap_or_else(|| panic!("{name}: no answer for {expr}"));
        if data["result"]
            .as_array()
            .is_some_and(|result| !result.is_empty())
        {
            with_data.push(name);
        }
    }
    for panel in [
        "Webhooks by outcome",
        "Webhooks by event",
        "Shed, signature failures, quarantined",
        "Users by readiness state",
        "Oldest PENDING user",
        "gRPC requests by method",
        "Ready replicas and database errors",
        "Resident memory",
    ] {
        assert!(
            with_data.iter().any(|name| name == panel),
            "the panel {panel:?} shows nothing after traffic; with data: {with_data:?}"
        );
    }
}
