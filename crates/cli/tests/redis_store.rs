//! `keyward --store redis://…`: init, the key commands and `serve` on a real
//! `redis-server` the test starts (skipped with a message when it is not
//! installed, unless `KEYWARD_REQUIRE_REDIS=1`).

mod common;
#[path = "../../keyward/tests/common/redis_server.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{BIN, bearer, request};
use redis_server::Redis;
use serde_json::{Value, json};

/// Runs the CLI against `url`; returns (exit code, stdout, stderr).
fn cli(url: &str, secrets: Option<&std::path::Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--store", url]).env_remove("KEYWARD_MASTER_KEY").env_remove("KEYWARD_SNAPSHOT_KEY");
    if let Some(s) = secrets {
        cmd.arg("--secrets").arg(s);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every byte string in a Redis reply, one after the other.
fn flatten(v: redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend(b),
        redis::Value::SimpleString(s) => out.extend(s.into_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => items.into_iter().for_each(|i| flatten(i, out)),
        redis::Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}

#[test]
fn init_keys_and_serve_on_redis() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("node.secrets");

    // No keys, no node: the store never holds them.
    let (code, _, err) = cli(&url, None, &["init", "--json"]);
    assert_eq!(code, 2);
    assert!(err.contains("set KEYWARD_MASTER_KEY and KEYWARD_SNAPSHOT_KEY"), "{err}");
    let (code, _, err) = cli("memcached://127.0.0.1:1/0", None, &["init"]);
    assert_eq!(
        (code, err.trim()),
        (2, "keyward: error: --store: expected a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL")
    );

    let (code, out, err) = cli(&url, Some(&secrets), &["init", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let root = v["root_key"].as_str().unwrap().to_owned();
    assert!(v["workspace_id"].as_str().unwrap().starts_with("ws_"));
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (code, _, err) = cli(&url, Some(&secrets), &["init"]);
    assert_eq!(code, 2);
    assert!(err.contains("is already initialised"), "{err}");

    // Neither key is anywhere in Redis.
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let names: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(names.iter().all(|n| n.starts_with("{keyward}:")), "{names:?}");
    let mut everything = Vec::new();
    for n in &names {
        let kind: String = redis::cmd("TYPE").arg(n).query(&mut c).unwrap();
        let read = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(n).query(&mut c),
            "list" => redis::cmd("LRANGE").arg(n).arg(0).arg(-1).query(&mut c),
            "stream" => redis::cmd("XRANGE").arg(n).arg("-").arg("+").query(&mut c),
            other => panic!("{n} is a {other}"),
        };
        flatten(read.unwrap(), &mut everything);
    }
    for name in ["master_key", "snapshot_key"] {
        let hex = keys[name].as_str().unwrap();
        let raw: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        assert!(!everything.windows(raw.len()).any(|w| w == raw.as_slice()), "{name} in Redis");
        assert!(!everything.windows(hex.len()).any(|w| w == hex.as_bytes()), "{name} (hex) in Redis");
    }

    // The key commands work on the store.
    let (code, out, err) = cli(&url, Some(&secrets), &["key", "create", "--name", "ci", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let token = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(cli(&url, Some(&secrets), &["verify", &token]).0, 0);

    // A node serves it; a key made over HTTP is in Redis for the next node.
    let mut child = Command::new(BIN)
        .args(["--store", &url])
        .arg("--secrets")
        .arg(&secrets)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.strip_prefix("keyward listening on http://") {
            break rest.to_owned();
        }
    };
    let health = request("GET", &format!("http://{addr}/healthz"), &[], None);
    assert_eq!(health.status, 200);
    let auth = bearer(&root);
    let made = request(
        "POST",
        &format!("http://{addr}/v1/api-keys"),
        &[("authorization", &auth)],
        Some(&json!({"name": "over-http"})),
    );
    assert_eq!(made.status, 201);
    let secret = made.data()["secret"].as_str().unwrap().to_owned();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(cli(&url, Some(&secrets), &["verify", &secret]).0, 0, "seen by the next node");
    let (code, out, _) = cli(&url, Some(&secrets), &["key", "list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["over-http", "ci", "root"]);
}

/// `init`, `key create` and `verify` on a store at `url` (extra flags in
/// `with`); returns the key's token after checking it verifies.
fn init_and_verify(url: &str, with: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("node.secrets");
    let run = |args: &[&str]| {
        let all: Vec<&str> = with.iter().chain(args).copied().collect();
        cli(url, Some(&secrets), &all)
    };
    let (code, _, err) = run(&["init", "--json"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["key", "create", "--name", "edge", "--json"]);
    assert_eq!(code, 0, "{err}");
    let token = serde_json::from_str::<Value>(&out).unwrap()["secret"].as_str().unwrap().to_owned();
    let (code, out, err) = run(&["verify", &token]);
    assert_eq!((code, out.trim()), (0, "VALID"), "{err}");
    token
}

#[test]
fn the_cli_runs_on_redis_over_tls() {
    let Some((redis, ca)) = Redis::start_tls() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let ca_path = ca_file.to_str().unwrap();
    init_and_verify(&redis.url(), &["--store-ca", ca_path]);
    // The server's certificate is refused without its CA.
    let (code, _, err) = cli(&redis.url(), Some(&dir.path().join("s")), &["init"]);
    assert_eq!(code, 2);
    assert!(err.contains("UnknownIssuer"), "{err}");
    let (code, _, err) = cli(&redis.url(), None, &["--store-ca", "/nonexistent/ca.pem", "key", "list"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("keyward: error: --store-ca: /nonexistent/ca.pem: "), "{err}");
}

#[test]
fn the_cli_runs_on_a_redis_cluster() {
    let Some(cluster) = redis_server::Cluster::start() else { return };
    init_and_verify(&cluster.url(), &[]);
}

/// A node whose Redis went away: `/healthz` says so at once; known keys
/// pass until `--store-stale-ms`, then every key is refused 503
/// `STORE_UNAVAILABLE` with `Retry-After`; a limited key is refused at
/// once; all recovers when Redis is back, without restarting the node.
#[test]
fn serve_answers_an_unreachable_store_with_503_after_the_stale_window() {
    let Some(mut redis) = Redis::start() else { return };
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("node.secrets");
    let (code, out, err) = cli(&url, Some(&secrets), &["init", "--json"]);
    assert_eq!(code, 0, "{err}");
    let root = serde_json::from_str::<Value>(&out).unwrap()["root_key"].as_str().unwrap().to_owned();
    let mut child = Command::new(BIN)
        .args(["--store", &url])
        .arg("--secrets")
        .arg(&secrets)
        .args(["serve", "--listen", "127.0.0.1:0", "--store-stale-ms", "1500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.strip_prefix("keyward listening on http://") {
            break rest.to_owned();
        }
    };
    let auth = bearer(&root);
    let create = |body: Value| {
        let made = request("POST", &format!("http://{addr}/v1/api-keys"), &[("authorization", &auth)], Some(&body));
        assert_eq!(made.status, 201, "{:?}", made.body);
        made.data()["secret"].as_str().unwrap().to_owned()
    };
    let plain = create(json!({"name": "plain"}));
    let paid = create(json!({"name": "paid", "limits": {"credits": {"remaining": 5}}}));
    let gate =
        |token: &str| request("GET", &format!("http://{addr}/v1/auth"), &[("authorization", &bearer(token))], None);
    assert_eq!(gate(&paid).status, 200);
    let health = || request("GET", &format!("http://{addr}/healthz"), &[], None);
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !f() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    redis.stop();
    let stopped = std::time::Instant::now();
    wait("healthz reports the store", &|| health().status == 503);
    let h = health();
    assert_eq!((h.data()["status"].as_str(), h.data()["store_stale"].as_bool()), (Some("degraded"), Some(false)));
    assert!(h.data()["store_unreachable_ms"].as_u64().is_some(), "{:?}", h.body);
    assert_eq!(gate(&plain).status, 200, "known keys pass inside the window");
    let limited = gate(&paid);
    assert_eq!((limited.status, limited.header("retry-after")), (503, Some("1")));
    assert_eq!(limited.body["error"]["code"], "STORE_UNAVAILABLE", "{:?}", limited.body);
    assert!(stopped.elapsed() < std::time::Duration::from_millis(1500), "the checks outlasted the window");

    wait("the window passes", &|| health().data()["store_stale"].as_bool() == Some(true));
    let refused = gate(&plain);
    assert_eq!((refused.status, refused.header("retry-after")), (503, Some("1")));
    assert_eq!(refused.body["error"]["code"], "STORE_UNAVAILABLE");
    let metrics = ureq::get(&format!("http://{addr}/metrics")).call().unwrap().into_string().unwrap();
    assert!(metrics.lines().any(|l| l == "keyward_store_stale 1"), "{metrics}");

    redis.restart();
    wait("the node answers again", &|| health().status == 200);
    assert_eq!(gate(&plain).status, 200);
    assert_eq!(gate(&paid).status, 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
