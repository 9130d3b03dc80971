//! What `keyward-loadgen`'s HTTP scenarios (`http_verify_valid`,
//! `http_verify_valid_under_writes`) need: a database prepared for `keyward
//! serve`, the server as a child process on loopback, a minimal blocking
//! HTTP/1.1 keep-alive client, and a [`KeyWriter`] that creates and revokes
//! keys through the admin API.
//!
//! The client writes one request at a time on a `TcpStream` (no pipelining)
//! and reads the answer by its `Content-Length`; it supports exactly what
//! keyward's server sends (no chunked bodies), which keeps its own cost per
//! request to a formatted write and one or two reads.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use keyward::{Engine, NewKey};
use keyward_core::Code;

/// How long the client waits on a read or a write, and how long start-up
/// waits for the server's address, before giving up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Server::stop`] waits after SIGTERM before it kills the server.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The largest response head plus body the client accepts.
const MAX_RESPONSE: usize = 64 * 1024;

/// The `keyward` binary in the directory of the running executable: the
/// same target directory and profile as `keyward-loadgen` when both were
/// built by cargo (`cargo build --release -p keyward-cli -p keyward-benches`).
pub fn default_keyward_bin() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| io::Error::other("the running executable has no parent directory"))?;
    Ok(dir.join(format!("keyward{}", std::env::consts::EXE_SUFFIX)))
}

/// What [`prepare_db`] made.
pub struct Prepared {
    /// The root key `keyward init --json` printed (permission `*`, so
    /// `keys:write` too), for the admin API.
    pub root_key: String,
    /// The tokens of the `n` keys.
    pub tokens: Vec<String>,
}

/// Runs `keyward --db DB init --json` (the default workspace, the root key
/// and `DB.secrets`), then opens `db` in this process, creates `n` keys from
/// `spec(i)` in the default workspace and closes the engine again, so a
/// `keyward serve` can open the file. Returns the root key and the keys'
/// tokens.
///
/// Keys are created with the engine rather than over `POST /v1/api-keys`:
/// the cost is the same one fsynced commit per key, without the HTTP round
/// trips.
pub fn prepare_db(keyward_bin: &Path, db: &Path, n: usize, spec: impl Fn(usize) -> NewKey) -> Result<Prepared, String> {
    let out = Command::new(keyward_bin)
        .arg("--db")
        .arg(db)
        .args(["init", "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", keyward_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --db {} init --json` failed ({}): {}",
            keyward_bin.display(),
            db.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // `{"root_key":"…","workspace_id":"…"}` on one line; keys are base62 plus `_`.
    let printed = String::from_utf8_lossy(&out.stdout);
    let root_key = json_str(&printed, "root_key")
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or_else(|| format!("`keyward init --json` printed no root key: {}", printed.trim()))?
        .to_owned();
    let engine = Engine::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let ws = engine.workspaces().first().map(|w| w.policy.id).ok_or("`keyward init` created no workspace")?;
    let tokens = (0..n)
        .map(|i| engine.create_key(ws, spec(i), &keyward::Actor::Admin).map(|k| k.token.expose().to_owned()))
        .collect::<keyward::Result<Vec<String>>>()
        .map_err(|e| format!("cannot create keys in {}: {e}", db.display()))?;
    engine.close().map_err(|e| format!("cannot close {}: {e}", db.display()))?;
    // Dropping the last handle closes the database file, so the server can open it.
    drop(engine);
    Ok(Prepared { root_key, tokens })
}

/// A `keyward serve` child process listening on a loopback address. Dropping
/// it kills the process if [`Server::stop`] was not called.
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `keyward --db DB serve --listen 127.0.0.1:0` and waits (at most
    /// [`TIMEOUT`]) for its `keyward listening on http://ADDR` line. The
    /// server's stderr goes to this process's stderr.
    pub fn start(keyward_bin: &Path, db: &Path) -> Result<Self, String> {
        let child = Command::new(keyward_bin)
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", keyward_bin.display()))?;
        // From here on, `Drop` kills the child on every early return.
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let stdout = server.child.stdout.take().ok_or("the server's stdout is not piped")?;
        // A thread reads stdout to its end, so the server never blocks on a
        // full pipe; the lines go to this thread until the address is known.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let Some(rest) = line.strip_prefix("keyward listening on http://") else { continue };
                    let addr: SocketAddr =
                        rest.trim().parse().map_err(|e| format!("cannot parse the server's address {rest:?}: {e}"))?;
                    if !addr.ip().is_loopback() {
                        return Err(format!("the server listens on {addr}, not on loopback"));
                    }
                    server.addr = addr;
                    return Ok(server);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!("the server exited ({status}) before it announced its address"));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("the server did not announce its address within {} s", TIMEOUT.as_secs()));
                }
            }
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop (SIGTERM through `kill`, on Unix), waits up to
    /// 10 s for it to finish its requests and write its counters, then kills
    /// it if it is still running. Returns its exit status.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let asked = cfg!(unix)
            && Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if asked {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Some(status) = self.child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One keep-alive HTTP/1.1 connection. After an I/O or protocol error the
/// connection is dropped; the next request opens a new one.
pub struct Client {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    req: Vec<u8>,
    /// Received bytes; `buf[start..end]` are not yet consumed.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    connects: u64,
}

/// A response: its status and body, borrowed from the client's buffer.
#[derive(Debug)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
}

