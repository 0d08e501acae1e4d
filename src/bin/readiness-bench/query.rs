//! `GetUserReadiness` load: N concurrent request streams spread over K HTTP/2 connections, each
//! asking for a random seeded user, for a fixed time after a warm-up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use readiness::grpc::pb::GetUserReadinessRequest;
use readiness::grpc::pb::get_user_readiness_request::User;
use readiness::grpc::pb::readiness_service_client::ReadinessServiceClient;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Seeded users to pick from (indices 0..users, as written by `seed`).
    #[arg(long)]
    users: u64,
    /// Concurrent request streams.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the streams share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds sent before measuring (connections, caches and pools warm up).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Bearer token, when the service requires one.
    #[arg(long, env = "READINESS_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub async fn connect(target: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        channels.push(Endpoint::from_shared(target.to_owned())?.connect().await?);
    }
    Ok(channels)
}

pub async fn run(args: QueryArgs) -> anyhow::Result<Value> {
    let channels = connect(&args.target, args.connections).await?;
    let start = Instant::now() + Duration::from_secs(args.warmup);
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for stream in 0..args.concurrency.max(1) {
        let mut client = ReadinessServiceClient::new(channels[stream % channels.len()].clone());
        let (users, token) = (args.users.max(1), args.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(stream as u64);
            let mut latencies = Vec::new();
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let user = crate::seed::user_id(rng.u64(0..users)).to_string();
                let mut request = tonic::Request::new(GetUserReadinessRequest {
                    user: Some(User::UserId(user)),
                    ..Default::default()
                });
                if let Some(token) = &token {
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse()?);
                }
                let code = match client.get_user_readiness(request).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                if sent >= start {
                    *codes.entry(format!("{code:?}")).or_default() += 1;
                    if code == tonic::Code::Ok {
                        latencies.push(sent.elapsed());
                    }
                }
            }
            anyhow::Ok((latencies, codes))
        }));
    }
    let mut latencies = Vec::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (mine, counts) = task.await??;
        latencies.extend(mine);
        for (code, count) in counts {
            *codes.entry(code).or_default() += count;
        }
    }
    let seconds = args.seconds.max(1) as f64;
    Ok(json!({
        "concurrency": args.concurrency,
        "connections": args.connections,
        "seconds": seconds,
        "ok_per_second": (latencies.len() as f64 / seconds).round(),
        "codes": codes,
        "latency_ms": crate::stats::latency_ms(&mut latencies),
    }))
}
