//! Handlers: admin API, gateway, verify, nginx auth, signed authentication.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keyward::{Actor, NewKey, SigningSecrets};
use keyward_core::credentials::{self, Credential};
use keyward_core::limits::Cost;
use keyward_core::{Code, KeyId, UnixMillis, Verdict, WorkspaceId};
use serde_json::{Value, json};

use crate::AppState;
use crate::blocking::{audited, login, off_workers, verifying};
use crate::body;
use crate::envelope::{ApiError, Reply};
use crate::json::{self, key_json, tool_json};
use crate::wire;

/// The peer address, when the server was started with connect info.
pub(crate) struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

impl Peer {
    /// The peer's IP address, when known.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.0.map(|a| a.ip())
    }
}

pub(crate) fn client_ip(state: &AppState, peer: &Peer, headers: &HeaderMap) -> Option<IpAddr> {
    peer.0.and_then(|addr| state.proxies.client_ip(addr.ip(), headers))
}

pub(crate) fn credential(headers: &HeaderMap, ignore_session: bool) -> Result<Credential, ApiError> {
    let pairs = headers
        .iter()
        .filter(|(n, _)| !(ignore_session && n.as_str().eq_ignore_ascii_case("aptoken")))
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    credentials::parse(pairs)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, Code::Malformed.as_str(), e.to_string()))
}

pub(crate) fn verdict_error(v: &Verdict, what: &str) -> ApiError {
    let status = StatusCode::from_u16(v.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    ApiError::new(status, v.code.as_str(), format!("{what}: {}", describe(v.code)))
}

fn describe(code: Code) -> &'static str {
    match code {
        Code::Valid => "valid",
        Code::Malformed => "no credential, or one that cannot be a key",
        Code::NotFound => "unknown key",
        Code::Expired => "key expired",
        Code::Revoked => "key revoked",
        Code::Disabled => "key disabled",
        Code::PlanInactive => "workspace plan has no API access",
        Code::IpDenied => "client IP not allowed",
        Code::InsufficientPermissions => "missing a required permission",
        Code::ToolDisabled => "tool disabled",
        Code::UnknownTool => "no such tool",
        Code::RateLimited => "rate limit reached",
        Code::Cooldown => "called again before the cooldown elapsed",
        Code::DailyLimit => "daily limit reached",
        Code::ConcurrencyLimit => "too many jobs in flight",
        Code::UsageExhausted => "no credits left",
        Code::InvalidSignature => "signature wrong or missing (a signing key is no bearer key)",
        Code::NonceReused => "nonce already used",
        Code::StoreUnavailable => "the store could not record the call; retry later",
        _ => "refused",
    }
}

/// Authenticates the caller of an admin endpoint: a key holding `need`.
pub(crate) fn caller(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    need: &str,
) -> Result<(KeyId, WorkspaceId), ApiError> {
    // No credential header: the browser console's session, if any.
    let cred = credential(headers, false).or_else(|e| crate::console::credential(state, headers).ok_or(e))?;
    let ip = client_ip(state, peer, headers);
    let req =
        keyward::Request { ip, permissions: &[need], cost: Cost { credits: 0, rates: &[] }, ..Default::default() };
    // On a shared store a limited caller key is charged there: off the workers.
    let v = verifying(&state.engine, || state.engine.verify_credential(&cred, &req));
    crate::envelope::note_key(v.key_id, v.workspace_id);
    match (v.code, v.key_id, v.workspace_id) {
        (Code::Valid, Some(k), Some(w)) => Ok((k, w)),
        _ => Err(verdict_error(&v, "caller")),
    }
}

pub(crate) fn engine_error(e: keyward::Error) -> ApiError {
    use keyward::Error as E;
    match e {
        E::NotFound { kind, id } => ApiError::not_found(format!("{kind} {id}")),
        E::Invalid { field, message } => ApiError::invalid(field, message),
        E::InsufficientPermissions(m) => ApiError::new(StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS", m),
        E::PlanInactive => ApiError::new(StatusCode::FORBIDDEN, "PLAN_INACTIVE", "workspace plan has no API access"),
        E::AlreadyExists { kind, id } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", format!("{kind} {id} already exists"))
        }
        E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        // The change was not made (nothing of it is stored or visible);
        // the same request can be sent again.
        // The store's own message (file paths, server addresses) is for
        // operators: `/healthz` shows it; the client learns what to do.
        E::Storage(_) | E::Io(_) | E::Corrupt(_) => {
            crate::envelope::note_error(&e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Code::StoreUnavailable.as_str(), crate::unkey::STORE_DOWN)
        }
        E::NoMasterKey => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "signing: the server has no master key")
        }
        // The envelope tells the client `internal error` and the request
        // id; this message goes to the request's log line.
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
    }
}

