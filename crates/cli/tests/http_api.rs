//! The HTTP API of `keyward serve`, end to end over real sockets.

mod common;

use common::{Server, assert_envelope, bearer, raw, request};
use serde_json::{Value, json};

fn create(s: &Server, caller: &str, body: Value) -> common::Resp {
    request("POST", &s.url("/v1/api-keys"), &[("authorization", &bearer(caller))], Some(&body))
}

fn secret(r: &common::Resp) -> String {
    r.data()["secret"].as_str().unwrap_or_else(|| panic!("no secret in {:?}", r.body)).to_owned()
}

fn ping(s: &Server, headers: &[(&str, &str)]) -> common::Resp {
    request("POST", &s.url("/api/v2/gl_ping"), headers, Some(&json!({"ip": "203.0.113.9"})))
}

#[test]
fn key_lifecycle_and_gateway() {
    let s = Server::start(&[]);
    let root = s.root.clone();

    // Create: 201 with the secret once; `title` is an alias of `name`.
    let r = create(&s, &root, json!({"title": "ci", "permissions": ["tools:*"], "meta": {"team": "infra"}}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_envelope(&r);
    let d = r.data();
    assert_eq!(d["name"], "ci");
    assert_eq!(d["status"], "active");
    assert!(d["id"].as_str().unwrap().starts_with("key_"));
    let token = secret(&r);
    assert!(token.starts_with("kw_live_"));
    assert_eq!(d["start"].as_str().unwrap(), &token[..12]);
    let created_at = d["created_at"].as_str().unwrap();
    assert_eq!(created_at.len(), "2024-03-01T10:00:00.000Z".len());
    assert!(created_at.ends_with('Z'));
    let id = d["id"].as_str().unwrap().to_owned();

    // The gateway with each header form.
    for h in [("x-api-key", token.clone()), ("authorization", bearer(&token))] {
        let r = ping(&s, &[(h.0, &h.1)]);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_envelope(&r);
        assert_eq!(r.data(), &json!({"ip": "203.0.113.9"}));
    }
    // gl_ping without a valid ip.
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &token)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &token)], Some(&json!({"ip": "999.1.1.1"})));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    // Unknown tool, other methods.
    let r = request("POST", &s.url("/api/v2/nope"), &[("x-api-key", &token)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (404, "UNKNOWN_TOOL"));
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        let r = request(m, &s.url("/api/v2/gl_ping"), &[("x-api-key", &token)], None);
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("POST"));
        assert_envelope(&r);
    }

    // Read it back: listing never shows a secret or hash.
    let r = request("GET", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["meta"], json!({"team": "infra"}));
    assert!(r.data()["last_used_at"].is_string(), "last_used_at recorded: {:?}", r.data());
    let r = request("GET", &s.url("/v1/api-keys"), &[("authorization", &bearer(&root))], None);
    let text = r.body.to_string();
    assert!(!text.contains(&token) && !text.contains("secret") && !text.contains("hash"), "{text}");

    // PATCH: disable → 403 DISABLED, enable → 200.
    let patch = |body: Value| {
        request("PATCH", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&root))], Some(&body))
    };
    assert_eq!(patch(json!({"disabled": true})).data()["status"], "disabled");
    assert_eq!(ping(&s, &[("x-api-key", &token)]).code(), "DISABLED");
    assert_eq!(ping(&s, &[("x-api-key", &token)]).status, 403);
    assert_eq!(patch(json!({"disabled": false, "name": "ci-2"})).data()["name"], "ci-2");
    // A misspelt field is refused, naming it, and changes nothing.
    let r = patch(json!({"name": "ci-3", "disable": true}));
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (
            400,
            Some(
                "disable: unknown field `disable`, expected one of `name`, `title`, `expires_at`, `permissions`, `ip_rules`, `limits`, `tools`, `meta`, `disabled`, `credits`"
            )
        )
    );
    let r = request("GET", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&root))], None);
    assert_eq!((r.data()["name"].as_str(), r.data()["disabled"].as_bool()), (Some("ci-2"), Some(false)));
    let r = request(
        "POST",
        &s.url(&format!("/v1/api-keys/{id}/rotate")),
        &[("authorization", &bearer(&root))],
        Some(&json!({"grace": 60})),
    );
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (400, Some("grace: unknown field `grace`, expected `grace_seconds`"))
    );
    assert_eq!(ping(&s, &[("x-api-key", &token)]).status, 200);
    assert_eq!(patch(json!({"name": ""})).status, 400);

    // Usage.
    let r = request("GET", &s.url(&format!("/v1/api-keys/{id}/usage")), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.status, 200);
    // 2 pings + 2 verified calls with a bad body + 1 after re-enabling.
    assert_eq!(r.data()["valid"], 5);
    assert_eq!(r.data()["refused"], 3);

    // Rotate with grace: both work; without grace the old one stops at once.
    let r = request(
        "POST",
        &s.url(&format!("/v1/api-keys/{id}/rotate")),
        &[("authorization", &bearer(&root))],
        Some(&json!({"grace_seconds": 3600})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_token = secret(&r);
    let new_id = r.data()["id"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert_eq!(ping(&s, &[("x-api-key", &token)]).status, 200, "old works during grace");
    assert_eq!(ping(&s, &[("x-api-key", &new_token)]).status, 200);
    let r = request(
        "POST",
        &s.url(&format!("/v1/api-keys/{new_id}/rotate")),
        &[("authorization", &bearer(&root))],
        Some(&json!({"grace_seconds": 0})),
    );
    let newest = secret(&r);
    assert_eq!(ping(&s, &[("x-api-key", &new_token)]).code(), "EXPIRED");
    assert_eq!(ping(&s, &[("x-api-key", &newest)]).status, 200);
    let newest_id = r.data()["id"].as_str().unwrap().to_owned();

    // Revoke → 401 REVOKED on the very next request; delete → 404 afterwards.
    let r = request(
        "POST",
        &s.url(&format!("/v1/api-keys/{newest_id}/revoke")),
        &[("authorization", &bearer(&root))],
        None,
    );
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("revoked")));
    let r = ping(&s, &[("x-api-key", &newest)]);
    assert_eq!((r.status, r.code()), (401, "REVOKED"));
    let r = request("DELETE", &s.url(&format!("/v1/api-keys/{newest_id}")), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.status, 200);
    let r = request("GET", &s.url(&format!("/v1/api-keys/{newest_id}")), &[("authorization", &bearer(&root))], None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(ping(&s, &[("x-api-key", &newest)]).code(), "NOT_FOUND");

    // Audit.
    let r = request("GET", &s.url("/v1/audit?limit=100"), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.status, 200);
    let actions: Vec<&str> =
        r.data()["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["key.created", "key.disabled", "key.enabled", "key.rotated", "key.revoked", "key.deleted"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(!r.body.to_string().contains(&token));
}

#[test]
fn create_validation_and_permission_bounds() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(129)}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "a", "permissions": ["a b"]}), "permissions"),
        (json!({"name": "a", "ip_rules": [{"action": "allow", "cidr": "10.0.0.1/8"}]}), "ip_rules"),
        (json!({"name": "a", "ip_rules": [{"action": "maybe", "cidr": "10.0.0.0/8"}]}), "ip_rules"),
        (json!({"name": "a", "limits": {"rate": {"limit": 0, "window_ms": 10}}}), "limits"),
        (json!({"name": "a", "limits": {"credits": {"remaining": -1}}}), "limits.credits.remaining"),
        (json!({"name": "a", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "a", "meta": [1]}), "meta"),
        (json!({"name": "a", "tools": ["bad tool"]}), "tools"),
    ] {
        let r = create(&s, &root, body.clone());
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}: {:?}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{body}: message {msg:?} should name {field}");
    }
    let ok = create(&s, &root, json!({"name": "x".repeat(128)}));
    assert_eq!(ok.status, 201);
    let r = create(&s, &root, json!({"name": "gone", "expire_now": true}));
    assert_eq!((r.status, r.data()["status"].as_str()), (201, Some("expired")));
    assert_eq!(ping(&s, &[("x-api-key", &secret(&r))]).code(), "EXPIRED");

    // 401 without a valid caller, 403 without keys:write or beyond the caller's permissions.
    assert_eq!(request("POST", &s.url("/v1/api-keys"), &[], Some(&json!({"name": "a"}))).status, 401);
    assert_eq!(create(&s, "kw_live_notarealkey", json!({"name": "a"})).status, 401);
    let reader = secret(&create(&s, &root, json!({"name": "reader", "permissions": ["keys:read"]})));
    let r = create(&s, &reader, json!({"name": "a"}));
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_PERMISSIONS"));
    let writer =
        secret(&create(&s, &root, json!({"name": "writer", "permissions": ["keys:write", "keys:read", "billing:*"]})));
    assert_eq!(create(&s, &writer, json!({"name": "a", "permissions": ["billing:read"]})).status, 201);
    let r = create(&s, &writer, json!({"name": "a", "permissions": ["admin"]}));
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_PERMISSIONS"));
    // keys:read may list but not write.
    assert_eq!(request("GET", &s.url("/v1/api-keys"), &[("authorization", &bearer(&reader))], None).status, 200);
    assert_eq!(request("GET", &s.url("/v1/audit"), &[("authorization", &bearer(&reader))], None).status, 403);

    // Body errors: invalid JSON, wrong content type, oversize.
    let r = raw(&s.addr, format!("POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{{\"name\":}}").as_bytes());
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains("\"success\":false"));
    let r = raw(&s.addr, format!("POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {root}\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{{\"name\":\"a\"}}").as_bytes());
    assert_eq!(r.0, 400);
    let big = format!("{{\"name\":\"a\",\"meta\":{{\"x\":\"{}\"}}}}", "a".repeat(70 * 1024));
    let r = raw(&s.addr, format!("POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}", big.len()).as_bytes());
    assert_eq!(r.0, 413, "{}", r.1);
    assert!(r.1.contains("\"success\":false") && r.1.contains("request_id"), "{}", r.1);
    let r = request("GET", &s.url("/no/such/path"), &[], None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_envelope(&r);
}

