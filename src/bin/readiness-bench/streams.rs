//! Stream benchmarks: fan-out (the time from a webhook's 2xx to the event on every one of many
//! live subscribers) and catch-up (how fast one subscriber replays a long log).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use readiness::domain::signature::{Secret, sign};
use readiness::grpc::pb::report_service_client::ReportServiceClient;
use readiness::grpc::pb::stream_report_events_response::Message;
use readiness::grpc::pb::{StartPosition, StreamReportEventsRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// The service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The service's HTTP base URL (webhooks go to `/webhooks/argyle`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    webhook: String,
    /// Signing secret for the webhooks.
    #[arg(long, env = "READINESS_SIGN_SECRET", hide_env_values = true)]
    secret: String,
    /// Concurrent subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// HTTP/2 connections the subscribers share.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// reports.generated webhooks to deliver, one at a time.
    #[arg(long, default_value_t = 100)]
    reports: usize,
    /// Pause between webhooks, in milliseconds.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct CatchupArgs {
    /// The service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
}

fn from_now() -> StreamReportEventsRequest {
    StreamReportEventsRequest {
        start: StartPosition::Now as i32,
        ..Default::default()
    }
}

/// One subscriber: signals when caught up, then records when each event of this run arrives.
async fn subscribe(
    channel: Channel,
    prefix: String,
    expected: usize,
    caught_up: mpsc::Sender<()>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut client = ReportServiceClient::new(channel);
    let mut stream = client.stream_report_events(from_now()).await?.into_inner();
    let mut received = HashMap::with_capacity(expected);
    while received.len() < expected {
        let Ok(message) = tokio::time::timeout_at(deadline, stream.message()).await else {
            break;
        };
        match message?.and_then(|m| m.message) {
            Some(Message::CaughtUp(_)) => caught_up.send(()).await?,
            Some(Message::ReportGenerated(event)) => {
                let id = event.report.map(|r| r.argyle_report_id).unwrap_or_default();
                if id.starts_with(&prefix) {
                    received.insert(id, Instant::now());
                }
            }
            Some(Message::Heartbeat(_) | Message::ReportUpdated(_)) => {}
            None => break,
        }
    }
    Ok(received)
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<Value> {
    let channels = crate::query::connect(&args.target, args.connections).await?;
    let prefix = format!("fanout-{}", uuid::Uuid::new_v4().simple());
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(args.interval_ms) * args.reports as u32;
    let (caught_up, mut ready) = mpsc::channel(args.subscribers.max(1));
    let opened = Instant::now();
    let subscribers: Vec<_> = (0..args.subscribers)
        .map(|n| {
            tokio::spawn(subscribe(
                channels[n % channels.len()].clone(),
                prefix.clone(),
                args.reports,
                caught_up.clone(),
                deadline,
            ))
        })
        .collect();
    drop(caught_up);
    for _ in 0..args.subscribers {
        tokio::time::timeout_at(deadline, ready.recv()).await?;
    }
    let subscribed = opened.elapsed();

    let secret = Secret::new(args.secret.clone());
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/argyle", args.webhook.trim_end_matches('/'));
    let mut acked: HashMap<String, Instant> = HashMap::new();
    for n in 0..args.reports {
        let report_id = format!("{prefix}-{n}");
        let body = json!({"event": "reports.generated", "name": "fanout", "data": {
            "user": uuid::Uuid::new_v4(), "type": "voie", "report_id": report_id}})
        .to_string();
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-argyle-signature", sign(&secret, body.as_bytes()))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "webhook answered {}",
            response.status()
        );
        acked.insert(report_id, Instant::now());
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }

    let mut latencies = Vec::with_capacity(args.subscribers * args.reports);
    let mut early = 0_u64;
    for subscriber in subscribers {
        for (id, at) in subscriber.await?? {
            if let Some(ack) = acked.get(&id) {
                if at < *ack {
                    early += 1;
                }
                latencies.push(at.saturating_duration_since(*ack));
            }
        }
    }
    let expected = args.subscribers * args.reports;
    Ok(json!({
        "subscribers": args.subscribers,
        "connections": args.connections,
        "reports": args.reports,
        "seconds_to_subscribe_all": crate::stats::secs(subscribed),
        "deliveries_expected": expected,
        "deliveries_received": latencies.len(),
        "received_before_the_2xx": early,
        "ack_to_subscriber_ms": crate::stats::latency_ms(&mut latencies),
    }))
}

pub async fn catchup(args: CatchupArgs) -> anyhow::Result<Value> {
    let channel = crate::query::connect(&args.target, 1).await?.remove(0);
    let mut client = ReportServiceClient::new(channel);
    let started = Instant::now();
    let mut stream = client
        .stream_report_events(StreamReportEventsRequest {
            start: StartPosition::Beginning as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut events = 0_u64;
    let mut first = None;
    while let Some(message) = stream.message().await? {
        match message.message {
            Some(Message::ReportGenerated(_)) => {
                events += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
            Some(Message::CaughtUp(_)) => break,
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "events": events,
        "seconds": crate::stats::secs(elapsed),
        "events_per_second": (events as f64 / elapsed.as_secs_f64()).round(),
        "first_event_ms": first.map(|d| d.as_millis() as u64),
    }))
}
