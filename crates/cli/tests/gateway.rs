//! The gateway forwarding to real upstreams, end to end: `keyward serve`
//! in a child process, upstreams served by this test on loopback ports.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::{Server, assert_envelope, bearer, cli, raw, request};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

/// What the upstreams saw and what the test lets them do.
struct Seen {
    /// Bytes of the streamed upload received so far.
    uploaded: AtomicU64,
    /// Bytes of the streamed download produced so far.
    produced: AtomicU64,
    /// Calls waiting in `/gate`.
    waiting: AtomicUsize,
    /// Opens `/gate` one call at a time.
    gate: tokio::sync::Semaphore,
}

/// Upstreams on a runtime of their own, for as long as this lives.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let seen = Arc::new(Seen {
            uploaded: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let app = axum::Router::new()
            .route("/base/echo/{*rest}", axum::routing::any(echo))
            .route("/base/echo", axum::routing::any(echo))
            .route("/base/fail", axum::routing::any(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
            .route("/base/slow", axum::routing::any(slow))
            .route("/base/gate", axum::routing::any(gate))
            .route("/base/upload", axum::routing::any(upload))
            .route("/base/download", axum::routing::any(download))
            .route("/base/drip", axum::routing::any(drip))
            .with_state(Arc::clone(&seen));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen, _rt: rt }
    }

    fn base(&self) -> String {
        format!("http://{}/base", self.addr)
    }
}

/// Reports the request as JSON, answering 201 with a header of its own.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut headers = BTreeMap::new();
    for (n, v) in &parts.headers {
        headers.insert(n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned());
    }
    let report = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    (StatusCode::CREATED, [("x-upstream", "echo")], report.to_string()).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

/// Answers once the test opens the gate.
async fn gate(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.waiting.fetch_add(1, Ordering::SeqCst);
    seen.gate.acquire().await.unwrap().forget();
    seen.waiting.fetch_sub(1, Ordering::SeqCst);
    "through"
}

/// Counts an upload as it arrives; answers its length and byte sum.
async fn upload(State(seen): State<Arc<Seen>>, req: Request) -> String {
    let mut body = req.into_body();
    let mut sum = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            sum = data.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
            seen.uploaded.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
    }
    format!("{} {sum}", seen.uploaded.load(Ordering::SeqCst))
}

/// 64 MiB, produced only as fast as it is taken.
async fn download(State(seen): State<Arc<Seen>>) -> Response {
    Body::new(Produce { seen, left: 64 * MIB }).into_response()
}

struct Produce {
    seen: Arc<Seen>,
    left: u64,
}

impl http_body::Body for Produce {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        self.seen.produced.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; n as usize])))))
    }
}

/// A body that never ends: a chunk every 20 ms.
async fn drip() -> Response {
    Body::new(Drip { tick: tokio::time::interval(Duration::from_millis(20)) }).into_response()
}

struct Drip {
    tick: tokio::time::Interval,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.tick.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"drip\n"))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---- helpers ----------------------------------------------------------------

fn auth(root: &str) -> String {
    bearer(root)
}

fn tool(s: &Server, body: Value) -> common::Resp {
    request("POST", &s.url("/v1/tools"), &[("authorization", &auth(&s.root))], Some(&body))
}

/// A key of the default workspace → (secret, id).
fn key(s: &Server, body: Value) -> (String, String) {
    let r = request("POST", &s.url("/v1/api-keys"), &[("authorization", &auth(&s.root))], Some(&body));
    assert_eq!(r.status, 201, "{:?}", r.body);
    (r.data()["secret"].as_str().unwrap().to_owned(), r.data()["id"].as_str().unwrap().to_owned())
}