#[test]
fn pagination_and_workspace_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    let (_, root) = common::init(&db);
    let (code, out, _) =
        common::cli(&db, &["workspace", "create", "--name", "other", "--prefix", "sk_other", "--json"]);
    assert_eq!(code, 0);
    let other: Value = serde_json::from_str(&out).unwrap();
    let other_root = other["root_key"].as_str().unwrap().to_owned();
    assert!(other_root.starts_with("sk_other_"));
    let s = Server::serve(dir, db, root.clone(), &[]);

    let mut made = Vec::new();
    for i in 0..7 {
        made.push(create(&s, &root, json!({"name": format!("k{i}")})).data()["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => s.url(&format!("/v1/api-keys?limit=3&cursor={c}")),
            None => s.url("/v1/api-keys?limit=3"),
        };
        let r = request("GET", &url, &[("authorization", &bearer(&root))], None);
        assert_eq!(r.status, 200);
        let items = r.data()["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match r.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // Newest first: the 7 made, then the root key.
    let mut expected: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(&seen[..7], &expected[..]);
    assert_eq!(seen.len(), 8);
    expected.clear();
    assert_eq!(request("GET", &s.url("/v1/api-keys?limit=0"), &[("authorization", &bearer(&root))], None).status, 400);
    assert_eq!(
        request("GET", &s.url("/v1/api-keys?cursor=bogus"), &[("authorization", &bearer(&root))], None).status,
        400
    );

    // The other workspace's root key sees none of these, and gets 404 for them.
    let r = request("GET", &s.url("/v1/api-keys"), &[("authorization", &bearer(&other_root))], None);
    assert_eq!(r.data()["items"].as_array().unwrap().len(), 1);
    for m in ["GET", "DELETE"] {
        let r =
            request(m, &s.url(&format!("/v1/api-keys/{}", made[0])), &[("authorization", &bearer(&other_root))], None);
        assert_eq!(r.status, 404, "{m}");
    }
    let r = request(
        "POST",
        &s.url(&format!("/v1/api-keys/{}/revoke", made[0])),
        &[("authorization", &bearer(&other_root))],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        request("GET", &s.url(&format!("/v1/api-keys/{}", made[0])), &[("authorization", &bearer(&root))], None).data()
            ["status"],
        "active"
    );
}

#[test]
fn verify_endpoint_limits_and_tools() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let t = request(
        "POST",
        &s.url("/v1/tools"),
        &[("authorization", &bearer(&root))],
        Some(&json!({"name": "generate_image", "enabled": true, "permission": "tools:image", "cooldown_ms": 60000})),
    );
    assert_eq!(t.status, 201, "{:?}", t.body);
    assert_eq!(
        request(
            "POST",
            &s.url("/v1/tools"),
            &[("authorization", &bearer(&root))],
            Some(&json!({"name": "generate_image"}))
        )
        .status,
        409
    );
    assert_eq!(
        request(
            "POST",
            &s.url("/v1/tools"),
            &[("authorization", &bearer(&root))],
            Some(&json!({"name": "off", "enabled": false}))
        )
        .status,
        201
    );
    let list = request("GET", &s.url("/v1/tools"), &[("authorization", &bearer(&root))], None);
    assert_eq!(list.data()["items"].as_array().unwrap().len(), 3);

    let k = create(
        &s,
        &root,
        json!({"name": "img", "permissions": ["tools:image"], "ip_rules": [{"action": "allow", "cidr": "10.0.0.0/8"}],
        "limits": {"credits": {"remaining": 2}}, "meta": {"plan": "pro"}}),
    );
    let key = secret(&k);
    let verify = |body: Value| request("POST", &s.url("/v1/verify"), &[("authorization", &bearer(&root))], Some(&body));
    let r = verify(json!({"key": key, "ip": "10.1.1.1", "tool": "generate_image"}));
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    let d = r.data();
    assert_eq!((d["valid"].as_bool(), d["code"].as_str()), (Some(true), Some("VALID")));
    assert_eq!(d["name"], "img");
    assert_eq!(d["meta"], json!({"plan": "pro"}));
    assert_eq!(d["remaining"], 1);
    assert_eq!(d["permissions"], json!(["tools:image"]));
    let r = verify(json!({"key": key, "ip": "10.1.1.1", "tool": "generate_image"}));
    assert_eq!(
        (r.data()["code"].as_str(), r.data()["retry_after_ms"].as_u64()),
        (Some("COOLDOWN"), Some(60_000 - r.data()["retry_after_ms"].as_u64().map_or(0, |ms| 60_000 - ms)))
    );
    assert_eq!(verify(json!({"key": key, "ip": "11.1.1.1"})).data()["code"], "IP_DENIED");
    assert_eq!(verify(json!({"key": key, "ip": "10.1.1.1", "tool": "off"})).data()["code"], "TOOL_DISABLED");
    assert_eq!(verify(json!({"key": key, "ip": "10.1.1.1", "tool": "nope"})).data()["code"], "UNKNOWN_TOOL");
    assert_eq!(
        verify(json!({"key": key, "ip": "10.1.1.1", "permissions": ["keys:write"]})).data()["code"],
        "INSUFFICIENT_PERMISSIONS"
    );
    assert_eq!(verify(json!({"key": key, "ip": "10.1.1.1"})).data()["code"], "VALID");
    assert_eq!(verify(json!({"key": key, "ip": "10.1.1.1"})).data()["code"], "USAGE_EXHAUSTED");
    assert_eq!(verify(json!({"key": "kw_live_x"})).data()["code"], "MALFORMED");
    assert_eq!(verify(json!({})).status, 400);
    assert_eq!(verify(json!({"key": key, "ip": "nope"})).status, 400);
    // Only a key holding keys:verify may test keys: the body's ip, tool and
    // cost are trusted.
    let body = json!({"key": key, "ip": "10.1.1.1"});
    let anonymous = request("POST", &s.url("/v1/verify"), &[], Some(&body));
    assert_eq!((anonymous.status, anonymous.body["error"]["code"].as_str()), (401, Some("MALFORMED")));
    let plain = secret(&create(&s, &root, json!({"name": "plain", "permissions": ["tools:*"]})));
    let weak = request("POST", &s.url("/v1/verify"), &[("authorization", &bearer(&plain))], Some(&body));
    assert_eq!((weak.status, weak.body["error"]["code"].as_str()), (403, Some("INSUFFICIENT_PERMISSIONS")));
    let checker = secret(&create(&s, &root, json!({"name": "checker", "permissions": ["keys:verify"]})));
    let ok = request("POST", &s.url("/v1/verify"), &[("authorization", &bearer(&checker))], Some(&body));
    assert_eq!((ok.status, ok.data()["code"].as_str()), (200, Some("USAGE_EXHAUSTED")));

    // 429 on the gateway carries Retry-After and RateLimit-*.
    let rl = secret(&create(&s, &root, json!({"name": "rl", "limits": {"rate": {"limit": 1, "window_ms": 60000}}})));
    assert_eq!(ping(&s, &[("x-api-key", &rl)]).status, 200);
    let r = ping(&s, &[("x-api-key", &rl)]);
    assert_eq!((r.status, r.code()), (429, "RATE_LIMITED"));
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.header("ratelimit-limit"), Some("1"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-reset"), Some("60"));
    let daily = secret(&create(&s, &root, json!({"name": "d", "limits": {"daily": 1}})));
    ping(&s, &[("x-api-key", &daily)]);
    let r = ping(&s, &[("x-api-key", &daily)]);
    assert_eq!((r.status, r.code()), (429, "DAILY_LIMIT"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));

    // Health and metrics.
    let h = request("GET", &s.url("/healthz"), &[], None);
    assert_eq!((h.status, h.data()["status"].as_str()), (200, Some("ok")));
    let m = ureq::get(&s.url("/metrics")).call().unwrap().into_string().unwrap();
    assert!(
        m.contains("keyward_http_requests_total{route=\"/api/v2/{tool}\",status=\"429\",code=\"RATE_LIMITED\"} 1"),
        "{m}"
    );
    assert!(m.contains("keyward_verify_duration_seconds_count"));
    assert!(m.contains("keyward_keys_live "));
}

#[test]
fn signed_flow_and_aptoken() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let r = create(&s, &root, json!({"name": "exchange", "signing": {"user_id": "96"}}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let d = r.data();
    let api_key = d["secret"].as_str().unwrap().to_owned();
    let api_secret = d["api_secret"].as_str().unwrap().to_owned();
    assert_eq!((d["user_id"].as_str(), d["nonce"].as_u64()), (Some("96"), Some(1)));
    let auth = |nonce: &str, secret: &str| {
        let sig = keyward_core::signature::sign_hex(
            &keyward_core::signature::ApiSecret::new(secret.as_bytes().to_vec()),
            nonce,
            "96",
            &api_key,
        );
        request(
            "POST",
            &s.url("/v1/AuthenticateUser"),
            &[("APIKey", &api_key), ("Signature", &sig), ("UserId", "96"), ("Nonce", nonce)],
            None,
        )
    };
    let r = auth("100", &api_secret);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["authenticated"], true);
    assert_eq!(r.data()["user_id"], "96");
    let session = r.data()["session_token"].as_str().unwrap().to_owned();
    assert!(r.data()["expires_at"].is_string());
    let r = auth("100", &api_secret);
    assert_eq!((r.status, r.code()), (401, "NONCE_REUSED"));
    let r = auth("101", "wrong-secret");
    assert_eq!((r.status, r.code()), (401, "INVALID_SIGNATURE"));
    let r = request("POST", &s.url("/v1/AuthenticateUser"), &[("APIKey", &api_key), ("UserId", "96")], None);
    assert_eq!((r.status, r.code()), (401, "MALFORMED"));
    // The session authenticates the gateway as `aptoken` (any case).
    for name in ["aptoken", "APToken"] {
        let r = ping(&s, &[(name, &session)]);
        assert_eq!(r.status, 200, "{name}: {:?}", r.body);
    }
    assert_eq!(ping(&s, &[("aptoken", "kw_session_bogus")]).code(), "MALFORMED");
}

#[test]
fn signing_keys_are_no_bearer_keys_unless_asked() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let r = create(&s, &root, json!({"name": "exchange", "signing": {"user_id": "96"}}));
    assert_eq!((r.status, &r.data()["bearer"]), (201, &json!(false)), "{:?}", r.body);
    let signer = secret(&r);
    for headers in [[("x-api-key", signer.as_str())], [("authorization", &*bearer(&signer))]] {
        let r = ping(&s, &headers);
        assert_eq!((r.status, r.code()), (401, "INVALID_SIGNATURE"), "{:?}", r.body);
        assert_eq!(r.body["error"]["message"], "refused: signature wrong or missing (a signing key is no bearer key)");
    }
    let r = request("GET", &s.url("/v1/auth"), &[("x-api-key", &signer)], None);
    assert_eq!((r.status, r.code()), (401, "INVALID_SIGNATURE"));
    let r = request("POST", &s.url("/v1/verify"), &[("authorization", &bearer(&root))], Some(&json!({"key": signer})));
    assert_eq!(
        (r.status, r.data()["valid"].as_bool(), r.data()["code"].as_str()),
        (200, Some(false), Some("INVALID_SIGNATURE"))
    );
    // Not as an admin caller either.
    let r = request("GET", &s.url("/v1/api-keys"), &[("authorization", &bearer(&signer))], None);
    assert_eq!((r.status, r.code()), (401, "INVALID_SIGNATURE"));

    let r = create(&s, &root, json!({"name": "both", "signing": {"user_id": "97"}, "bearer": true}));
    assert_eq!((r.status, &r.data()["bearer"]), (201, &json!(true)), "{:?}", r.body);
    assert_eq!(ping(&s, &[("x-api-key", &secret(&r))]).status, 200);
    let r = create(&s, &root, json!({"name": "plain"}));
    assert_eq!(r.data()["bearer"], true);
    let r = create(&s, &root, json!({"name": "odd", "bearer": true}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(r.body["error"]["message"], "bearer: only applies to a key with a signing identity");
    let r = create(&s, &root, json!({"name": "odd", "signing": {"user_id": "98"}, "bearer": "yes"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{:?}", r.body);
}

/// The gateway reads paths by the rule the edge applies too: the shared
/// table of keyward-core (`crates/core/tests/data/gateway_paths.json`).
#[test]
fn gateway_paths_follow_the_shared_table() {
    let s = Server::start(&[]);
    let k = secret(&create(&s, &s.root, json!({"name": "paths"})));
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data/gateway_paths.json")).unwrap();
    let table: Value = serde_json::from_str(&table).unwrap();
    let mut checked = 0;
    for row in table["cases"].as_array().unwrap() {
        let path = row["path"].as_str().unwrap();
        // Elsewhere the API's own routes answer (`/api//v2/…` is no gateway
        // path to the router: 404).
        if !path.starts_with("/api/v2/") {
            continue;
        }
        let body = "{\"ip\":\"203.0.113.9\"}";
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {k}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = raw(&s.addr, req.as_bytes());
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        match row["code"].as_str().unwrap() {
            "VALID" => assert_eq!((status, &v["data"]), (200, &json!({"ip": "203.0.113.9"})), "{path}"),
            "UNKNOWN_TOOL" => assert_eq!((status, v["error"]["code"].as_str()), (404, Some("UNKNOWN_TOOL")), "{path}"),
            "MALFORMED" => {
                assert_eq!((status, v["error"]["code"].as_str()), (401, Some("MALFORMED")), "{path}");
                assert_eq!(v["error"]["message"], row["error"], "{path}");
            }
            other => panic!("{path}: unexpected code {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 24);
}

#[test]
fn hostile_requests_never_break_the_server() {
    let s = Server::start(&[]);
    let k = secret(&create(&s, &s.root, json!({"name": "h"})));
    let addr = s.addr.clone();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (format!("POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nX-API-Key: {k}\r\nX-API-Key: {k}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(), 401),
        (format!("POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nX-API-Key: {k}\r\nAuthorization: Bearer {k}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(), 401),
        (format!("POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {k}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(), 401),
        (format!("POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "a".repeat(5000)).into_bytes(), 401),
        (b"POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\x80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), 401),
        (b"POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x01b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), 400),
        // A path no reader can take one way only: MALFORMED, as at the edge.
        (b"POST /api/v2/%00%ff HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), 401),
        (b"POST /api/v2/gl_ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), 401),
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
    ];
    for (bytes, want) in cases {
        let (status, body) = raw(&addr, &bytes);
        assert_eq!(status, want, "{:?} → {body}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)]));
    }
    // Still serving.
    assert_eq!(ping(&s, &[("x-api-key", &k)]).status, 200);
}

/// Bodies are read into typed requests: an unknown field anywhere, nested
/// too, is refused with its JSON path and nothing is created; a value
/// refused after reading names its full path the same way.
#[test]
fn bodies_are_typed_and_errors_name_the_json_path() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let list = || request("GET", &s.url("/v1/api-keys?limit=100"), &[("authorization", &bearer(&root))], None);
    let before = list().data()["items"].as_array().unwrap().len();

    let message = |r: &common::Resp| (r.status, r.code().to_owned(), r.body["error"]["message"].clone());
    let r = create(&s, &root, json!({"name": "typo", "limits": {"rates": [{"limit": 5, "windw_ms": 1000}]}}));
    assert_envelope(&r);
    assert_eq!(
        message(&r),
        (
            400,
            "invalid_request".to_owned(),
            json!(
                "limits.rates[0].windw_ms: unknown field `windw_ms`, expected one of `name`, `limit`, `window_ms`, `auto_apply`"
            )
        )
    );
    // Checks made after reading name the value's full path too.
    let cases = [
        (
            json!({"name": "a", "limits": {"rates": [{"limit": 5, "window_ms": 1000}, {"limit": 5, "window_ms": "1s"}]}}),
            "limits.rates[1].window_ms: invalid type: string \"1s\", expected a non-negative integer",
        ),
        (json!({"name": "a", "limits": {"rates": [{"limit": 5}]}}), "limits.rates[0].window_ms: is required"),
        (
            json!({"name": "a", "limits": {"rates": [{"limit": 5, "window_ms": 1000}, {"name": "b", "limit": 5, "window_ms": 0}]}}),
            "limits.rates[1].window_ms: must be at least 1",
        ),
        (
            json!({"name": "a", "limits": {"rate": {"limit": 0, "window_ms": 1000}}}),
            "limits.rate.limit: must be at least 1",
        ),
        (
            json!({"name": "a", "limits": {"rates": [{"name": "x y", "limit": 1, "window_ms": 1}]}}),
            "limits.rates[0].name: rate limit name must be 1 to 64 characters",
        ),
        (
            json!({"name": "a", "limits": {"rates": [{"name": "b", "limit": 1, "window_ms": 1}, {"name": "b", "limit": 2, "window_ms": 1}]}}),
            "limits.rates[1].name: `b` names an earlier rate limit too",
        ),
        (
            json!({"name": "a", "limits": {"rates": [{"limit": 1, "window_ms": 4000000000000u64}]}}),
            "limits.rates[0].window_ms: must be at most 3155760000000",
        ),
        (json!({"name": "a", "limits": {"concurrency": {"max": 0}}}), "limits.concurrency.max: must be at least 1"),
        (json!({"name": "a", "limits": {"concurrency": 0}}), "limits.concurrency: must be a positive integer"),
        (
            json!({"name": "a", "ip_rules": [{"action": "allow", "cidr": "10.0.0.0/8"}, {"action": "deny", "cidr": "10.0.0.300"}]}),
            "ip_rules[1].cidr: ",
        ),
        (json!({"name": "a", "permissions": ["keys:read", "Not Valid"]}), "permissions[1]: "),
        (
            json!({"name": "a", "limits": {"credits": {"remaining": 5, "refill": {"interval": "monthly", "amount": 1, "day": 32}}}}),
            "limits.credits.refill.day: must be 1 to 31",
        ),
        (
            json!({"name": "a", "expires_at": "soon"}),
            "expires_at: must be an RFC 3339 time such as 2024-03-01T10:00:00.000Z",
        ),
        (
            json!({"name": "a", "signing": {"user_id": true}}),
            "signing.user_id: invalid type: boolean `true`, expected a string or a non-negative integer",
        ),
        (
            json!({"name": "a", "limits": {"concurrency": "2"}}),
            "limits.concurrency: invalid type: string \"2\", expected a positive integer or {\"max\": n, \"lease_ms\": ms}",
        ),
        (
            json!({"name": "a", "limits": {"concurrency": [2, 5000]}}),
            "limits.concurrency: invalid type: sequence, expected a positive integer",
        ),
        (
            json!({"name": "a", "limits": {"concurrency": {"max": 2, "lease": 5}}}),
            "limits.concurrency.lease: unknown field `lease`, expected `max` or `lease_ms`",
        ),
        (
            json!({"name": "a", "expires_at": -5}),
            "expires_at: invalid type: integer `-5`, expected an RFC 3339 time or Unix milliseconds",
        ),
        (json!(["a"]), "body: must be a JSON object"),
        (json!({}), "name: is required"),
    ];
    for (body, expected) in cases {
        let r = create(&s, &root, body.clone());
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}");
        let got = r.body["error"]["message"].as_str().unwrap();
        assert!(got.starts_with(expected), "{body}: {got}");
    }
    assert_eq!(list().data()["items"].as_array().unwrap().len(), before, "nothing created");

    // The forms a field may take are all still read.
    let r = create(
        &s,
        &root,
        json!({"title": "forms", "expires_at": 4_102_444_800_000u64, "signing": {"user_id": 42, "nonce_policy": "unique"},
            "limits": {"concurrency": {"max": 2, "lease_ms": 5000}, "rate": {"limit": 1, "window_ms": 1000}}}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.data()["expires_at"], "2100-01-01T00:00:00.000Z");
    assert_eq!(r.data()["user_id"], "42");
    assert_eq!(r.data()["limits"]["concurrency"], json!({"max": 2, "lease_ms": 5000}));
}

/// PATCH tells an absent field (left as it is) from `null` (cleared).
#[test]
fn a_patch_tells_absent_from_null() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let r = create(&s, &root, json!({"name": "p", "expires_at": "2100-01-01T00:00:00Z", "meta": {"a": 1}}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        request("PATCH", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&root))], Some(&body))
    };
    // Absent: kept.
    let r = patch(json!({"name": "p2"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.data()["name"].as_str(), r.data()["expires_at"].as_str()),
        (Some("p2"), Some("2100-01-01T00:00:00.000Z"))
    );
    assert_eq!(r.data()["meta"], json!({"a": 1}));
    // `null`: cleared.
    let r = patch(json!({"expires_at": null, "meta": null}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((&r.data()["expires_at"], &r.data()["meta"]), (&Value::Null, &Value::Null));
    // A value error in a PATCH names its path, and changes nothing.
    let r = patch(json!({"name": "p3", "ip_rules": [{"action": "allow", "cidr": "nope"}]}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("ip_rules[0].cidr: "), "{:?}", r.body);
    let r = request("GET", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.data()["name"], "p2");
}

/// Each refused spec of a batch is named by its path under `keys[i]`.
#[test]
fn a_batch_names_each_refused_spec_by_its_path() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let body = json!({"keys": [
        {"name": "fine"},
        {"name": "bad", "limits": {"rates": [{"limit": 1, "window_ms": 1000}, {"limit": 1, "windw_ms": 1}]}},
        {"name": "worse", "permissions": ["ok:read", "NOT OK"]},
    ]});
    let r = request("POST", &s.url("/v1/api-keys/batch"), &[("authorization", &bearer(&root))], Some(&body));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{:?}", r.body);
    let errors = r.body["error"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(
        errors[0]["message"],
        "keys[1].limits.rates[1].windw_ms: unknown field `windw_ms`, expected one of `name`, `limit`, `window_ms`, `auto_apply`"
    );
    assert_eq!(errors[1]["index"], 2);
    assert!(errors[1]["message"].as_str().unwrap().starts_with("keys[2].permissions[1]: "), "{errors:?}");
    let r = request("GET", &s.url("/v1/api-keys?limit=100"), &[("authorization", &bearer(&root))], None);
    assert_eq!(r.data()["items"].as_array().unwrap().len(), 1, "only the root key");
}

/// A key's limits as the API shows them go back in unchanged: to make a
/// key like another, and to PATCH a key with what it was read as.
#[test]
fn limits_read_from_a_key_are_limits_to_write() {
    let s = Server::start(&[]);
    let root = s.root.clone();
    let limits = json!({
        "rate": {"limit": 10, "window_ms": 1000},
        "rates": [{"name": "burst", "limit": 3, "window_ms": 100, "auto_apply": false}],
        "cooldown_ms": 50,
        "daily": 1000,
        "concurrency": {"max": 4, "lease_ms": 30000},
        "credits": {"remaining": 500, "refill": {"interval": "monthly", "amount": 100, "day": 3}},
    });
    let r = create(&s, &root, json!({"name": "model", "limits": limits}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let shown = r.data()["limits"].clone();
    assert_eq!(
        shown,
        json!({
            "rate": {"limit": 10, "window_ms": 1000},
            "rates": [
                {"name": "default", "limit": 10, "window_ms": 1000, "auto_apply": true},
                {"name": "burst", "limit": 3, "window_ms": 100, "auto_apply": false},
            ],
            "cooldown_ms": 50,
            "daily": 1000,
            "concurrency": {"max": 4, "lease_ms": 30000},
            "credits": {"initial": 500, "refill": {"interval": "monthly", "amount": 100, "day": 3}},
        })
    );
    // The same shape makes a key with the same limits...
    let r = create(&s, &root, json!({"name": "copy", "limits": shown}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.data()["limits"], shown);
    // ...and sets them on a key (no change).
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let url = s.url(&format!("/v1/api-keys/{id}"));
    let r = request("PATCH", &url, &[("authorization", &bearer(&root))], Some(&json!({"limits": shown})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["limits"], shown);
    // A `rate` that differs from the `rates` entry named default is refused.
    let mut other = shown.clone();
    other["rate"]["limit"] = json!(11);
    let r = create(&s, &root, json!({"name": "odd", "limits": other}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(
        r.body["error"]["message"],
        "limits.rate: differs from the entry of rates named default; give one of them"
    );
    // `initial` and `remaining` name one field: not both.
    let both = json!({"name": "x", "limits": {"credits": {"initial": 1, "remaining": 1}}});
    let r = create(&s, &root, both);
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(r.body["error"]["message"], "limits.credits: duplicate field `initial`");
}
