//! Limits shared by several nodes on one Redis (a real `redis-server` the
//! test starts; skipped with a message when it is not installed, unless
//! `KEYWARD_REQUIRE_REDIS=1`): exact across nodes, and the same verdicts as
//! one embedded node for the same sequence of calls.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::T0;
use keyward::{Actor, CreditChange, Engine, LimitSync, ManualClock, NewKey, NewTool, NewWorkspace, Request};
use keyward_core::credentials::Credential;
use keyward_core::limits::{Concurrency, Cost, Credits, RateCost, RateLimit};
use keyward_core::{Code, KeyId, Limits, Verdict};
use redis_server::{Cluster, Redis};

fn node(url: &str, clock: &ManualClock) -> Engine {
    Engine::builder().clock(clock.clone()).flush_interval(Duration::from_secs(3600)).open_redis(url).unwrap()
}

/// Waits until every node knows key `id` (they follow the change stream).
fn known_everywhere(nodes: &[Engine], id: KeyId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().all(|n| n.key(id).is_ok()) {
        assert!(Instant::now() < deadline, "key {id} did not reach every node");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `calls` verifications of `token` per node, from 8 threads per node at
/// once; returns the verdict codes, counted.
fn storm(nodes: &[Engine], token: &str, calls: usize) -> Vec<(Code, u64)> {
    let counts: Vec<(Code, AtomicU64)> = Code::ALL.iter().map(|c| (*c, AtomicU64::new(0))).collect();
    std::thread::scope(|s| {
        for n in nodes {
            for t in 0..8 {
                let counts = &counts;
                s.spawn(move || {
                    for _ in (t..calls).step_by(8) {
                        let code = n.verify(token, &Request::default()).code;
                        if let Some((_, c)) = counts.iter().find(|(k, _)| *k == code) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    });
    counts.into_iter().map(|(k, c)| (k, c.into_inner())).filter(|(_, n)| *n > 0).collect()
}

#[test]
fn three_nodes_admit_exactly_the_limits() {
    let Some(redis) = Redis::start() else { return };
    exact_limits_on(&redis.url());
}

#[test]
fn three_nodes_admit_exactly_the_limits_on_a_cluster() {
    let Some(cluster) = Cluster::start() else { return };
    exact_limits_on(&cluster.url());
}

fn exact_limits_on(url: &str) {
    let clock = ManualClock::new(T0);
    let nodes: Vec<Engine> = (0..3).map(|_| node(url, &clock)).collect();
    let a = &nodes[0];
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let key = |name: &str, limits: Limits| {
        let k =
            a.create_key(ws, NewKey { name: name.into(), limits: Some(limits), ..NewKey::default() }, &Actor::Admin);
        let k = k.unwrap();
        known_everywhere(&nodes, k.info.id);
        k
    };
    let rate = key(
        "rate",
        Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 100, window_ms: 60_000, auto_apply: true }],
            ..Limits::default()
        },
    );
    let daily = key("daily", Limits { daily: Some(50), ..Limits::default() });
    let credits = key("credits", Limits { credits: Some(Credits { initial: 30, refill: None }), ..Limits::default() });

    assert_eq!(storm(&nodes, rate.token.expose(), 200), [(Code::Valid, 100), (Code::RateLimited, 500)]);
    assert_eq!(storm(&nodes, daily.token.expose(), 200), [(Code::Valid, 50), (Code::DailyLimit, 550)]);
    assert_eq!(storm(&nodes, credits.token.expose(), 200), [(Code::Valid, 30), (Code::UsageExhausted, 570)]);

    // Every node reports the store's figures, whichever node charged.
    for n in &nodes {
        assert_eq!(n.key(credits.info.id).unwrap().credits_remaining, Some(0));
        assert_eq!(n.usage(daily.info.id).unwrap().daily_used, Some(50));
    }
    // A minute later the rate limit has refilled, on every node.
    clock.advance(60_000);
    assert_eq!(storm(&nodes, rate.token.expose(), 50), [(Code::Valid, 100), (Code::RateLimited, 50)]);
}

#[test]
fn concurrency_leases_are_held_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    leases_on(&redis.url());
}

#[test]
fn concurrency_leases_are_held_across_nodes_on_a_cluster() {
    let Some(cluster) = Cluster::start() else { return };
    leases_on(&cluster.url());
}

fn leases_on(url: &str) {
    let clock = ManualClock::new(T0);
    let nodes: Vec<Engine> = (0..3).map(|_| node(url, &clock)).collect();
    let ws = nodes[0].create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let limits = Limits { concurrency: Some(Concurrency { max: 2, lease_ms: 60_000 }), ..Limits::default() };
    let spec = NewKey { name: "jobs".into(), limits: Some(limits), ..NewKey::default() };
    let k = nodes[0].create_key(ws, spec, &Actor::Admin).unwrap();
    known_everywhere(&nodes, k.info.id);
    let cred = Credential::ApiKey(k.token.expose().to_owned().into());
    let req = Request::default();

    let on_a = nodes[0].acquire(&cred, &req).unwrap();
    let on_b = nodes[1].acquire(&cred, &req).unwrap();
    let refused = nodes[2].acquire(&cred, &req).err().unwrap();
    assert_eq!(refused.code, Code::ConcurrencyLimit);
    assert_eq!(nodes[0].acquire(&cred, &req).err().unwrap().code, Code::ConcurrencyLimit);
    // A lease taken on A is released on A; C then gets the slot.
    drop(on_a);
    let on_c = nodes[2].acquire(&cred, &req).unwrap();
    assert_eq!(nodes[1].acquire(&cred, &req).err().unwrap().code, Code::ConcurrencyLimit);
    // A lease is released by whichever node is asked to.
    let lease = on_b.verdict().leases.clone();
    std::mem::forget(on_b);
    assert!(nodes[2].release(k.info.id, None, &lease));
    assert!(!nodes[0].release(k.info.id, None, &lease), "released once");
    let again = nodes[0].acquire(&cred, &req).unwrap();
    drop((on_c, again));
    assert_eq!(nodes[1].verify(k.token.expose(), &req).quota, nodes[0].verify(k.token.expose(), &req).quota);
}

#[test]
fn admin_changes_of_counters_land_on_the_shared_counters() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let nodes: Vec<Engine> = (0..2).map(|_| node(&redis.url(), &clock)).collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let limits = Limits { credits: Some(Credits { initial: 100, refill: None }), ..Limits::default() };
    let k = a.create_key(ws, NewKey { name: "paid".into(), limits: Some(limits), ..NewKey::default() }, &Actor::Admin);
    let k = k.unwrap();
    known_everywhere(&nodes, k.info.id);
    let spend = |n: &Engine, credits: u64| {
        let req = Request { cost: Cost { credits, rates: &[] }, ..Request::default() };
        n.verify(k.token.expose(), &req).quota.credits_remaining
    };
    assert_eq!(spend(a, 10), Some(90));
    // B has not seen A's charge; its change applies to the stored balance.
    assert_eq!(b.update_credits(k.info.id, CreditChange::Increment(5), &Actor::Admin).unwrap(), 95);
    assert_eq!(spend(a, 1), Some(94));
    assert_eq!(spend(b, 4), Some(90));
    // A rotation on A hands over the counters as stored (B's charge too).
    let next = a.rotate_key(k.info.id, 60_000, &Actor::Admin).unwrap();
    known_everywhere(&nodes, next.info.id);
    assert_eq!(b.key(next.info.id).unwrap().credits_remaining, Some(90));
    let next_spend = |n: &Engine| {
        n.verify(next.token.expose(), &Request { cost: Cost { credits: 3, rates: &[] }, ..Request::default() })
    };
    assert_eq!(next_spend(b).quota.credits_remaining, Some(87));
    assert_eq!(next_spend(a).quota.credits_remaining, Some(84));
    // The old token, in its grace, spends the same balance.
    assert_eq!(spend(b, 4), Some(80));
    assert_eq!(a.update_credits(next.info.id, CreditChange::Set(7), &Actor::Admin).unwrap(), 7);
    assert_eq!(spend(b, 1), Some(6));
}

/// A small deterministic generator (xorshift64*), so a failing sequence
/// can be replayed from its seed.
struct Seq(u64);

impl Seq {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One world: the same workspace, tool and keys, created with the same
/// calls (ids and tokens differ between worlds).
struct World {
    nodes: Vec<Engine>,
    keys: Vec<(KeyId, String)>,
}

fn world(nodes: Vec<Engine>) -> World {
    let a = &nodes[0];
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let tool = NewTool {
        name: "search".into(),
        enabled: true,
        permission: None,
        cooldown_ms: Some(300),
        daily_limit: Some(40),
        upstream: None,
        timeout_ms: None,
    };
    a.create_tool(ws, tool, &Actor::Admin).unwrap();
    let specs = [
        Limits {
            rates: vec![
                RateLimit { name: "default".into(), limit: 5, window_ms: 1_000, auto_apply: true },
                RateLimit { name: "heavy".into(), limit: 2, window_ms: 3_000, auto_apply: false },
            ],
            credits: Some(Credits { initial: 25, refill: None }),
            ..Limits::default()
        },
        Limits {
            daily: Some(12),
            cooldown_ms: Some(150),
            concurrency: Some(Concurrency { max: 2, lease_ms: 2_000 }),
            ..Limits::default()
        },
        Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 3, window_ms: 500, auto_apply: true }],
            ..Limits::default()
        },
    ];
    let mut keys = Vec::new();
    for (i, limits) in specs.into_iter().enumerate() {
        let spec = NewKey {
            name: format!("k{i}"),
            limits: Some(limits),
            tool_limits: vec![("search".into(), Limits { daily: Some(9), ..Limits::default() })],
            ..NewKey::default()
        };
        let k = a.create_key(ws, spec, &Actor::Admin).unwrap();
        keys.push((k.info.id, k.token.expose().to_owned()));
    }
    for (id, _) in &keys {
        known_everywhere(&nodes, *id);
    }
    World { nodes, keys }
}