fn parse_key_id(id: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(id).map_err(|_| ApiError::not_found(format!("key {}", id.chars().take(40).collect::<String>())))
}

/// The key, if the caller's workspace holds it (404 otherwise).
/// Off the async workers: on a shared store reading a key asks the store
/// for its counters and last use.
async fn own_key(state: &AppState, ws: WorkspaceId, id: KeyId) -> Result<keyward::KeyInfo, ApiError> {
    match off_workers(&state.engine, move |e| e.key(id)).await {
        Ok(k) if k.workspace == ws => Ok(k),
        Err(e @ (keyward::Error::Storage(_) | keyward::Error::Io(_))) => Err(engine_error(e)),
        _ => Err(ApiError::not_found(format!("key {id}"))),
    }
}

/// The caller (holding `need`) and the key `id` of the caller's workspace
/// that a request acts on; 404 for ids of other workspaces.
async fn caller_and_key(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    need: &str,
    id: &str,
) -> Result<(KeyId, keyward::KeyInfo), ApiError> {
    let (caller_id, ws) = caller(state, peer, headers, need)?;
    let key = own_key(state, ws, parse_key_id(id)?).await?;
    Ok((caller_id, key))
}

// ---- keys -----------------------------------------------------------------

pub(crate) async fn create_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "keys:write")?;
    // A misspelt field is an error, not a setting silently left out.
    let spec: wire::KeySpec = json::read(&headers, &body)?;
    let inherited = inherited_permissions(&state, caller_id).await?;
    let spec = json::new_key(spec, &body::Path::root(), &inherited)?;
    let created =
        audited(&state.engine, move |e| e.create_key(ws, spec, &Actor::Key(caller_id))).await.map_err(engine_error)?;
    crate::envelope::note_audit("key.created", created.info.id);
    Ok(Reply::created(created_json(&created.info, Some(&created.token), created.signing.as_ref())))
}

/// A key just created, as JSON.
fn created_json(
    info: &keyward::KeyInfo,
    token: Option<&keyward_core::Token>,
    signing: Option<&SigningSecrets>,
) -> Value {
    wire::value(&json::created_key_view(info, token, signing))
}

/// `POST /v1/api-keys/batch` `{"keys":[spec, …]}`: up to
/// [`json::MAX_BATCH_SPECS`] keys in one commit, all or nothing. 201 with
/// `{"items":[…]}`, each as `POST /v1/api-keys` answers, in order. If any
/// spec is refused nothing is created: the error (the first refused
/// spec's status and code) lists every refused spec in `errors`, with its
/// index and a message naming its path (`keys[3].permissions: …`).
pub(crate) async fn create_keys(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "keys:write")?;
    let spec: wire::BatchSpec = json::read_within(&headers, &body, json::MAX_BATCH_BODY)?;
    let total = spec.keys.len();
    if !(1..=json::MAX_BATCH_SPECS).contains(&total) {
        let why = format!("must hold 1 to {} key specs, got {total}", json::MAX_BATCH_SPECS);
        return Err(ApiError::invalid("keys", why));
    }
    let mut items = Vec::with_capacity(total);
    let mut refused = Vec::new();
    let inherited = inherited_permissions(&state, caller_id).await?;
    let keys = body::Path::root().field("keys");
    for (i, spec) in spec.keys.into_iter().enumerate() {
        match json::batch_key(spec, &keys.index(i), &inherited) {
            Ok(item) => items.push(item),
            Err(e) => refused.push((i, e)),
        }
    }
    if !refused.is_empty() {
        return Ok(batch_refused(total, refused));
    }
    let created = audited(&state.engine, move |e| e.create_keys(ws, items, &Actor::Key(caller_id))).await;
    match created {
        Ok(keys) => {
            crate::envelope::note_audit("keys.created", format_args!("{} keys", keys.len()));
            let items =
                keys.iter().map(|k| json::created_key_view(&k.info, k.token.as_ref(), k.signing.as_ref())).collect();
            Ok(Reply::created(wire::value(&wire::CreatedKeys { items })))
        }
        Err(keyward::Error::Batch { total, refused }) => Ok(batch_refused(
            total,
            refused.into_iter().map(|(i, e)| (i, item_error(keys.index(i).as_str(), e))).collect(),
        )),
        Err(e) => Err(engine_error(e)),
    }
}

