//! The browser console at `/console`.
//!
//! The page, its style sheet and its scripts are compiled into the binary
//! (`assets/`); nothing is fetched from another origin. A person signs in
//! by pasting a key that holds `keys:read`; the server answers with an
//! opaque session id in an `HttpOnly`, `SameSite=Strict` cookie. From then
//! on the page calls the documented `/v1/...` API: [`credential`] lets the
//! admin handlers take the session in place of a bearer header, so the
//! console can do exactly what its key may do, checked the same way.
//!
//! Cross-site requests: every request that is not a `GET`/`HEAD`/`OPTIONS`
//! and carries a live session cookie must also carry that session's CSRF
//! token in `X-CSRF-Token` ([`guard`]); without it the answer is 403 and
//! nothing runs. The token is read by the page from `GET /console/api/me`.
//!
//! Sessions live in this process's memory: a restart ends them. They end
//! after [`IDLE_MS`] without use and [`LIFETIME_MS`] after sign-in; at most
//! [`MAX_SESSIONS`] exist, [`MAX_PER_KEY`] per key (a new sign-in ends the
//! key's oldest session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyward_core::credentials::{self, Credential, CredentialError};
use keyward_core::limits::Cost;
use keyward_core::permission::Permission;
use keyward_core::{Code, KeyId, WorkspaceId};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::AppState;
use crate::blocking::verifying;
use crate::envelope::{ApiError, Reply, RequestId};
use crate::json;
use crate::routes::{Peer, client_ip};

/// A session ends after this long without a request: 12 hours.
pub(crate) const IDLE_MS: u64 = 12 * 3_600_000;
/// A session ends this long after sign-in, used or not: 24 hours.
pub(crate) const LIFETIME_MS: u64 = 24 * 3_600_000;
/// Most sessions held at once; further sign-ins are refused (503).
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Most sessions of one key; a further sign-in ends its oldest.
pub(crate) const MAX_PER_KEY: usize = 16;

/// The permission a key needs to sign in.
const SIGN_IN_PERMISSION: &str = "keys:read";

/// The header carrying the CSRF token.
const CSRF_HEADER: &str = "x-csrf-token";

/// The `Content-Security-Policy` of every console response: own origin only,
/// no inline script or style, never framed.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Permissions the create dialog may offer (those the signed-in key covers).
const OFFERED: &[&str] = &[
    "*",
    "keys:*",
    "keys:read",
    "keys:write",
    "keys:verify",
    "tools:*",
    "tools:read",
    "tools:write",
    "audit:read",
    "workspaces:*",
    "workspaces:read",
    "workspaces:write",
];

/// One signed-in browser.
struct Session {
    /// The key that signed in, kept in memory only (zeroized when the
    /// session ends) so each request is verified exactly as a bearer call:
    /// revocation, expiry, IP rules and limits apply at once.
    token: Zeroizing<String>,
    key: KeyId,
    workspace: WorkspaceId,
    csrf: String,
    created_ms: u64,
    used_ms: u64,
}

impl Session {
    fn expires_ms(&self) -> u64 {
        self.used_ms.saturating_add(IDLE_MS).min(self.created_ms.saturating_add(LIFETIME_MS))
    }

    fn live(&self, now: u64) -> bool {
        now < self.expires_ms()
    }
}

/// The console's sessions and cookie settings, shared by the router's clones.
#[derive(Clone, Default)]
pub(crate) struct Console {
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    secure: bool,
}

