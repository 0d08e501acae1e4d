//! Latency summaries shared by the commands.

use std::time::Duration;

use serde_json::{Value, json};

/// p50/p90/p99/max in milliseconds (two decimals) of unsorted samples.
pub fn latency_ms(samples: &mut [Duration]) -> Value {
    samples.sort_unstable();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let at = |p: f64| ms(readiness::cli::simulate::percentile(samples, p));
    json!({
        "p50": at(50.0),
        "p90": at(90.0),
        "p99": at(99.0),
        "max": ms(samples.last().copied().unwrap_or_default()),
    })
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}
