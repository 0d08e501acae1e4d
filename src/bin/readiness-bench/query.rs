//! `GetUserReadiness` load: N concurrent request streams spread over K HTTP/2 connections, each
//! asking for a random seeded user, for a fixed time after a warm-up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use prost::Message;
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
    /// Before the warm-up, read every seeded user once (spread over the streams), so that the
    /// service's read model holds as many views as it can (up to `read_cache_users`).
    #[arg(long)]
    prefill: bool,
    /// Bearer token, when the service requires one.
    #[arg(long, env = "READINESS_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct FrameArgs {
    /// The seeded user's index.
    #[arg(long, default_value_t = 0)]
    user_index: u64,
    /// Where to write the frame.
    #[arg(long)]
    out: std::path::PathBuf,
}

/// Writes the request body a gRPC client sends for `GetUserReadiness` of one seeded user: the
/// 5-byte gRPC prefix (uncompressed, big-endian length) and the protobuf message.
pub fn frame(args: FrameArgs) -> anyhow::Result<Value> {
    let user = crate::seed::user_id(args.user_index).to_string();
    let message = GetUserReadinessRequest {
        user: Some(User::UserId(user.clone())),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(&message);
    std::fs::write(&args.out, &frame)?;
    Ok(json!({ "user_id": user, "bytes": frame.len(), "out": args.out }))
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
    let prefill_started = Instant::now();
    if args.prefill {
        prefill(&args, &channels).await?;
    }
    let prefill_seconds = prefill_started.elapsed().as_secs_f64();
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
                let request = request(rng.u64(0..users), token.as_deref())?;
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
        "prefill_seconds": prefill_seconds,
    }))
}

/// `GetUserReadiness` for seeded user `index`, with the bearer token if any.
fn request(
    index: u64,
    token: Option<&str>,
) -> anyhow::Result<tonic::Request<GetUserReadinessRequest>> {
    let user = crate::seed::user_id(index).to_string();
    let mut request = tonic::Request::new(GetUserReadinessRequest {
        user: Some(User::UserId(user)),
        ..Default::default()
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(request)
}

/// Reads users 0..users once each, stream `i` taking users `i`, `i + concurrency`, ...
async fn prefill(args: &QueryArgs, channels: &[Channel]) -> anyhow::Result<()> {
    let streams = args.concurrency.max(1);
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let mut client = ReadinessServiceClient::new(channels[stream % channels.len()].clone());
        let (users, token) = (args.users, args.token.clone());
        tasks.push(tokio::spawn(async move {
            for index in (stream as u64..users).step_by(streams) {
                client
                    .get_user_readiness(request(index, token.as_deref())?)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
