//! Three `keyward serve` nodes on one real `redis-server` (SPEC §8): a key
//! made on one node verifies on the others, a revocation on one is refused by
//! the others within milliseconds, and limits are exact across the nodes.
//! Skipped with a message when `redis-server` is not installed, unless
//! `KEYWARD_REQUIRE_REDIS=1`.
//!
//! The figures (propagation and revocation delays, burst durations) are
//! printed with `eprintln!`; see them with `cargo test --test redis_nodes --
//! --nocapture`.

mod common;
#[path = "../../keyward/tests/common/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BIN, Server, Watched, agent_with_timeout, bearer, call, request, servers, watchdog};
use redis_server::Redis;
use serde_json::{Value, json};

/// These tests time what they measure, so they run one at a time: a
/// 600-request burst of one would otherwise slow the other's figures.
static SERIAL: Mutex<()> = Mutex::new(());

/// Keys created and revoked in the propagation test.
const ROUNDS: usize = 20;

/// How long a revocation may take to reach another node. Milliseconds in
/// practice; generous so that a loaded CI machine does not flake.
const REVOKE_BOUND: Duration = Duration::from_secs(2);

/// How long a new key may take to reach another node.
const CREATE_BOUND: Duration = Duration::from_secs(5);

/// Verifications per node in one burst against a limited key.
const PER_NODE: usize = 200;

/// The test's `redis-server` (or the three of a Redis Cluster), known to
/// the [`watchdog`] (which kills the pids in [`servers`] before it ends the
/// process) for as long as it runs.
struct Store {
    redis: Vec<Redis>,
    url: String,
}

impl Store {
    fn start(on_cluster: bool) -> Option<Self> {
        let (redis, url) = if on_cluster {
            let cluster = redis_server::Cluster::start()?;
            let url = cluster.url();
            (cluster.nodes, url)
        } else {
            let redis = Redis::start()?;
            let url = redis.url();
            (vec![redis], url)
        };
        servers().extend(redis.iter().map(Redis::pid));
        Some(Self { redis, url })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for r in &mut self.redis {
            r.stop();
            let pid = r.pid();
            servers().retain(|p| *p != pid);
        }
    }
}

/// Nodes sharing one Redis and one secrets file. The nodes are stopped
/// before Redis (fields drop in order), also while unwinding.
struct Cluster {
    nodes: Vec<Watched>,
    _store: Store,
    root: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `keyward init` once on a fresh Redis (a Redis Cluster with
    /// `on_cluster`), then `n` nodes; `None` when `redis-server` is not
    /// installed.
    fn start(n: usize, on_cluster: bool) -> Option<Self> {
        let store = Store::start(on_cluster)?;
        let url = store.url.clone();
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("node.secrets");
        let out = keyward(&url, &secrets).args(["init", "--json"]).output().unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let root = v["root_key"].as_str().unwrap().to_owned();
        let nodes = (0..n).map(|_| node(&url, &secrets, &root)).collect();
        Some(Self { nodes, _store: store, root, _dir: dir })
    }
}

/// The CLI on the Redis store, its keys from `secrets` only.
fn keyward(url: &str, secrets: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--store", url])
        .arg("--secrets")
        .arg(secrets)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_SNAPSHOT_KEY");
    cmd
}

/// `keyward serve` on a free loopback port, watched from the moment it is
/// spawned so that a node that fails to come up is still killed.
fn node(url: &str, secrets: &Path, root: &str) -> Watched {
    let child = keyward(url, secrets)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (_, no_tail_yet) = mpsc::channel();
    let mut node = Watched::new(Server {
        child,
        base: String::new(),
        addr: String::new(),
        dir: tempfile::tempdir().unwrap(),
        // No redb file: the node's store is Redis.
        db: PathBuf::new(),
        root: root.to_owned(),
        stdout_lines: Vec::new(),
        stdout_tail: no_tail_yet,
    });
    let mut reader = BufReader::new(node.child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("node exited early: {:?}", node.stdout_lines);
        }
        let line = line.trim_end().to_owned();
        node.stdout_lines.push(line.clone());
        if let Some(addr) = line.strip_prefix("keyward listening on http://") {
            node.addr = addr.to_owned();
            node.base = format!("http://{addr}");
            break;
        }
    }
    // Keep draining stdout so the node never blocks on a full pipe.
    let (tx, tail) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    node.stdout_tail = tail;
    node
}

