//! Bulk creation: `keyward key import --file` and `POST /v1/api-keys/batch`.

mod common;

use std::path::Path;

use common::{Server, assert_envelope, bearer, cli, init, request};
use keyward_core::KeyHash;
use serde_json::{Value, json};

fn write(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn jsonl(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

fn key_count(db: &Path) -> usize {
    let (code, out, err) = cli(db, &["key", "list", "--limit", "100", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().unwrap().len()
}

#[test]
fn import_mints_and_imports_by_token_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    init(&db);
    let file = dir.path().join("keys.jsonl");
    let hash = KeyHash::of("ghp_legacy_token_2").to_hex();
    let hashed = format!(r#"{{"name":"hashed","hash":"{hash}","start":"ghp_"}}"#);
    write(
        &file,
        &[
            r#"{"name":"minted","permissions":["reports:read"]}"#,
            "",
            r#"{"name":"by token","token":"sk_legacy_token_1","meta":{"plan":"pro"}}"#,
            &hashed,
            r#"{"title":"minted too","expires_at":"2099-01-01T00:00:00.000Z"}"#,
        ],
    );
    // --batch 2: two commits of two keys.
    let (code, out, err) = cli(&db, &["key", "import", "--file", file.to_str().unwrap(), "--batch", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("imported 4 keys from"), "{err}");
    assert!(err.contains("(2 new, 2 issued elsewhere)"), "{err}");
    let rows = jsonl(&out);
    let lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 4, 5]);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["minted", "by token", "hashed", "minted too"]);
    let secrets: Vec<bool> = rows.iter().map(|r| r.get("secret").is_some()).collect();
    assert_eq!(secrets, [true, false, false, true]);
    for r in &rows {
        assert!(r["id"].as_str().unwrap().starts_with("key_"), "{r}");
        assert_eq!(r.as_object().unwrap().len(), if r.get("secret").is_some() { 4 } else { 3 }, "{r}");
    }
    for token in [rows[0]["secret"].as_str().unwrap(), rows[3]["secret"].as_str().unwrap()] {
        assert!(token.starts_with("kw_live_"));
        assert_eq!(cli(&db, &["verify", token]).0, 0);
    }
    assert_eq!(cli(&db, &["verify", "sk_legacy_token_1"]).0, 0);
    assert_eq!(cli(&db, &["verify", "ghp_legacy_token_2"]).0, 0);
    let (code, shown, _) = cli(&db, &["key", "show", rows[2]["id"].as_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!((shown["start"].as_str(), shown["imported"].as_bool()), (Some("ghp_"), Some(true)));
    let (_, shown, _) = cli(&db, &["key", "show", rows[1]["id"].as_str().unwrap(), "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["start"], "sk_le", "a third of the foreign token");
    assert_eq!(shown["meta"], json!({"plan": "pro"}));
    // The root key and four more.
    assert_eq!(key_count(&db), 5);
    // Each commit is one audit event.
    let (_, audit, _) = cli(&db, &["audit", "--json"]);
    assert_eq!(audit.matches("keys.created").count(), 2, "{audit}");
    assert_eq!(audit.matches("2 keys (1 imported)").count(), 2, "{audit}");

    // The same file again: its foreign keys exist now; nothing is written.
    let (code, out, err) = cli(&db, &["key", "import", "--file", file.to_str().unwrap(), "--json"]);
    assert_eq!((code, out.as_str()), (2, ""));
    let path = file.display();
    assert_eq!(
        err,
        format!(
            "keyward: error: {path}: nothing imported:\n  \
             line 3: token/hash: a key with this hash already exists\n  \
             line 4: token/hash: a key with this hash already exists\n"
        )
    );
    assert_eq!(key_count(&db), 5);
}

#[test]
fn a_bad_line_is_named_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    init(&db);
    let file = dir.path().join("keys.jsonl");
    let path = file.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&[r#"{"name":"a"}"#, r#"{"name":"b","permissions":["Not Valid"]}"#], "line 2: permissions[0]: "),
        (&[r#"{"name":"a"}"#, "{not json"], "line 2: spec: invalid JSON: "),
        (&[r#"{"name":"a","colour":"red"}"#], "line 1: colour: unknown field `colour`, expected one of `name`, "),
        (&[r#"{"name":"a","hash":"abc"}"#], "line 1: hash: must be 64 hex characters (SHA-256 of the token)"),
        (&[r#"{"name":"a","token":"t1","hash":"00"}"#], "line 1: hash: give token or hash, not both"),
        (&[r#"{"name":""}"#], "line 1: name: must be 1 to 128 characters"),
        (
            &[r#"{"name":"a","token":"dup-1"}"#, r#"{"name":"b","token":"dup-1"}"#],
            "line 2: token/hash: the same key as line 1",
        ),
        (&["[1,2]"], "line 1: spec: must be a JSON object"),
    ];
    for (lines, expected) in cases {
        write(&file, lines);
        let (code, out, err) = cli(&db, &["key", "import", "--file", &path]);
        assert_eq!((code, out.as_str()), (2, ""), "{lines:?}: {err}");
        let head = format!("keyward: error: {path}: nothing imported:\n  {expected}");
        assert!(err.starts_with(&head), "{lines:?}:\n{err}\nwanted it to start with\n{head}");
        assert_eq!(key_count(&db), 1, "{lines:?}");
    }
    // Several bad lines: each named, in order.
    write(&file, &[r#"{"name":""}"#, r#"{"name":"ok"}"#, r#"{"nme":"x"}"#]);
    let (code, _, err) = cli(&db, &["key", "import", "--file", &path, "--batch", "1"]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "keyward: error: {path}: nothing imported:\n  \
             line 1: name: must be 1 to 128 characters\n  line 3: nme: unknown field `nme`, expected one of `name`, `title`, `expire_now`, `expires_at`, `permissions`, `ip_rules`, `limits`, `tools`, `bearer`, `meta`, `signing`, `disabled`, `token`, `hash`, `start`\n"
        )
    );
    // Flags that belong to the lines are refused with --file.
    let (code, _, err) = cli(&db, &["key", "import", "--file", &path, "--permission", "a:b"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "keyward: error: --file: each key's settings come from its line, not from flags\n")
    );
    let (code, _, _) = cli(&db, &["key", "import", "--file", &path, "--hash", "00"]);
    assert_eq!(code, 2, "--hash and --file conflict");
    let (code, _, err) = cli(&db, &["key", "import", "--file", "/nonexistent/keys.jsonl"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("keyward: error: /nonexistent/keys.jsonl: "), "{err}");
    assert_eq!(key_count(&db), 1);
}

fn batch(s: &Server, caller: &str, body: &Value) -> common::Resp {
    request("POST", &s.url("/v1/api-keys/batch"), &[("authorization", &bearer(caller))], Some(body))
}

#[test]
fn the_batch_endpoint_creates_all_or_nothing() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let r = batch(
        &s,
        &root,
        &json!({"keys": [
            {"name": "one", "permissions": ["reports:read"]},
            {"title": "two", "meta": {"team": "infra"}, "limits": {"credits": {"remaining": 5}}},
        ]}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_envelope(&r);
    let items = r.data()["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[0]["name"].as_str(), items[1]["name"].as_str()), (Some("one"), Some("two")));
    assert_eq!(items[0]["permissions"], json!(["reports:read"]));
    assert_eq!(items[1]["meta"], json!({"team": "infra"}));
    assert_eq!(items[1]["credits_remaining"], 5);
    assert_eq!(items[0]["created_by"], items[1]["created_by"]);
    for it in items {
        let secret = it["secret"].as_str().unwrap();
        assert_eq!(it["start"].as_str().unwrap(), &secret[..12]);
        let v = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", secret)], Some(&json!({"ip": "1.2.3.4"})));
        assert_eq!(v.status, 200, "{:?}", v.body);
    }

    // Refused specs: each named by its path, nothing created.
    let before = request("GET", &s.url("/v1/api-keys?limit=100"), &[("authorization", &bearer(&root))], None);
    let count = |r: &common::Resp| r.data()["items"].as_array().unwrap().len();
    let r = batch(
        &s,
        &root,
        &json!({"keys": [
            {"name": "fine"},
            {"name": "bad", "permissions": "reports:read"},
            {"name": "x", "hash": "00"},
            {"name": ""},
        ]}),
    );
    assert_eq!(r.status, 400);
    assert_envelope(&r);
    assert_eq!(
        r.body["error"],
        json!({
            "code": "invalid_request",
            "message": "2 of 4 keys refused, none created; keys[1].permissions: invalid type: string \"reports:read\", expected an array",
            "errors": [
                {"index": 1, "code": "invalid_request", "message": "keys[1].permissions: invalid type: string \"reports:read\", expected an array"},
                {"index": 2, "code": "invalid_request", "message": "keys[2].hash: unknown field `hash`, expected one of `name`, `title`, `expire_now`, `expires_at`, `permissions`, `ip_rules`, `limits`, `tools`, `bearer`, `meta`, `signing`, `disabled`"},
            ],
        })
    );
    // A spec the engine refuses (an empty name) is named the same way.
    let r = batch(&s, &root, &json!({"keys": [{"name": "fine"}, {"name": ""}]}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["error"],
        json!({
            "code": "invalid_request",
            "message": "1 of 2 keys refused, none created; keys[1].name: must be 1 to 128 characters",
            "errors": [{"index": 1, "code": "invalid_request", "message": "keys[1].name: must be 1 to 128 characters"}],
        })
    );
    let after = request("GET", &s.url("/v1/api-keys?limit=100"), &[("authorization", &bearer(&root))], None);
    assert_eq!(count(&after), count(&before));

    // Creator bounds per key: a key may not grant what it lacks.
    let writer =
        batch(&s, &root, &json!({"keys": [{"name": "writer", "permissions": ["keys:write", "reports:read"]}]}));
    let writer = writer.data()["items"][0]["secret"].as_str().unwrap().to_owned();
    let r = batch(
        &s,
        &writer,
        &json!({"keys": [{"name": "ok", "permissions": ["reports:read"]}, {"name": "no", "permissions": ["billing:write"]}]}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body["error"]["errors"],
        json!([{"index": 1, "code": "INSUFFICIENT_PERMISSIONS", "message": "keys[1]: cannot grant `billing:write`: the acting key lacks it"}])
    );
    let r = batch(&s, &writer, &json!({"keys": [{"name": "ok", "permissions": ["reports:read"]}]}));
    assert_eq!(r.status, 201, "{:?}", r.body);

    // The size of a call, its shape, and its caller.
    let specs: Vec<Value> = (0..1_001).map(|i| json!({"name": format!("k{i}")})).collect();
    let r = batch(&s, &root, &json!({"keys": specs}));
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["message"], "keys: must hold 1 to 1000 key specs, got 1001");
    for (body, message) in [
        (json!({"keys": []}), "keys: must hold 1 to 1000 key specs, got 0"),
        (json!({}), "keys: is required"),
        (json!({"keys": {}}), "keys: invalid type: map, expected an array"),
        (json!({"keys": [{"name": "a"}], "dry_run": true}), "dry_run: unknown field `dry_run`, expected `keys`"),
        (json!({"keys": [7]}), "1 of 1 keys refused, none created; keys[0]: must be a JSON object"),
    ] {
        let r = batch(&s, &root, &body);
        assert_eq!((r.status, r.body["error"]["message"].as_str()), (400, Some(message)), "{body}");
    }
    let plain = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&root))],
        Some(&json!({"name": "reader", "permissions": ["keys:read"]})),
    );
    let reader = plain.data()["secret"].as_str().unwrap().to_owned();
    assert_eq!(batch(&s, &reader, &json!({"keys": [{"name": "a"}]})).status, 403);
    assert_eq!(batch(&s, "kw_live_nope", &json!({"keys": [{"name": "a"}]})).status, 401);

    // A full call of 1,000 keys fits the body limit and commits.
    let specs: Vec<Value> = (0..1_000)
        .map(|i| json!({"name": format!("bulk-{i}"), "permissions": ["reports:read"], "meta": {"n": i}}))
        .collect();
    let r = batch(&s, &root, &json!({"keys": specs}));
    assert_eq!(r.status, 201, "{:?}", r.body["error"]);
    let items = r.data()["items"].as_array().unwrap();
    assert_eq!(items.len(), 1_000);
    assert_eq!(items[999]["name"], "bulk-999");
    assert_eq!(items[999]["meta"], json!({"n": 999}));
}
