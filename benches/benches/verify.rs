//! `Engine::verify` on each of its paths, beside raw SHA-256 of the same token
//! (the floor: every verification of a well-formed token hashes it once).
//!
//! Groups:
//! - `verify`: one thread, one path per bench.
//! - `verify_threads`: the full valid path with 1 and 2 threads, each thread
//!   verifying its own key; per-op time is wall time / total calls, so the
//!   2-thread figure shows aggregate throughput.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward::Request;
use keyward_benches::{
    Fixture, bad_checksum, client_ip, key_with_ip_rule_and_rate, plain_key, rate_limited_key, unknown_token,
};
use keyward_core::{Code, KeyHash};

/// One verification, its verdict kept where a caller keeps it: `verify`
/// writes the verdict into the caller's slot, and the optimiser must assume
/// the reference is read. (Returning the verdict to the harness would time
/// a copy of it too, which no caller makes.)
fn verify_once(fx: &Fixture, token: &str, req: &Request<'_>) {
    let verdict = fx.engine.verify(black_box(token), black_box(req));
    black_box(&verdict);
}

fn verify(c: &mut Criterion) {
    let fx = Fixture::open().expect("open bench database");
    let full = fx.key(key_with_ip_rule_and_rate("full")).expect("create key");
    let plain = fx.key(plain_key("plain")).expect("create key");
    let limited = fx.key(rate_limited_key("limited", 1, 3_600_000)).expect("create key");

    let full_token = full.token.expose();
    let plain_token = plain.token.expose();
    let limited_token = limited.token.expose();
    let bad = bad_checksum(full_token);
    let unknown = unknown_token();
    let inside = Request { ip: Some(client_ip()), ..Request::default() };
    let none = Request::default();

    // Each bench is worthless if the path is not the one named: check first.
    assert_eq!(fx.engine.verify(full_token, &inside).code, Code::Valid);
    assert_eq!(fx.engine.verify(plain_token, &none).code, Code::Valid);
    assert_eq!(fx.engine.verify(&bad, &none).code, Code::Malformed);
    assert_eq!(fx.engine.verify(&unknown, &none).code, Code::NotFound);
    // The one call the limit allows; every later one is refused.
    assert_eq!(fx.engine.verify(limited_token, &none).code, Code::Valid);
    assert_eq!(fx.engine.verify(limited_token, &none).code, Code::RateLimited);

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("sha256_of_token", |b| b.iter(|| KeyHash::of(black_box(full_token))));
    g.bench_function("valid_key_ip_rules_rate_limit", |b| b.iter(|| verify_once(&fx, full_token, &inside)));
    g.bench_function("valid_key_no_limits", |b| b.iter(|| verify_once(&fx, plain_token, &none)));
    g.bench_function("bad_checksum", |b| b.iter(|| verify_once(&fx, &bad, &none)));
    g.bench_function("unknown_key", |b| b.iter(|| verify_once(&fx, &unknown, &none)));
    g.bench_function("rate_limited", |b| b.iter(|| verify_once(&fx, limited_token, &none)));
    g.finish();
}

/// Runs `iters` verifications split over `tokens.len()` threads, each on its
/// own token, and returns the wall time from a common start to the last finish.
fn run_threads(fx: &Fixture, tokens: &[String], req: &Request<'_>, iters: u64) -> Duration {
    let n = tokens.len() as u64;
    let start = Barrier::new(tokens.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let share = iters / n + u64::from((i as u64) < iters % n);
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    for _ in 0..share {
                        verify_once(fx, token, req);
                    }
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        t0.elapsed()
    })
}

fn verify_threads(c: &mut Criterion) {
    let fx = Fixture::open().expect("open bench database");
    let tokens: Vec<String> = fx.tokens(2, |i| key_with_ip_rule_and_rate(format!("thread-{i}"))).expect("create keys");
    let inside = Request { ip: Some(client_ip()), ..Request::default() };
    for t in &tokens {
        assert_eq!(fx.engine.verify(t, &inside).code, Code::Valid);
    }

    let mut g = c.benchmark_group("verify_threads");
    g.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        g.bench_function(format!("threads/{threads}"), |b| {
            b.iter_custom(|iters| run_threads(&fx, &tokens[..threads], &inside, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, verify, verify_threads);
criterion_main!(benches);
