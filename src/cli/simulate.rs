//! `readiness simulate`: a load generator that plays realistic, signed Argyle traffic (users with
//! 1-3 accounts going through added → connected/failed → updated → reports.ready →
//! reports.generated, with duplicates and reordering) and reports throughput and latency
//! percentiles of the acknowledgements (one JSON object on standard output; a progress bar on
//! standard error when it is a terminal). Used by the benchmarks in `bench/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use crate::cli::{SimulateArgs, progress};
use crate::domain::signature::{Secret, sign};

/// The deliveries of one simulated user, in a plausible order.
fn user_traffic(rng: &mut fastrand::Rng, args: &SimulateArgs) -> Vec<String> {
    let uuid = |rng: &mut fastrand::Rng| uuid::Uuid::from_u128(rng.u128(..)).to_string();
    let user = uuid(rng);
    let external_id = format!("sim-{}", rng.u32(..));
    let mut deliveries = Vec::new();
    let mut synced = Vec::new();
    let event = |name: &str, data: serde_json::Value| {
        json!({"event": name, "name": "simulate", "data": data}).to_string()
    };
    for _ in 0..rng.usize(1..=3) {
        let account = uuid(rng);
        let at = format!(
            "2026-01-{:02}T{:02}:{:02}:00Z",
            rng.u8(1..28),
            rng.u8(0..24),
            rng.u8(0..60)
        );
        deliveries.push(event(
            "accounts.added",
            json!({"account": account, "user": user}),
        ));
        if rng.f64() < 0.15 {
            deliveries.push(event("accounts.failed", json!({"account": account, "user": user,
                "error_code": "invalid_credentials", "error_message": "The credentials are not valid."})));
            continue;
        }
        deliveries.push(event(
            "accounts.connected",
            json!({"account": account, "user": user}),
        ));
        deliveries.push(event("accounts.updated", json!({"account": account, "user": user,
            "resource": {"id": account, "user": user, "connection": {"status": "connected", "error_code": null,
            "error_message": null, "updated_at": at}}})));
        synced.push(json!({"id": account, "last_synced_at": at.replace("00Z", "30Z")}));
    }
    if !synced.is_empty() {
        deliveries.push(event(
            "reports.ready",
            json!({"user": user, "external_id": external_id, "accounts": synced}),
        ));
        deliveries.push(event(
            "reports.generated",
            json!({"user": user, "type": "voie", "report_id": uuid(rng)}),
        ));
    }
    let repeats: Vec<String> = deliveries
        .iter()
        .filter(|_| rng.f64() < args.duplicates)
        .cloned()
        .collect();
    deliveries.extend(repeats);
    if rng.f64() < args.reorder {
        rng.shuffle(&mut deliveries);
    }
    deliveries
}

/// Nearest-rank percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the simulation and prints a JSON summary.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let secret = crate::config::signing_secret(args.secret.clone())?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut deliveries = Vec::new();
    for _ in 0..args.users {
        deliveries.extend(user_traffic(&mut rng, &args));
    }
    let secret = Secret::new(secret);
    let signed: Vec<(String, String)> = deliveries
        .into_iter()
        .map(|body| (sign(&secret, body.as_bytes()), body))
        .collect();
    let total = signed.len();

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let url = format!("{}/webhooks/argyle", args.target.trim_end_matches('/'));
        let queue = Arc::new(Mutex::new(signed.into_iter().enumerate()));
        let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
        let bar = progress::bar(total as u64, "sending deliveries");
        let started = Instant::now();
        let senders: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
                let bar = bar.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                    loop {
                        let Some((index, (signature, body))) = queue.lock().await.next() else {
                            break;
                        };
                        if let Some(interval) = interval {
                            tokio::time::sleep_until((started + interval * index as u32).into())
                                .await;
                        }
                        let sent = Instant::now();
                        let response = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-argyle-signature", signature)
                            .body(body)
                            .send()
                            .await;
                        let status = match response {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let _ = response.bytes().await;
                                if (200..300).contains(&status) {
                                    latencies.push(sent.elapsed());
                                }
                                status.to_string()
                            }
                            Err(error) => format!(
                                "error: {}",
                                if error.is_connect() {
                                    "connect"
                                } else {
                                    "other"
                                }
                            ),
                        };
                        *statuses.entry(status).or_default() += 1;
                        bar.inc(1);
                    }
                    (latencies, statuses)
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(total);
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        for sender in senders {
            let (mine, counts) = sender.await?;
            latencies.extend(mine);
            for (status, count) in counts {
                *statuses.entry(status).or_default() += count;
            }
        }
        let elapsed = started.elapsed();
        bar.finish();
        latencies.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        let summary = json!({
            "deliveries": total,
            "users": args.users,
            "concurrency": args.concurrency,
            "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "acknowledged_per_second": (latencies.len() as f64 / elapsed.as_secs_f64()).round(),
            "statuses": statuses,
            "ack_latency_ms": {
                "p50": ms(percentile(&latencies, 50.0)),
                "p90": ms(percentile(&latencies, 90.0)),
                "p99": ms(percentile(&latencies, 99.0)),
                "max": ms(latencies.last().copied().unwrap_or_default()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