/// What a verdict says, without the ids that differ between worlds.
fn seen(v: &Verdict) -> String {
    format!("{:?} retry={:?} quota={:?} leases={:?}", v.code, v.retry_after_ms, v.quota, v.leases)
}

#[test]
fn redis_gives_the_verdicts_of_one_embedded_node() {
    let Some(redis) = Redis::start() else { return };
    parity_on(&redis.url());
}

#[test]
fn a_cluster_gives_the_verdicts_of_one_embedded_node() {
    let Some(cluster) = Cluster::start() else { return };
    parity_on(&cluster.url());
}

fn parity_on(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let embedded = Engine::builder()
        .clock(clock.clone())
        .flush_interval(Duration::from_secs(3600))
        .open(dir.path().join("p.redb"));
    let one = world(vec![embedded.unwrap()]);
    let shared = world((0..3).map(|_| node(url, &clock)).collect());

    let mut rng = Seq(0x5eed_2026_1206);
    let mut held: Vec<Vec<(usize, Verdict)>> = vec![Vec::new(), Vec::new()];
    let mut valid = 0;
    for step in 0..1_500 {
        let k = rng.next(3) as usize;
        let node = rng.next(3) as usize;
        let what = rng.next(20);
        let tool = (rng.next(3) == 0).then_some("search");
        let credits = rng.next(3);
        let heavy = [RateCost::named("heavy", 1)];
        let cost = Cost { credits, rates: if rng.next(4) == 0 { &heavy } else { &[] } };
        let req = Request { tool, cost, ..Request::default() };
        let mut outcome = Vec::new();
        for (w, world) in [&one, &shared].into_iter().enumerate() {
            let n = &world.nodes[node % world.nodes.len()];
            let (id, token) = &world.keys[k];
            let out = match what {
                // Advance time (both worlds share the clock: once).
                0 => {
                    if w == 0 {
                        clock.advance(rng.next(700));
                    }
                    "tick".to_owned()
                }
                1 if !held[w].is_empty() => {
                    let (kk, v) = held[w].remove(0);
                    let released = n.release(world.keys[kk].0, None, &v.leases);
                    format!("released={released}")
                }
                2 => match n.update_credits(*id, CreditChange::Increment(2), &Actor::Admin) {
                    Ok(left) => format!("credits={left}"),
                    Err(e) => format!("error={e}"),
                },
                _ => {
                    let v = n.verify(token, &req);
                    if !v.leases.is_empty() && tool.is_none() {
                        held[w].push((k, v.clone()));
                    }
                    seen(&v)
                }
            };
            outcome.push(out);
        }
        assert_eq!(outcome[0], outcome[1], "step {step}: key {k}, {req:?}");
        valid += usize::from(outcome[0].starts_with("Valid"));
    }
    // The sequence exercised both answers.
    assert!(valid > 100 && valid < 1_200, "{valid} valid of 1500");
}