/// `POST /v1/api-keys` on `node` → (id, secret).
fn create_key(node: &Server, root: &str, body: &Value) -> (String, String) {
    let r = request("POST", &node.url("/v1/api-keys"), &[("authorization", &bearer(root))], Some(body));
    assert_eq!(r.status, 201, "create {body}: {:?}", r.body);
    (r.data()["id"].as_str().unwrap().to_owned(), r.data()["secret"].as_str().unwrap().to_owned())
}

/// Waits until every node knows key `id` (an admin read: it charges no limit).
fn await_key(nodes: &[Watched], root: &str, id: &str) {
    let auth = bearer(root);
    for (n, node) in nodes.iter().enumerate() {
        let deadline = Instant::now() + CREATE_BOUND;
        while request("GET", &node.url(&format!("/v1/api-keys/{id}")), &[("authorization", &auth)], None).status != 200
        {
            assert!(Instant::now() < deadline, "node {n} did not learn key {id} within {CREATE_BOUND:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `POST /v1/verify` of `token` on the node at `base` → (HTTP status, verdict
/// code), or why no verdict came. The bearer root key is what SPEC's round 2
/// asks of a verify caller (`keys:verify`).
fn verify(agent: &ureq::Agent, base: &str, root: &str, token: &str) -> Result<(u16, String), String> {
    let auth = bearer(root);
    let url = format!("{base}/v1/verify");
    let (status, body) = call(agent, "POST", &url, &[("authorization", &auth)], Some(&json!({"key": token})))?;
    match body["data"]["code"].as_str() {
        Some(code) => Ok((status, code.to_owned())),
        None => Err(format!("{status} without a verdict: {body}")),
    }
}

/// What [`watch`] saw on one node.
struct Watch {
    /// From `since` to the first verdict that satisfied the condition.
    took: Duration,
    /// That verdict.
    code: String,
    /// The verdicts before it.
    before: BTreeSet<String>,
}

/// Verifies `token` on `base` in a tight loop until `done(code)`; fails past
/// `limit` after `since`.
fn watch(
    agent: &ureq::Agent,
    base: &str,
    root: &str,
    token: &str,
    since: Instant,
    limit: Duration,
    done: fn(&str) -> bool,
) -> Result<Watch, String> {
    let mut before = BTreeSet::new();
    loop {
        let (status, code) = verify(agent, base, root, token)?;
        let took = since.elapsed();
        if status != 200 {
            return Err(format!("verify answered {status} ({code})"));
        }
        if done(&code) {
            return Ok(Watch { took, code, before });
        }
        if took > limit {
            return Err(format!("still {code} after {took:?} (seen: {before:?})"));
        }
        before.insert(code);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile `q` (0 < q ≤ 1) of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(what: &str, samples: &[f64]) -> String {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        s.len(),
        percentile(&s, 0.50),
        percentile(&s, 0.99),
        s[s.len() - 1]
    )
}

#[test]
fn three_nodes_share_keys_and_revocations() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _watchdog = watchdog("redis_nodes", "three_nodes_share_keys_and_revocations", Duration::from_secs(180));
    keys_and_revocations(false);
}

#[test]
fn three_nodes_share_keys_and_revocations_on_a_redis_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _watchdog =
        watchdog("redis_nodes", "three_nodes_share_keys_and_revocations_on_a_redis_cluster", Duration::from_secs(180));
    keys_and_revocations(true);
}

fn keys_and_revocations(on_cluster: bool) {
    let Some(cluster) = Cluster::start(3, on_cluster) else { return };
    let root = cluster.root.as_str();
    let [a, b, c] = &cluster.nodes[..] else { unreachable!("three nodes") };
    // One agent (one kept-alive connection) per node.
    let agents: Vec<ureq::Agent> = (0..3).map(|_| agent_with_timeout(Duration::from_secs(10))).collect();
    let auth = bearer(root);

    let (mut seen_b, mut seen_c, mut refused_a, mut refused_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut tokens = Vec::new();
    for round in 0..ROUNDS {
        // Made on A, it verifies on B and C.
        let (id, token) = create_key(a, root, &json!({"name": format!("shared-{round}")}));
        let made = Instant::now();
        let [on_b, on_c] = std::thread::scope(|s| {
            [(b.base.as_str(), &agents[1]), (c.base.as_str(), &agents[2])]
                .map(|(base, agent)| {
                    let token = token.as_str();
                    s.spawn(move || watch(agent, base, root, token, made, CREATE_BOUND, |code| code == "VALID"))
                })
                .map(|h| h.join().unwrap())
        });
        let (on_b, on_c) = (on_b.expect("new key on B"), on_c.expect("new key on C"));
        for (node, w) in [("B", &on_b), ("C", &on_c)] {
            assert!(w.before.iter().all(|c| c == "NOT_FOUND"), "{node} answered {:?} before VALID", w.before);
        }
        assert_eq!(verify(&agents[0], &a.base, root, &token), Ok((200, "VALID".to_owned())));

        // Revoked on C: from C's answer on, A and B refuse it, and no node
        // says VALID for it again.
        let r = request("POST", &c.url(&format!("/v1/api-keys/{id}/revoke")), &[("authorization", &auth)], None);
        let revoked = Instant::now();
        assert_eq!(r.status, 200, "revoke on C: {:?}", r.body);
        let [on_a, on_b2] = std::thread::scope(|s| {
            [(a.base.as_str(), &agents[0]), (b.base.as_str(), &agents[1])]
                .map(|(base, agent)| {
                    let token = token.as_str();
                    s.spawn(move || {
                        let w = watch(agent, base, root, token, revoked, REVOKE_BOUND, |code| code != "VALID")?;
                        // Never VALID again on this node, checked right away.
                        for _ in 0..20 {
                            let (_, code) = verify(agent, base, root, token)?;
                            if code != "REVOKED" {
                                return Err(format!("{code} after REVOKED"));
                            }
                        }
                        Ok(w)
                    })
                })
                .map(|h| h.join().unwrap())
        });
        let (on_a, on_b2) = (on_a.expect("revoked key on A"), on_b2.expect("revoked key on B"));
        for (node, w) in [("A", &on_a), ("B", &on_b2)] {
            assert_eq!(w.code, "REVOKED", "{node}");
            assert!(w.before.iter().all(|code| code == "VALID"), "{node} answered {:?} before REVOKED", w.before);
            assert!(w.took < REVOKE_BOUND, "{node} refused the revoked key only after {:?}", w.took);
        }
        assert_eq!(verify(&agents[2], &c.base, root, &token), Ok((200, "REVOKED".to_owned())), "on C itself");
        eprintln!(
            "round {round:2}: new key VALID on B after {:6.2} ms, on C after {:6.2} ms; \
             revoked on C, REVOKED on A after {:6.2} ms, on B after {:6.2} ms",
            ms(on_b.took),
            ms(on_c.took),
            ms(on_a.took),
            ms(on_b2.took),
        );
        seen_b.push(ms(on_b.took));
        seen_c.push(ms(on_c.took));
        refused_a.push(ms(on_a.took));
        refused_b.push(ms(on_b2.took));
        tokens.push(token);
    }

    // At the end, still refused everywhere.
    for token in &tokens {
        for (n, node) in cluster.nodes.iter().enumerate() {
            assert_eq!(verify(&agents[n], &node.base, root, token), Ok((200, "REVOKED".to_owned())), "node {n}");
        }
    }
    let both: Vec<f64> = refused_a.iter().chain(&refused_b).copied().collect();
    eprintln!("{}", summary("new key made on A, VALID on B", &seen_b));
    eprintln!("{}", summary("new key made on A, VALID on C", &seen_c));
    eprintln!("{}", summary("revoked on C, REVOKED on A", &refused_a));
    eprintln!("{}", summary("revoked on C, REVOKED on B", &refused_b));
    eprintln!("{}", summary("revoked on C, REVOKED on A and B", &both));
}

/// One burst of verifications of one key, spread evenly over the nodes.
struct Burst {
    /// Verdict code → how many answers carried it.
    codes: BTreeMap<String, usize>,
    /// VALID answers per node.
    valid_per_node: Vec<usize>,
    /// Requests that got no verdict, and why.
    failures: Vec<String>,
    /// From the common start to the last answer.
    took: Duration,
}

/// `per_node` verifications of `token` on every node, all sent at once:
/// each thread opens its connection first, then all wait at one barrier.
fn burst(nodes: &[Watched], root: &str, token: &str, per_node: usize) -> Burst {
    let total = nodes.len() * per_node;
    let barrier = Barrier::new(total + 1);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..total)
            .map(|i| {
                let (n, barrier) = (i % nodes.len(), &barrier);
                let base = nodes[n].base.as_str();
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let agent = agent_with_timeout(Duration::from_secs(30));
                        // A kept-alive connection, so the burst is requests and not handshakes.
                        let warm = call(&agent, "GET", &format!("{base}/healthz"), &[], None);
                        barrier.wait();
                        let out = warm.and_then(|_| verify(&agent, base, root, token));
                        (n, out, Instant::now())
                    })
                    .unwrap()
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut b = Burst {
            codes: BTreeMap::new(),
            valid_per_node: vec![0; nodes.len()],
            failures: Vec::new(),
            took: Duration::ZERO,
        };
        for t in threads {
            let (n, out, done) = t.join().unwrap();
            b.took = b.took.max(done.saturating_duration_since(start));
            match out {
                Ok((200, code)) => {
                    if code == "VALID" {
                        b.valid_per_node[n] += 1;
                    }
                    *b.codes.entry(code).or_default() += 1;
                }
                Ok((status, code)) => b.failures.push(format!("node {n}: status {status} ({code})")),
                Err(e) => b.failures.push(format!("node {n}: {e}")),
            }
        }
        b
    })
}

/// Waits out the last seconds of a UTC day, so that a daily limit's burst
/// falls within one day.
fn clear_of_midnight() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let left = 86_400_000 - now % 86_400_000;
    if left < 30_000 {
        std::thread::sleep(Duration::from_millis(left + 200));
    }
}

