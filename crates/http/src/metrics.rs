//! Prometheus text metrics: requests by route and verdict, verify latency.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

const BUCKETS_US: [u64; 12] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

/// Counters behind `GET /metrics`.
#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(String, u16, &'static str), u64>,
    /// Calls per bucket of `BUCKETS_US`, then the calls above the last.
    latency: [AtomicU64; BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    pub(crate) fn record(&self, route: &str, status: u16, verdict: Option<&'static str>, took: Duration) {
        *self.requests.entry((route.to_owned(), status, verdict.unwrap_or(""))).or_insert(0) += 1;
        if verdict.is_some() {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
            if let Some(bucket) = self.latency.get(i) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
            self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
            self.latency_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, keys_live: usize, keys_total: usize, health: &keyward::Health) -> String {
        let mut out = String::new();
        out.push_str("# HELP keyward_http_requests_total HTTP requests by route, status and verdict code.\n");
        out.push_str("# TYPE keyward_http_requests_total counter\n");
        let mut rows: Vec<_> = self.requests.iter().map(|e| (e.key().clone(), *e.value())).collect();
        rows.sort();
        for ((route, status, code), n) in rows {
            let _ = writeln!(
                out,
                "keyward_http_requests_total{{route=\"{}\",status=\"{status}\",code=\"{code}\"}} {n}",
                route.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        out.push_str("# HELP keyward_verify_duration_seconds Time to answer requests that carried a verdict.\n");
        out.push_str("# TYPE keyward_verify_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (b, n) in BUCKETS_US.iter().zip(&self.latency) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "keyward_verify_duration_seconds_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1e6);
        }
        cumulative += self.latency.last().map_or(0, |n| n.load(Ordering::Relaxed));
        let _ = writeln!(out, "keyward_verify_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "keyward_verify_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "keyward_verify_duration_seconds_count {}", self.latency_count.load(Ordering::Relaxed));
        out.push_str("# HELP keyward_keys_live Keys usable now.\n# TYPE keyward_keys_live gauge\n");
        let _ = writeln!(out, "keyward_keys_live {keys_live}");
        out.push_str("# HELP keyward_keys_total Keys in the database, any status.\n# TYPE keyward_keys_total gauge\n");
        let _ = writeln!(out, "keyward_keys_total {keys_total}");
        out.push_str("# HELP keyward_flush_failures_total Write-behind flushes that failed.\n");
        out.push_str("# TYPE keyward_flush_failures_total counter\n");
        let _ = writeln!(out, "keyward_flush_failures_total {}", health.flush_failures);
        out.push_str("# HELP keyward_write_failures_total Commits that failed (flushes included).\n");
        out.push_str("# TYPE keyward_write_failures_total counter\n");
        let _ = writeln!(out, "keyward_write_failures_total {}", health.write_failures);
        out.push_str("# HELP keyward_store_degraded 1 while the store fails to commit.\n");
        out.push_str("# TYPE keyward_store_degraded gauge\n");
        let _ = writeln!(out, "keyward_store_degraded {}", u8::from(health.degraded.is_some()));
        out.push_str("# HELP keyward_store_stale 1 while a shared store has not answered for the stale window.\n");
        out.push_str("# TYPE keyward_store_stale gauge\n");
        let _ = writeln!(out, "keyward_store_stale {}", u8::from(health.store_stale));
        out
    }
}
