//! The request log of `keyward serve`: one line per request with its
//! fields, and never a credential.

mod common;

use std::collections::BTreeSet;

use common::{Server, bearer, request};
use serde_json::{Value, json};

/// The JSON lines of a log, by request id.
fn lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

fn line_of<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id).collect();
    assert_eq!(found.len(), 1, "one line for {id}: {found:?}");
    found[0]
}

fn fields(line: &Value) -> BTreeSet<String> {
    line.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn json_lines_carry_the_request_and_no_credential() {
    let (mut s, log) = Server::start_logged(&["--log-format", "json", "--log-level", "info"]);
    let root = s.root.clone();
    let r = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&root))],
        Some(&json!({"name": "exchange", "signing": {"user_id": "96"}, "bearer": true})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let create_id = r.header("x-request-id").unwrap().to_owned();
    let key = r.data()["secret"].as_str().unwrap().to_owned();
    let key_id = r.data()["id"].as_str().unwrap().to_owned();
    let api_secret = r.data()["api_secret"].as_str().unwrap().to_owned();

    // The key as X-API-Key at the gateway.
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &key)], Some(&json!({"ip": "1.2.3.4"})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let gateway_id = r.header("x-request-id").unwrap().to_owned();
    // As a bearer token, and inside a JSON body.
    let r = request(
        "POST",
        &s.url("/api/v2/gl_ping"),
        &[("authorization", &bearer(&key))],
        Some(&json!({"ip": "1.2.3.4"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = request("POST", &s.url("/v1/verify"), &[("authorization", &bearer(&root))], Some(&json!({"key": key})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let verify_id = r.header("x-request-id").unwrap().to_owned();
    let workspace = r.data()["workspace_id"].as_str().unwrap().to_owned();
    // Signed headers, then the session as aptoken.
    let sig = keyward_core::signature::sign_hex(
        &keyward_core::signature::ApiSecret::new(api_secret.as_bytes().to_vec()),
        "100",
        "96",
        &key,
    );
    let r = request(
        "POST",
        &s.url("/v1/AuthenticateUser"),
        &[("APIKey", &key), ("Signature", &sig), ("UserId", "96"), ("Nonce", "100")],
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let session = r.data()["session_token"].as_str().unwrap().to_owned();
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("aptoken", &session)], Some(&json!({"ip": "1.2.3.4"})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A refused call: a wrong key of the right shape.
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", "kw_live_nope")], None);
    assert_eq!(r.status, 401);
    let refused_id = r.header("x-request-id").unwrap().to_owned();
    // The audit event the key's creation wrote, as the API lists it.
    let r = request("GET", &s.url("/v1/audit?limit=100"), &[("authorization", &bearer(&root))], None);
    let created = r.data()["items"].as_array().unwrap().iter().find(|e| e["target"] == key_id.as_str()).cloned();
    let created = created.unwrap_or_else(|| panic!("no event for {key_id}: {:?}", r.body));
    assert_eq!(created["action"], "key.created");

    assert_eq!(s.terminate(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    for (what, secret) in [
        ("root key", root.as_str()),
        ("key", &key),
        ("api secret", &api_secret),
        ("signature", &sig),
        ("session", &session),
    ] {
        assert!(!text.contains(secret), "the {what} is in the log:\n{text}");
    }
    let lines = lines(&text);

    let gateway = line_of(&lines, &gateway_id);
    assert_eq!(
        fields(gateway),
        set(&[
            "timestamp",
            "level",
            "target",
            "message",
            "request_id",
            "method",
            "route",
            "status",
            "code",
            "key_id",
            "workspace",
            "ip",
            "latency_us"
        ]),
        "{gateway}"
    );
    assert_eq!(gateway["level"], "INFO");
    assert_eq!(gateway["target"], "keyward::request");
    assert_eq!(gateway["message"], "request");
    assert_eq!(gateway["method"], "POST");
    assert_eq!(gateway["route"], "/api/v2/{tool}");
    assert_eq!(gateway["status"], 200);
    assert_eq!(gateway["code"], "VALID");
    assert_eq!(gateway["key_id"], key_id.as_str());
    assert_eq!(gateway["workspace"], workspace.as_str());
    assert_eq!(gateway["ip"], "127.0.0.1");
    assert!(gateway["latency_us"].as_u64().is_some(), "{gateway}");

    // An admin action names the audit event it wrote; the caller is the key logged.
    let create = line_of(&lines, &create_id);
    assert_eq!(create["route"], "/v1/api-keys");
    assert_eq!(create["status"], 201);
    assert_eq!(create["audit"], format!("key.created {key_id}"));
    assert_eq!(create["audit_seq"], created["seq"], "{create}");
    assert!(created["seq"].as_u64().is_some_and(|seq| seq > 1), "{created}");
    assert_eq!(create["workspace"], workspace.as_str());
    assert!(create.get("code").is_none(), "{create}");

    // /v1/verify logs the key it decided on, not its caller.
    let verify = line_of(&lines, &verify_id);
    assert_eq!((verify["route"].as_str(), verify["code"].as_str()), (Some("/v1/verify"), Some("VALID")));
    assert_eq!(verify["key_id"], key_id.as_str());

    let refused = line_of(&lines, &refused_id);
    assert_eq!((refused["status"].as_u64(), refused["code"].as_str()), (Some(401), Some("MALFORMED")));
    assert!(refused.get("key_id").is_none(), "{refused}");
}

#[test]
fn text_lines_by_default_and_levels() {
    let (mut s, log) = Server::start_logged(&["--log-level", "info"]);
    let r = request("GET", &s.url("/healthz"), &[], None);
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(s.terminate(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("no line for {id}:\n{text}"));
    assert!(line.contains(" INFO keyward::request: request "), "{line}");
    for part in
        [format!("request_id=\"{id}\""), "method=\"GET\"".into(), "route=\"/healthz\"".into(), "status=200".into()]
    {
        assert!(line.contains(&part), "{part} not in {line}");
    }

    // `warn` hides request lines (the helper's RUST_LOG is `warn` too).
    let (mut s, log) = Server::start_logged(&["--log-level", "warn"]);
    assert_eq!(request("GET", &s.url("/healthz"), &[], None).status, 200);
    assert_eq!(s.terminate(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("keyward::request"), "{text}");
}