#[test]
fn three_nodes_enforce_exact_limits() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _watchdog = watchdog("redis_nodes", "three_nodes_enforce_exact_limits", Duration::from_secs(300));
    exact_limits(false);
}

#[test]
fn three_nodes_enforce_exact_limits_on_a_redis_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _watchdog =
        watchdog("redis_nodes", "three_nodes_enforce_exact_limits_on_a_redis_cluster", Duration::from_secs(300));
    exact_limits(true);
}

fn exact_limits(on_cluster: bool) {
    let Some(cluster) = Cluster::start(3, on_cluster) else { return };
    let root = cluster.root.as_str();
    let a = &cluster.nodes[0];

    // (name, limits, admitted, refusal of the others)
    let cases = [
        ("rate", json!({"rate": {"limit": 100, "window_ms": 60_000}}), 100, "RATE_LIMITED"),
        ("daily", json!({"daily": 50}), 50, "DAILY_LIMIT"),
        ("credits", json!({"credits": {"remaining": 30}}), 30, "USAGE_EXHAUSTED"),
    ];
    let keys: Vec<(String, String)> = cases
        .iter()
        .map(|(name, limits, _, _)| create_key(a, root, &json!({"name": name, "limits": limits})))
        .collect();
    for (id, _) in &keys {
        await_key(&cluster.nodes, root, id);
    }
    clear_of_midnight();
    let bursts: Vec<Burst> = keys.iter().map(|(_, token)| burst(&cluster.nodes, root, token, PER_NODE)).collect();
    for ((name, _, limit, _), b) in cases.iter().zip(&bursts) {
        eprintln!(
            "{name} (limit {limit}): {} verifications over 3 nodes in {:.0} ms: {:?}, VALID per node {:?}, {} failed",
            3 * PER_NODE,
            ms(b.took),
            b.codes,
            b.valid_per_node,
            b.failures.len()
        );
    }

    for ((name, _, limit, refusal), b) in cases.iter().zip(&bursts) {
        assert!(b.failures.is_empty(), "{name}: requests without a verdict: {:?}", b.failures);
        let valid = b.codes.get("VALID").copied().unwrap_or(0);
        // GCRA gives one call back every window/limit (600 ms here, docs/limits.md):
        // exactly the limit for a burst shorter than that, and one more per
        // 600 ms the burst lasted. Daily and credit limits never give any back.
        let given_back = if *name == "rate" { b.took.as_millis() as usize / 600 } else { 0 };
        assert!(
            (*limit..=limit + given_back).contains(&valid),
            "{name}: {valid} of {} admitted across the nodes (per node {:?}), want exactly {limit}{}",
            3 * PER_NODE,
            b.valid_per_node,
            if given_back > 0 {
                format!(" (+ up to {given_back} refilled in {:.0} ms)", ms(b.took))
            } else {
                String::new()
            }
        );
        let refused = b.codes.get(*refusal).copied().unwrap_or(0);
        assert_eq!(valid + refused, 3 * PER_NODE, "{name}: every other answer is {refusal}: {:?}", b.codes);
    }
}

