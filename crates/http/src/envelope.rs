//! The JSON envelope every response wears, and the request id.

use axum::body::Body;
use std::cell::RefCell;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyward_core::{KeyId, WorkspaceId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;

/// The id of one request (`req_` + 20 base62 characters), in the envelope
/// and the `X-Request-Id` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub(crate) fn generate() -> Self {
        use rand::seq::IndexedRandom;
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let mut id = String::with_capacity(24);
        id.push_str("req_");
        id.extend((0..20).filter_map(|_| ALPHABET.choose(&mut rng)).map(|&b| char::from(b)));
        Self(id)
    }
}

/// An API error: HTTP status, stable code, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_request` or a verdict code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into() }
    }

    /// 400 `invalid_request` naming the field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", format!("{field}: {message}"))
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
}

/// What a handler answers; the middleware adds the request id and serialises.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: Result<Data, ApiError>,
    headers: Vec<(HeaderName, HeaderValue)>,
    verdict: Option<&'static str>,
    /// A field added to the error object (e.g. a batch's per-item `errors`).
    detail: Option<(&'static str, Value)>,
}

impl Reply {
    /// 200 with `data`.
    pub fn ok(data: Value) -> Self {
        Self { status: StatusCode::OK, body: Ok(Data::Tree(data)), headers: Vec::new(), verdict: None, detail: None }
    }

    /// 200 with a typed view as `data`, serialised straight to text.
    pub(crate) fn ok_view<T: Serialize>(view: &T) -> Self {
        match serde_json::value::to_raw_value(view) {
            Ok(text) => Self {
                status: StatusCode::OK,
                body: Ok(Data::Text(text)),
                headers: Vec::new(),
                verdict: None,
                detail: None,
            },
            Err(e) => Self::error(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
        }
    }

    /// 201 with `data`.
    pub fn created(data: Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            body: Ok(Data::Tree(data)),
            headers: Vec::new(),
            verdict: None,
            detail: None,
        }
    }

    /// `status` with `data`; `success` in the envelope says whether the
    /// status is a 2xx (a health check that fails still describes itself).
    pub fn status(status: StatusCode, data: Value) -> Self {
        Self { status, body: Ok(Data::Tree(data)), headers: Vec::new(), verdict: None, detail: None }
    }

    /// An error.
    pub fn error(e: ApiError) -> Self {
        Self { status: e.status, body: Err(e), headers: Vec::new(), verdict: None, detail: None }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(v) = value.try_into() {
            self.headers.push((name, v));
        }
        self
    }

    /// Adds a field beside `code` and `message` in the error object.
    pub fn detail(mut self, name: &'static str, value: Value) -> Self {
        self.detail = Some((name, value));
        self
    }

    /// Records the verdict code for metrics.
    pub fn verdict(mut self, code: &'static str) -> Self {
        self.verdict = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Reply::error(self).into_response()
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::error(e)
    }
}

#[derive(Clone)]
struct EnvelopeBody(Result<Data, ApiError>, Option<(&'static str, Value)>);

/// A reply's data: a JSON tree, or the text of a typed view serialised
/// straight from it (no tree built only to be written out).
#[derive(Clone, Debug)]
enum Data {
    Tree(Value),
    Text(Box<serde_json::value::RawValue>),
}

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Tree(v) => v.serialize(s),
            Self::Text(t) => t.serialize(s),
        }
    }
}

/// A successful reply's envelope, its fields in the order a JSON object's
/// keys are written (alphabetical).
#[derive(Serialize)]
struct Success<'a> {
    data: &'a Data,
    request_id: &'a str,
    success: bool,
}

/// The verdict code a response carried, for metrics.
#[derive(Clone, Copy)]
pub(crate) struct VerdictTag(pub &'static str);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = self.status;
        for (n, v) in self.headers {
            resp.headers_mut().append(n, v);
        }
        resp.extensions_mut().insert(EnvelopeBody(self.body, self.detail));
        if let Some(v) = self.verdict {
            resp.extensions_mut().insert(VerdictTag(v));
        }
        resp
    }
}

fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "invalid_request",
        422 => "invalid_request",
        429 => "rate_limited",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

tokio::task_local! {
    /// What the handlers of the request being served learned for its log line.
    static NOTE: RefCell<Note>;
}

/// The parts of a request's log line only a handler knows.
#[derive(Default)]
struct Note {
    request_id: String,
    key_id: Option<String>,
    workspace: Option<String>,
    audit: Option<String>,
    audit_seq: Option<u64>,
    error: Option<String>,
}

fn with_note(f: impl FnOnce(&mut Note)) {
    // Outside a request (a handler called directly in a test) there is no line to add to.
    let _ = NOTE.try_with(|n| f(&mut n.borrow_mut()));
}

/// Records the key (and its workspace) a request acted as or decided on.
/// A later call replaces an earlier one: `/v1/verify` logs the key it
/// verified, not its caller.
pub(crate) fn note_key(key: Option<KeyId>, workspace: Option<WorkspaceId>) {
    with_note(|n| {
        if key.is_some() {
            n.key_id = key.map(|k| k.to_string());
        }
        if workspace.is_some() {
            n.workspace = workspace.map(|w| w.to_string());
        }
    });
}

/// Records the audit event an admin action wrote: `action target`.
pub(crate) fn note_audit(action: &str, target: impl std::fmt::Display) {
    with_note(|n| n.audit = Some(format!("{action} {target}")));
}

/// Records the sequence number of the audit event an admin action wrote
/// (as `GET /v1/audit` lists it).
pub(crate) fn note_audit_seq(seq: Option<u64>) {
    with_note(|n| {
        if seq.is_some() {
            n.audit_seq = seq;
        }
    });
}

/// Records why a request failed on the server's side: the log gets the
/// detail, the client only `internal error` and the request id.
pub(crate) fn note_error(detail: impl std::fmt::Display) {
    with_note(|n| n.error = Some(detail.to_string()));
}

/// The id of the request being served (empty outside a request).
pub(crate) fn current_request_id() -> String {
    NOTE.try_with(|n| n.borrow().request_id.clone()).unwrap_or_default()
}

/// What a client reads in a 500: no detail, the request id to quote.
pub(crate) fn internal_message(id: &str) -> String {
    format!("internal error (request {id})")
}

