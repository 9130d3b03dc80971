//! The gateway: `POST /api/v2/{tool}` and `/api/v2/{tool}/{*rest}`.
//!
//! An admitted call goes to the tool's upstream (`base` + `/rest` +
//! `?query`) with its body streamed both ways; the upstream's answer comes
//! back as it is, not in the envelope. The concurrency leases the call took
//! are held until that answer has been sent whole, or the client left, or the
//! upstream failed. Built-in `gl_ping` answers itself when it has no upstream.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use http_body_util::{LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keyward::{Engine, LeaseGuard};
use keyward_core::Code;
use keyward_core::credentials::Credential;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::blocking::verifying;
use crate::envelope::{ApiError, Reply, RequestId};
use crate::json;
use crate::routes::{Peer, client_ip, credential, limited_headers, verdict_error};

/// Largest request body the gateway forwards unless
/// [`AppState::with_gateway_body_limit`] says otherwise: 256 MiB.
pub const DEFAULT_GATEWAY_BODY: u64 = 256 * 1024 * 1024;

/// Headers that concern one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Credentials the gateway checked: they are for keyward, not the upstream.
const CREDENTIALS: [&str; 7] = ["x-api-key", "authorization", "aptoken", "apikey", "signature", "userid", "nonce"];

/// Headers the gateway sets itself; a client's own are dropped first so an
/// upstream can trust them.
const KEY_ID: &str = "x-keyward-key-id";
const WORKSPACE_ID: &str = "x-keyward-workspace-id";
const REQUEST_ID: &str = "x-request-id";
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The pooled client calls go out through, shared by every request.
pub(crate) struct Upstreams {
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Upstreams {
    pub(crate) fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Invariant: ring's provider supports rustls's default protocol
        // versions (TLS 1.2 and 1.3), the only way this can fail.
        #[allow(clippy::expect_used)]
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self { client }
    }
}

/// Marks a response the envelope middleware must pass through untouched.
#[derive(Clone, Copy)]
pub(crate) struct Forwarded;

/// The tool a gateway path names, and the rest of the path (raw, with its
/// leading `/`, or empty).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/api/v2/")?;
    Some(match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    })
}

/// Whether the request's host (port ignored, any case) is a gateway host.
fn host_allowed(hosts: &[String], headers: &HeaderMap, uri: &Uri) -> bool {
    let raw = match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(h) => h,
        None => uri.host().unwrap_or_default(),
    };
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => raw.split(':').next().unwrap_or_default(),
    };
    hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
}