/// An engine refusal of one spec of a batch, named by its path.
fn item_error(path: &str, e: keyward::Error) -> ApiError {
    match e {
        keyward::Error::Invalid { field, message } => ApiError::invalid(&format!("{path}.{field}"), message),
        e => {
            let e = engine_error(e);
            ApiError { message: format!("{path}: {}", e.message), ..e }
        }
    }
}

/// The answer to a batch with refused specs: nothing was created.
fn batch_refused(total: usize, refused: Vec<(usize, ApiError)>) -> Reply {
    let errors: Vec<Value> =
        refused.iter().map(|(i, e)| json!({"index": i, "code": e.code, "message": e.message})).collect();
    let Some((_, first)) = refused.into_iter().next() else {
        return Reply::error(ApiError::invalid("keys", "refused"));
    };
    let message = format!("{} of {total} keys refused, none created; {}", errors.len(), first.message);
    Reply::error(ApiError { message, ..first }).detail("errors", Value::Array(errors))
}

/// The permissions of the calling key, for a key created without any: it
/// gets what its creator holds.
async fn inherited_permissions(
    state: &AppState,
    caller: KeyId,
) -> Result<Vec<keyward_core::permission::Permission>, ApiError> {
    off_workers(&state.engine, move |e| e.key(caller)).await.map(|k| k.permissions).map_err(engine_error)
}

/// `POST /api/v1/keys` `{"title"}`: a key created the APIMall way, with its
/// creator's permissions, answered with the key's serial as `id`.
pub(crate) async fn apimall_create_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "keys:write")?;
    // APIMall's own message for a title missing, not a string, or blank.
    let invalid_title = || ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "Invalid title");
    let spec: wire::ApimallSpec =
        json::read(&headers, &body).map_err(|e| if e.message.starts_with("title: ") { invalid_title() } else { e })?;
    let title = Some(spec.title).filter(|t| !t.trim().is_empty()).ok_or_else(invalid_title)?;
    let spec =
        NewKey { name: title, permissions: inherited_permissions(&state, caller_id).await?, ..NewKey::default() };
    let created =
        audited(&state.engine, move |e| e.create_key(ws, spec, &Actor::Key(caller_id))).await.map_err(engine_error)?;
    let info = &created.info;
    crate::envelope::note_audit("key.created", info.id);
    Ok(Reply::created(wire::value(&wire::ApimallKey {
        id: info.serial,
        title: info.name.clone(),
        status: "created".into(),
        created_at: info.created_at.to_rfc3339(),
        api_key: created.token.expose().to_owned(),
    })))
}

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "keys:read")?;
    let mut limit = 20usize;
    let mut cursor = None;
    for (k, v) in &q {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=keyward::MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 100"))?;
            }
            "cursor" => cursor = Some(v.clone()),
            _ => {}
        }
    }
    let page = state.engine.list_keys(ws, limit, cursor.as_deref()).map_err(engine_error)?;
    Ok(Reply::ok(wire::value(&wire::KeyPage {
        items: page.items.iter().map(json::key_view).collect(),
        next_cursor: page.next_cursor,
    })))
}

pub(crate) async fn get_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Reply, ApiError> {
    let (_, key) = caller_and_key(&state, &peer, &headers, "keys:read", &id).await?;
    Ok(Reply::ok(key_json(&key)))
}

pub(crate) async fn update_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, key) = caller_and_key(&state, &peer, &headers, "keys:write", &id).await?;
    let id = key.id;
    let update = json::key_update(json::read(&headers, &body)?)?;
    // Every field in one engine call: one commit, all of it or nothing.
    let info = audited(&state.engine, move |e| e.update_key(id, update, &Actor::Key(caller_id)))
        .await
        .map_err(engine_error)?;
    crate::envelope::note_audit("key.updated", id);
    Ok(Reply::ok(key_json(&info)))
}

