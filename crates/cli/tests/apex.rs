//! APEX-style endpoints (`/ap/AuthenticateUser`, `/ap/LogOut`) over plain
//! HTTP, byte for byte as the exchange SDKs read them. The real
//! `notbank` client runs against them in `tests/compat/apex/`.

mod common;

use common::{Resp, Server, bearer, raw, request};
use serde_json::{Value, json};

/// Creates a key with a signing identity; returns (API key, API secret, create response).
fn signing_key(s: &Server, name: &str, signing: Value) -> (String, String, Resp) {
    let r = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        Some(&json!({"name": name, "signing": signing})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["secret"].as_str().unwrap().to_owned();
    let secret = r.data()["api_secret"].as_str().unwrap().to_owned();
    (key, secret, r)
}

fn sign(secret: &str, nonce: &str, user_id: &str, api_key: &str) -> String {
    keyward_core::signature::sign_hex(
        &keyward_core::signature::ApiSecret::new(secret.as_bytes().to_vec()),
        nonce,
        user_id,
        api_key,
    )
}

/// `/ap/AuthenticateUser` with the four signed headers and any extra ones.
fn authenticate(
    s: &Server,
    method: &str,
    (key, secret, user): (&str, &str, &str),
    nonce: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let sig = sign(secret, nonce, user, key);
    let mut headers = vec![("APIKey", key), ("Signature", sig.as_str()), ("UserId", user), ("Nonce", nonce)];
    headers.extend_from_slice(extra);
    request(method, &s.url("/ap/AuthenticateUser"), &headers, None)
}

/// Takes the session token out of a successful answer, leaving a fixed value
/// so the rest of the body can be compared exactly.
fn take_token(r: &mut Resp) -> String {
    let token = r.body["SessionToken"].as_str().unwrap_or_else(|| panic!("no SessionToken in {:?}", r.body)).to_owned();
    assert!(token.starts_with("kw_session_"), "{token}");
    r.body["SessionToken"] = json!("<token>");
    token
}

fn ping(s: &Server, session: &str) -> Resp {
    request("POST", &s.url("/api/v2/gl_ping"), &[("aptoken", session)], Some(&json!({"ip": "203.0.113.9"})))
}

fn log_out(s: &Server, headers: &[(&str, &str)]) -> Resp {
    request("POST", &s.url("/ap/LogOut"), headers, Some(&json!({})))
}

fn assert_apex_headers(r: &Resp) {
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("x-request-id").unwrap_or_else(|| panic!("no X-Request-Id: {:?}", r.headers));
    assert!(id.starts_with("req_") && id.len() == 24, "{id}");
}

#[test]
fn authenticate_user_get_and_post() {
    let s = Server::start(&[]);
    let (key, secret, r) = signing_key(&s, "exchange-bot", json!({"user_id": "96", "nonce_policy": "unique"}));
    assert_eq!((r.data()["user_id"].as_str(), r.data()["nonce_policy"].as_str()), (Some("96"), Some("unique")));
    let expected = json!({
        "Authenticated": true,
        "SessionToken": "<token>",
        "User": {
            "UserId": 96,
            "UserName": "exchange-bot",
            "Email": "",
            "EmailVerified": false,
            "AccountId": 96,
            "OMSId": 1,
            "Use2FA": false,
        },
        "Locked": false,
        "Requires2FA": false,
        "errormsg": null,
    });

    let mut r = authenticate(&s, "GET", (&key, &secret, "96"), "734019", &[]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_apex_headers(&r);
    let first = take_token(&mut r);
    assert_eq!(r.body, expected, "no keyward envelope, APEX's fields only");

    // POST works the same; an `aptoken` sent along (SDKs keep the last one) is ignored.
    let mut r = authenticate(&s, "POST", (&key, &secret, "96"), "12", &[("aptoken", "kw_session_stale")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let second = take_token(&mut r);
    assert_eq!(r.body, expected);
    assert_ne!(first, second);

    for token in [&first, &second] {
        let r = ping(&s, token);
        assert_eq!((r.status, &r.data()["ip"]), (200, &json!("203.0.113.9")), "{:?}", r.body);
    }
}

#[test]
fn log_out_ends_only_that_session() {
    let s = Server::start(&[]);
    let (key, secret, _) = signing_key(&s, "bot", json!({"user_id": 7, "nonce_policy": "unique"}));
    let mut a = authenticate(&s, "GET", (&key, &secret, "7"), "1", &[]);
    let mut b = authenticate(&s, "GET", (&key, &secret, "7"), "2", &[]);
    let (a, b) = (take_token(&mut a), take_token(&mut b));

    let r = log_out(&s, &[("aptoken", &a)]);
    assert_eq!(r.status, 200);
    assert_apex_headers(&r);
    assert_eq!(r.body, json!({"result": true, "errormsg": null, "errorcode": 0, "detail": null}));

    let r = ping(&s, &a);
    assert_eq!((r.status, r.code()), (401, "NOT_FOUND"), "{:?}", r.body);
    assert_eq!(ping(&s, &b).status, 200, "the other session lives on");

    let not_authorized =
        |detail: &str| json!({"result": false, "errormsg": "Not Authorized", "errorcode": 20, "detail": detail});
    let r = log_out(&s, &[("aptoken", &a)]);
    assert_eq!((r.status, &r.body), (200, &not_authorized("unknown or ended session")));
    let r = log_out(&s, &[("aptoken", "kw_session_bogus")]);
    assert_eq!((r.status, &r.body), (200, &not_authorized("unknown or ended session")));
    let r = log_out(&s, &[]);
    assert_eq!((r.status, &r.body), (200, &not_authorized("send aptoken")));
    let twice = format!(
        "POST /ap/LogOut HTTP/1.1\r\nHost: x\r\naptoken: {b}\r\naptoken: {b}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(&s.addr, twice.as_bytes());
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, body), (200, not_authorized("header `aptoken` appears more than once")));

    let r = request("GET", &s.url("/ap/LogOut"), &[("aptoken", &b)], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.body, json!({"result": false, "errormsg": "Method Not Allowed", "errorcode": 100, "detail": null}));
    assert_eq!(ping(&s, &b).status, 200, "a refused LogOut ends nothing");
}

#[test]
fn refusals_are_authenticated_false() {
    let s = Server::start(&[]);
    let (key, secret, _) = signing_key(&s, "bot", json!({"user_id": "96", "nonce_policy": "unique"}));
    let refused = |r: &Resp, errormsg: &str| {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_apex_headers(r);
        assert_eq!(r.body, json!({"Authenticated": false, "errormsg": errormsg}));
    };
    let r = authenticate(&s, "GET", (&key, "wrong-secret", "96"), "1", &[]);
    refused(&r, "Invalid signature (INVALID_SIGNATURE)");
    let r = authenticate(&s, "GET", (&key, &secret, "97"), "2", &[]);
    refused(&r, "Invalid signature (INVALID_SIGNATURE)");
    // A refused attempt burns no nonce.
    assert_eq!(authenticate(&s, "GET", (&key, &secret, "96"), "1", &[]).body["Authenticated"], true);

    let r = request("GET", &s.url("/ap/AuthenticateUser"), &[("APIKey", &key), ("UserId", "96"), ("Nonce", "3")], None);
    refused(&r, "signed request is missing header `Signature` (MALFORMED)");
    let r = request("POST", &s.url("/ap/AuthenticateUser"), &[], None);
    refused(&r, "send the APIKey, Signature, UserId and Nonce headers (MALFORMED)");
    let r = request("GET", &s.url("/ap/AuthenticateUser"), &[("X-API-Key", &key)], None);
    refused(&r, "send the APIKey, Signature, UserId and Nonce headers (MALFORMED)");

    // A key without a signing identity cannot sign.
    let plain =
        request("POST", &s.url("/v1/api-keys"), &[("authorization", &bearer(&s.root))], Some(&json!({"name": "p"})));
    let plain_key = plain.data()["secret"].as_str().unwrap().to_owned();
    let r = authenticate(&s, "GET", (&plain_key, &secret, "96"), "4", &[]);
    refused(&r, "Invalid signature (INVALID_SIGNATURE)");

    // Revoked: the key's status, before any signature work.
    let id = plain.data()["id"].as_str().unwrap();
    let (key2, secret2, created) = signing_key(&s, "gone", json!({"user_id": "5"}));
    let id2 = created.data()["id"].as_str().unwrap().to_owned();
    for id in [id, id2.as_str()] {
        let r =
            request("POST", &s.url(&format!("/v1/api-keys/{id}/revoke")), &[("authorization", &bearer(&s.root))], None);
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = authenticate(&s, "GET", (&key2, &secret2, "5"), "9", &[]);
    refused(&r, "API key revoked (REVOKED)");
}

#[test]
fn nonce_policies() {
    let s = Server::start(&[]);
    let (unique, unique_secret, _) = signing_key(&s, "random", json!({"user_id": "96", "nonce_policy": "unique"}));
    let (mono, mono_secret, r) = signing_key(&s, "counter", json!({"user_id": "96"}));
    assert_eq!((r.data()["nonce_policy"].as_str(), r.data()["nonce"].as_u64()), (Some("monotonic"), Some(1)));
    let ok = |r: Resp| assert_eq!(r.body["Authenticated"], true, "{:?}", r.body);
    let no = |r: Resp, errormsg: &str| assert_eq!(r.body, json!({"Authenticated": false, "errormsg": errormsg}));

    // `unique`: random nonces in any order, each once (what exchange SDKs send).
    for nonce in ["900", "5", "0417", "abc-XYZ"] {
        ok(authenticate(&s, "GET", (&unique, &unique_secret, "96"), nonce, &[]));
    }
    no(authenticate(&s, "GET", (&unique, &unique_secret, "96"), "900", &[]), "Nonce already used (NONCE_REUSED)");

    // `monotonic` (the default): decimal and increasing only.
    ok(authenticate(&s, "GET", (&mono, &mono_secret, "96"), "900", &[]));
    no(authenticate(&s, "GET", (&mono, &mono_secret, "96"), "5", &[]), "Nonce already used (NONCE_REUSED)");
    no(authenticate(&s, "GET", (&mono, &mono_secret, "96"), "abc", &[]), "Malformed credentials (MALFORMED)");
    ok(authenticate(&s, "GET", (&mono, &mono_secret, "96"), "901", &[]));

    let r = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        Some(&json!({"name": "x", "signing": {"user_id": "1", "nonce_policy": "random"}})),
    );
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{:?}", r.body);
}

#[test]
fn session_minting_is_rate_limited() {
    let s = Server::start(&[]);
    let (key, secret, _) = signing_key(&s, "busy", json!({"user_id": "96", "nonce_policy": "unique"}));
    // The engine's default: 30 sessions per key per minute, smoothly; on a
    // slow machine a few more may be earned while the first 30 are minted.
    let mut minted = 0;
    let r = loop {
        let r = authenticate(&s, "GET", (&key, &secret, "96"), &format!("n{minted}"), &[]);
        if r.body["Authenticated"] != true || minted == 100 {
            break r;
        }
        minted += 1;
    };
    assert!((30..100).contains(&minted), "{minted}");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"Authenticated": false, "errormsg": "Too many authentications, retry later (RATE_LIMITED)"})
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn non_numeric_user_id_has_no_user() {
    let s = Server::start(&[]);
    let (key, secret, _) = signing_key(&s, "named", json!({"user_id": "alice", "nonce_policy": "unique"}));
    let mut r = authenticate(&s, "GET", (&key, &secret, "alice"), "1", &[]);
    take_token(&mut r);
    assert_eq!(
        r.body,
        json!({"Authenticated": true, "SessionToken": "<token>", "Locked": false, "Requires2FA": false, "errormsg": null})
    );
}

#[test]
fn other_ap_calls_and_metrics() {
    let s = Server::start(&[]);
    for (method, path) in [("POST", "/ap/GetUserInfo"), ("GET", "/ap/authenticateuser"), ("POST", "/ap/a/b")] {
        let r = request(method, &s.url(path), &[], Some(&json!({})));
        assert_eq!(r.status, 404, "{path}");
        assert_apex_headers(&r);
        assert_eq!(
            r.body,
            json!({"result": false, "errormsg": "Endpoint Not Found", "errorcode": 104,
                "detail": "keyward serves only AuthenticateUser and LogOut under /ap/"}),
            "{path}"
        );
    }
    let r = request("DELETE", &s.url("/ap/AuthenticateUser"), &[], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    // The rest of the API keeps its envelope.
    let r = request("GET", &s.url("/ap"), &[], None);
    assert_eq!((r.status, r.body["success"].as_bool(), r.code()), (404, Some(false), "not_found"));

    authenticate(&s, "GET", ("kw_live_x", "s", "1"), "1", &[]);
    let text = ureq::get(&s.url("/metrics")).call().unwrap().into_string().unwrap();
    for line in [
        r#"keyward_http_requests_total{route="/ap/{*call}",status="404",code=""} 3"#,
        r#"keyward_http_requests_total{route="/ap/AuthenticateUser",status="200",code="MALFORMED"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}