/// `POST /api/v2/{tool}` and `POST /api/v2/{tool}/{*rest}`.
pub(crate) async fn gateway(State(state): State<AppState>, peer: Peer, req: Request) -> Response {
    let refuse = |e: ApiError| Reply::error(e).into_response();
    let (parts, body) = req.into_parts();
    if let Some(hosts) = &state.gateway_hosts
        && !host_allowed(hosts, &parts.headers, &parts.uri)
    {
        return refuse(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this host is not a gateway host"));
    }
    // The tool, by the path rule the edge applies too: the path decoded
    // once, and one another reader could take differently names no tool.
    let canonical = match keyward_core::path::canonical_path(parts.uri.path()) {
        Ok(path) => path,
        Err(e) => {
            let e = ApiError::new(StatusCode::UNAUTHORIZED, Code::Malformed.as_str(), e.to_string());
            return Reply::error(e).verdict(Code::Malformed.as_str()).into_response();
        }
    };
    let tool = match split_path(&canonical) {
        Some((tool, _)) if keyward_core::credentials::check_tool_name(tool).is_ok() => tool.to_owned(),
        _ => return refuse(ApiError::new(StatusCode::NOT_FOUND, Code::UnknownTool.as_str(), "no such tool")),
    };
    // The rest of the path goes upstream as the client wrote it.
    let rest = split_path(parts.uri.path()).map_or_else(String::new, |(_, rest)| rest.to_owned());
    let cred = match credential(&parts.headers, false) {
        Ok(c @ (Credential::ApiKey(_) | Credential::Session(_))) => c,
        Ok(_) => {
            let msg = "signed headers only authenticate at /v1/AuthenticateUser";
            return refuse(ApiError::new(StatusCode::UNAUTHORIZED, "MALFORMED", msg));
        }
        Err(e) => return Reply::from(e).verdict("MALFORMED").into_response(),
    };
    let ip = client_ip(&state, &peer, &parts.headers);
    let call = keyward::Request { ip, tool: Some(&tool), ..Default::default() };
    let guard = match verifying(&state.engine, || state.engine.acquire(&cred, &call)) {
        Ok(g) => g,
        Err(v) => {
            let reply = limited_headers(Reply::error(verdict_error(&v, "refused")), &v);
            return reply.verdict(v.code.as_str()).into_response();
        }
    };
    drop(cred);
    let v = guard.verdict().clone();
    crate::envelope::note_key(v.key_id, v.workspace_id);
    let upstream = match v.workspace_id.map(|ws| state.engine.tool(ws, &tool)) {
        Some(Ok(t)) => t.upstream.map(|u| (u, t.timeout_ms)),
        _ => None,
    };
    let answer = match upstream {
        Some((base, timeout_ms)) => {
            let ctx = Outgoing { base: &base, rest: &rest, timeout_ms, peer: peer.ip(), verdict: &v };
            forward(&state, ctx, parts, body, guard).await
        }
        None if tool == "gl_ping" => {
            let reply = ping(&parts.headers, body).await;
            release(&state.engine, guard).await;
            reply
        }
        None => {
            release(&state.engine, guard).await;
            let msg = format!("tool {tool} has no upstream");
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", msg).into()
        }
    };
    match answer {
        Answer::Reply(reply) => limited_headers(reply, &v).verdict(v.code.as_str()).into_response(),
        // The upstream's answer goes back unchanged (the request id aside).
        Answer::Upstream(mut resp) => {
            resp.extensions_mut().insert(crate::envelope::VerdictTag(v.code.as_str()));
            resp
        }
    }
}

/// What the gateway answers: in the envelope, or the upstream's own.
enum Answer {
    Reply(Reply),
    Upstream(Response),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Self {
        Answer::Reply(r)
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Self {
        Answer::Reply(Reply::error(e))
    }
}

/// Built-in `gl_ping`: echoes `{"ip": body.ip}`.
async fn ping(headers: &HeaderMap, body: Body) -> Answer {
    let body = match axum::body::to_bytes(body, json::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return too_large(json::MAX_BODY as u64).into(),
    };
    let spec: crate::wire::PingSpec = match json::read(headers, &body) {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    match spec.ip.parse::<IpAddr>() {
        Ok(_) => Reply::ok(json!({"ip": spec.ip})).into(),
        Err(_) => ApiError::invalid("ip", "must be an IP address").into(),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("body over {limit} bytes"))
}

/// Where and how one call goes out.
struct Outgoing<'a> {
    base: &'a str,
    rest: &'a str,
    timeout_ms: u64,
    peer: Option<IpAddr>,
    verdict: &'a keyward_core::Verdict,
}

/// The upstream URI: `base` + `rest` + `?query`, one `/` between them.
fn target(base: &str, rest: &str, query: Option<&str>) -> Option<Uri> {
    let mut url = String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(base);
    if url.ends_with('/') && rest.starts_with('/') {
        url.pop();
    }
    url.push_str(rest);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url.parse().ok()
}

/// Headers named in `Connection`, which are hop-by-hop too.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Drops the hop-by-hop headers (and those `Connection` names).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request headers the upstream gets.
fn outgoing_headers(mut headers: HeaderMap, ctx: &Outgoing<'_>, request_id: Option<&RequestId>) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in CREDENTIALS.into_iter().chain([KEY_ID, WORKSPACE_ID, REQUEST_ID]) {
        headers.remove(name);
    }
    // The client's host is not the upstream's: the client sets it from the URI.
    headers.remove(header::HOST);
    let chain = ctx.peer.map(|ip| {
        let before: Vec<&str> = headers.get_all(FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        if before.is_empty() { ip.to_string() } else { format!("{}, {ip}", before.join(", ")) }
    });
    let mut set = |name: &'static str, value: Option<String>| {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set(KEY_ID, ctx.verdict.key_id.map(|k| k.to_string()));
    set(WORKSPACE_ID, ctx.verdict.workspace_id.map(|w| w.to_string()));
    set(REQUEST_ID, request_id.map(|r| r.0.clone()));
    set(FORWARDED_FOR, chain);
    headers
}

/// Sends the call upstream and answers with the upstream's response, whose
/// body carries `guard` until it has been sent whole (or dropped).
async fn forward(
    state: &AppState,
    ctx: Outgoing<'_>,
    parts: axum::http::request::Parts,
    body: Body,
    guard: LeaseGuard,
) -> Answer {
    let limit = state.gateway_body_limit;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        release(&state.engine, guard).await;
        return too_large(limit).into();
    }
    let Some(uri) = target(ctx.base, ctx.rest, parts.uri.query()) else {
        release(&state.engine, guard).await;
        return upstream_unavailable("the tool's upstream URL cannot be used").into();
    };
    let request_id = parts.extensions.get::<RequestId>();
    let headers = outgoing_headers(parts.headers.clone(), &ctx, request_id);
    let mut out = axum::http::Request::new(Body::new(Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))));
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    let sent = tokio::time::timeout(Duration::from_millis(ctx.timeout_ms), state.upstreams.client.request(out)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            release(&state.engine, guard).await;
            return if over_limit(&e) {
                too_large(limit).into()
            } else {
                upstream_unavailable("the tool's upstream could not be reached or closed the connection").into()
            };
        }
        Err(_) => {
            release(&state.engine, guard).await;
            let msg = format!("the tool's upstream did not answer within {} ms", ctx.timeout_ms);
            return ApiError::new(StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT", msg).into();
        }
    };
    let (mut head, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    let held = Held {
        inner: incoming,
        lease: Lease::Held { engine: state.engine.clone(), guard: Box::new(guard) },
        last: None,
    };
    let mut resp = Response::from_parts(head, Body::new(held));
    resp.extensions_mut().insert(Forwarded);
    Answer::Upstream(resp)
}