/// Three nodes on one Redis, one workspace counting locally every `ms`,
/// one key of `credits` credits known to every node.
fn local_setup(redis: &Redis, clock: &ManualClock, ms: u64, credits: u64) -> (Vec<Engine>, keyward::CreatedKey) {
    let nodes: Vec<Engine> = (0..3).map(|_| node(&redis.url(), clock)).collect();
    let spec = NewWorkspace { limit_sync: LimitSync::Local { ms }, ..NewWorkspace::named("edge") };
    let ws = nodes[0].create_workspace(spec, &Actor::Admin).unwrap().policy.id;
    let limits = Limits { credits: Some(Credits { initial: credits, refill: None }), ..Limits::default() };
    let k =
        nodes[0].create_key(ws, NewKey { name: "k".into(), limits: Some(limits), ..NewKey::default() }, &Actor::Admin);
    let k = k.unwrap();
    known_everywhere(&nodes, k.info.id);
    (nodes, k)
}

#[test]
fn local_mode_is_exact_for_calls_further_apart_than_its_interval() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let (nodes, k) = local_setup(&redis, &clock, 20, 10);
    let mut admitted = 0;
    for i in 0..24 {
        admitted += usize::from(nodes[i % 3].verify(k.token.expose(), &Request::default()).is_valid());
        // Past two intervals: this call is reconciled before the next.
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(admitted, 10);
    assert_eq!(nodes.iter().map(|n| n.health().local_overshoot).sum::<u64>(), 0);
    assert_eq!(nodes[1].key(k.info.id).unwrap().credits_remaining, Some(0));
}