/// A raw gateway call; (status, headers, body as text).
fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Vec<(String, String)>, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
    let mut req = agent.post(url);
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let resp = match req.send_string(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp.headers_names().iter().map(|n| (n.clone(), resp.header(n).unwrap_or("").to_owned())).collect();
    (status, hs, resp.into_string().unwrap())
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// ---- tests ------------------------------------------------------------------

#[test]
fn forwards_path_query_headers_and_body() {
    let up = Upstream::start();
    let s = Server::start(&[]);
    assert_eq!(tool(&s, json!({"name": "svc", "upstream": up.base()})).status, 201);
    let (secret, id) = key(&s, json!({"name": "caller"}));
    let ws = request("GET", &s.url(&format!("/v1/api-keys/{id}")), &[("authorization", &auth(&s.root))], None)
        .data()["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();

    for cred in [("x-api-key", secret.clone()), ("authorization", bearer(&secret))] {
        let (status, hs, text) = post(
            &s.url("/api/v2/svc/echo/a/b%20c?x=1&y=two"),
            &[
                (cred.0, &cred.1),
                ("content-type", "text/plain"),
                ("x-custom", "kept"),
                ("x-keyward-key-id", "key_spoofed"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            "hello upstream",
        );
        // The upstream's own answer, not the envelope.
        assert_eq!(status, 201, "{text}");
        assert_eq!(header(&hs, "x-upstream"), Some("echo"));
        let got = json_of(&text);
        assert!(got.get("success").is_none(), "{got}");
        assert_eq!(got["method"], "POST");
        assert_eq!(got["path"], "/base/echo/a/b%20c");
        assert_eq!(got["query"], "x=1&y=two");
        assert_eq!(got["body"], "hello upstream");
        let h = &got["headers"];
        for gone in ["x-api-key", "authorization", "aptoken"] {
            assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
        }
        assert_eq!(h["x-keyward-key-id"], id.as_str());
        assert_eq!(h["x-keyward-workspace-id"], ws.as_str());
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
        assert_eq!(h["content-length"], "14");
        assert_eq!(h["host"], up.addr.to_string().as_str());
        let rid = header(&hs, "x-request-id").unwrap();
        assert!(rid.starts_with("req_"));
        assert_eq!(h["x-request-id"], rid);
    }
    // The bare tool path goes to the base itself; an upstream's error comes back as it is.
    assert_eq!(tool(&s, json!({"name": "failing", "upstream": format!("{}/fail", up.base())})).status, 201);
    let (status, _, text) = post(&s.url("/api/v2/failing"), &[("x-api-key", &secret)], "");
    assert_eq!((status, text.as_str()), (503, "down"));
    // Other methods stay 405 on the nested path too.
    let r = request("GET", &s.url("/api/v2/svc/echo/x"), &[("x-api-key", &secret)], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

#[test]
fn upstream_settings_are_validated_and_shown() {
    let s = Server::start(&[]);
    let root = auth(&s.root);
    let r = tool(&s, json!({"name": "t", "upstream": "ftp://example.com"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("upstream:"), "{:?}", r.body);
    let r = tool(&s, json!({"name": "t", "upstream": "http://h", "timeout_ms": 0}));
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("timeout_ms:"), "{:?}", r.body);
    let r = tool(&s, json!({"name": "t", "upstrem": "http://h"}));
    assert_eq!(
        r.body["error"]["message"],
        "upstrem: unknown field `upstrem`, expected one of `name`, `enabled`, `permission`, `cooldown_ms`, `daily_limit`, `upstream`, `timeout_ms`"
    );
    // Nothing was made.
    let list = request("GET", &s.url("/v1/tools"), &[("authorization", &root)], None);
    assert_eq!(list.data()["items"].as_array().unwrap().len(), 1, "{:?}", list.body);

    let r = tool(&s, json!({"name": "t", "upstream": "https://api.example.com/v1"}));
    assert_eq!(r.status, 201);
    assert_eq!(r.data()["upstream"], "https://api.example.com/v1");
    assert_eq!(r.data()["timeout_ms"], 30000);
    let patch = |body: Value| request("PATCH", &s.url("/v1/tools/t"), &[("authorization", &root)], Some(&body));
    let r = patch(json!({"upstream": "http://bad host"}));
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("upstream:"));
    let r = patch(json!({"timeout_ms": 1500}));
    assert_eq!(
        (r.data()["upstream"].as_str(), r.data()["timeout_ms"].as_u64()),
        (Some("https://api.example.com/v1"), Some(1500))
    );
    let r = patch(json!({"upstream": null, "timeout_ms": null}));
    assert_eq!((r.data()["upstream"].clone(), r.data()["timeout_ms"].as_u64()), (Value::Null, Some(30000)));
    let list = request("GET", &s.url("/v1/tools"), &[("authorization", &root)], None);
    let t = list.data()["items"].as_array().unwrap().iter().find(|t| t["name"] == "t").unwrap().clone();
    assert_eq!((t["upstream"].clone(), t["timeout_ms"].clone()), (Value::Null, json!(30000)));
}

#[test]
fn cli_sets_and_shows_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.redb");
    common::init(&db);
    let (code, out, err) =
        cli(&db, &["--json", "tool", "add", "svc", "--upstream", "http://127.0.0.1:9/x", "--timeout-ms", "250"]);
    assert_eq!(code, 0, "{err}");
    // The tool as `POST /v1/tools` answers it.
    assert_eq!(
        json_of(&out),
        json!({"name": "svc", "enabled": true, "permission": null, "cooldown_ms": null, "daily_limit": null,
            "upstream": "http://127.0.0.1:9/x", "timeout_ms": 250})
    );
    let (code, _, err) = cli(&db, &["tool", "add", "bad", "--upstream", "127.0.0.1:9"]);
    assert_ne!(code, 0);
    assert!(err.contains("upstream"), "{err}");
    let (code, out, _) = cli(&db, &["tool", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("UPSTREAM") && out.contains("http://127.0.0.1:9/x") && out.contains("250"), "{out}");
    assert!(!out.contains("bad"), "{out}");
    let (code, out, err) = cli(&db, &["--json", "tool", "update", "svc", "--no-upstream"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_of(&out),
        json!({"name": "svc", "enabled": true, "permission": null, "cooldown_ms": null, "daily_limit": null,
            "upstream": null, "timeout_ms": 250})
    );
}

#[test]
fn upstream_failures_have_their_own_codes() {
    let up = Upstream::start();
    let s = Server::start(&[]);
    let (secret, _) = key(&s, json!({"name": "caller"}));
    let slow = json!({"name": "slow", "upstream": format!("{}/slow", up.base()), "timeout_ms": 300});
    assert_eq!(tool(&s, slow).status, 201);
    let started = Instant::now();
    let r = request("POST", &s.url("/api/v2/slow"), &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (504, "UPSTREAM_TIMEOUT"));
    assert_envelope(&r);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // Nobody listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert_eq!(tool(&s, json!({"name": "refused", "upstream": format!("http://{free}")})).status, 201);
    let r = request("POST", &s.url("/api/v2/refused"), &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (502, "UPSTREAM_UNAVAILABLE"));
    assert_envelope(&r);

    // One that accepts and hangs up without answering.
    let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_addr = rude.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in rude.incoming().flatten() {
            drop(conn);
        }
    });
    assert_eq!(tool(&s, json!({"name": "rude", "upstream": format!("http://{rude_addr}")})).status, 201);
    let r = request("POST", &s.url("/api/v2/rude"), &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (502, "UPSTREAM_UNAVAILABLE"));

    assert_eq!(tool(&s, json!({"name": "nowhere"})).status, 201);
    let r = request("POST", &s.url("/api/v2/nowhere"), &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (501, "NOT_IMPLEMENTED"));
    assert_eq!(r.body["error"]["message"], "tool nowhere has no upstream");
    // Built-in gl_ping still answers itself.
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &secret)], Some(&json!({"ip": "::1"})));
    assert_eq!((r.status, r.data().clone()), (200, json!({"ip": "::1"})));
}

#[test]
fn concurrency_is_held_until_the_answer_is_sent() {
    let up = Upstream::start();
    let s = Server::start(&[]);
    assert_eq!(tool(&s, json!({"name": "gated", "upstream": up.base()})).status, 201);
    let (secret, _) = key(&s, json!({"name": "two", "limits": {"concurrency": 2}}));
    let url = s.url("/api/v2/gated/gate");
    let call = {
        let (url, secret) = (url.clone(), secret.clone());
        move || {
            let (url, secret) = (url.clone(), secret.clone());
            std::thread::spawn(move || post(&url, &[("x-api-key", &secret)], ""))
        }
    };
    let first = call();
    let second = call();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.seen.waiting.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the upstream never got both calls");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = request("POST", &url, &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (429, "CONCURRENCY_LIMIT"));
    up.seen.gate.add_permits(1);
    let done = [first, second];
    // One of them finishes; which one is up to the upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.iter().all(|t| !t.is_finished()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let fourth = call();
    while up.seen.waiting.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the fourth call did not pass");
        std::thread::sleep(Duration::from_millis(10));
    }
    up.seen.gate.add_permits(2);
    for t in done.into_iter().chain([fourth]) {
        let (status, _, text) = t.join().unwrap();
        assert_eq!((status, text.as_str()), (200, "through"));
    }
}

#[test]
fn a_client_that_leaves_frees_its_slot() {
    let up = Upstream::start();
    let s = Server::start(&[]);
    assert_eq!(tool(&s, json!({"name": "svc", "upstream": up.base()})).status, 201);
    let (secret, _) = key(&s, json!({"name": "one", "limits": {"concurrency": 1}}));
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("POST /api/v2/svc/drip HTTP/1.1\r\nHost: x\r\nX-API-Key: {secret}\r\nContent-Length: 0\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("drip\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // While the answer streams, the slot is taken.
    let echo = s.url("/api/v2/svc/echo");
    let r = request("POST", &echo, &[("x-api-key", &secret)], Some(&json!({})));
    assert_eq!((r.status, r.code()), (429, "CONCURRENCY_LIMIT"));
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = post(&echo, &[("x-api-key", &secret)], "");
        if status == 201 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn large_bodies_stream_both_ways() {
    let up = Upstream::start();
    let s = Server::start(&[]);
    assert_eq!(tool(&s, json!({"name": "big", "upstream": up.base()})).status, 201);
    let (secret, _) = key(&s, json!({"name": "big"}));

    // Upload: the upstream must have data before the client has sent it all.
    struct Source {
        left: u64,
        seen: Arc<Seen>,
        early: Arc<AtomicBool>,
    }
    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Ok(0);
            }
            if self.left <= 8 * MIB && self.seen.uploaded.load(Ordering::SeqCst) > 0 {
                self.early.store(true, Ordering::SeqCst);
            }
            let n = (buf.len() as u64).min(self.left).min(64 * 1024) as usize;
            buf[..n].fill(3);
            self.left -= n as u64;
            Ok(n)
        }
    }
    let early = Arc::new(AtomicBool::new(false));
    let source = Source { left: 64 * MIB, seen: Arc::clone(&up.seen), early: Arc::clone(&early) };
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let resp = agent
        .post(&s.url("/api/v2/big/upload"))
        .set("x-api-key", &secret)
        .set("content-length", &(64 * MIB).to_string())
        .send(source)
        .unwrap();
    assert_eq!(resp.into_string().unwrap(), format!("{} {}", 64 * MIB, 64 * MIB * 3));
    assert!(early.load(Ordering::SeqCst), "the upstream got nothing before the last 8 MiB were sent");

    // Download: the upstream produces only as fast as the client reads.
    let resp = agent.post(&s.url("/api/v2/big/download")).set("x-api-key", &secret).call().unwrap();
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1024 * 1024];
    reader.read_exact(&mut buf).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let produced = up.seen.produced.load(Ordering::SeqCst);
    assert!(produced < 32 * MIB, "{produced} bytes produced while the client had read 1 MiB");
    let mut total = buf.len() as u64;
    let mut sevens = true;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sevens &= buf[..n].iter().all(|&b| b == 7);
        total += n as u64;
    }
    assert_eq!((total, sevens), (64 * MIB, true));
}