impl Client {
    /// Connects to `addr` (TCP_NODELAY, read and write timeouts of [`TIMEOUT`]).
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let mut c = Client {
            addr,
            host: addr.to_string(),
            stream: None,
            req: Vec::with_capacity(256),
            buf: vec![0; MAX_RESPONSE].into_boxed_slice(),
            start: 0,
            end: 0,
            connects: 0,
        };
        c.stream()?;
        Ok(c)
    }

    /// How many connections this client has opened (1 unless one was lost).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        let s = match self.stream.take() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(TIMEOUT))?;
                s.set_write_timeout(Some(TIMEOUT))?;
                self.connects += 1;
                self.start = 0;
                self.end = 0;
                s
            }
        };
        Ok(self.stream.insert(s))
    }

    /// `POST path` with a JSON body; waits for the whole response.
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> io::Result<Response<'_>> {
        self.post(path, None, body)
    }

    /// `POST path` with a JSON body and `Authorization: Bearer <bearer>`;
    /// waits for the whole response. `bearer` must be a valid header value
    /// (no control characters); an error says so otherwise.
    pub fn post_json_bearer(&mut self, path: &str, bearer: &str, body: &[u8]) -> io::Result<Response<'_>> {
        if bearer.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(bad("bearer token holds control characters"));
        }
        self.post(path, Some(bearer), body)
    }

    fn post(&mut self, path: &str, bearer: Option<&str>, body: &[u8]) -> io::Result<Response<'_>> {
        self.req.clear();
        match bearer {
            None => write!(
                self.req,
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )?,
            Some(bearer) => write!(
                self.req,
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bearer}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )?,
        }
        self.req.extend_from_slice(body);
        let sent = {
            let req = std::mem::take(&mut self.req);
            let r = self.stream().and_then(|s| s.write_all(&req));
            self.req = req;
            r
        };
        match sent.and_then(|()| self.read_response()) {
            Ok((status, close, body_at, body_end)) => {
                if close {
                    self.stream = None;
                }
                let body = self.buf.get(body_at..body_end).ok_or_else(|| bad("response body beyond the buffer"))?;
                Ok(Response { status, body })
            }
            Err(e) => {
                self.stream = None;
                self.start = 0;
                self.end = 0;
                Err(e)
            }
        }
    }

    /// Reads one response; returns its status, whether the server closes the
    /// connection after it, and where its body is in `buf`.
    fn read_response(&mut self) -> io::Result<(u16, bool, usize, usize)> {
        let head_len = loop {
            let buffered = self.buf.get(self.start..self.end).unwrap_or_default();
            if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = self.buf.get(self.start..self.start + head_len).unwrap_or_default();
        let head = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(&format!("not an HTTP/1.x status line: {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line: {status_line:?}")))?;
        let mut close = version == "HTTP/1.0";
        let mut length = None;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or_else(|| bad(&format!("bad header line: {line:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| bad(&format!("bad Content-Length: {value:?}")))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad(&format!("Transfer-Encoding {value:?} is not supported")));
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.ok_or_else(|| bad("response without Content-Length"))?;
        if head_len + length > self.buf.len() {
            return Err(bad(&format!("response of {} bytes is larger than {MAX_RESPONSE}", head_len + length)));
        }
        while self.end - self.start < head_len + length {
            self.fill()?;
        }
        let body_at = self.start + head_len;
        let body_end = body_at + length;
        // The response is consumed. Its bytes stay in place until the next
        // request's first read, so the caller can borrow the body until then.
        self.start = body_end;
        if self.start == self.end {
            // Nothing buffered after it (the usual case without pipelining):
            // the next response is read from the front of the buffer.
            self.start = 0;
            self.end = 0;
        }
        Ok((status, close, body_at, body_end))
    }

    /// Reads more bytes into `buf[end..]`, first moving the unconsumed bytes
    /// to the front when the buffer's tail is full.
    fn fill(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(bad(&format!("response larger than {MAX_RESPONSE} bytes")));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        };
        let n = stream.read(self.buf.get_mut(self.end..).unwrap_or_default())?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.end += n;
        Ok(())
    }
}

/// An upstream for `http_gateway_forward`: a thread per connection on a
/// loopback port, answering every request at once with `200 ok` (keep-alive,
/// `Content-Length`), after reading its `Content-Length` body. It runs until
/// the process ends.
pub struct Upstream {
    addr: SocketAddr,
}

impl Upstream {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = answer_all(conn);
                });
            }
        });
        Ok(Self { addr })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Answers the requests of one connection until it closes.