impl Console {
    fn cookie_name(&self) -> &'static str {
        // `__Host-` binds the cookie to this host and path `/`; browsers
        // accept that prefix only on Secure cookies.
        if self.secure { "__Host-keyward_session" } else { "keyward_session" }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a consistent map (every
        // change is one insert or remove): keep using it.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session id the request's cookie names, if any.
    fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// The live session's CSRF token (no use recorded).
    fn csrf_of(&self, id: &str, now: u64) -> Option<String> {
        self.lock().get(id).filter(|s| s.live(now)).map(|s| s.csrf.clone())
    }

    /// Records a use of a live session; the key's token, key id, workspace,
    /// CSRF token and new expiry. An expired session is removed.
    fn touch(&self, id: &str, now: u64) -> Option<(Zeroizing<String>, KeyId, WorkspaceId, String, u64)> {
        let mut map = self.lock();
        let live = map.get(id).map(|s| s.live(now))?;
        if !live {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.used_ms = s.used_ms.max(now);
        Some((s.token.clone(), s.key, s.workspace, s.csrf.clone(), s.expires_ms()))
    }

    /// Starts a session; `None` when [`MAX_SESSIONS`] are live.
    fn start(
        &self,
        token: Zeroizing<String>,
        key: KeyId,
        workspace: WorkspaceId,
        now: u64,
    ) -> Option<(String, String)> {
        let mut map = self.lock();
        map.retain(|_, s| s.live(now));
        let mut own: Vec<(u64, String)> =
            map.iter().filter(|(_, s)| s.key == key).map(|(id, s)| (s.created_ms, id.clone())).collect();
        if own.len() >= MAX_PER_KEY {
            own.sort();
            for (_, id) in own.iter().take(own.len() + 1 - MAX_PER_KEY) {
                map.remove(id);
            }
        }
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let (id, csrf) = (random_hex(), random_hex());
        map.insert(id.clone(), Session { token, key, workspace, csrf: csrf.clone(), created_ms: now, used_ms: now });
        Some((id, csrf))
    }

    fn end(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    fn set_cookie(&self, id: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}", self.cookie_name())
    }

    fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}", self.cookie_name())
    }
}

impl AppState {
    /// Marks the console's session cookie `Secure` (named
    /// `__Host-keyward_session`): set it when the router is served over TLS.
    /// By default off (`keyward_session`, for plain HTTP).
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.console.secure = secure;
        self
    }
}

/// 32 random bytes from the thread's CSPRNG, as 64 hex digits.
fn random_hex() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    keyward_core::hex::encode(&bytes)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential of the request's console session, for an admin call that
/// carries no credential header of its own. The session's use is recorded.
/// Non-`GET` requests reach the handlers only after [`guard`] has checked
/// their CSRF token.
pub(crate) fn credential(state: &AppState, headers: &HeaderMap) -> Option<Credential> {
    let pairs = headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    if !matches!(credentials::parse(pairs), Err(CredentialError::Missing)) {
        return None;
    }
    let id = state.console.session_id(headers)?;
    let (token, ..) = state.console.touch(&id, state.engine.now().0)?;
    Some(Credential::ApiKey(token))
}

/// Refuses (403) a state-changing request that carries a live console
/// session cookie but not that session's CSRF token. Every route passes
/// here, so a console session never changes anything without the token.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(id) = state.console.session_id(req.headers()) else { return next.run(req).await };
    let Some(csrf) = state.console.csrf_of(&id, state.engine.now().0) else { return next.run(req).await };
    let sent = req.headers().get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
    if same(sent, csrf.as_bytes()) {
        return next.run(req).await;
    }
    // Outside the envelope layer: the envelope is written here, with the
    // request id `stamp` gave the request (and puts in `X-Request-Id`).
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let body = json!({
        "success": false,
        "error": {"code": "csrf", "message": "console requests must carry the session's X-CSRF-Token header"},
        "request_id": rid,
    });
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The console's routes: the page, its assets, and sign-in, sign-out and
/// the signed-in key (`/console/api/…`).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { redirect_to_console() }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route("/console/assets/{name}", get(|Path(name): Path<String>| async move { asset(&name) }))
        .route("/console/api/login", post(login))
        .route("/console/api/logout", post(logout))
        .route("/console/api/me", get(me))
        .layer(axum::middleware::from_fn_with_state(state, crate::envelope::envelope))
        .layer(axum::middleware::map_response(security_headers))
}

fn redirect_to_console() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/console/")]).into_response()
}

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("assets/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("assets/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("assets/dom.js")),
    ("keys.js", "text/javascript; charset=utf-8", include_str!("assets/keys.js")),
    ("key.js", "text/javascript; charset=utf-8", include_str!("assets/key.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("assets/chart.js")),
    ("tools.js", "text/javascript; charset=utf-8", include_str!("assets/tools.js")),
    ("workspace.js", "text/javascript; charset=utf-8", include_str!("assets/workspace.js")),
    ("audit.js", "text/javascript; charset=utf-8", include_str!("assets/audit.js")),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => {
            Reply::error(ApiError::not_found(format!("console asset {}", name.chars().take(40).collect::<String>())))
                .into_response()
        }
    }
}

