//! A child process creating and revoking keys is killed with SIGKILL at random
//! moments; every create and revoke it reported before the kill must be there
//! after reopening, and the file must open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward::{Actor, Engine, NewKey, NewWorkspace, Request};
use keyward_core::{Code, KeyId};

const CHILD_ENV: &str = "KEYWARD_CRASH_CHILD_DB";
const ROUNDS: usize = 24;

/// Runs as the child when `KEYWARD_CRASH_CHILD_DB` is set; a no-op otherwise.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let e = Engine::builder().flush_interval(Duration::from_millis(5)).open(&path).unwrap();
    let ws = match e.workspaces().first() {
        Some(w) => w.policy.id,
        None => e.create_workspace(NewWorkspace::named("crash"), &Actor::Admin).unwrap().policy.id,
    };
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for i in 0.. {
        let k = e.create_key(ws, NewKey { name: format!("k{i}"), ..NewKey::default() }, &Actor::Admin).unwrap();
        // Reported only after create_key returned: it must be durable.
        writeln!(out, "created {} {}", k.info.id, k.token.expose()).unwrap();
        out.flush().unwrap();
        assert!(e.verify(k.token.expose(), &Request::default()).is_valid());
        if i % 3 == 0 {
            e.revoke_key(k.info.id, &Actor::Admin).unwrap();
            writeln!(out, "revoked {}", k.info.id).unwrap();
            out.flush().unwrap();
        }
    }
}

fn pseudo_random(seed: &mut u64) -> u64 {
    // xorshift64: enough to spread kill times; no dependency needed.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut created: Vec<(KeyId, String)> = Vec::new();
    let mut revoked: Vec<KeyId> = Vec::new();
    // The last key of a round may have been revoked without the child getting
    // to report it: that revoke was never acknowledged, so either state is fine.
    let mut in_doubt: Vec<KeyId> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledged create, then kill at a random moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        while lines.is_empty() && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                lines.push(l);
            }
        }
        assert!(!lines.is_empty(), "round {round}: the child never acknowledged a write");
        std::thread::sleep(Duration::from_millis(pseudo_random(&mut seed) % 120));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let before = created.len();
        for line in lines {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("created"), Some(id), Some(token)) => created.push((KeyId::parse(id).unwrap(), token.to_owned())),
                (Some("revoked"), Some(id), None) => revoked.push(KeyId::parse(id).unwrap()),
                // A line cut by the kill was never acknowledged.
                _ => {}
            }
        }
        if created.len() > before {
            in_doubt.push(created[created.len() - 1].0);
        }
    }
    let e = Engine::open(&path).unwrap();
    assert!(created.len() >= ROUNDS, "each round acknowledged at least one create");
    for (id, token) in &created {
        let info = e.key(*id).unwrap_or_else(|err| panic!("acknowledged key {id} lost: {err}"));
        let got = e.verify(token, &Request::default()).code;
        if revoked.contains(id) {
            assert_eq!(got, Code::Revoked, "acknowledged revoke of {id} lost");
        } else if !in_doubt.contains(id) {
            assert_eq!(got, Code::Valid, "key {id}");
        }
        assert_eq!(info.status == keyward_core::policy::Status::Revoked, got == Code::Revoked);
    }
    assert!(e.check().unwrap() >= created.len());
}