#[test]
fn local_mode_overshoots_by_what_the_nodes_admitted_between_reconciliations() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let (nodes, k) = local_setup(&redis, &clock, 50, 30);
    let counts = storm(&nodes, k.token.expose(), 200);
    let admitted = counts.iter().find(|(c, _)| *c == Code::Valid).map_or(0, |(_, n)| *n);
    eprintln!("local mode, 3 × 200 calls against 30 credits: {admitted} admitted");
    // Each node admits at most what its copy allowed: 30 each.
    assert!((30..=90).contains(&admitted), "{counts:?}");
    // Once reconciled, the store counted 30 and every node knows it; the
    // rest is the overshoot the nodes report.
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes.iter().map(|n| n.health().local_overshoot).sum::<u64>() != admitted - 30 {
        assert!(Instant::now() < deadline, "overshoot not reconciled: {counts:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(nodes[2].key(k.info.id).unwrap().credits_remaining, Some(0));
    std::thread::sleep(Duration::from_millis(150));
    for n in &nodes {
        assert_eq!(n.verify(k.token.expose(), &Request::default()).code, Code::UsageExhausted);
    }
}

/// Runs `work` on its own thread; fails the test if it is not done in time
/// (a deadlock fails instead of hanging).
fn with_watchdog<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: not finished after 60 s: the engine is wedged"),
    }
}

