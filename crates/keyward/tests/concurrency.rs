//! Counters are exact under concurrency; revocation is visible at once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::Env;
use keyward::{Actor, NewKey, NewTool, Request};
use keyward_core::limits::{Credits, RateLimit};
use keyward_core::{Code, Limits};

const THREADS: usize = 8;

fn race(env: &Env, token: &str, per_thread: usize, req: &Request<'_>) -> usize {
    let admitted = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per_thread {
                    if env.engine.verify(token, req).is_valid() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn daily_limit_admits_exactly_l() {
    let env = Env::new();
    let k = env.key_with(NewKey {
        name: "d".into(),
        limits: Some(Limits { daily: Some(137), ..Limits::default() }),
        ..NewKey::default()
    });
    assert_eq!(race(&env, k.token.expose(), 100, &Request::default()), 137);
    assert_eq!(env.engine.usage(k.info.id).unwrap().daily_used, Some(137));
}

#[test]
fn credits_admit_exactly_the_balance() {
    let env = Env::new();
    let limits = Limits { credits: Some(Credits { initial: 250, refill: None }), ..Limits::default() };
    let k = env.key_with(NewKey { name: "c".into(), limits: Some(limits), ..NewKey::default() });
    assert_eq!(race(&env, k.token.expose(), 100, &Request::default()), 250);
    assert_eq!(env.engine.key(k.info.id).unwrap().credits_remaining, Some(0));
}

#[test]
fn rate_limit_admits_exactly_the_burst() {
    let env = Env::new();
    let rate = RateLimit { name: "default".into(), limit: 64, window_ms: 3_600_000, auto_apply: true };
    let k = env.key_with(NewKey {
        name: "r".into(),
        limits: Some(Limits { rates: vec![rate], ..Limits::default() }),
        ..NewKey::default()
    });
    assert_eq!(race(&env, k.token.expose(), 50, &Request::default()), 64);
}

#[test]
fn tool_daily_limit_admits_exactly_l() {
    let env = Env::new();
    env.engine
        .create_tool(
            env.ws,
            NewTool {
                name: "gen".into(),
                enabled: true,
                permission: None,
                cooldown_ms: None,
                daily_limit: Some(33),
                upstream: None,
                timeout_ms: None,
            },
            &Actor::Admin,
        )
        .unwrap();
    let k = env.key("t");
    assert_eq!(race(&env, k.token.expose(), 20, &Request { tool: Some("gen"), ..Request::default() }), 33);
    // Another key has its own count for the tool.
    let other = env.key("o");
    assert!(env.engine.verify(other.token.expose(), &Request { tool: Some("gen"), ..Request::default() }).is_valid());
}

#[test]
fn no_verify_after_revoke_passes() {
    let env = Arc::new(Env::new());
    let k = env.key("victim");
    let token = k.token.expose().to_owned();
    let revoked = Arc::new(AtomicBool::new(false));
    let late_passes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (env, token, revoked, late, stop) =
            (Arc::clone(&env), token.clone(), Arc::clone(&revoked), Arc::clone(&late_passes), Arc::clone(&stop));
        handles.push(std::thread::spawn(move || {
            let mut after = 0;
            while !stop.load(Ordering::Acquire) || after < 1_000 {
                // Read the flag before starting the verify: if it was set, the
                // revoke had returned before this verify started.
                let started_after_revoke = revoked.load(Ordering::Acquire);
                let v = env.engine.verify(&token, &Request::default());
                if started_after_revoke {
                    after += 1;
                    if v.code != Code::Revoked {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    env.engine.revoke_key(k.info.id, &Actor::Admin).unwrap();
    revoked.store(true, Ordering::Release);
    std::thread::sleep(std::time::Duration::from_millis(30));
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(late_passes.load(Ordering::Relaxed), 0);
}