fn upstream_unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", message)
}

/// Whether the request failed because the client's body went over the limit.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Starts releasing a call's leases without blocking a worker: on a shared
/// store a release is a round trip, so it runs on the blocking threads and
/// the handle says when it is done. `None`: released already, in place.
fn start_release(engine: &Engine, guard: LeaseGuard) -> Option<JoinHandle<()>> {
    if guard.verdict().leases.is_empty() {
        return None;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if engine.verify_may_block() => Some(rt.spawn_blocking(move || drop(guard))),
        _ => {
            drop(guard);
            None
        }
    }
}

/// Releases a call's leases before the answer goes out, so the client's
/// next call finds its slot free.
async fn release(engine: &Engine, guard: LeaseGuard) {
    if let Some(done) = start_release(engine, guard) {
        // A release that panicked left its lease to expire by its TTL.
        let _ = done.await;
    }
}

/// Where the leases of a forwarded call are.
enum Lease {
    /// Held while the upstream's answer streams (boxed: a guard carries
    /// the whole verdict, and a body is moved around as it is set up).
    Held { engine: Engine, guard: Box<LeaseGuard> },
    /// Being released; the body ends once this is done.
    Releasing(JoinHandle<()>),
    /// Released.
    Done,
}

impl Lease {
    /// Releases without waiting: the client left, or the body failed, and
    /// nobody waits for the release, which finishes on its own.
    fn let_go(&mut self) {
        if let Lease::Held { engine, guard } = std::mem::replace(self, Lease::Done) {
            drop(start_release(&engine, *guard));
        }
    }
}

/// The upstream's response body, holding the call's leases until its end
/// (or until it is dropped: the client left). The leases are released
/// before the last bytes go out, so a client that has read the whole answer
/// finds its slot free for the next call.
struct Held<B> {
    inner: B,
    lease: Lease,
    /// The last frame, kept back while the leases are released.
    last: Option<Frame<Bytes>>,
}

impl<B> http_body::Body for Held<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        loop {
            if let Lease::Releasing(done) = &mut self.lease {
                // A release that panicked left its lease to expire by its TTL.
                let _ = ready!(Pin::new(done).poll(cx));
                self.lease = Lease::Done;
                return Poll::Ready(self.last.take().map(Ok));
            }
            if matches!(self.lease, Lease::Done) {
                if let Some(frame) = self.last.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                return Pin::new(&mut self.inner).poll_frame(cx);
            }
            let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
            let frame = match polled {
                Some(Ok(frame)) if !self.inner.is_end_stream() => return Poll::Ready(Some(Ok(frame))),
                Some(Ok(frame)) => Some(frame),
                Some(Err(e)) => {
                    self.lease.let_go();
                    return Poll::Ready(Some(Err(e)));
                }
                None => None,
            };
            // The upstream's answer is all here: release, then hand it on.
            self.last = frame;
            if let Lease::Held { engine, guard } = std::mem::replace(&mut self.lease, Lease::Done)
                && let Some(done) = start_release(&engine, *guard)
            {
                self.lease = Lease::Releasing(done);
            }
            if matches!(self.lease, Lease::Done) && self.last.is_none() {
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not over while leases are held: the server must poll once more.
        matches!(self.lease, Lease::Done) && self.last.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Held<B> {
    fn drop(&mut self) {
        self.lease.let_go();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split() {
        assert_eq!(split_path("/api/v2/t"), Some(("t", "")));
        assert_eq!(split_path("/api/v2/t/a/b%20c"), Some(("t", "/a/b%20c")));
        assert_eq!(split_path("/v1/x"), None);
    }

    #[test]
    fn targets_join() {
        let t = |b, r, q| target(b, r, q).map(|u| u.to_string());
        assert_eq!(t("http://h:1/base", "/x/y", Some("a=1")).as_deref(), Some("http://h:1/base/x/y?a=1"));
        assert_eq!(t("http://h:1/base/", "/x", None).as_deref(), Some("http://h:1/base/x"));
        assert_eq!(t("http://h:1", "", None).as_deref(), Some("http://h:1/"));
    }

    #[test]
    fn hosts_match() {
        let hosts = vec!["api.example.com".to_owned(), "::1".to_owned()];
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            host_allowed(&hosts, &m, &Uri::from_static("/"))
        };
        assert!(with("API.example.com:8443"));
        assert!(with("[::1]:80"));
        assert!(!with("other.example.com"));
        assert!(!with("api.example.com.evil"));
    }

    #[test]
    fn hop_by_hop_dropped() {
        let mut m = HeaderMap::new();
        m.insert(header::CONNECTION, HeaderValue::from_static("x-secret, keep-alive"));
        m.insert("x-secret", HeaderValue::from_static("1"));
        m.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        m.insert("te", HeaderValue::from_static("trailers"));
        m.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut m);
        assert_eq!(m.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
