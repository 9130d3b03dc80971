//! `keyward store copy --from SRC --to DST`: a redb file into Redis and
//! back, with its master and snapshot keys, and every refusal (exit 2,
//! nothing written). The Redis test starts a real `redis-server` (skipped
//! with a message when it is not installed, unless `KEYWARD_REQUIRE_REDIS=1`).

mod common;
#[path = "../../keyward/tests/common/redis_server.rs"]
mod redis_server;

use std::path::Path;
use std::process::Command;

use common::{BIN, Server, cli};
use redis_server::Redis;
use serde_json::{Value, json};

/// Runs `keyward ARGS` with no keys in the environment; (exit code, stdout,
/// stderr).
fn keyward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_SNAPSHOT_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn text(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The keys of a secrets file.
fn keys_of(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every key of a Redis database and its `DUMP`, sorted.
fn dump(url: &str) -> Vec<(String, Vec<u8>)> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut names: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    names.sort();
    names.into_iter().map(|n| (n.clone(), redis::cmd("DUMP").arg(&n).query(&mut c).unwrap())).collect()
}

/// `audit --json` of a store, as `keyward` prints it.
fn audit(place: &[&str]) -> Value {
    let (code, out, err) = keyward(&[place, &["audit", "--json"]].concat());
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_file_goes_to_redis_and_back_with_its_keys() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    let (a_keys, b_keys) = (dir.path().join("a.redb.secrets"), dir.path().join("b.redb.secrets"));
    let node_keys = dir.path().join("node.secrets");
    common::init(&a);
    let (code, out, err) = cli(&a, &["key", "create", "--name", "ci", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let (token, id) = (created["secret"].as_str().unwrap(), created["id"].as_str().unwrap());
    assert_eq!(cli(&a, &["verify", token]).0, 0);
    let file_audit = audit(&["--db", text(&a)]);
    assert_eq!(file_audit["items"].as_array().unwrap().len(), 4);

    // Redis never holds the keys: the copy must be told where they go.
    let (code, out, err) = keyward(&["store", "copy", "--from", text(&a), "--to", &url, "--json"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err.trim(),
        format!(
            "keyward: error: --secrets FILE is needed: where to write the master and snapshot keys of {} for the \
             nodes of {url} (a shared store never holds them), unless KEYWARD_MASTER_KEY and KEYWARD_SNAPSHOT_KEY \
             give them",
            a.display()
        )
    );
    assert_eq!(dump(&url), [], "nothing written");

    let copy = ["store", "copy", "--from", text(&a), "--to", &url, "--secrets", text(&node_keys), "--json"];
    let (code, out, err) = keyward(&copy);
    assert_eq!((code, err.as_str()), (0, ""), "quiet off a terminal");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        json!({"from": text(&a), "to": url, "workspaces": 1, "tools": 1, "keys": 2, "usage": 1, "nonces": 0,
            "sessions": 0, "audit_events": 4, "commits": 2, "secrets": text(&node_keys)})
    );
    assert_eq!(mode(&node_keys), 0o600);
    assert_eq!(keys_of(&node_keys), keys_of(&a_keys));
    assert_eq!(keys_of(&node_keys).as_object().unwrap().len(), 2);

    // A node of the copy verifies the same token as the same key.
    let on_redis = ["--store", url.as_str(), "--secrets", text(&node_keys)];
    let (code, out, err) = keyward(&[&on_redis[..], &["verify", token, "--json"]].concat());
    assert_eq!(code, 0, "{err}");
    let verdict: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((verdict["code"].as_str(), verdict["key_id"].as_str()), (Some("VALID"), Some(id)));
    assert_eq!(audit(&on_redis), file_audit);

    // Not twice into the same store.
    let before = dump(&url);
    let (code, _, err) = keyward(&copy);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "keyward: error: --to {url}: already holds keyward data (1 workspace, 1 tool, 2 keys, 1 usage record, \
             an audit log); copy only into an empty store; nothing was copied"
        )
    );
    assert_eq!(dump(&url), before);

    // And back into a new file, which keeps the keys beside it.
    let back = ["store", "copy", "--from", &url, "--to", text(&b), "--secrets", text(&node_keys), "--json"];
    let (code, out, err) = keyward(&back);
    assert_eq!((code, err.as_str()), (0, ""));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        json!({"from": url, "to": text(&b), "workspaces": 1, "tools": 1, "keys": 2, "usage": 1, "nonces": 0,
            "sessions": 0, "audit_events": 4, "commits": 2, "secrets": text(&b_keys)})
    );
    assert_eq!((mode(&b_keys), keys_of(&b_keys)), (0o600, keys_of(&a_keys)));
    let (code, out, _) = keyward(&["--db", text(&b), "verify", token, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["key_id"].as_str(), Some(id));
    assert_eq!(audit(&["--db", text(&b)]), file_audit);
    let (code, out, _) = keyward(&["--db", text(&b), "key", "show", id, "--json"]);
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["last_used_at"].is_string(), "{out}");
}

