//! Signed logins, gateway calls and the background flusher at once: the
//! server must keep answering `/healthz`, and stop on SIGTERM afterwards.
//!
//! Regression: a login used to commit its session while holding its key's
//! counter lock, while the flusher took counter locks inside its write
//! transaction; the two orders met, the engine wedged, the runtime's workers
//! blocked one by one and even `/healthz` stopped answering (within a second
//! at `--flush-ms 1`). The lock order is now written down and enforced at
//! the engine's writer (docs/storage.md). Every request here has a timeout
//! and a watchdog ends the whole test, so a wedge fails the test instead of
//! hanging it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, Watched, agent_with_timeout as agent, bearer, call, watchdog};
use serde_json::{Value, json};

/// Keys with a signing identity (bearer keys too) and a daily limit.
const KEYS: usize = 100;
/// Gateway threads.
const GATEWAY_THREADS: usize = 3;
/// Timeout of each `/healthz` poll.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of each login, gateway call or setup request.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole test, server start to exit.
const WATCHDOG: Duration = Duration::from_secs(60);
/// How long the server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The daily limit of each key: far more than the test can spend.
const DAILY: u64 = 1_000_000;

#[test]
fn serve_default_flush_does_not_wedge() {
    run("serve_default_flush_does_not_wedge", &[], Duration::from_secs(8));
}

#[test]
fn serve_flush_ms_1_does_not_wedge() {
    run("serve_flush_ms_1_does_not_wedge", &["--flush-ms", "1"], Duration::from_secs(5));
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A key as the load threads use it.
struct Key {
    token: String,
    api_secret: String,
    user_id: String,
}

/// Outcomes of one kind of request.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    other: AtomicU64,
    transport: AtomicU64,
    /// The first few unexpected outcomes, for the failure message.
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, what: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 5 {
            s.push(what);
        }
    }

    fn get(n: &AtomicU64) -> u64 {
        n.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        format!(
            "{} ok, {} rate-limited, {} 5xx, {} other statuses, {} transport errors/timeouts",
            Self::get(&self.ok),
            Self::get(&self.rate_limited),
            Self::get(&self.server_errors),
            Self::get(&self.other),
            Self::get(&self.transport)
        )
    }
}

fn create_keys(s: &Server) -> Vec<Key> {
    let agent = agent(LOAD_TIMEOUT);
    let auth = bearer(&s.root);
    (0..KEYS)
        .map(|i| {
            let user_id = format!("u{i}");
            let body = json!({
                "name": format!("wp{i}"),
                "signing": {"user_id": user_id, "nonce_policy": "unique"},
                // The gateway is called with the token alone too.
                "bearer": true,
                "limits": {"daily": DAILY},
            });
            let (status, v) = call(&agent, "POST", &s.url("/v1/api-keys"), &[("authorization", &auth)], Some(&body))
                .unwrap_or_else(|e| panic!("creating key {i}: {e}"));
            assert_eq!(status, 201, "creating key {i}: {v}");
            let d = &v["data"];
            assert_eq!(d["user_id"].as_str(), Some(user_id.as_str()), "{v}");
            assert_eq!(d["nonce_policy"], "unique", "{v}");
            assert_eq!(d["limits"]["daily"], DAILY, "{v}");
            Key {
                token: d["secret"].as_str().unwrap_or_else(|| panic!("no secret: {v}")).to_owned(),
                api_secret: d["api_secret"].as_str().unwrap_or_else(|| panic!("no api_secret: {v}")).to_owned(),
                user_id,
            }
        })
        .collect()
}

/// `POST /v1/AuthenticateUser` round-robin over the keys, each with a fresh nonce.
fn login_loop(base: &str, keys: &[Key], deadline: Instant, t: &Tally) {
    let agent = agent(LOAD_TIMEOUT);
    let url = format!("{base}/v1/AuthenticateUser");
    let mut n: usize = 0;
    while Instant::now() < deadline {
        let k = &keys[n % keys.len()];
        n += 1;
        let nonce = n.to_string();
        let secret = keyward_core::signature::ApiSecret::new(k.api_secret.as_bytes().to_vec());
        let sig = keyward_core::signature::sign_hex(&secret, &nonce, &k.user_id, &k.token);
        let headers = [("APIKey", k.token.as_str()), ("Signature", &sig), ("UserId", &k.user_id), ("Nonce", &nonce)];
        match call(&agent, "POST", &url, &headers, None) {
            Ok((200, v)) if v["data"]["authenticated"] == true && v["data"]["user_id"] == k.user_id.as_str() => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            // 30 sessions per key and minute: expected once each key has minted its share.
            Ok((429, v)) if error_code(&v) == "RATE_LIMITED" => {
                t.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, v)) if status >= 500 => {
                t.server_errors.fetch_add(1, Ordering::Relaxed);
                t.note(format!("login {n}: {status} {v}"));
            }
            Ok((status, v)) => {
                t.other.fetch_add(1, Ordering::Relaxed);
                t.note(format!("login {n}: {status} {v}"));
            }
            Err(e) => {
                t.transport.fetch_add(1, Ordering::Relaxed);
                t.note(format!("login {n}: {e}"));
            }
        }
    }
}