/// Headers on every console response.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Whether an `Origin` header, when sent, names this server (the `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let bare = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    !host.is_empty() && bare == Some(host)
}

/// Verifies the signed-in key as an admin call needing `keys:read`.
fn check(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    cred: &Credential,
) -> Result<(KeyId, WorkspaceId), ApiError> {
    let ip = client_ip(state, peer, headers);
    let req = keyward::Request {
        ip,
        permissions: &[SIGN_IN_PERMISSION],
        cost: Cost { credits: 0, rates: &[] },
        ..Default::default()
    };
    let v = verifying(&state.engine, || state.engine.verify_credential(cred, &req));
    match (v.code, v.key_id, v.workspace_id) {
        (Code::Valid, Some(k), Some(w)) => Ok((k, w)),
        (code, ..) => {
            let status = match code.http_status() {
                403 | 429 | 503 => StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
                _ => StatusCode::UNAUTHORIZED,
            };
            let why = match code {
                Code::InsufficientPermissions => "this key may not read keys (it needs keys:read)",
                Code::RateLimited | Code::DailyLimit | Code::ConcurrencyLimit => "this key is over its limits",
                Code::IpDenied => "this key may not be used from this address",
                Code::StoreUnavailable => "the store is unavailable; retry later",
                _ => "not a valid key",
            };
            Err(ApiError::new(status, code.as_str(), why))
        }
    }
}

/// The signed-in key as the page needs it.
async fn me_json(
    state: &AppState,
    key: KeyId,
    workspace: WorkspaceId,
    csrf: &str,
    expires_ms: u64,
) -> Result<Value, ApiError> {
    // Off the async workers: on a shared store reading a key asks the store.
    let info = crate::blocking::off_workers(&state.engine, move |e| e.key(key))
        .await
        .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in"))?;
    let held = &info.permissions;
    let offer: Vec<&str> = OFFERED
        .iter()
        .copied()
        .filter(|p| Permission::parse(p).is_ok_and(|p| held.iter().any(|h| h.covers(&p))))
        .collect();
    let can = |p: &str| keyward_core::permission::granted(held, p);
    Ok(json!({
        "key_id": key.to_string(),
        "name": info.name,
        "workspace_id": workspace.to_string(),
        "permissions": held.iter().map(Permission::as_str).collect::<Vec<_>>(),
        "offer_permissions": offer,
        "can": {
            "keys_read": can("keys:read"),
            "keys_write": can("keys:write"),
            "tools_read": can("tools:read"),
            "tools_write": can("tools:write"),
            "audit_read": can("audit:read"),
            "workspace_read": can("workspaces:read"),
            "workspace_write": can("workspaces:write"),
        },
        "csrf_token": csrf,
        "session_expires_at": json::time(Some(keyward_core::UnixMillis(expires_ms))),
    }))
}

/// `POST /console/api/login` `{"key": …}`: a key holding `keys:read` starts
/// a session; the answer sets its cookie.
async fn login(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Reply {
    // JSON only (a cross-site form cannot send it without the page's
    // consent), and from this origin when the browser says where from.
    if !same_origin(&headers) {
        return ApiError::new(StatusCode::FORBIDDEN, "csrf", "sign-in from another origin").into();
    }
    let spec: crate::wire::LoginSpec = match json::read(&headers, &body) {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let sent = Zeroizing::new(spec.key);
    let key = match sent.trim() {
        "" => return ApiError::invalid("key", "is required").into(),
        k => Zeroizing::new(k.to_owned()),
    };
    let cred = Credential::ApiKey(key.clone());
    let (key_id, ws) = match check(&state, &peer, &headers, &cred) {
        Ok(ids) => ids,
        Err(e) => return e.into(),
    };
    let now = state.engine.now().0;
    let Some((id, csrf)) = state.console.start(key, key_id, ws, now) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            "too many console sessions; retry later",
        )
        .into();
    };
    let expires = now.saturating_add(IDLE_MS);
    match me_json(&state, key_id, ws, &csrf, expires).await {
        Ok(data) => Reply::ok(data).header(header::SET_COOKIE, state.console.set_cookie(&id)),
        Err(e) => {
            state.console.end(&id);
            e.into()
        }
    }
}