#[test]
fn held_leases_from_verify_are_released_over_http() {
    let s = Server::start(&[]);
    let root = auth(&s.root);
    let (secret, _) = key(&s, json!({"name": "one", "limits": {"concurrency": 1}}));
    let verify = |body: Value| request("POST", &s.url("/v1/verify"), &[("authorization", &root)], Some(&body));
    let held = verify(json!({"key": secret, "hold": true}));
    assert_eq!(held.data()["valid"], true, "{:?}", held.body);
    let lease = held.data()["lease_id"].as_str().unwrap().to_owned();
    let r = verify(json!({"key": secret}));
    assert_eq!((r.data()["valid"].clone(), r.data()["code"].clone()), (json!(false), json!("CONCURRENCY_LIMIT")));
    assert_eq!(r.data()["lease_id"], Value::Null);
    let release =
        |id: &str| request("POST", &s.url(&format!("/v1/leases/{id}/release")), &[("authorization", &root)], None);
    let r = release(&lease);
    assert_eq!((r.status, r.data().clone()), (200, json!({"released": true})));
    // Not held: a plain verify frees its lease at once, so two in a row pass.
    assert_eq!(verify(json!({"key": secret})).data()["valid"], true);
    assert_eq!(verify(json!({"key": secret})).data()["valid"], true);
    let r = release(&lease);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = release("nonsense");
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // A key without a concurrency limit has nothing to hold.
    let (free, _) = key(&s, json!({"name": "free"}));
    assert_eq!(verify(json!({"key": free, "hold": true})).data()["lease_id"], Value::Null);
    // Unknown fields are refused by name.
    let r = verify(json!({"key": free, "hodl": true}));
    assert_eq!(
        (r.status, r.body["error"]["message"].clone()),
        (400, json!("hodl: unknown field `hodl`, expected one of `key`, `tool`, `ip`, `permissions`, `cost`, `hold`"))
    );
}

