//! Latency percentiles, printed the same way by every bench that times calls one by one
//! (`benches/agent.rs`, `benches/cluster.rs`): nearest-rank quantiles, and each configuration's
//! p50/p99/mean against the first.

use std::time::Duration;

pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

/// The value at quantile `q` of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
}

/// Sorts each configuration's latencies and prints p50/p99/p99.9/mean/max, then each
/// configuration's p50 and p99 against the first (`baseline`).
pub fn print_percentiles(title: &str, labels: &[&str], latencies: &mut [Vec<Duration>]) {
    println!("\n{title}");
    for (label, samples) in labels.iter().zip(latencies.iter_mut()) {
        samples.sort();
        println!(
            "  {label:<34} n {:>6}  p50 {:>10}  p99 {:>10}  p99.9 {:>10}  mean {:>10}  max {:>10}",
            samples.len(),
            fmt_duration(percentile(samples, 0.50)),
            fmt_duration(percentile(samples, 0.99)),
            fmt_duration(percentile(samples, 0.999)),
            fmt_duration(mean(samples)),
            fmt_duration(percentile(samples, 1.0)),
        );
    }
    let baseline = &latencies[0];
    for (label, samples) in labels.iter().zip(latencies.iter()).skip(1) {
        let ratio =
            |q: f64| percentile(samples, q).as_secs_f64() / percentile(baseline, q).as_secs_f64();
        println!(
            "  {label} / {}: p50 {:.2}x, p99 {:.2}x, mean {:.2}x",
            labels[0],
            ratio(0.50),
            ratio(0.99),
            mean(samples).as_secs_f64() / mean(baseline).as_secs_f64(),
        );
    }
}
