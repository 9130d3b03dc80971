//! The JSON envelope every response wears, and the request id.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;

/// The id of one request (`req_` + 20 base62 characters), in the envelope
/// and the `X-Request-Id` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub(crate) fn generate() -> Self {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let mut id = String::with_capacity(24);
        id.push_str("req_");
        for _ in 0..20 {
            id.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
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
    body: Result<Value, ApiError>,
    headers: Vec<(HeaderName, HeaderValue)>,
    verdict: Option<&'static str>,
    /// A field added to the error object (e.g. a batch's per-item `errors`).
    detail: Option<(&'static str, Value)>,
}

impl Reply {
    /// 200 with `data`.
    pub fn ok(data: Value) -> Self {
        Self { status: StatusCode::OK, body: Ok(data), headers: Vec::new(), verdict: None, detail: None }
    }

    /// 201 with `data`.
    pub fn created(data: Value) -> Self {
        Self { status: StatusCode::CREATED, body: Ok(data), headers: Vec::new(), verdict: None, detail: None }
    }

    /// `status` with `data`; `success` in the envelope says whether the
    /// status is a 2xx (a health check that fails still describes itself).
    pub fn status(status: StatusCode, data: Value) -> Self {
        Self { status, body: Ok(data), headers: Vec::new(), verdict: None, detail: None }
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

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::error(e)
    }
}

#[derive(Clone)]
struct EnvelopeBody(Result<Value, ApiError>, Option<(&'static str, Value)>);

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

/// What every response gets, whatever its body format: a request id (in the
/// request extensions and the `X-Request-Id` header) and a line in the metrics.
pub(crate) struct Stamp {
    pub(crate) id: RequestId,
    route: Option<String>,
    started: std::time::Instant,
}

impl Stamp {
    /// Starts timing a request and gives it an id.
    pub(crate) fn begin(req: &mut Request) -> Self {
        let started = std::time::Instant::now();
        let id = RequestId::generate();
        req.extensions_mut().insert(id.clone());
        let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
        Self { id, route, started }
    }

    /// Adds `X-Request-Id` to the response and counts the request.
    pub(crate) fn finish(self, state: &AppState, resp: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.id.0) {
            resp.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
        }
        let verdict = resp.extensions().get::<VerdictTag>().map(|v| v.0);
        let route = self.route.as_deref().unwrap_or("unmatched");
        state.metrics.record(route, resp.status().as_u16(), verdict, self.started.elapsed());
    }
}

/// Adds the request id, serialises the envelope, and counts the request.
pub(crate) async fn envelope(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let stamp = Stamp::begin(&mut req);
    let id = stamp.id.0.clone();
    let mut resp = next.run(req).await;
    if resp.extensions().get::<crate::gateway::Forwarded>().is_some() {
        // An upstream's answer goes back as the upstream gave it.
        stamp.finish(&state, &mut resp);
        return resp;
    }
    let status = resp.status();
    let body = match resp.extensions_mut().remove::<EnvelopeBody>() {
        Some(EnvelopeBody(Ok(data), _)) => {
            Some(json!({"success": status.is_success(), "data": data, "request_id": id}))
        }
        Some(EnvelopeBody(Err(e), detail)) => {
            let mut body = error_json(&e.code, &e.message, &id);
            if let (Some((name, value)), Some(Value::Object(error))) = (detail, body.get_mut("error")) {
                error.insert(name.into(), value);
            }
            Some(body)
        }
        // Not ours (axum's own 404/405/413/...): wrap errors in the envelope too.
        None if status.is_client_error() || status.is_server_error() => {
            let message = status.canonical_reason().unwrap_or("error").to_owned();
            Some(error_json(code_for_status(status), &message, &id))
        }
        None => None,
    };
    if let Some(body) = body {
        *resp.body_mut() = Body::from(body.to_string());
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    stamp.finish(&state, &mut resp);
    resp
}

fn error_json(code: &str, message: &str, id: &str) -> Value {
    json!({"success": false, "error": {"code": code, "message": message}, "request_id": id})
}