/// Every path that takes a key's gate on a shared store, at once on two
/// nodes: exact and local verification, leases taken and released, credit
/// changes, rotations, reads of the counters, the reconciler and the
/// flusher. Nothing wedges, and the exact key's balance adds up.
#[test]
fn gates_under_contention_never_wedge() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let clock = ManualClock::new(T0);
    let node = |c: &ManualClock| {
        Engine::builder().clock(c.clone()).flush_interval(Duration::from_millis(5)).open_redis(&url).unwrap()
    };
    let nodes = [node(&clock), node(&clock)];
    let a = &nodes[0];
    let ws = a.create_workspace(NewWorkspace::named("exact"), &Actor::Admin).unwrap().policy.id;
    let local = NewWorkspace { limit_sync: LimitSync::Local { ms: 5 }, ..NewWorkspace::named("local") };
    let local_ws = a.create_workspace(local, &Actor::Admin).unwrap().policy.id;
    let credits = |n| Limits {
        credits: Some(Credits { initial: n, refill: None }),
        concurrency: Some(Concurrency { max: 4, lease_ms: 60_000 }),
        ..Limits::default()
    };
    let exact = a.create_key(
        ws,
        NewKey { name: "e".into(), limits: Some(credits(1_000_000)), ..NewKey::default() },
        &Actor::Admin,
    );
    let exact = exact.unwrap();
    let daily = Limits { daily: Some(1_000_000), ..Limits::default() };
    let loc =
        a.create_key(local_ws, NewKey { name: "l".into(), limits: Some(daily), ..NewKey::default() }, &Actor::Admin);
    let loc = loc.unwrap();
    known_everywhere(&nodes, exact.info.id);
    known_everywhere(&nodes, loc.info.id);
    let (e_token, l_token, e_id) = (exact.token.expose().to_owned(), loc.token.expose().to_owned(), exact.info.id);
    let (nodes, spent, added) = with_watchdog("gates under contention", move || {
        let spent = AtomicU64::new(0);
        let added = AtomicU64::new(0);
        std::thread::scope(|s| {
            for n in &nodes {
                let (spent, e_token, l_token) = (&spent, &e_token, &l_token);
                s.spawn(move || {
                    let cred = Credential::ApiKey(e_token.clone().into());
                    for i in 0..300 {
                        match n.acquire(&cred, &Request::default()) {
                            Ok(guard) => {
                                spent.fetch_add(1, Ordering::Relaxed);
                                if i % 2 == 0 {
                                    drop(guard);
                                } else {
                                    guard.release();
                                }
                            }
                            Err(v) => assert_eq!(v.code, Code::ConcurrencyLimit, "{v:?}"),
                        }
                        assert!(n.verify(l_token, &Request::default()).is_valid());
                    }
                });
                let added = &added;
                s.spawn(move || {
                    for _ in 0..40 {
                        n.update_credits(e_id, CreditChange::Increment(3), &Actor::Admin).unwrap();
                        added.fetch_add(3, Ordering::Relaxed);
                        n.usage(e_id).unwrap();
                        n.key(e_id).unwrap();
                    }
                });
            }
        });
        (nodes, spent.into_inner(), added.into_inner())
    });
    // The exact key's balance: initial, plus what was added, minus what was spent.
    let left = nodes[1].key(e_id).unwrap().credits_remaining;
    assert_eq!(left, Some(1_000_000 + added - spent));
    // A rotation under the gate hands the same balance over.
    let next = nodes[0].rotate_key(e_id, 1_000, &Actor::Admin).unwrap();
    known_everywhere(&nodes, next.info.id);
    assert_eq!(nodes[1].key(next.info.id).unwrap().credits_remaining, left);
}