/// A lease held through one node is released through another, and the
/// gateway of a node on Redis holds and frees a concurrency slot every node
/// sees.
#[test]
fn leases_held_on_one_node_are_released_on_another() {
    let _watchdog = watchdog("redis_nodes", "leases across nodes", Duration::from_secs(120));
    let Some(c) = Cluster::start(2, false) else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let auth = bearer(&c.root);
    let (id, secret) = create_key(a, &c.root, &json!({"name": "one", "limits": {"concurrency": 1}}));
    await_key(&c.nodes, &c.root, &id);
    let verify_on = |node: &Server, hold: bool| {
        let body = json!({"key": secret, "hold": hold});
        request("POST", &node.url("/v1/verify"), &[("authorization", &auth)], Some(&body))
    };
    let held = verify_on(a, true);
    assert_eq!(held.data()["code"], "VALID", "{:?}", held.body);
    let lease = held.data()["lease_id"].as_str().unwrap().to_owned();
    assert_eq!(verify_on(b, false).data()["code"], "CONCURRENCY_LIMIT");
    let release = |node: &Server| {
        request("POST", &node.url(&format!("/v1/leases/{lease}/release")), &[("authorization", &auth)], None)
    };
    assert_eq!(release(b).status, 200);
    assert_eq!(release(a).status, 404, "released once already, on the other node");
    assert_eq!(verify_on(a, false).data()["code"], "VALID");

    // The gateway on Redis: the slot is free again by the time an answer
    // has arrived, whichever node the next call goes to.
    for node in [a, b, a] {
        let r = request("POST", &node.url("/api/v2/gl_ping"), &[("x-api-key", &secret)], Some(&json!({"ip": "::1"})));
        assert_eq!((r.status, r.data().clone()), (200, json!({"ip": "::1"})), "{:?}", r.body);
    }
    let upstream = format!("http://{}", common::tiny_upstream());
    let r = request(
        "POST",
        &a.url("/v1/tools"),
        &[("authorization", &auth)],
        Some(&json!({"name": "fwd", "upstream": upstream})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let agent = agent_with_timeout(Duration::from_secs(10));
    for i in 0..20 {
        let node = if i % 2 == 0 { a } else { b };
        let deadline = Instant::now() + CREATE_BOUND;
        // Node B learns of the tool through the change stream.
        let answer = loop {
            let resp = agent.post(&node.url("/api/v2/fwd")).set("x-api-key", &secret).send_string("{}");
            let (status, text) = match resp {
                Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().unwrap_or_default()),
                Err(e) => panic!("{e}"),
            };
            if status != 404 || Instant::now() > deadline {
                break (status, text);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!((answer.0, answer.1.as_str()), (200, "ok"), "call {i}");
    }
}
