//! Who may read `/metrics`: anyone (the default), a bearer of
//! `--metrics-token`, or only clients of `--metrics-listen`.

mod common;

use common::{Server, bearer, request};

fn metrics(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(10)).build();
    let mut req = agent.get(url);
    for (n, v) in headers {
        req = req.set(n, v);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn metrics_are_open_by_default() {
    let s = Server::start(&[]);
    let (status, text) = metrics(&s.url("/metrics"), &[]);
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE keyward_http_requests_total counter"), "{text}");
}

#[test]
fn a_metrics_token_is_required_when_set() {
    let s = Server::start(&["--metrics-token", "scrape-me-0123"]);
    let (status, body) = metrics(&s.url("/metrics"), &[]);
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    for wrong in ["Bearer scrape-me-012", "Bearer scrape-me-01234", "Bearer SCRAPE-ME-0123", "scrape-me-0123"] {
        assert_eq!(metrics(&s.url("/metrics"), &[("authorization", wrong)]).0, 401, "{wrong}");
    }
    // The root key is no metrics token.
    assert_eq!(metrics(&s.url("/metrics"), &[("authorization", &bearer(&s.root))]).0, 401);
    let (status, text) = metrics(&s.url("/metrics"), &[("authorization", "Bearer scrape-me-0123")]);
    assert_eq!(status, 200);
    assert_eq!(metrics(&s.url("/metrics"), &[("authorization", "bearer scrape-me-0123")]).0, 200);
    assert!(text.contains("keyward_keys_total 1"), "{text}");
    // The rest of the API is unchanged.
    assert_eq!(request("GET", &s.url("/healthz"), &[], None).status, 200);
}

#[test]
fn a_metrics_listener_serves_them_alone() {
    let s = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = s.stdout_lines.iter().find_map(|l| l.strip_prefix("keyward metrics on ")).unwrap().to_owned();
    let (status, text) = metrics(&line, &[]);
    assert_eq!(status, 200);
    assert!(text.contains("keyward_keys_total 1"), "{text}");
    // Not on the main listener...
    let r = request("GET", &s.url("/metrics"), &[], None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // ...and nothing but metrics on the other one.
    let other = line.replace("/metrics", "/healthz");
    assert_eq!(metrics(&other, &[]).0, 404);
}

#[test]
fn a_metrics_listener_can_ask_the_token_too() {
    let s = Server::start(&["--metrics-listen", "127.0.0.1:0", "--metrics-token", "tok"]);
    let line = s.stdout_lines.iter().find_map(|l| l.strip_prefix("keyward metrics on ")).unwrap().to_owned();
    assert_eq!(metrics(&line, &[]).0, 401);
    assert_eq!(metrics(&line, &[("authorization", "Bearer tok")]).0, 200);
}

#[test]
fn an_empty_metrics_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    let (code, _, err) = common::cli(&db, &["serve", "--listen", "127.0.0.1:0", "--metrics-token", ""]);
    assert_eq!(code, 2);
    assert!(err.contains("--metrics-token: must be printable ASCII"), "{err}");
    assert!(!db.exists(), "a refused start left a database behind");
}
