//! Usage history over HTTP and in the CLI, against a real `keyward serve`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, bearer, cli, request};
use serde_json::{Value, json};

/// Totals by code over every bucket, checking each bucket starts on its
/// granularity.
fn totals(data: &Value, width_ms: u64) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for b in data["buckets"].as_array().unwrap() {
        let start = keyward_core::UnixMillis::parse_rfc3339(b["start"].as_str().unwrap()).unwrap().get();
        assert_eq!(start % width_ms, 0, "{b}");
        for (code, n) in b["counts"].as_object().unwrap() {
            match out.iter_mut().find(|(c, _)| c == code) {
                Some((_, total)) => *total += n.as_u64().unwrap(),
                None => out.push((code.clone(), n.as_u64().unwrap())),
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_key_s_calls_by_code_over_time() {
    let mut s = Server::start(&["--flush-ms", "50"]);
    let root = s.root.clone();
    let auth = [("authorization", bearer(&root))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body =
        json!({"name": "h", "permissions": ["tools:*"], "limits": {"rate": {"limit": 2, "window_ms": 3_600_000}}});
    let r = request("POST", &s.url("/v1/api-keys"), &auth, Some(&body));
    let (token, id) = (r.data()["secret"].as_str().unwrap().to_owned(), r.data()["id"].as_str().unwrap().to_owned());
    for _ in 0..3 {
        request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &token)], Some(&json!({"ip": "192.0.2.1"})));
    }
    let path = format!("/v1/api-keys/{id}/usage/history");
    let want = vec![("RATE_LIMITED".to_owned(), 1), ("VALID".to_owned(), 2)];
    let deadline = Instant::now() + Duration::from_secs(10);
    let data = loop {
        let r = request("GET", &s.url(&format!("{path}?granularity=minute")), &auth, None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        if totals(r.data(), 60_000) == want {
            break r.data().clone();
        }
        assert!(Instant::now() < deadline, "history never showed the calls: {:?}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(data["granularity"], "minute");
    let span = |d: &Value| {
        let t = |f: &str| keyward_core::UnixMillis::parse_rfc3339(d[f].as_str().unwrap()).unwrap().get();
        t("to") - t("from")
    };
    assert!(span(&data) > 3_600_000 - 60_000 && span(&data) <= 3_600_000 + 60_000, "{data}");
    for (g, width) in [("hour", 3_600_000), ("day", 86_400_000)] {
        let r = request("GET", &s.url(&format!("{path}?granularity={g}")), &auth, None);
        assert_eq!(totals(r.data(), width), want, "{g}");
    }
    // The workspace's history holds the key's calls (and the root key's own checks).
    let r = request("GET", &s.url("/v1/usage/history?granularity=day"), &auth, None);
    let ws = totals(r.data(), 86_400_000);
    assert_eq!(ws.iter().find(|(c, _)| c == "RATE_LIMITED"), Some(&("RATE_LIMITED".to_owned(), 1)));
    assert!(ws.iter().any(|(c, n)| c == "VALID" && *n >= 2), "{ws:?}");
    // An explicit range: Unix ms and RFC 3339 both read.
    let r = request("GET", &s.url(&format!("{path}?granularity=hour&from=0&to=2592000000")), &auth, None);
    assert_eq!((r.status, r.data()["buckets"].clone()), (200, json!([])));

    for (query, message) in [
        ("granularity=week", "granularity: must be minute, hour or day"),
        ("from=yesterday", "from: must be an RFC 3339 time or Unix milliseconds"),
        ("since=0", "since: unknown query parameter"),
        ("from=10&to=10", "from: must be before to"),
        ("granularity=minute&from=0&to=172800001", "from: minute buckets are kept 48 hours: ask for at most that span"),
    ] {
        let r = request("GET", &s.url(&format!("{path}?{query}")), &auth, None);
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{query}");
        assert_eq!(r.body["error"]["message"], message, "{query}");
    }
    let r = request("GET", &s.url("/v1/api-keys/key_0000000000000000000000/usage/history"), &auth, None);
    assert_eq!(r.status, 404);

    // The CLI reads the same history once the server is gone.
    s.terminate();
    let (code, out, err) = cli(&s.db, &["key", "usage", &id, "--granularity", "day", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["granularity"].as_str(), totals(&v, 86_400_000)), (Some("day"), want));
    let (code, out, _) = cli(&s.db, &["key", "usage", &id]);
    assert_eq!(code, 0);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["START", "VALID", "RATE_LIMITED"]);
    let (code, _, err) = cli(&s.db, &["key", "usage", &id, "--granularity", "week"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected minute, hour or day"), "{err}");
}