/// What every response gets, whatever its body format: a request id (in the
/// request extensions and the `X-Request-Id` header), a line in the metrics
/// and a line in the request log. Runs around every route of [`crate::router`].
pub(crate) async fn stamp(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = RequestId::generate();
    req.extensions_mut().insert(id.clone());
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = peer.and_then(|p| state.proxies.client_ip(p.ip(), req.headers()));
    let note = RefCell::new(Note { request_id: id.0.clone(), ..Note::default() });
    let served = NOTE.scope(note, async move {
        let resp = next.run(req).await;
        (resp, NOTE.with(|n| std::mem::take(&mut *n.borrow_mut())))
    });
    // A forwarded gateway call streams for as long as its tool's own
    // `timeout_ms` allows; every other request gets the server's limit.
    let forwarded = route.as_deref().is_some_and(|r| r.starts_with("/api/v2/"));
    let (mut resp, note) = match state.request_timeout.filter(|_| !forwarded) {
        None => served.await,
        Some(limit) => match tokio::time::timeout(limit, served).await {
            Ok(done) => done,
            // The handler is dropped. A change already handed to the blocking
            // threads still finishes (and is audited); the client learns to check.
            Err(_) => {
                let ms = limit.as_millis();
                let body = error_json("timeout", &format!("the request took longer than {ms} ms"), &id.0);
                let mut resp = Response::new(Body::from(body.to_string()));
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let note = Note { error: Some(format!("request timeout after {ms} ms")), ..Note::default() };
                (resp, note)
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        resp.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    let verdict = resp.extensions().get::<VerdictTag>().map(|v| v.0);
    let route = route.as_deref().unwrap_or("unmatched");
    let took = started.elapsed();
    let status = resp.status().as_u16();
    state.metrics.record(route, status, verdict, took);
    tracing::info!(
        target: "keyward::request",
        request_id = id.0.as_str(),
        method = method.as_str(),
        route,
        status,
        code = verdict,
        key_id = note.key_id.as_deref(),
        workspace = note.workspace.as_deref(),
        ip = ip.map(tracing::field::display),
        latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        audit = note.audit.as_deref(),
        audit_seq = note.audit_seq,
        error = note.error.as_deref(),
        "request"
    );
    resp
}

/// Serialises the envelope around native routes' replies and axum's own errors.
pub(crate) async fn envelope(req: Request, next: Next) -> Response {
    let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let mut resp = next.run(req).await;
    if resp.extensions().get::<crate::gateway::Forwarded>().is_some() {
        // An upstream's answer goes back as the upstream gave it (`stamp`
        // adds the request id).
        return resp;
    }
    let status = resp.status();
    let body = match resp.extensions_mut().remove::<EnvelopeBody>() {
        Some(EnvelopeBody(Ok(data), _)) => {
            let success = Success { data: &data, request_id: &id, success: status.is_success() };
            // Serialising a tree or a view's text cannot fail.
            Some(serde_json::to_vec(&success).unwrap_or_default())
        }
        Some(EnvelopeBody(Err(e), _)) if e.status == StatusCode::INTERNAL_SERVER_ERROR => {
            note_error(&e.message);
            Some(error_json(&e.code, &internal_message(&id), &id).to_string().into_bytes())
        }
        Some(EnvelopeBody(Err(e), detail)) => {
            let mut body = error_json(&e.code, &e.message, &id);
            if let (Some((name, value)), Some(Value::Object(error))) = (detail, body.get_mut("error")) {
                error.insert(name.into(), value);
            }
            Some(body.to_string().into_bytes())
        }
        // Not ours (axum's own 404/405/413/...): wrap errors in the envelope too.
        None if status.is_client_error() || status.is_server_error() => {
            let message = match status {
                StatusCode::INTERNAL_SERVER_ERROR => internal_message(&id),
                _ => status.canonical_reason().unwrap_or("error").to_owned(),
            };
            Some(error_json(code_for_status(status), &message, &id).to_string().into_bytes())
        }
        None => None,
    };
    if let Some(body) = body {
        *resp.body_mut() = Body::from(body);
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp
}

fn error_json(code: &str, message: &str, id: &str) -> Value {
    json!({"success": false, "error": {"code": code, "message": message}, "request_id": id})
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// Collects what the request log writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_500_tells_the_request_id_and_logs_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        let engine = keyward::Engine::open(dir.path().join("k.redb")).unwrap();
        let state = AppState::new(engine);
        let detail = "redb: /var/lib/keyward.redb: the disk is on fire";
        let app = Router::new()
            .route(
                "/boom",
                get(move || async move {
                    Reply::error(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail))
                }),
            )
            .layer(axum::middleware::from_fn(envelope))
            .layer(axum::middleware::from_fn_with_state(state.clone(), stamp))
            .with_state(state);
        let log = Captured::default();
        let sink = log.clone();
        let subscriber =
            tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || sink.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let resp = app.oneshot(axum::http::Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let message = format!("internal error (request {id})");
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": "internal", "message": message}, "request_id": id})
        );
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!((line["request_id"].as_str(), line["status"].as_u64()), (Some(id.as_str()), Some(500)));
        assert_eq!(line["error"], detail);
    }

    #[test]
    fn engine_errors_without_a_client_meaning_are_500_with_the_detail_kept() {
        let e = crate::routes::engine_error(keyward::Error::NoSnapshotKey);
        assert_eq!((e.status, e.code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert_eq!(e.message, keyward::Error::NoSnapshotKey.to_string());
    }
}
