//! kill -9 soak: `keyward serve` takes mixed writes over HTTP and is SIGKILLed
//! at a random moment, round after round on the same database file. After
//! every kill the server is started again and every acknowledged write (an
//! answer with a 2xx status) must be there.
//!
//! `kill9_soak_short` runs 5 rounds; `kill9_soak_100` (ignored by default) runs
//! 100: `cargo test -p keyward-cli --test soak -- --ignored --nocapture`.
//! `KEYWARD_SOAK_ROUNDS` overrides the number of rounds of both, and
//! `KEYWARD_SOAK_SEED` fixes the random choices (kill times still vary).
//!
//! What is asserted, per key (each key is written by one thread only, and a
//! thread stops at its first unanswered request, so at most the last write to
//! a key is in doubt):
//! - an acknowledged create exists, with the credits it was created with;
//! - an acknowledged revoke stays revoked;
//! - an acknowledged delete stays deleted (the key never comes back);
//! - credits are the last acknowledged value; if a credits write was in
//!   flight at the kill, they are that value or the one before;
//! - a key no write revoked is active; a create in flight at the kill may or
//!   may not have landed, but lands at most once.
//!
//! Writes in doubt are settled by what the restarted server shows; from then
//! on that state must hold like an acknowledged one.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Server, Watched, agent_with_timeout, bearer, call, watchdog};
use serde_json::json;

/// Writer threads per round.
const THREADS: usize = 3;
/// Timeout of every HTTP request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the whole soak: this much plus [`ROUND_BUDGET`] per round.
const BASE_BUDGET: Duration = Duration::from_secs(120);
const ROUND_BUDGET: Duration = Duration::from_secs(30);
/// Credits values stay below this.
const MAX_CREDITS: u64 = 1_000_000;
/// How long the server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn kill9_soak_short() {
    soak("kill9_soak_short", rounds(5));
}

#[test]
#[ignore = "100 kill -9 rounds, minutes: cargo test -p keyward-cli --test soak -- --ignored --nocapture"]
fn kill9_soak_100() {
    soak("kill9_soak_100", rounds(100));
}

fn rounds(default: usize) -> usize {
    match std::env::var("KEYWARD_SOAK_ROUNDS") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("KEYWARD_SOAK_ROUNDS={v:?} is not a number")),
        Err(_) => default,
    }
}

/// xorshift64: enough to vary choices and kill times; no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap()
    }
}

/// A write that got no answer: it may or may not have landed.
#[derive(Clone, Copy, Debug)]
enum InDoubt {
    Revoke,
    Delete,
    Credits(u64),
}

/// What the soak knows about a key it created.
#[derive(Clone, Debug)]
struct KeyModel {
    id: String,
    /// Last acknowledged (or settled) credits.
    credits: u64,
    /// Revoked by an acknowledged (or settled) revoke.
    revoked: bool,
    in_doubt: Option<InDoubt>,
}

/// Acknowledged writes by kind.
#[derive(Default, Clone, Copy, Debug)]
struct Acks {
    creates: u64,
    credits: u64,
    revokes: u64,
    deletes: u64,
}

impl Acks {
    fn total(&self) -> u64 {
        self.creates + self.credits + self.revokes + self.deletes
    }

    fn add(&mut self, o: Acks) {
        self.creates += o.creates;
        self.credits += o.credits;
        self.revokes += o.revokes;
        self.deletes += o.deletes;
    }
}

/// What one writer thread did in one round.
struct WriterOut {
    keys: Vec<KeyModel>,
    deleted: Vec<String>,
    acks: Acks,
    /// Creates sent without an answer.
    creates_in_doubt: u64,
    /// Answers that were neither the expected 2xx nor missing.
    unexpected: Vec<String>,
}