/// `POST /console/api/logout`: ends the session (the guard has checked its
/// CSRF token) and clears the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap, _body: Bytes) -> Reply {
    let ended = state.console.session_id(&headers).is_some_and(|id| state.console.end(&id));
    Reply::ok(json!({"signed_out": ended})).header(header::SET_COOKIE, state.console.clear_cookie())
}

/// `GET /console/api/me`: the signed-in key, what it may do, and the
/// session's CSRF token; 401 without a live session.
async fn me(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Reply {
    let not_signed_in = || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in");
    let Some(id) = state.console.session_id(&headers) else { return not_signed_in().into() };
    let Some((token, key, ws, csrf, expires)) = state.console.touch(&id, state.engine.now().0) else {
        return not_signed_in().into();
    };
    let cred = Credential::ApiKey(token);
    if let Err(e) = check(&state, &peer, &headers, &cred) {
        // The key no longer signs in (revoked, expired, changed): end the session.
        if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN {
            state.console.end(&id);
        }
        return Reply::from(e).header(header::SET_COOKIE, state.console.clear_cookie());
    }
    match me_json(&state, key, ws, &csrf, expires).await {
        Ok(data) => Reply::ok(data),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded_per_key() {
        let (k, ws) = (KeyId([1; 16]), WorkspaceId([2; 16]));
        let c = Console::default();
        let (id, csrf) = c.start(Zeroizing::new("t".into()), k, ws, 0).unwrap();
        assert_eq!(c.csrf_of(&id, 1), Some(csrf.clone()));
        // Used: the idle clock restarts, up to the lifetime.
        assert!(c.touch(&id, IDLE_MS - 1).is_some());
        assert!(c.touch(&id, 2 * IDLE_MS - 2).is_some());
        assert!(c.touch(&id, LIFETIME_MS).is_none());
        assert_eq!(c.csrf_of(&id, 0), None, "an expired session is gone");
        let first = c.start(Zeroizing::new("t".into()), k, ws, 10).unwrap().0;
        for i in 0..MAX_PER_KEY {
            c.start(Zeroizing::new("t".into()), k, ws, 11 + i as u64).unwrap();
        }
        assert_eq!(c.lock().len(), MAX_PER_KEY);
        assert!(c.csrf_of(&first, 20).is_none(), "the key's oldest session ended");
    }

    #[test]
    fn cookies_under_tls_are_secure_and_host_bound() {
        let c = Console { secure: true, ..Console::default() };
        let id = "b".repeat(64);
        assert_eq!(
            c.set_cookie(&id),
            format!("__Host-keyward_session={id}; Path=/; HttpOnly; SameSite=Strict; Secure")
        );
        assert_eq!(c.clear_cookie(), "__Host-keyward_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("keyward_session={id}")).unwrap());
        assert_eq!(c.session_id(&h), None, "the plain-HTTP cookie is not read under TLS");
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("__Host-keyward_session={id}")).unwrap());
        assert_eq!(c.session_id(&h), Some(id));
    }

    #[test]
    fn full_table_refuses_new_sessions() {
        let c = Console::default();
        for i in 0..MAX_SESSIONS {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(c.start(Zeroizing::new("t".into()), KeyId(k), WorkspaceId([0; 16]), 1).is_some());
        }
        assert!(c.start(Zeroizing::new("t".into()), KeyId([9; 16]), WorkspaceId([0; 16]), 2).is_none());
        // Once they expire, sign-in works again.
        assert!(c.start(Zeroizing::new("t".into()), KeyId([9; 16]), WorkspaceId([0; 16]), 2 + IDLE_MS).is_some());
        assert_eq!(c.lock().len(), 1);
    }

    #[test]
    fn cookie_parsing() {
        let c = Console::default();
        let id = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("x=1; keyward_session={id}; y=2")).unwrap());
        assert_eq!(c.session_id(&h), Some(id));
        h.insert(header::COOKIE, HeaderValue::from_static("keyward_session=short"));
        assert_eq!(c.session_id(&h), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