pub(crate) async fn delete_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, key) = caller_and_key(&state, &peer, &headers, "keys:write", &id).await?;
    let id = key.id;
    audited(&state.engine, move |e| e.delete_key(id, &Actor::Key(caller_id))).await.map_err(engine_error)?;
    crate::envelope::note_audit("key.deleted", id);
    Ok(Reply::ok(wire::value(&wire::Deleted { id: id.to_string(), deleted: true })))
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    // Read (and drop) any body so the connection stays reusable.
    _body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, key) = caller_and_key(&state, &peer, &headers, "keys:write", &id).await?;
    let info =
        audited(&state.engine, move |e| e.revoke_key(key.id, &Actor::Key(caller_id))).await.map_err(engine_error)?;
    crate::envelope::note_audit("key.revoked", info.id);
    Ok(Reply::ok(key_json(&info)))
}

pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, key) = caller_and_key(&state, &peer, &headers, "keys:write", &id).await?;
    let id = key.id;
    // The body may be empty: no grace.
    let spec: wire::RotateSpec = json::read_or_default(&headers, &body)?;
    let grace_s = spec.grace_seconds.unwrap_or(0);
    let grace_ms = grace_s.checked_mul(1000).ok_or_else(|| ApiError::invalid("grace_seconds", "too large"))?;
    let created = audited(&state.engine, move |e| e.rotate_key(id, grace_ms, &Actor::Key(caller_id)))
        .await
        .map_err(engine_error)?;
    crate::envelope::note_audit("key.rotated", id);
    Ok(Reply::ok(wire::value(&json::rotated_key_view(&created, id))))
}

pub(crate) async fn key_usage(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Reply, ApiError> {
    let (_, key) = caller_and_key(&state, &peer, &headers, "keys:read", &id).await?;
    let id = key.id;
    let u = off_workers(&state.engine, move |e| e.usage(id)).await.map_err(engine_error)?;
    Ok(Reply::ok(wire::value(&wire::Usage {
        id: id.to_string(),
        last_used_at: u.last_used_at.map(UnixMillis::to_rfc3339),
        valid: u.valid,
        refused: u.refused,
        credits_remaining: u.quota.credits_remaining,
        daily_used: u.daily_used,
        daily_remaining: u.quota.daily_remaining,
        rate: u.quota.rate.map(|r| wire::RateState { limit: r.limit, remaining: r.remaining, reset_ms: r.reset_ms }),
    })))
}

/// What a history request asks: `granularity` (default hour), `from` and
/// `to` (RFC 3339 or Unix ms; by default the last hour of minutes, day of
/// hours or 30 days of days, up to now).
fn history_query(
    state: &AppState,
    q: &[(String, String)],
) -> Result<(keyward::Granularity, UnixMillis, UnixMillis), ApiError> {
    let mut granularity = keyward::Granularity::Hour;
    let (mut from, mut to) = (None, None);
    let time = |field: &str, v: &str| {
        UnixMillis::parse_rfc3339(v)
            .or_else(|| v.parse::<u64>().ok().map(UnixMillis))
            .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 time or Unix milliseconds"))
    };
    for (k, v) in q {
        match k.as_str() {
            "granularity" => {
                granularity = keyward::Granularity::parse(v)
                    .ok_or_else(|| ApiError::invalid("granularity", "must be minute, hour or day"))?;
            }
            "from" => from = Some(time("from", v)?),
            "to" => to = Some(time("to", v)?),
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let to = to.unwrap_or_else(|| granularity.default_range(state.engine.now()).1);
    let from = from.unwrap_or_else(|| granularity.default_range(UnixMillis(to.get().saturating_sub(1))).0);
    Ok((granularity, from, to))
}

/// A usage history as the API answers it (the `data` of the history
/// routes; `keyward key usage --json` prints the same).
pub fn history_json(
    g: keyward::Granularity,
    from: UnixMillis,
    to: UnixMillis,
    buckets: &[keyward::HistoryBucket],
) -> Value {
    let granularity = match g {
        keyward::Granularity::Minute => wire::Granularity::Minute,
        keyward::Granularity::Day => wire::Granularity::Day,
        _ => wire::Granularity::Hour,
    };
    wire::value(&wire::History {
        granularity,
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        buckets: buckets
            .iter()
            .map(|b| wire::Bucket {
                start: b.start.to_rfc3339(),
                counts: b.counts.iter().map(|(c, n)| (c.as_str().to_owned(), *n)).collect(),
            })
            .collect(),
    })
}

/// `GET /v1/api-keys/{id}/usage/history`.
pub(crate) async fn key_history(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Reply, ApiError> {
    let (_, key) = caller_and_key(&state, &peer, &headers, "keys:read", &id).await?;
    let (g, from, to) = history_query(&state, &q)?;
    let id = key.id;
    let buckets = off_workers(&state.engine, move |e| e.key_history(id, g, from, to)).await.map_err(engine_error)?;
    Ok(Reply::ok(history_json(g, from, to, &buckets)))
}

/// `GET /v1/usage/history`: the caller's workspace.
pub(crate) async fn workspace_history(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "keys:read")?;
    let (g, from, to) = history_query(&state, &q)?;
    let buckets =
        off_workers(&state.engine, move |e| e.workspace_history(ws, g, from, to)).await.map_err(engine_error)?;
    Ok(Reply::ok(history_json(g, from, to, &buckets)))
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "audit:read")?;
    let mut limit = 50usize;
    let mut after = 0u64;
    for (k, v) in &q {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=keyward::MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 100"))?
            }
            "cursor" => {
                after =
                    v.parse::<u64>().map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))?
            }
            _ => {}
        }
    }
    let page = off_workers(&state.engine, move |e| e.audit(Some(ws), after, limit)).await.map_err(engine_error)?;
    let items = page.items.iter().map(json::audit_view).collect();
    Ok(Reply::ok(wire::value(&wire::AuditPage { items, next_cursor: page.next_cursor })))
}