/// `POST /api/v2/gl_ping` with `X-API-Key`, round-robin from `offset`.
fn gateway_loop(base: &str, keys: &[Key], offset: usize, deadline: Instant, t: &Tally) {
    let agent = agent(LOAD_TIMEOUT);
    let url = format!("{base}/api/v2/gl_ping");
    let body = json!({"ip": "203.0.113.9"});
    let mut i = offset;
    while Instant::now() < deadline {
        let k = &keys[i % keys.len()];
        i += 1;
        match call(&agent, "POST", &url, &[("x-api-key", &k.token)], Some(&body)) {
            Ok((200, v)) if v["data"] == json!({"ip": "203.0.113.9"}) => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, v)) if status >= 500 => {
                t.server_errors.fetch_add(1, Ordering::Relaxed);
                t.note(format!("gateway: {status} {v}"));
            }
            Ok((status, v)) => {
                t.other.fetch_add(1, Ordering::Relaxed);
                t.note(format!("gateway: {status} {v}"));
            }
            Err(e) => {
                t.transport.fetch_add(1, Ordering::Relaxed);
                t.note(format!("gateway: {e}"));
            }
        }
    }
}

/// `GET /healthz` every 100 ms until `stop`; returns (polls, failures).
fn health_loop(base: &str, stop: &AtomicBool, start: Instant) -> (u64, Vec<String>) {
    let agent = agent(HEALTH_TIMEOUT);
    let url = format!("{base}/healthz");
    let (mut polls, mut failures) = (0u64, Vec::new());
    while !stop.load(Ordering::Acquire) {
        let sent = Instant::now();
        polls += 1;
        let at = format!("{:.1}s", start.elapsed().as_secs_f64());
        match call(&agent, "GET", &url, &[], None) {
            Ok((200, v)) if v["data"]["status"] == "ok" => {}
            Ok((status, v)) => failures.push(format!("at {at}: {status} {v}")),
            Err(e) => failures.push(format!("at {at}: {e} after {:?}", sent.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
    }
    (polls, failures)
}

fn run(name: &'static str, extra: &[&str], load_for: Duration) {
    let _watchdog = watchdog(name, "the test", WATCHDOG);
    let mut s = Watched::new(Server::start(extra));
    let keys = Arc::new(create_keys(&s));

    let start = Instant::now();
    let deadline = start + load_for;
    let logins = Arc::new(Tally::default());
    let gateway = Arc::new(Tally::default());
    let stop_health = Arc::new(AtomicBool::new(false));
    let health = {
        let (base, stop) = (s.base.clone(), Arc::clone(&stop_health));
        std::thread::spawn(move || health_loop(&base, &stop, start))
    };
    let mut load = Vec::new();
    {
        let (base, keys, t) = (s.base.clone(), Arc::clone(&keys), Arc::clone(&logins));
        load.push(std::thread::spawn(move || login_loop(&base, &keys, deadline, &t)));
    }
    for g in 0..GATEWAY_THREADS {
        let (base, keys, t) = (s.base.clone(), Arc::clone(&keys), Arc::clone(&gateway));
        let offset = g * KEYS / GATEWAY_THREADS;
        load.push(std::thread::spawn(move || gateway_loop(&base, &keys, offset, deadline, &t)));
    }
    for h in load {
        h.join().unwrap();
    }
    let load_ran = start.elapsed();
    stop_health.store(true, Ordering::Release);
    let (polls, health_failures) = health.join().unwrap();

    // After the load: still answering, and a clean stop.
    let after = call(&agent(HEALTH_TIMEOUT), "GET", &s.url("/healthz"), &[], None);
    let stopped = s.try_terminate(STOP_TIMEOUT);

    println!(
        "{name}: load ran {load_ran:?}; logins: {}; gateway: {}; healthz: {polls} polls, {} failed; \
         healthz after load: {after:?}; exit after SIGTERM: {stopped:?}",
        logins.summary(),
        gateway.summary(),
        health_failures.len(),
    );
    assert!(
        health_failures.is_empty(),
        "{name}: {} of {polls} /healthz polls failed or took over {HEALTH_TIMEOUT:?} (first: {:?}); \
         logins: {} {:?}; gateway: {} {:?}",
        health_failures.len(),
        &health_failures[..health_failures.len().min(5)],
        logins.summary(),
        logins.samples.lock().unwrap(),
        gateway.summary(),
        gateway.samples.lock().unwrap(),
    );
    assert!(polls >= 10, "{name}: only {polls} /healthz polls in {load_ran:?}");
    let samples = logins.samples.lock().unwrap().clone();
    assert_eq!(Tally::get(&logins.server_errors), 0, "{name}: logins answered 5xx: {samples:?}");
    assert_eq!(Tally::get(&logins.other), 0, "{name}: logins refused: {samples:?}");
    assert_eq!(Tally::get(&logins.transport), 0, "{name}: logins failed or timed out: {samples:?}");
    assert!(Tally::get(&logins.ok) > 0, "{name}: no login succeeded: {}", logins.summary());
    let samples = gateway.samples.lock().unwrap().clone();
    assert_eq!(Tally::get(&gateway.server_errors), 0, "{name}: gateway calls answered 5xx: {samples:?}");
    assert_eq!(Tally::get(&gateway.other), 0, "{name}: gateway calls refused: {samples:?}");
    assert_eq!(Tally::get(&gateway.transport), 0, "{name}: gateway calls failed or timed out: {samples:?}");
    assert!(Tally::get(&gateway.ok) > 0, "{name}: no gateway call was admitted");
    match &after {
        Ok((200, v)) => assert_eq!(v["data"]["status"], "ok", "{name}: /healthz after the load: {v}"),
        other => panic!("{name}: /healthz after the load: {other:?}"),
    }
    assert_eq!(stopped, Some(0), "{name}: SIGTERM must stop the server with status 0 within {STOP_TIMEOUT:?}");
}
