//! The exported API, called as JavaScript would call it, under Node
//! (`wasm-bindgen-test-runner`). The full verdict matrix is in `wasm/test/`
//! (node --test against the built package); these check the Rust side of
//! the boundary: argument reading, errors, and the objects handed back.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use keyward_wasm::{Verifier, parse_credentials, verify_signature};
use keyward_wasm_fixtures as fx;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn get(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(k)).unwrap()
}

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

fn n(v: u64) -> JsValue {
    JsValue::from_f64(v as f64)
}

fn bytes(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

fn message(e: JsValue) -> (String, String) {
    let e: js_sys::Error = e.dyn_into().unwrap();
    (String::from(e.name()), String::from(e.message()))
}

fn load(f: &fx::Fixture) -> Verifier {
    Verifier::load(bytes(&f.encode()), bytes(fx::SNAPSHOT_KEY)).unwrap()
}

fn load_error(snapshot: &[u8], key: &[u8]) -> String {
    match Verifier::load(bytes(snapshot), bytes(key)) {
        Ok(_) => panic!("accepted"),
        Err(e) => message(e).1,
    }
}

/// `new Request(url, {headers})` through the global constructor.
fn request(url: &str, headers: &[(&str, &str)]) -> JsValue {
    let ctor: Function = get(&js_sys::global(), "Request").dyn_into().unwrap();
    let h = obj(&headers.iter().map(|(k, v)| (*k, s(v))).collect::<Vec<_>>());
    let args = Array::of2(&s(url), &obj(&[("headers", h)]));
    Reflect::construct(&ctor, &args).unwrap()
}

#[wasm_bindgen_test]
fn load_refusals_say_why() {
    let f = fx::build(0);
    let good = f.encode();
    let key = fx::SNAPSHOT_KEY;
    let n = good.len();
    let mut flipped = good.clone();
    flipped[30] ^= 0x80;
    assert_eq!(load_error(&flipped, key), "snapshot authentication failed: it was modified or the key is wrong");
    assert_eq!(
        load_error(&good, b"0123456789abcdef"),
        "snapshot authentication failed: it was modified or the key is wrong"
    );
    assert_eq!(load_error(&good[..n - 32], key), format!("snapshot is truncated: expected {n} bytes, got {}", n - 32));
    let mut v9 = good.clone();
    v9[6] = 9;
    assert_eq!(load_error(&v9, key), "snapshot format version 9 is not supported (this build reads version 1)");
    assert_eq!(load_error(&good, b"short"), "snapshot key must be at least 16 bytes");
    let hex = Verifier::load(bytes(&good), s(&format!(" {}\n", fx::snapshot_key_hex().to_uppercase()))).unwrap();
    assert_eq!(get(&hex.stats().unwrap(), "keys"), JsValue::from_f64(17.0));
    let e = Verifier::load(bytes(&good), s("6b6579")).err().unwrap();
    assert_eq!(message(e), ("Error".into(), "snapshot key must be at least 16 bytes".into()));
    let e = Verifier::load(bytes(&good), s("not hex")).err().unwrap();
    assert_eq!(
        message(e),
        ("TypeError".into(), "`snapshotKey` as a string must be hex (as in KEYWARD_SNAPSHOT_KEY)".into())
    );
    let e = Verifier::load(s("KWSNAP"), bytes(key)).err().unwrap();
    assert_eq!(message(e), ("TypeError".into(), "`snapshot` must be a Uint8Array or an ArrayBuffer".into()));
}

#[wasm_bindgen_test]
fn stats_of_the_fixture() {
    let f = fx::build(2);
    let stats = load(&f).stats().unwrap();
    for (field, want) in [("keys", 19), ("workspaces", 4), ("tools", 5), ("version", 1), ("createdAt", fx::CREATED_AT)]
    {
        assert_eq!(get(&stats, field), n(want), "{field}");
    }
}

#[wasm_bindgen_test]
fn verify_builds_the_verdict_object() {
    let f = fx::build(0);
    let v = load(&f);
    let input = obj(&[("key", s(f.token("valid"))), ("tool", s("gl_ping")), ("now", n(fx::CREATED_AT))]);
    let out = v.verify(input).unwrap();
    assert_eq!(get(&out, "valid"), JsValue::TRUE);
    assert_eq!(get(&out, "code"), s("VALID"));
    assert_eq!(get(&out, "status"), n(200));
    assert_eq!(get(&out, "keyId"), s(&f.key_id("valid").to_string()));
    assert_eq!(get(&out, "workspaceId"), s(&f.workspace_id("acme").to_string()));
    let perms: Vec<String> = Array::from(&get(&out, "permissions")).iter().filter_map(|p| p.as_string()).collect();
    assert_eq!(perms, ["tools:gl_ping", "keys:read"]);
    assert_eq!(js_sys::JSON::stringify(&get(&out, "meta")).unwrap(), fx::VALID_META);
    assert_eq!(get(&out, "expiresAt"), n(fx::FAR_FUTURE));
    for field in ["remaining", "dailyRemaining", "rateLimit", "retryAfterMs", "error"] {
        assert_eq!(get(&out, field), JsValue::NULL, "{field}");
    }

    let limited = |now| v.verify(obj(&[("key", s(f.token("cooldown"))), ("now", n(now))])).unwrap();
    assert_eq!(get(&limited(fx::CREATED_AT), "code"), s("VALID"));
    let refused = limited(fx::CREATED_AT + 250);
    assert_eq!((get(&refused, "code"), get(&refused, "status")), (s("COOLDOWN"), n(429)));
    assert_eq!(get(&refused, "retryAfterMs"), n(750));
    let e = v.verify(obj(&[("key", s(f.token("valid"))), ("permissions", s("keys:read"))])).unwrap_err();
    assert_eq!(message(e), ("TypeError".into(), "`permissions` must be an array of strings".into()));
}

#[wasm_bindgen_test]
fn verify_request_reads_a_fetch_request() {
    let f = fx::build(0);
    let v = load(&f);
    let opts = |extra: &[(&str, JsValue)]| {
        let mut pairs = vec![("now", n(fx::CREATED_AT))];
        pairs.extend(extra.iter().cloned());
        obj(&pairs)
    };
    let bearer = format!("Bearer {}", f.token("ip_rules"));
    let r = || {
        request("https://edge.example/api/v2/gl_ping", &[("Authorization", &bearer), ("CF-Connecting-IP", "10.1.2.3")])
    };
    assert_eq!(get(&v.verify_request(r(), opts(&[])).unwrap(), "code"), s("IP_DENIED"));
    let trusted = v.verify_request(r(), opts(&[("trustCfConnectingIp", JsValue::TRUE)])).unwrap();
    assert_eq!(get(&trusted, "code"), s("VALID"));
    let legacy = v.verify_request(r(), opts(&[("trustCfConnectingIp", JsValue::TRUE), ("tool", s("legacy"))])).unwrap();
    assert_eq!(get(&legacy, "code"), s("TOOL_DISABLED"));

    let session = request("https://edge.example/", &[("aptoken", "sess")]);
    let out = v.verify_request(session, JsValue::UNDEFINED).unwrap();
    assert_eq!(get(&out, "code"), s("MALFORMED"));
    assert!(
        get(&out, "error")
            .as_string()
            .unwrap()
            .starts_with("session tokens (aptoken) are verified by the keyward engine only")
    );
}

#[wasm_bindgen_test]
fn parse_credentials_and_signatures() {
    let c = parse_credentials(obj(&[("authorization", s("Bearer kw_live_x"))])).unwrap();
    assert_eq!((get(&c, "kind"), get(&c, "key")), (s("api_key"), s("kw_live_x")));
    let e = parse_credentials(obj(&[("x-api-key", s("a")), ("aptoken", s("b"))])).unwrap_err();
    assert_eq!(message(e), ("Error".into(), "conflicting credentials: `X-API-Key` and `aptoken`".into()));

    let vector = |signature: &str| {
        obj(&[
            ("apiSecret", s("engine-test-secret")),
            ("nonce", s("2247733562")),
            ("userId", s("96")),
            ("apiKey", s("28c68ac3fcfafc3d4e8d653fe57e5baf")),
            ("signature", s(signature)),
        ])
    };
    let sig = "1796148fe957facdc5495abf6dddf5f8c635a071f8438f5aeccb1552d98b4743";
    assert_eq!(verify_signature(vector(sig)), Ok(true));
    assert_eq!(verify_signature(vector(&sig.to_uppercase())), Ok(true));
    assert_eq!(verify_signature(vector(&sig.replace("4743", "4744"))), Ok(false));
}
