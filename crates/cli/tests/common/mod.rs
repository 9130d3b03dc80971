//! Starts the real `keyward` binary and talks to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// Runs the CLI; returns (exit code, stdout, stderr).
pub fn cli(db: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("--db").arg(db).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keyward init --json` → (workspace id, root key).
pub fn init(db: &Path) -> (String, String) {
    let (code, out, err) = cli(db, &["init", "--json"]);
    assert_eq!(code, 0, "init failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    (v["workspace_id"].as_str().unwrap().to_owned(), v["root_key"].as_str().unwrap().to_owned())
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub root: String,
    pub stdout_lines: Vec<String>,
    /// Everything the server prints after its listening line, once it exits.
    pub stdout_tail: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// A fresh database (initialised with `init`), served on a free port.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keyward.redb");
        let (_, root) = init(&db);
        Self::serve(dir, db, root, extra)
    }

    pub fn serve(dir: tempfile::TempDir, db: PathBuf, root: String, extra: &[&str]) -> Self {
        Self::serve_scheme(dir, db, root, extra, "http")
    }

    /// `scheme` is the one the server announces: `http`, or `https` with TLS flags.
    pub fn serve_scheme(dir: tempfile::TempDir, db: PathBuf, root: String, extra: &[&str], scheme: &str) -> Self {
        Self::serve_full(dir, db, root, extra, scheme, Stdio::inherit())
    }

    /// A fresh database served with its stderr (the request log) written to
    /// the returned file.
    pub fn start_logged(extra: &[&str]) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keyward.redb");
        let (_, root) = init(&db);
        let log = dir.path().join("stderr.log");
        let file = std::fs::File::create(&log).unwrap();
        (Self::serve_full(dir, db, root, extra, "http", Stdio::from(file)), log)
    }

    /// Servers log requests at `warn` (none) unless `extra` asks otherwise,
    /// so test output is not flooded.
    pub fn serve_full(
        dir: tempfile::TempDir,
        db: PathBuf,
        root: String,
        extra: &[&str],
        scheme: &str,
        stderr: Stdio,
    ) -> Self {
        let mut child = Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let mut line = String::new();
            assert!(Instant::now() < deadline, "server did not start");
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("server exited early: {lines:?}");
            }
            lines.push(line.trim_end().to_owned());
            if let Some(rest) = line.trim_end().strip_prefix(&format!("keyward listening on {scheme}://")) {
                break rest.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        let (tx, stdout_tail) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            let _ = tx.send(rest);
        });
        Server { child, base: format!("{scheme}://{addr}"), addr, dir, db, root, stdout_lines: lines, stdout_tail }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn terminate(&mut self) -> i32 {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM; the exit code, or `None` if the server still runs after `limit`.
    pub fn try_terminate(&mut self, limit: Duration) -> Option<i32> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers this test binary runs now under [`Watched`]. The [`watchdog`]
/// kills them before it ends the process: tests run in parallel threads, and
/// the `Drop` of the other tests' servers does not run on `exit`.
static SERVERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub fn servers() -> MutexGuard<'static, Vec<u32>> {
    SERVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server the watchdog knows about; killed (and forgotten) on drop.
pub struct Watched(pub Server);

impl Watched {
    pub fn new(s: Server) -> Self {
        servers().push(s.child.id());
        Self(s)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
        let pid = self.0.child.id();
        servers().retain(|p| *p != pid);
    }
}

impl std::ops::Deref for Watched {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl std::ops::DerefMut for Watched {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}

/// Ends the process, after killing the [`Watched`] servers, if `what` (say
/// "the test") has not finished within `limit` (a panic in another thread
/// would not fail the test). Dropping it, also while unwinding, disarms it.
pub struct Watchdog {
    _armed: mpsc::Sender<()>,
}

/// Arms a [`Watchdog`]; its message reads "{name}: watchdog: {what} did not finish within {limit}; exiting".
pub fn watchdog(name: &'static str, what: &'static str, limit: Duration) -> Watchdog {
    let (armed, disarmed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if disarmed.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
            // Straight to stderr: the harness's captured output dies with the process.
            let _ = writeln!(std::io::stderr(), "{name}: watchdog: {what} did not finish within {limit:?}; exiting");
            for pid in servers().iter() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            std::process::exit(101);
        }
    });
    Watchdog { _armed: armed }
}

/// A response: status, headers we look at, JSON body (or Null).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(20))
}

/// An agent whose every request times out after `timeout`.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Resp {
    request_with(&agent(), method, url, headers, body)
}

/// [`request`] through `agent` (one set up for TLS, say).
pub fn request_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let resp = send(agent, method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let headers =
        resp.headers_names().iter().filter_map(|n| resp.header(n).map(|v| (n.clone(), v.to_owned()))).collect();
    let text = resp.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, body, headers }
}

/// One request; (status, JSON body or Null), or `Err` when no answer came
/// (refused, reset, timed out, or the body could not be read).
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let resp = send(agent, method, url, headers, body)?;
    let status = resp.status();
    let text = resp.into_string().map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Sends a request (JSON `body`, if any); the response whatever its status,
/// or the transport error.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<ureq::Response, String> {
    let mut req = agent.request(method, url);
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let result = match body {
        Some(b) => req.set("content-type", "application/json").send_string(&b.to_string()),
        None => req.call(),
    };
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(e) => Err(e.to_string()),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Sends raw bytes and returns the status line and body.
pub fn raw(addr: &str, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Asserts the envelope shape of a response.
pub fn assert_envelope(r: &Resp) {
    let id = r.body["request_id"].as_str().unwrap_or_else(|| panic!("no request_id in {:?}", r.body));
    assert!(id.starts_with("req_") && id.len() == 24, "{id}");
    assert_eq!(r.header("x-request-id"), Some(id));
    if (200..300).contains(&r.status) {
        assert_eq!(r.body["success"], true, "{:?}", r.body);
        assert!(r.body.get("data").is_some());
    } else {
        assert_eq!(r.body["success"], false, "{:?}", r.body);
        assert!(r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(), "{:?}", r.body);
    }
}

/// An upstream on a free loopback port that answers every request at once
/// with `200 ok` (keep-alive), a thread per connection, for as long as the
/// test process runs.
pub fn tiny_upstream() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((n, v)) = l.split_once(':')
                            && n.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err()
                        || out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