fn answer_all(conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| bad("bad Content-Length"))?;
            }
        }
        io::copy(&mut (&mut reader).take(length as u64), &mut io::sink())?;
        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")?;
    }
}

/// Gives the database's default workspace a tool `name` forwarding to
/// `upstream` (made, or changed if it exists).
pub fn set_gateway_tool(db: &Path, name: &str, upstream: &str) -> Result<(), String> {
    let engine = Engine::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let ws = engine.workspaces().first().map(|w| w.policy.id).ok_or("no workspace")?;
    let admin = &keyward::Actor::Admin;
    let update = keyward::ToolUpdate { upstream: Some(Some(upstream.to_owned())), ..keyward::ToolUpdate::default() };
    let done = match engine.update_tool(ws, name, update, admin) {
        Err(keyward::Error::NotFound { .. }) => {
            let spec = keyward::NewTool {
                name: name.to_owned(),
                enabled: true,
                permission: None,
                cooldown_ms: None,
                daily_limit: None,
                upstream: Some(upstream.to_owned()),
                timeout_ms: None,
            };
            engine.create_tool(ws, spec, admin).map(drop)
        }
        other => other.map(drop),
    };
    done.map_err(|e| format!("cannot set tool {name}: {e}"))?;
    engine.close().map_err(|e| format!("cannot close {}: {e}", db.display()))?;
    drop(engine);
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The JSON body of `POST /v1/verify` for `token`, written into `out`.
/// Tokens are base62 plus `_`, so they need no escaping; anything else is
/// refused rather than sent malformed.
pub fn verify_body(token: &str, out: &mut Vec<u8>) -> io::Result<()> {
    if token.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return Err(bad("token would need JSON escaping"));
    }
    out.clear();
    out.extend_from_slice(b"{\"key\":\"");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// The verdict of a `POST /v1/verify` answer: `Ok(Code::Valid)` only for
/// status 200 with `"valid":true` and `"code":"VALID"`; `Ok(code)` for any
/// other verdict the server gave; an error when the answer holds no verdict
/// (an error envelope, a body that is not the expected JSON).
pub fn verify_verdict(status: u16, body: &[u8]) -> io::Result<Code> {
    let text = std::str::from_utf8(body).map_err(|_| bad("response body is not UTF-8"))?;
    let code = text
        .split_once("\"code\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(code, _)| Code::parse(code));
    match code {
        Some(Code::Valid) if status == 200 && text.contains("\"valid\":true") => Ok(Code::Valid),
        Some(code) if code != Code::Valid => Ok(code),
        _ => {
            let cut = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
            Err(bad(&format!("unexpected answer: HTTP {status}: {}", &text[..cut])))
        }
    }
}

/// The value of the first `"field":"value"` pair in `text`, for JSON that
/// keyward writes compactly and whose value needs no escaping (tokens, ids,
/// status words). `None` if there is no such pair.
fn json_str<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let at = text.find(&format!("\"{field}\":\""))? + field.len() + 4;
    text[at..].split_once('"').map(|(value, _)| value)
}

/// An error for an answer that is not the one expected: its status and the
/// start of its body.
fn unexpected(status: u16, body: &[u8]) -> io::Error {
    let text = String::from_utf8_lossy(body);
    let cut = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    bad(&format!("unexpected answer: HTTP {status}: {}", &text[..cut]))
}

/// Creates and revokes keys through keyward's admin API on one keep-alive
/// connection, authenticated as the root key: the write load of
/// `http_verify_valid_under_writes`.
pub struct KeyWriter {
    client: Client,
    bearer: String,
    path: String,
}

/// The body of every `POST /v1/api-keys` a [`KeyWriter`] sends.
const NEW_KEY_BODY: &[u8] = br#"{"name":"w"}"#;

impl KeyWriter {
    /// Connects to `addr`, to send requests with `Authorization: Bearer <root_key>`.
    pub fn connect(addr: SocketAddr, root_key: &str) -> io::Result<Self> {
        Ok(Self { client: Client::connect(addr)?, bearer: root_key.to_owned(), path: String::with_capacity(64) })
    }

    /// `POST /v1/api-keys` with `{"name":"w"}`; returns the new key's id.
    /// Only 201 with `"success":true` and an id counts.
    pub fn create(&mut self) -> io::Result<String> {
        let r = self.client.post_json_bearer("/v1/api-keys", &self.bearer, NEW_KEY_BODY)?;
        let text = std::str::from_utf8(r.body).ok();
        let id = text
            .filter(|t| r.status == 201 && t.contains("\"success\":true"))
            .and_then(|t| t.split_once("\"data\":"))
            .and_then(|(_, data)| json_str(data, "id"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        match id {
            Some(id) => Ok(id.to_owned()),
            None => Err(unexpected(r.status, r.body)),
        }
    }

    /// `POST /v1/api-keys/{id}/revoke` with no body. Only 200 with
    /// `"status":"revoked"` counts.
    pub fn revoke(&mut self, id: &str) -> io::Result<()> {
        self.path.clear();
        self.path.push_str("/v1/api-keys/");
        self.path.push_str(id);
        self.path.push_str("/revoke");
        let r = self.client.post_json_bearer(&self.path, &self.bearer, b"")?;
        let revoked = std::str::from_utf8(r.body)
            .is_ok_and(|t| t.contains("\"success\":true") && json_str(t, "status") == Some("revoked"));
        if r.status == 200 && revoked { Ok(()) } else { Err(unexpected(r.status, r.body)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Reads one request (head and `Content-Length` body); returns its head.
    fn read_request(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            let n = s.read(&mut b).unwrap();
            got.extend_from_slice(&b[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&got[..i]).unwrap().to_owned();
                let len: usize =
                    head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
                if got.len() >= i + 4 + len {
                    return head;
                }
            }
        }
    }

    #[test]
    fn json_fields() {
        let t = r#"{"success":true,"data":{"created_by":"key_a","id":"key_b","workspace_id":"ws_c"},"request_id":"r"}"#;
        assert_eq!(json_str(t, "id"), Some("key_b"));
        assert_eq!(json_str(t, "workspace_id"), Some("ws_c"));
        assert_eq!(json_str(t, "missing"), None);
        assert_eq!(json_str(r#"{"root_key":"kw_live_x","workspace_id":"ws_1"}"#, "root_key"), Some("kw_live_x"));
    }

    /// A create and a revoke as the root key; then a create the server refuses.
    #[test]
    fn key_writer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let answer = |s: &mut TcpStream, status: &str, body: &str| {
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", body.len());
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(body.as_bytes()).unwrap();
            };
            let (mut s, _) = listener.accept().unwrap();
            let head = read_request(&mut s);
            assert!(head.starts_with("POST /v1/api-keys HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nAuthorization: Bearer kw_live_root\r\n"), "{head}");
            answer(
                &mut s,
                "201 Created",
                r#"{"success":true,"data":{"created_by":"key_r","id":"key_n","status":"active"},"request_id":"1"}"#,
            );
            let head = read_request(&mut s);
            assert!(head.starts_with("POST /v1/api-keys/key_n/revoke HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nAuthorization: Bearer kw_live_root\r\n"), "{head}");
            answer(&mut s, "200 OK", r#"{"success":true,"data":{"id":"key_n","status":"revoked"},"request_id":"2"}"#);
            read_request(&mut s);
            answer(&mut s, "403 Forbidden", r#"{"success":false,"error":{"code":"x","message":"y"}}"#);
        });
        let mut w = KeyWriter::connect(addr, "kw_live_root").unwrap();
        let id = w.create().unwrap();
        assert_eq!(id, "key_n");
        w.revoke(&id).unwrap();
        // Refused before anything is sent: a header cannot be smuggled in.
        assert!(w.client.post_json_bearer("/v1/api-keys", "kw\r\nX-Evil: 1", b"").is_err());
        assert!(w.create().is_err());
        server.join().unwrap();
    }

    #[test]
    fn verdicts() {
        let ok = br#"{"success":true,"data":{"valid":true,"code":"VALID","key_id":"k"},"request_id":"r"}"#;
        assert_eq!(verify_verdict(200, ok).unwrap(), Code::Valid);
        assert!(verify_verdict(500, ok).is_err());
        let nf = br#"{"success":true,"data":{"valid":false,"code":"NOT_FOUND"},"request_id":"r"}"#;
        assert_eq!(verify_verdict(200, nf).unwrap(), Code::NotFound);
        let err = br#"{"success":false,"error":{"code":"invalid_request","message":"x"}}"#;
        assert!(verify_verdict(400, err).is_err());
        assert!(verify_verdict(200, b"not json").is_err());
        let mut body = Vec::new();
        verify_body("kw_live_abc", &mut body).unwrap();
        assert_eq!(body, br#"{"key":"kw_live_abc"}"#);
        assert!(verify_body("a\"b", &mut body).is_err());
    }

    /// Two requests on one connection, the second response split across
    /// writes, then a `Connection: close` that makes the client reconnect.
    #[test]
    fn keep_alive_and_reconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            assert!(read_request(&mut s).starts_with("POST /v1/verify HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").unwrap();
            read_request(&mut s);
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 6\r\n\r\nse").unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"cond").unwrap();
            read_request(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
            drop(s);
            let (mut s, _) = listener.accept().unwrap();
            read_request(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast").unwrap();
        });
        let mut c = Client::connect(addr).unwrap();
        let r = c.post_json("/v1/verify", b"{}").unwrap();
        assert_eq!((r.status, r.body), (200, &b"first"[..]));
        let r = c.post_json("/v1/verify", b"{\"a\":1}").unwrap();
        assert_eq!((r.status, r.body), (404, &b"second"[..]));
        let r = c.post_json("/v1/verify", b"").unwrap();
        assert_eq!((r.status, r.body), (200, &b""[..]));
        let r = c.post_json("/v1/verify", b"{}").unwrap();
        assert_eq!((r.status, r.body), (200, &b"last"[..]));
        assert_eq!(c.connects(), 2);
        server.join().unwrap();
    }
}