#[test]
fn a_file_copies_to_a_file_with_its_keys_and_readable_output() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    common::init(&a);
    let (code, out, err) = keyward(&["store", "copy", "--from", text(&a), "--to", text(&b)]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "copied {} to {} in 2 commits\n\
             WORKSPACES  TOOLS  KEYS  USAGE  NONCES  SESSIONS  AUDIT EVENTS\n\
             1           1      1     0      0       0         3\n\
             master and snapshot keys: wrote {}.secrets (mode 0600)\n",
            a.display(),
            b.display(),
            b.display()
        )
    );
    assert_eq!(keys_of(&dir.path().join("b.redb.secrets")), keys_of(&dir.path().join("a.redb.secrets")));
    assert_eq!(audit(&["--db", text(&b)]), audit(&["--db", text(&a)]));
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    let b_keys = dir.path().join("b.redb.secrets");
    common::init(&a);
    let refused = |args: &[&str], message: String| {
        let (code, out, err) = keyward(args);
        assert_eq!((code, out.as_str(), err.trim()), (2, "", format!("keyward: error: {message}").as_str()));
        assert!(!b.exists() && !b_keys.exists());
    };
    let (a_text, b_text) = (text(&a), text(&b));

    refused(
        &["store", "copy", "--from", a_text, "--to", "memcached://127.0.0.1:1/0"],
        "--to: expected a redb file or a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL".into(),
    );
    refused(
        &["store", "copy", "--from", "http://127.0.0.1:1/", "--to", b_text],
        "--from: expected a redb file or a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL".into(),
    );
    refused(
        &["--db", a_text, "store", "copy", "--from", a_text, "--to", b_text],
        "store copy: name the stores with --from and --to, not --db or --store".into(),
    );
    refused(
        &["store", "copy", "--from", a_text, "--to", b_text, "--secrets", "node.secrets"],
        "--secrets: neither store is Redis; a redb file keeps its keys beside it (<db>.secrets)".into(),
    );
    let missing = dir.path().join("missing.redb");
    refused(
        &["store", "copy", "--from", text(&missing), "--to", b_text],
        format!("--from {0}: I/O error: {0}: no such file; nothing was copied", missing.display()),
    );
    refused(
        &["store", "copy", "--from", a_text, "--to", a_text],
        format!("--from and --to are the same store ({a_text}); nothing was copied"),
    );

    // A Redis nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gone = format!("redis://127.0.0.1:{port}/0");
    let node_keys = dir.path().join("node.secrets");
    let (code, _, err) = keyward(&["store", "copy", "--from", a_text, "--to", &gone, "--secrets", text(&node_keys)]);
    assert_eq!(code, 2);
    assert!(err.starts_with(&format!("keyward: error: --to {gone}: storage error: {gone}: ")), "{err}");
    assert!(err.trim_end().ends_with("; nothing was copied"), "{err}");
    assert!(!node_keys.exists());
    let a_keys = dir.path().join("a.redb.secrets");
    let (code, _, err) = keyward(&["store", "copy", "--from", &gone, "--to", b_text, "--secrets", text(&a_keys)]);
    assert_eq!(code, 2);
    assert!(err.starts_with(&format!("keyward: error: --from {gone}: storage error: {gone}: ")), "{err}");
    assert!(!b.exists() && !b_keys.exists());
    let (code, _, err) = keyward(&["store", "copy", "--from", &gone, "--to", b_text, "--secrets", text(&node_keys)]);
    assert_eq!(
        (code, err.trim()),
        (2, format!("keyward: error: --secrets {}: no such file", node_keys.display()).as_str())
    );
    assert!(!b.exists());

    // A destination file with data, and one holding other keys.
    common::init(&b);
    let before = (std::fs::read(&b).unwrap(), std::fs::read(&b_keys).unwrap());
    let (code, _, err) = keyward(&["store", "copy", "--from", a_text, "--to", b_text]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "keyward: error: --to: {} holds other keys than the source's: move it away first; nothing was copied",
            b_keys.display()
        )
    );
    std::fs::remove_file(&b_keys).unwrap();
    let (code, _, err) = keyward(&["store", "copy", "--from", a_text, "--to", b_text]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "keyward: error: --to {b_text}: already holds keyward data (1 workspace, 1 tool, 1 key, an audit log); \
             copy only into an empty store; nothing was copied"
        )
    );
    assert_eq!(std::fs::read(&b).unwrap(), before.0);
    assert!(!b_keys.exists(), "not written either");
}

#[test]
fn a_served_file_is_refused() {
    let mut s = Server::start(&[]);
    let dst = s.dir.path().join("copy.redb");
    let (code, _, err) = keyward(&["store", "copy", "--from", text(&s.db), "--to", text(&dst)]);
    assert_eq!(code, 2);
    let db = s.db.display();
    assert_eq!(
        err.trim(),
        format!(
            "keyward: error: --from {db}: database {db} is in use by another process (is `keyward serve` \
             running?); nothing was copied"
        )
    );
    assert!(!dst.exists());
    assert_eq!(s.terminate(), 0);
    let (code, _, err) = keyward(&["store", "copy", "--from", text(&s.db), "--to", text(&dst)]);
    assert_eq!((code, err.as_str()), (0, ""), "once it is no longer served");
}