#[test]
fn keyward_verify_releases_what_it_takes() {
    let mut s = Server::start(&[]);
    let (secret, _) = key(&s, json!({"name": "one", "limits": {"concurrency": 1}}));
    s.terminate();
    for _ in 0..3 {
        let (code, out, err) = cli(&s.db, &["verify", &secret]);
        assert_eq!((code, out.trim()), (0, "VALID"), "{err}");
    }
}

#[test]
fn gateway_hosts_and_body_limit() {
    let up = Upstream::start();
    let s = Server::start(&[
        "--gateway-host",
        "api.example.com",
        "--gateway-host",
        "gw.local",
        "--gateway-max-body",
        "1000",
    ]);
    assert_eq!(tool(&s, json!({"name": "svc", "upstream": up.base()})).status, 201);
    let (secret, _) = key(&s, json!({"name": "h"}));
    let call = |host: &str, body: &str| {
        let req = format!(
            "POST /api/v2/svc/echo HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw(&s.addr, req.as_bytes())
    };
    let (status, body) = call("localhost", "");
    assert_eq!(status, 403, "{body}");
    let v = json_of(&body);
    assert_eq!(
        (v["error"]["code"].clone(), v["error"]["message"].clone()),
        (json!("forbidden"), json!("this host is not a gateway host"))
    );
    assert_eq!(call("API.Example.com:8443", "x").0, 201);
    assert_eq!(call("gw.local", "").0, 201);
    // Admin routes answer on any host.
    let (status, _) = raw(
        &s.addr,
        format!(
            "GET /v1/tools HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            s.root
        )
        .as_bytes(),
    );
    assert_eq!(status, 200);
    // Over the gateway's body limit.
    let (status, body) = call("gw.local", &"a".repeat(1001));
    assert_eq!(status, 413, "{body}");
    assert_eq!(json_of(&body)["error"]["code"], "payload_too_large");
    assert_eq!(call("gw.local", &"a".repeat(1000)).0, 201);
    // Without a length the limit applies as the body streams.
    let chunked = |n: usize| {
        let chunk = "b".repeat(100);
        let body: String = (0..n).map(|_| format!("64\r\n{chunk}\r\n")).collect();
        let req = format!(
            "POST /api/v2/svc/echo HTTP/1.1\r\nHost: gw.local\r\nX-API-Key: {secret}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}0\r\n\r\n"
        );
        raw(&s.addr, req.as_bytes())
    };
    let (status, body) = chunked(11);
    assert_eq!(status, 413, "{body}");
    assert_eq!(json_of(&body)["error"]["code"], "payload_too_large");
    let (status, body) = chunked(10);
    assert_eq!(status, 201, "{body}");
    assert_eq!(json_of(&body)["body"].as_str().map(str::len), Some(1000));
}