// ---- tools ----------------------------------------------------------------

pub(crate) async fn create_tool(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "tools:write")?;
    let spec = json::new_tool(json::read(&headers, &body)?)?;
    let t =
        audited(&state.engine, move |e| e.create_tool(ws, spec, &Actor::Key(caller_id))).await.map_err(engine_error)?;
    crate::envelope::note_audit("tool.created", &t.policy.name);
    Ok(Reply::created(tool_json(&t)))
}

pub(crate) async fn update_tool(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "tools:write")?;
    let update = json::tool_update(json::read(&headers, &body)?)?;
    let t = audited(&state.engine, move |e| e.update_tool(ws, &name, update, &Actor::Key(caller_id)))
        .await
        .map_err(engine_error)?;
    crate::envelope::note_audit("tool.updated", &t.policy.name);
    Ok(Reply::ok(tool_json(&t)))
}

pub(crate) async fn list_tools(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "tools:read")?;
    let tools = state.engine.tools(ws).map_err(engine_error)?;
    Ok(Reply::ok(wire::value(&wire::ToolList { items: tools.iter().map(json::tool_view).collect() })))
}

// ---- verification ---------------------------------------------------------

pub(crate) fn limited_headers(mut reply: Reply, v: &Verdict) -> Reply {
    crate::envelope::note_key(v.key_id, v.workspace_id);
    if matches!(v.code.http_status(), 429 | 503)
        && let Some(ms) = v.retry_after_ms
    {
        reply = reply.header(header::RETRY_AFTER, ms.div_ceil(1000).to_string());
    }
    if let Some(r) = &v.quota.rate {
        reply = reply
            .header(HeaderName::from_static("ratelimit-limit"), r.limit.to_string())
            .header(HeaderName::from_static("ratelimit-remaining"), r.remaining.to_string())
            .header(HeaderName::from_static("ratelimit-reset"), r.reset_ms.div_ceil(1000).to_string());
    } else if v.code.http_status() == 429 {
        let reset = v.retry_after_ms.unwrap_or(0).div_ceil(1000).to_string();
        reply = reply
            .header(HeaderName::from_static("ratelimit-limit"), "0")
            .header(HeaderName::from_static("ratelimit-remaining"), "0")
            .header(HeaderName::from_static("ratelimit-reset"), reset);
    }
    reply
}

// ---- workspaces -------------------------------------------------------------

/// The caller's workspace, if `id` names it (404 otherwise).
fn own_workspace(ws: WorkspaceId, id: &str) -> Result<WorkspaceId, ApiError> {
    match WorkspaceId::parse(id) {
        Ok(w) if w == ws => Ok(w),
        _ => Err(ApiError::not_found(format!("workspace {}", id.chars().take(40).collect::<String>()))),
    }
}