/// Mixed writes on the keys this thread owns until the first request without
/// an answer (the kill).
fn writer(base: &str, root: &str, round: usize, t: usize, mut keys: Vec<KeyModel>, seed: u64) -> WriterOut {
    let agent = agent_with_timeout(TIMEOUT);
    let auth = bearer(root);
    let headers = [("authorization", auth.as_str())];
    let mut rng = Rng(seed | 1);
    let mut out = WriterOut {
        keys: Vec::new(),
        deleted: Vec::new(),
        acks: Acks::default(),
        creates_in_doubt: 0,
        unexpected: Vec::new(),
    };
    for i in 0.. {
        let dice = rng.below(100);
        if dice < 45 || keys.is_empty() {
            let credits = rng.below(MAX_CREDITS);
            let body =
                json!({"name": format!("soak-r{round}-t{t}-{i}"), "limits": {"credits": {"remaining": credits}}});
            match call(&agent, "POST", &format!("{base}/v1/api-keys"), &headers, Some(&body)) {
                Ok((201, v))
                    if v["data"]["credits_remaining"] == credits
                        && v["data"]["status"] == "active"
                        && v["data"]["id"].is_string() =>
                {
                    let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
                    keys.push(KeyModel { id, credits, revoked: false, in_doubt: None });
                    out.acks.creates += 1;
                }
                Ok((status, v)) => {
                    out.unexpected.push(format!("create: {status} {v}"));
                    out.creates_in_doubt += 1;
                    break;
                }
                Err(_) => {
                    out.creates_in_doubt += 1;
                    break;
                }
            }
            continue;
        }
        let k = rng.index(keys.len());
        let id = keys[k].id.clone();
        let url = format!("{base}/v1/api-keys/{id}");
        if dice < 75 {
            let n = rng.below(MAX_CREDITS);
            let body = json!({"credits": {"remaining": n}});
            match call(&agent, "PATCH", &url, &headers, Some(&body)) {
                Ok((200, v)) if v["data"]["credits_remaining"] == n => {
                    keys[k].credits = n;
                    out.acks.credits += 1;
                }
                answer => {
                    if let Ok((status, v)) = answer {
                        out.unexpected.push(format!("credits {id}: {status} {v}"));
                    }
                    keys[k].in_doubt = Some(InDoubt::Credits(n));
                    break;
                }
            }
        } else if dice < 90 && !keys[k].revoked {
            match call(&agent, "POST", &format!("{url}/revoke"), &headers, None) {
                Ok((200, v)) if v["data"]["status"] == "revoked" => {
                    keys[k].revoked = true;
                    out.acks.revokes += 1;
                }
                answer => {
                    if let Ok((status, v)) = answer {
                        out.unexpected.push(format!("revoke {id}: {status} {v}"));
                    }
                    keys[k].in_doubt = Some(InDoubt::Revoke);
                    break;
                }
            }
        } else if dice >= 90 {
            match call(&agent, "DELETE", &url, &headers, None) {
                Ok((200, v)) if v["data"]["deleted"] == true => {
                    keys.swap_remove(k);
                    out.deleted.push(id);
                    out.acks.deletes += 1;
                }
                answer => {
                    if let Ok((status, v)) = answer {
                        out.unexpected.push(format!("delete {id}: {status} {v}"));
                    }
                    keys[k].in_doubt = Some(InDoubt::Delete);
                    break;
                }
            }
        }
    }
    out.keys = keys;
    out
}

