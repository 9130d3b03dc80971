//! The browser console at `/console`: its cookie and CSRF rules over plain
//! HTTP, and the whole console in headless Chromium (`console/console_test.py`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Resp, Server, bearer, request};
use serde_json::json;

const CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn login(s: &Server, key: &str) -> Resp {
    request("POST", &s.url("/console/api/login"), &[], Some(&json!({"key": key})))
}

/// Signs in with the root key: (cookie header value, CSRF token).
fn session(s: &Server) -> (String, String) {
    let r = login(s, &s.root);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let set = r.header("set-cookie").unwrap_or_else(|| panic!("no cookie: {:?}", r.headers));
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, r.data()["csrf_token"].as_str().unwrap().to_owned())
}

fn key_count(s: &Server) -> usize {
    let r = request("GET", &s.url("/v1/api-keys?limit=100"), &[("authorization", &bearer(&s.root))], None);
    r.data()["items"].as_array().unwrap().len()
}

fn key_status(s: &Server, id: &str) -> String {
    let r = request("GET", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &bearer(&s.root))], None);
    r.data()["status"].as_str().unwrap().to_owned()
}

fn assert_console_headers(r: &Resp) {
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

/// `ureq` reads the page body as JSON; the raw text is fetched separately.
fn get_text(url: &str) -> (u16, String, Option<String>) {
    match ureq::get(url).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let ct = r.header("content-type").map(str::to_owned);
            (r.status(), r.into_string().unwrap_or_default(), ct)
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn page_and_assets_are_served_with_a_strict_policy() {
    let s = Server::start(&[]);
    let r = request("GET", &s.url("/console/"), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_console_headers(&r);
    let (status, html, _) = get_text(&s.url("/console/"));
    assert_eq!(status, 200);
    // No inline script or style: everything comes from /console/assets.
    assert!(html.contains(r#"<script type="module" src="/console/assets/app.js"></script>"#));
    assert!(!html.contains("style=") && !html.contains("onclick") && !html.contains("<style"));
    for (name, ct) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("chart.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let (status, body, got) = get_text(&s.url(&format!("/console/assets/{name}")));
        assert_eq!((status, got.as_deref()), (200, Some(ct)), "{name}");
        assert!(!body.contains("http://") || name == "chart.js", "{name} names another origin");
    }
    let r = request("GET", &s.url("/console/assets/nope.js"), &[], None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_console_headers(&r);
    // `/console` sends the browser to `/console/`.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = match agent.get(&s.url("/console")).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!((r.status(), r.header("location")), (308, Some("/console/")));
}

#[test]
fn sign_in_sets_an_http_only_strict_cookie_and_bad_keys_get_none() {
    let s = Server::start(&[]);
    let r = login(&s, &s.root);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_console_headers(&r);
    let set = r.header("set-cookie").unwrap();
    let id = set.strip_prefix("keyward_session=").unwrap().split(';').next().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(set, format!("keyward_session={id}; Path=/; HttpOnly; SameSite=Strict"));
    assert!(!set.contains(&s.root), "the cookie never holds the key");
    let d = r.data();
    assert_eq!(d["name"], "root");
    assert_eq!(d["can"]["keys_write"], true);
    assert_eq!(d["csrf_token"].as_str().unwrap().len(), 64);
    assert_ne!(d["csrf_token"].as_str().unwrap(), id);

    // `GET /console/api/me` with the cookie: the same key, the same token.
    let cookie = format!("keyward_session={id}");
    let me = request("GET", &s.url("/console/api/me"), &[("cookie", &cookie)], None);
    assert_eq!(me.status, 200);
    assert_eq!(me.data()["key_id"], d["key_id"]);
    assert_eq!(me.data()["csrf_token"], d["csrf_token"]);
    let me = request("GET", &s.url("/console/api/me"), &[], None);
    assert_eq!((me.status, me.code()), (401, "unauthorized"));

    // A bad key, an empty one, one that may not read keys: no cookie.
    let r = login(&s, "kw_live_nothing_like_a_real_key_here");
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.header("set-cookie"), None);
    let r = login(&s, "  ");
    assert_eq!((r.status, r.header("set-cookie")), (400, None));
    let verifier = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        Some(&json!({"name": "v", "permissions": ["keys:verify"]})),
    );
    let r = login(&s, verifier.data()["secret"].as_str().unwrap());
    assert_eq!((r.status, r.code(), r.header("set-cookie")), (403, "INSUFFICIENT_PERMISSIONS", None));
    // Sign-in from another origin (a cross-site page posting JSON) is refused.
    let r = request(
        "POST",
        &s.url("/console/api/login"),
        &[("origin", "https://evil.example")],
        Some(&json!({"key": s.root})),
    );
    assert_eq!((r.status, r.header("set-cookie")), (403, None));
}

#[test]
fn changes_need_the_csrf_token_and_sign_out_ends_the_session() {
    let s = Server::start(&[]);
    let (cookie, csrf) = session(&s);
    let before = key_count(&s);

    // Reads need only the cookie: the console acts as the signed-in key.
    let r = request("GET", &s.url("/v1/api-keys"), &[("cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = request("GET", &s.url("/v1/audit"), &[("cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{:?}", r.body);

    // A change without the token, or with a wrong one: 403, nothing made.
    let body = json!({"name": "forged"});
    for headers in [vec![("cookie", cookie.as_str())], vec![("cookie", cookie.as_str()), ("x-csrf-token", "0")]] {
        let r = request("POST", &s.url("/v1/api-keys"), &headers, Some(&body));
        assert_eq!((r.status, r.code()), (403, "csrf"), "{:?}", r.body);
        common::assert_envelope(&r);
    }
    let wrong = "f".repeat(64);
    let r = request("POST", &s.url("/v1/api-keys"), &[("cookie", &cookie), ("x-csrf-token", &wrong)], Some(&body));
    assert_eq!(r.status, 403);
    assert_eq!(key_count(&s), before, "nothing was created");

    // A victim key: revoke, PATCH and DELETE without the token change nothing.
    let victim = request("POST", &s.url("/v1/api-keys"), &[("authorization", &bearer(&s.root))], Some(&body));
    let vid = victim.data()["id"].as_str().unwrap().to_owned();
    for (method, path) in [
        ("POST", format!("/v1/api-keys/{vid}/revoke")),
        ("PATCH", format!("/v1/api-keys/{vid}")),
        ("DELETE", format!("/v1/api-keys/{vid}")),
        ("POST", "/v1/tools".to_owned()),
    ] {
        let r = request(method, &s.url(&path), &[("cookie", &cookie)], Some(&json!({"name": "changed"})));
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
    }
    assert_eq!(key_status(&s, &vid), "active");
    let r = request("GET", &s.url(&format!("/v1/api-keys/{vid}")), &[("authorization", &bearer(&s.root))], None);
    assert_eq!(r.data()["name"], "forged", "not renamed");

    // With the token the same calls work, as the signed-in key.
    let with = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = request("POST", &s.url("/v1/api-keys"), &with, Some(&json!({"name": "made-in-console"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.data()["created_by"].as_str().unwrap().starts_with("key_"), "made by the signed-in key");
    let r = request("POST", &s.url(&format!("/v1/api-keys/{vid}/revoke")), &with, None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(key_status(&s, &vid), "revoked");

    // A bearer call needs no token, cookie or not: it is not a console request.
    let r = request("GET", &s.url("/v1/api-keys"), &[("authorization", &bearer(&s.root))], None);
    assert_eq!(r.status, 200);

    // Sign-out needs the token too, then ends the session.
    let r = request("POST", &s.url("/console/api/logout"), &[("cookie", &cookie)], None);
    assert_eq!(r.status, 403);
    assert_eq!(request("GET", &s.url("/console/api/me"), &[("cookie", &cookie)], None).status, 200);
    let r = request("POST", &s.url("/console/api/logout"), &with, None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.header("set-cookie"),
        Some("keyward_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
        "the cookie is cleared"
    );
    assert_eq!(request("GET", &s.url("/console/api/me"), &[("cookie", &cookie)], None).status, 401);
    let r = request("GET", &s.url("/v1/api-keys"), &[("cookie", &cookie)], None);
    assert_eq!(r.status, 401);
    // An ended session gets no further: a change is refused too (no caller).
    let r = request("POST", &s.url("/v1/api-keys"), &with, Some(&json!({"name": "late"})));
    assert_eq!(r.status, 401);
}

#[test]
fn a_revoked_key_ends_its_console_session() {
    let s = Server::start(&[]);
    let made = request(
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        Some(&json!({"name": "admin2", "permissions": ["keys:*"]})),
    );
    let (id, secret) = (made.data()["id"].as_str().unwrap(), made.data()["secret"].as_str().unwrap());
    let r = login(&s, secret);
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(r.data()["can"]["audit_read"], false, "keys:* does not read the audit log");
    assert_eq!(request("GET", &s.url("/v1/audit"), &[("cookie", &cookie)], None).status, 403);
    let r = request("POST", &s.url(&format!("/v1/api-keys/{id}/revoke")), &[("authorization", &bearer(&s.root))], None);
    assert_eq!(r.status, 200);
    assert_eq!(request("GET", &s.url("/v1/api-keys"), &[("cookie", &cookie)], None).status, 401);
    let me = request("GET", &s.url("/console/api/me"), &[("cookie", &cookie)], None);
    assert_eq!((me.status, me.code()), (401, "REVOKED"));
}

// ---- the browser -------------------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the browser test needs: (python, chromium, chromedriver), or why not.
fn browser_tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let python = std::env::var_os("KEYWARD_CONSOLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/console-venv/bin/python"));
    if !python.exists() {
        return Err(format!("no Python virtualenv at {} (see .ci/run)", python.display()));
    }
    let ok = Command::new(&python).args(["-c", "import selenium"]).status().is_ok_and(|s| s.success());
    if !ok {
        return Err(format!("{} has no selenium", python.display()));
    }
    let find = |names: &[&str]| names.iter().map(PathBuf::from).find(|p| p.exists());
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]).ok_or("chromium is not installed")?;
    let driver = find(&["/usr/bin/chromedriver"]).ok_or("chromedriver is not installed")?;
    Ok((python, chromium, driver))
}

#[test]
fn console_in_a_browser() {
    let (python, chromium, driver) = match browser_tools() {
        Ok(t) => t,
        Err(why) if std::env::var("KEYWARD_REQUIRE_CHROMIUM").as_deref() == Ok("1") => {
            panic!("KEYWARD_REQUIRE_CHROMIUM=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipping console_in_a_browser: {why}");
            return;
        }
    };
    let s = Server::start(&["--flush-ms", "50"]);
    let shots = workspace().join("target/console-shots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console_test.py");
    let mut child = Command::new(python)
        .arg(script)
        .env("KEYWARD_URL", &s.base)
        .env("KEYWARD_ROOT_KEY", &s.root)
        .env("KEYWARD_SHOTS", &shots)
        .env("KEYWARD_CHROMIUM", chromium)
        .env("KEYWARD_CHROMEDRIVER", driver)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser scenario did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the browser scenario failed ({status}); screenshots in {}", shots.display());
}