pub(crate) async fn get_workspace(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "workspaces:read")?;
    let ws = own_workspace(ws, &id)?;
    Ok(Reply::ok(json::workspace_json(&state.engine.workspace(ws).map_err(engine_error)?)))
}

pub(crate) async fn update_workspace(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (caller_id, ws) = caller(&state, &peer, &headers, "workspaces:write")?;
    let ws = own_workspace(ws, &id)?;
    let update = json::workspace_update(json::read(&headers, &body)?)?;
    let w = audited(&state.engine, move |e| e.update_workspace(ws, update, &Actor::Key(caller_id)))
        .await
        .map_err(engine_error)?;
    crate::envelope::note_audit("workspace.updated", ws);
    Ok(Reply::ok(json::workspace_json(&w)))
}

/// `POST /v1/verify`.
pub(crate) async fn verify(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    // Only a key allowed to verify (`keys:verify`) may test keys, and only
    // its own workspace's: a key of another one is NOT_FOUND.
    let (_, ws) = caller(&state, &peer, &headers, "keys:verify")?;
    let spec: wire::VerifySpec = json::read(&headers, &body)?;
    let at = body::Path::root();
    let hold = spec.hold.unwrap_or(false);
    let key = spec.key.as_str();
    let tool = spec.tool.as_deref();
    let ip = match &spec.ip {
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| ApiError::invalid("ip", "must be an IP address"))?),
        None => None,
    };
    let perms = json::strings(spec.permissions.unwrap_or_default(), &at.field("permissions"))?;
    let perm_refs: Vec<&str> = perms.iter().map(String::as_str).collect();
    let credits = spec.cost.unwrap_or(1);
    let req = keyward::Request { ip, tool, permissions: &perm_refs, cost: Cost { credits, rates: &[] } };
    let checks = keyward::Checks { workspace: Some(ws), ..Default::default() };
    let out = verifying(&state.engine, || state.engine.verify_with(key, &req, &checks));
    let v = &out.verdict;
    // Held leases stay taken until released or expired; others are freed now:
    // a plain verify call is not a job.
    let lease_id = if hold && v.is_valid() { state.engine.hold(v, tool) } else { None };
    if lease_id.is_none()
        && let Some(id) = v.key_id
        && !v.leases.is_empty()
    {
        let (tool, leases) = (tool.map(str::to_owned), v.leases.clone());
        let _ = off_workers(&state.engine, move |e| Ok(e.release(id, tool.as_deref(), &leases))).await;
    }
    crate::envelope::note_key(v.key_id, v.workspace_id);
    Ok(Reply::ok_view(&json::verify_view(&out, lease_id)).verdict(v.code.as_str()))
}

/// `POST /v1/leases/{lease_id}/release`: frees leases a `/v1/verify` call
/// with `"hold": true` kept. 404 once released or expired.
pub(crate) async fn release_lease(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Path(lease_id): Path<String>,
    _body: Bytes,
) -> Result<Reply, ApiError> {
    let (_, ws) = caller(&state, &peer, &headers, "keys:verify")?;
    off_workers(&state.engine, move |e| e.release_held(ws, &lease_id)).await.map_err(engine_error)?;
    Ok(Reply::ok(wire::value(&wire::Released { released: true })))
}

/// `GET /v1/auth` for nginx `auth_request`.
pub(crate) async fn auth(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let tool = headers.get("x-keyward-tool").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cred = match credential(&headers, false) {
        Ok(c) => c,
        Err(e) => return Reply::from(e).verdict("MALFORMED").into_response(),
    };
    let ip = client_ip(&state, &peer, &headers);
    let req = keyward::Request { ip, tool: tool.as_deref(), ..Default::default() };
    let v = verifying(&state.engine, || state.engine.verify_credential(&cred, &req));
    // On a shared store a release is a round trip: off the workers.
    if let Some(id) = v.key_id
        && !v.leases.is_empty()
    {
        let (tool, leases) = (tool.clone(), v.leases.clone());
        let _ = off_workers(&state.engine, move |e| Ok(e.release(id, tool.as_deref(), &leases))).await;
    }
    if v.is_valid() {
        let key = v.key_id.map(|k| k.to_string()).unwrap_or_default();
        return limited_headers(Reply::ok(wire::value(&wire::AuthResult { key_id: key.clone() })), &v)
            .header(HeaderName::from_static("x-keyward-key-id"), key)
            .verdict(v.code.as_str())
            .into_response();
    }
    // nginx accepts only 2xx, 401 and 403 from an auth subrequest; 404 (unknown
    // tool) is reported as 403, and 429 passes through for `error_page` to map.
    let mut err = verdict_error(&v, "refused");
    if err.status == StatusCode::NOT_FOUND {
        err.status = StatusCode::FORBIDDEN;
    }
    limited_headers(Reply::error(err), &v).verdict(v.code.as_str()).into_response()
}