/// Every key of the workspace: id → (status, credits_remaining).
fn list_all(s: &Server) -> HashMap<String, (String, Option<u64>)> {
    let agent = agent_with_timeout(TIMEOUT);
    let auth = bearer(&s.root);
    let mut all = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => s.url("/v1/api-keys?limit=100"),
            Some(c) => s.url(&format!("/v1/api-keys?limit=100&cursor={c}")),
        };
        let (status, v) = call(&agent, "GET", &url, &[("authorization", &auth)], None)
            .unwrap_or_else(|e| panic!("listing keys after a restart: {e}"));
        assert_eq!(status, 200, "listing keys after a restart: {v}");
        for k in v["data"]["items"].as_array().unwrap_or_else(|| panic!("no items: {v}")) {
            let id = k["id"].as_str().unwrap_or_else(|| panic!("no id: {k}")).to_owned();
            let state = (k["status"].as_str().unwrap_or_default().to_owned(), k["credits_remaining"].as_u64());
            assert!(all.insert(id, state).is_none(), "a key listed twice: {k}");
        }
        match v["data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

/// Everything the soak knows, across rounds.
#[derive(Default)]
struct Model {
    keys: Vec<KeyModel>,
    deleted: HashSet<String>,
    /// Keys that were there before the soak (the root key).
    baseline: HashSet<String>,
    acks: Acks,
    creates_in_doubt: u64,
    /// In-doubt creates that turned out to have landed (keys the soak never saw acknowledged).
    landed: HashSet<String>,
    writes_in_doubt: u64,
}

/// Checks the restarted server against the model and settles writes in
/// doubt; returns the violations (acknowledged writes lost, or states no
/// write could have produced).
fn check(s: &Server, m: &mut Model) -> Vec<String> {
    let listed = list_all(s);
    let mut bad = Vec::new();
    let mut kept = Vec::with_capacity(m.keys.len());
    for mut k in std::mem::take(&mut m.keys) {
        let Some((status, credits)) = listed.get(&k.id) else {
            if matches!(k.in_doubt, Some(InDoubt::Delete)) {
                // The delete in flight landed: from now on it must hold.
                m.deleted.insert(k.id);
            } else {
                bad.push(format!("acknowledged key {} is gone ({:?})", k.id, k.in_doubt));
            }
            continue;
        };
        match k.in_doubt.take() {
            Some(InDoubt::Revoke) => k.revoked = status == "revoked",
            Some(InDoubt::Credits(n)) if *credits == Some(n) => k.credits = n,
            _ => {}
        }
        let want_status = if k.revoked { "revoked" } else { "active" };
        if status != want_status {
            bad.push(format!("key {}: status {status}, want {want_status}", k.id));
        }
        if *credits != Some(k.credits) {
            bad.push(format!("key {}: credits {credits:?}, want {} (last acknowledged)", k.id, k.credits));
        }
        kept.push(k);
    }
    m.keys = kept;
    for id in &m.deleted {
        if let Some(state) = listed.get(id) {
            bad.push(format!("deleted key {id} came back: {state:?}"));
        }
    }
    let known: HashSet<&String> = m.keys.iter().map(|k| &k.id).chain(&m.deleted).chain(&m.baseline).collect();
    for id in listed.keys().filter(|id| !known.contains(id)) {
        m.landed.insert(id.clone());
    }
    // Keys from in-doubt creates that landed: tracked loosely (they must not vanish either).
    for id in &m.landed {
        if !listed.contains_key(id) {
            bad.push(format!("key {id} from a create in doubt was there after an earlier restart, now gone"));
        }
    }
    if m.landed.len() as u64 > m.creates_in_doubt {
        bad.push(format!(
            "{} keys nobody acknowledged, but only {} creates were in doubt",
            m.landed.len(),
            m.creates_in_doubt
        ));
    }
    bad
}

fn soak(name: &'static str, rounds: usize) {
    assert!(rounds > 0, "{name}: no rounds");
    let seed = match std::env::var("KEYWARD_SOAK_SEED") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("KEYWARD_SOAK_SEED={v:?} is not a number")),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    println!("{name}: {rounds} rounds, seed {seed} (KEYWARD_SOAK_SEED)");
    let mut rng = Rng(seed | 1);
    let budget = BASE_BUDGET + ROUND_BUDGET * u32::try_from(rounds).unwrap_or(u32::MAX);
    let _watchdog = watchdog(name, "the soak", budget);

    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("soak.redb");
    let (_, root) = common::init(&db);
    let start = Instant::now();
    let mut m = Model::default();
    let mut unexpected: Vec<String> = Vec::new();
    let mut lost: Vec<String> = Vec::new();
    let mut kills = 0usize;
    for round in 0..=rounds {
        // The file must open; `serve` panics here otherwise ("server exited early").
        let mut s =
            Watched::new(Server::serve(tempfile::tempdir().unwrap(), db.clone(), root.clone(), &["--flush-ms", "5"]));
        if round == 0 {
            m.baseline = list_all(&s).into_keys().collect();
            assert_eq!(m.baseline.len(), 1, "{name}: a fresh database holds only the root key");
        } else {
            let bad = check(&s, &mut m);
            if !bad.is_empty() {
                println!("{name}: after round {round}: {} violations: {:?}", bad.len(), &bad[..bad.len().min(20)]);
            }
            lost.extend(bad);
        }
        if round == rounds || !lost.is_empty() {
            // Done (or already broken): a clean stop for the last look.
            let code = s.try_terminate(STOP_TIMEOUT);
            assert_eq!(code, Some(0), "{name}: SIGTERM after the soak");
            break;
        }

        // Deal the keys out: each key is written by one thread only.
        let mut hands: Vec<Vec<KeyModel>> = vec![Vec::new(); THREADS];
        for (i, k) in std::mem::take(&mut m.keys).into_iter().enumerate() {
            hands[i % THREADS].push(k);
        }
        let go = Arc::new(Barrier::new(THREADS + 1));
        let writers: Vec<_> = hands
            .into_iter()
            .enumerate()
            .map(|(t, hand)| {
                let (base, root, go, seed) = (s.base.clone(), root.clone(), Arc::clone(&go), rng.next());
                std::thread::spawn(move || {
                    go.wait();
                    writer(&base, &root, round, t, hand, seed)
                })
            })
            .collect();
        go.wait();
        std::thread::sleep(Duration::from_millis(100 + rng.below(701)));
        s.child.kill().unwrap(); // SIGKILL on Unix
        s.child.wait().unwrap();
        kills += 1;
        let mut round_acks = Acks::default();
        for w in writers {
            let out = w.join().unwrap();
            m.writes_in_doubt += out.keys.iter().filter(|k| k.in_doubt.is_some()).count() as u64 + out.creates_in_doubt;
            m.keys.extend(out.keys);
            m.deleted.extend(out.deleted);
            m.creates_in_doubt += out.creates_in_doubt;
            round_acks.add(out.acks);
            unexpected.extend(out.unexpected);
        }
        m.acks.add(round_acks);
        println!("{name}: round {}: {round_acks:?} acknowledged, {} keys tracked", round + 1, m.keys.len());
        assert!(unexpected.is_empty(), "{name}: unexpected answers: {unexpected:?}");
    }
    println!(
        "{name}: {:?} acknowledged; {} writes in doubt at kills; {} of {} in-doubt creates landed; \
         {} keys live, {} deleted; {:.1}s",
        m.acks,
        m.writes_in_doubt,
        m.landed.len(),
        m.creates_in_doubt,
        m.keys.len(),
        m.deleted.len(),
        start.elapsed().as_secs_f64()
    );
    println!("soak: {kills} rounds, {} acknowledged writes, lost = {}", m.acks.total(), lost.len());
    assert!(m.acks.total() > 0, "{name}: no write was acknowledged");
    assert!(lost.is_empty(), "{name}: {} violations: {:?}", lost.len(), &lost[..lost.len().min(20)]);
}
