//! The `keyward` command line: exit codes and `--json` output.

mod common;

use common::cli;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn init_create_verify_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    let (code, out, _) = cli(&db, &["init", "--prefix", "sk_test", "--json"]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert!(v["workspace_id"].as_str().unwrap().starts_with("ws_"));
    let root = v["root_key"].as_str().unwrap().to_owned();
    assert!(root.starts_with("sk_test_"));
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Init twice is refused.
    let (code, _, err) = cli(&db, &["init"]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");

    assert_eq!(cli(&db, &["verify", &root]).0, 0);
    let (code, out, _) = cli(
        &db,
        &[
            "key",
            "create",
            "--name",
            "ci",
            "--permission",
            "billing:*",
            "--ip-allow",
            "10.0.0.0/8",
            "--daily",
            "5",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let k = json(&out);
    let token = k["secret"].as_str().unwrap().to_owned();
    let id = k["id"].as_str().unwrap().to_owned();
    assert_eq!(k["permissions"], serde_json::json!(["billing:*"]));

    let (code, out, _) = cli(&db, &["verify", &token, "--ip", "10.2.3.4", "--permission", "billing:read", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["code"], "VALID");
    let (code, out, _) = cli(&db, &["verify", &token, "--ip", "192.0.2.1"]);
    assert_eq!((code, out.trim()), (1, "IP_DENIED"));
    let (code, out, _) = cli(&db, &["verify", "sk_test_garbage"]);
    assert_eq!((code, out.trim()), (1, "MALFORMED"));

    let (code, out, _) = cli(&db, &["key", "list", "--json"]);
    assert_eq!(code, 0);
    let items = json(&out)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], id.as_str(), "newest first");
    assert!(items[0]["last_used_at"].is_string());
    assert!(!out.contains(&token));
    let (code, table, _) = cli(&db, &["key", "list"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("ci") && table.contains("active"));

    assert_eq!(cli(&db, &["key", "revoke", &id]).0, 0);
    let (code, out, _) = cli(&db, &["verify", &token, "--ip", "10.2.3.4"]);
    assert_eq!((code, out.trim()), (1, "REVOKED"));

    let (code, out, _) = cli(&db, &["key", "rotate", &id, "--json"]);
    assert_eq!(code, 2, "revoked keys cannot rotate: {out}");

    // Tools, workspace, audit, snapshot.
    assert_eq!(cli(&db, &["tool", "add", "generate_image", "--cooldown-ms", "1000"]).0, 0);
    let (code, out, _) = cli(&db, &["tool", "list", "--json"]);
    assert_eq!(code, 0);
    let names: Vec<String> =
        json(&out)["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["generate_image", "gl_ping"]);
    assert_eq!(cli(&db, &["tool", "update", "generate_image", "--disable"]).0, 0);
    let (code, out, _) = cli(&db, &["workspace", "show", "--json"]);
    assert_eq!((code, json(&out)["prefix"].as_str()), (0, Some("sk_test")));
    assert_eq!(json(&out)["limit_sync"], "exact");
    let (code, out, _) = cli(&db, &["workspace", "update", "--limit-sync", "local:250", "--json"]);
    assert_eq!((code, json(&out)["limit_sync"].as_str()), (0, Some("local:250")));
    let (code, _, err) = cli(&db, &["workspace", "update", "--limit-sync", "local:0"]);
    assert_eq!((code, err.trim()), (2, "keyward: error: invalid limit_sync: local_ms must be 1 to 60000"));
    let (code, _, err) = cli(&db, &["workspace", "update", "--limit-sync", "sometimes"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected `exact` or `local:MS`"), "{err}");
    let (code, out, _) = cli(&db, &["workspace", "show", "--json"]);
    assert_eq!((code, json(&out)["limit_sync"].as_str()), (0, Some("local:250")));
    let (code, out, _) = cli(&db, &["audit", "--json"]);
    assert_eq!(code, 0);
    let actions: Vec<String> =
        json(&out)["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    assert!(actions.contains(&"key.revoked".to_owned()) && actions.contains(&"tool.updated".to_owned()), "{actions:?}");
    let snap = dir.path().join("snap.bin");
    let (code, out, _) = cli(&db, &["snapshot", "export", "--out", snap.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["keys"], 2);
    assert_eq!(&std::fs::read(&snap).unwrap()[..6], b"KWSNAP");
}

/// A token issued elsewhere, imported by its SHA-256, verifies with the
/// settings given at import; a bad hash or setting changes nothing.
#[test]
fn import_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    common::init(&db);
    let foreign = "legacy-0123456789abcdefXYZ";
    let hash = keyward_core::KeyHash::of(foreign).to_hex();
    assert_eq!(cli(&db, &["key", "import", "--hash", &hash[..63], "--name", "old"]).0, 2);
    assert_eq!(cli(&db, &["key", "import", "--hash", &hash, "--name", "old", "--ip-allow", "10.0.0.1/8"]).0, 2);
    assert_eq!(cli(&db, &["verify", foreign]), (1, "MALFORMED\n".into(), String::new()), "nothing imported yet");
    let args = ["key", "import", "--hash", &hash, "--name", "old", "--ip-allow", "10.0.0.0/8", "--json"];
    let (code, out, _) = cli(&db, &args);
    assert_eq!(code, 0);
    let k = json(&out);
    assert_eq!((k["name"].as_str(), k["imported"].as_bool()), (Some("old"), Some(true)));
    assert_eq!(k["ip_rules"], serde_json::json!([{"action": "allow", "cidr": "10.0.0.0/8"}]));
    assert_eq!(cli(&db, &["verify", foreign, "--ip", "10.9.9.9"]).0, 0);
    let (code, out, _) = cli(&db, &["verify", foreign, "--ip", "192.0.2.1"]);
    assert_eq!((code, out.trim()), (1, "IP_DENIED"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    let (code, _, err) = cli(&db, &["key", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(cli(&db, &["no-such-command"]).0, 2);
    common::init(&db);
    assert_eq!(cli(&db, &["key", "create"]).0, 2, "missing --name");
    let (code, _, err) = cli(&db, &["key", "create", "--name", ""]);
    assert_eq!(code, 2);
    assert!(err.contains("name"), "{err}");
    assert_eq!(cli(&db, &["key", "create", "--name", "x", "--ip-allow", "10.0.0.1/8"]).0, 2);
    assert_eq!(cli(&db, &["key", "show", "key_0000000000000000000000"]).0, 2);
    assert_eq!(cli(&db, &["init", "--db", "/nonexistent/dir/k.redb"]).0, 2);
    std::fs::write(dir.path().join("junk.redb"), b"not a database").unwrap();
    let (code, _, err) = cli(&dir.path().join("junk.redb"), &["key", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("corrupt") || err.contains("I/O"), "{err}");
}

#[test]
fn commands_fail_clearly_while_the_server_holds_the_database() {
    let s = common::Server::start(&[]);
    let (code, _, err) = cli(&s.db, &["key", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("in use") && err.contains("keyward serve"), "{err}");
}

#[test]
fn a_secrets_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    let (code, out, _) = cli(&db, &["init", "--json"]);
    assert_eq!(code, 0);
    let root = json(&out)["root_key"].as_str().unwrap().to_owned();
    let secrets = dir.path().join("k.redb.secrets");
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = cli(&db, &["verify", &root]);
    assert_eq!(code, 2);
    let p = secrets.display();
    assert!(
        err.contains(&format!("{p}: mode 0644 lets other users read or change the keys; run `chmod 600 {p}`")),
        "{err}"
    );
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(cli(&db, &["verify", &root]).0, 0);
}

#[test]
fn signing_keys_take_bearer_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    assert_eq!(cli(&db, &["init", "--json"]).0, 0);
    let (code, out, err) = cli(&db, &["key", "create", "--name", "s", "--signing-user", "5", "--json"]);
    assert_eq!(code, 0, "{err}");
    let signer = json(&out);
    assert_eq!(signer["bearer"], false);
    assert_eq!(cli(&db, &["verify", signer["secret"].as_str().unwrap()]).0, 1);
    let (code, out, err) = cli(&db, &["key", "create", "--name", "b", "--signing-user", "6", "--bearer", "--json"]);
    assert_eq!(code, 0, "{err}");
    let both = json(&out);
    assert_eq!(both["bearer"], true);
    assert_eq!(cli(&db, &["verify", both["secret"].as_str().unwrap()]).0, 0);
    let (code, _, err) = cli(&db, &["key", "create", "--name", "x", "--bearer"]);
    assert_eq!(code, 2);
    assert!(err.contains("--signing-user"), "{err}");
}

/// `--cache-mb` sizes the database file's page cache: accepted with a file
/// (before or after the command), refused with a shared store.
#[test]
fn cache_mb_goes_with_a_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    assert_eq!(cli(&db, &["--cache-mb", "8", "init"]).0, 0);
    let (code, out, err) = cli(&db, &["key", "list", "--cache-mb", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["items"].as_array().map(Vec::len), Some(1), "{out}");
    let out = std::process::Command::new(common::BIN)
        .args(["--store", "redis://127.0.0.1:1/0", "--cache-mb", "8", "key", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("--cache-mb sizes the database file's cache"), "{err}");
}

/// `--json` prints what the HTTP API answers for the same things: a key,
/// a page of keys, a tool, the tools, the workspace, the audit log and a
/// verdict are compared value for value with the server's `data`.
#[test]
fn json_output_is_the_api_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    let (ws, root) = common::init(&db);
    let run = |args: &[&str]| {
        let (code, out, err) = cli(&db, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        json(&out)
    };
    let created = run(&[
        "key",
        "create",
        "--name",
        "ci",
        "--permission",
        "reports:read",
        "--ip-allow",
        "10.0.0.0/8",
        "--rate",
        "10/1000",
        "--credits",
        "5",
        "--meta",
        r#"{"team":"infra"}"#,
        "--json",
    ]);
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["secret"].as_str().unwrap().to_owned();
    let verdict = run(&["verify", &token, "--ip", "10.1.2.3", "--json"]);
    let tool = run(&["tool", "add", "svc", "--cooldown-ms", "5", "--json"]);
    let shown = run(&["key", "show", &id, "--json"]);
    let page = run(&["key", "list", "--json"]);
    let tools = run(&["tool", "list", "--json"]);
    let workspace = run(&["workspace", "show", "--json"]);
    let audit = run(&["audit", "--json"]);

    // What the CLI showed of the key just created is its view and secret.
    let mut view = created.as_object().unwrap().clone();
    assert_eq!(view.remove("secret"), Some(Value::from(token.clone())));
    assert_eq!(view.get("limits"), shown.get("limits"));
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(verdict["remaining"], 4);
    assert_eq!(verdict["name"], "ci");

    let s = common::Server::serve(dir, db.clone(), root.clone(), &[]);
    let get = |path: &str| {
        let r = common::request("GET", &s.url(path), &[("authorization", &common::bearer(&root))], None);
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.data().clone()
    };
    assert_eq!(shown, get(&format!("/v1/api-keys/{id}")));
    let keys = get("/v1/api-keys");
    assert_eq!(page["next_cursor"], keys["next_cursor"]);
    // The root key was used by the calls just made: compare the others.
    let others = |p: &Value| -> Vec<Value> {
        p["items"].as_array().unwrap().iter().filter(|k| k["id"] != page["items"][1]["id"]).cloned().collect()
    };
    assert_eq!(others(&page), others(&keys));
    assert_eq!(page["items"].as_array().unwrap().len(), keys["items"].as_array().unwrap().len());
    assert_eq!(tools, get("/v1/tools"));
    assert_eq!(Some(&tool), tools["items"].as_array().unwrap().iter().find(|t| t["name"] == "svc"));
    assert_eq!(workspace, get(&format!("/v1/workspaces/{ws}")));
    assert_eq!(audit, get("/v1/audit"));
    // A verdict over HTTP has the CLI's fields, with its figures a call later.
    let r = common::request(
        "POST",
        &s.url("/v1/verify"),
        &[("authorization", &common::bearer(&root))],
        Some(&serde_json::json!({"key": token, "ip": "10.1.2.3"})),
    );
    let mut over_http = r.data().clone();
    assert_eq!(over_http["remaining"], 3);
    over_http["remaining"] = verdict["remaining"].clone();
    over_http["ratelimit"] = verdict["ratelimit"].clone();
    assert_eq!(verdict, over_http);
}