/// `POST /v1/AuthenticateUser`.
pub(crate) async fn authenticate_user(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Reply {
    let signed = match credential(&headers, true) {
        Ok(Credential::Signed(s)) => s,
        Ok(_) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "MALFORMED", "send APIKey, Signature, UserId and Nonce")
                .into();
        }
        Err(e) => return Reply::from(e).verdict("MALFORMED"),
    };
    let ip = client_ip(&state, &peer, &headers);
    match login(&state.engine, signed, ip).await {
        Ok(s) => {
            crate::envelope::note_key(Some(s.key_id), None);
            Reply::ok(wire::value(&wire::Session {
                authenticated: true,
                session_token: s.token.expose().to_owned(),
                expires_at: s.expires_at.to_rfc3339(),
                user_id: s.user_id.clone(),
                key_id: s.key_id.to_string(),
            }))
            .verdict("VALID")
        }
        Err(v) => {
            let mut e = verdict_error(&v, "authentication refused");
            if e.status != StatusCode::TOO_MANY_REQUESTS && e.status != StatusCode::SERVICE_UNAVAILABLE {
                e.status = StatusCode::UNAUTHORIZED;
            }
            limited_headers(Reply::error(e), &v).verdict(v.code.as_str())
        }
    }
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 `{"status":"degraded", …}`
/// while the store fails to commit (verification keeps answering from
/// memory; changes fail and change nothing), a flush panicked, or a shared
/// store does not answer (`store_unreachable_ms`; `store_stale` once keys
/// are refused).
pub(crate) async fn healthz(State(state): State<AppState>) -> Reply {
    let h = state.engine.health();
    match &h.degraded {
        None => Reply::ok(json!({"status": "ok"})),
        Some(reason) => Reply::status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "degraded",
                "reason": reason,
                "flush_failures": h.flush_failures,
                "write_failures": h.write_failures,
                "store_unreachable_ms": h.store_unreachable_ms,
                "store_stale": h.store_stale,
            }),
        ),
    }
}

/// `GET /metrics`: the Prometheus text, to whom [`crate::MetricsAccess`] allows.
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.metrics_access {
        crate::MetricsAccess::Open => {}
        crate::MetricsAccess::Token(token) => {
            use subtle::ConstantTimeEq;
            // The scheme is case-insensitive (RFC 9110); the token is not.
            let sent = headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .and_then(|v| v.split_at_checked(7))
                .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case(b"bearer ").then_some(token))
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(token.as_bytes())) {
                let e = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send Authorization: Bearer <metrics token>",
                );
                return Reply::error(e).header(header::WWW_AUTHENTICATE, "Bearer").into_response();
            }
        }
        // Served by `metrics_router` on its own listener only.
        _ => return Reply::from(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")).into_response(),
    }
    let text = state.metrics.render(state.engine.live_key_count(), state.engine.key_count(), &state.engine.health());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// No route: a path under the gateway (`//`, dot segments, several
/// segments) gets the gateway's path rule, as at the edge; others 404.
pub(crate) async fn not_found(uri: Uri) -> Reply {
    if uri.path().starts_with("/api/v2/") {
        return match keyward_core::path::gateway_tool(uri.path()) {
            Err(e) => Reply::error(ApiError::new(StatusCode::UNAUTHORIZED, Code::Malformed.as_str(), e.to_string()))
                .verdict(Code::Malformed.as_str()),
            Ok(_) => Reply::error(ApiError::new(StatusCode::NOT_FOUND, Code::UnknownTool.as_str(), "no such tool"))
                .verdict(Code::UnknownTool.as_str()),
        };
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into()
}
