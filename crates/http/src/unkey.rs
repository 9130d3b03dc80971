//! A subset of Unkey's v2 API (`POST /v2/<resource>.<op>`), so Unkey's
//! official SDKs (`@unkey/api`) work unchanged against `keyward serve`.
//!
//! Only the wire format lives here; every decision is the engine's: an Unkey
//! "API" (`apiId`) is a keyward workspace, a root key is any key of that
//! workspace holding `keys:write`, `keys:read` or `keys:verify` (or `*`),
//! named rate limits with `autoApply`, per-call costs, ad-hoc limits and the
//! permission query language are features of `keyward-core`, and roles and
//! `externalId` are stored on the key. `docs/compat.md` lists every field
//! and operation, supported or not.
//!
//! Responses follow Unkey exactly, because the SDK validates them strictly:
//! success is HTTP 200 with `{"meta":{"requestId"},"data"}`; errors are
//! `{"meta","error":{"title","detail","status","type"}}` (400 adds
//! `errors[{location,message,fix?}]`), as `application/json`, except 429 as
//! `application/problem+json`. Optional fields are left out rather than sent
//! as `null` (`credits.remaining` excepted), numbers are integers, and times
//! are Unix milliseconds. `verifyKey` answers 200 for every verdict.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use keyward::{Actor, Checks, CreditChange, KeyInfo, KeyUpdate, NewKey};
use keyward_core::limits::{
    AUTO_APPLIED, Cost, Credits, RateCost, RateLimit, RateReport, Refill, RefillInterval, valid_rate_name,
};
use keyward_core::permission::Permission;
use keyward_core::query::PermissionQuery;
use keyward_core::{Code, KeyHash, KeyId, Limits, Prefix, UnixMillis, WorkspaceId};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::blocking::{off_workers, verifying};
use crate::envelope::{RequestId, VerdictTag};
use crate::json::MAX_BODY;
use crate::routes::{Peer, client_ip};

/// Name given to keys created without one: Unkey's `name` is optional,
/// keyward's is not.
pub(crate) const DEFAULT_NAME: &str = "unnamed";
/// Largest `byteLength` keyward can honour: its tokens carry 30 random base62
/// characters, 178 bits, at least 22 bytes' worth.
const MAX_BYTE_LENGTH: u64 = 22;
/// Unkey's smallest `byteLength`.
const MIN_BYTE_LENGTH: u64 = 16;
/// Most entries in a `ratelimits` array.
const MAX_RATELIMITS: usize = 64;
/// Most entries in any other array.
const MAX_ARRAY: usize = 256;
/// Unkey's largest page.
const MAX_LIMIT: u64 = 100;
/// Where Unkey documents its error types; the `type` of an error is this
/// followed by the error's code, as Unkey sends it.
const ERROR_DOCS: &str = "https://unkey.com/docs/errors/";

/// The `/v2/` routes, with their own request-id and metrics middleware
/// instead of keyward's envelope.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/keys.createKey", post(create_key).fallback(method_not_allowed))
        .route("/v2/keys.verifyKey", post(verify_key).fallback(method_not_allowed))
        .route("/v2/keys.getKey", post(get_key).fallback(method_not_allowed))
        .route("/v2/keys.whoami", post(whoami).fallback(method_not_allowed))
        .route("/v2/keys.updateKey", post(update_key).fallback(method_not_allowed))
        .route("/v2/keys.deleteKey", post(delete_key).fallback(method_not_allowed))
        .route("/v2/keys.rerollKey", post(reroll_key).fallback(method_not_allowed))
        .route("/v2/keys.updateCredits", post(update_credits).fallback(method_not_allowed))
        .route("/v2/apis.listKeys", post(list_keys).fallback(method_not_allowed))
        .route("/v2/{*op}", any(unsupported))
        .layer(axum::middleware::from_fn(stamp))
}

/// Adds the request id (given by the router's stamp) as `meta.requestId`.
async fn stamp(req: Request, next: Next) -> Response {
    let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let mut resp = next.run(req).await;
    // The body was built before the id was known: fill it in.
    if let Some(Pending(mut body)) = resp.extensions_mut().remove::<Pending>() {
        if let Value::Object(m) = &mut body {
            m.insert("meta".into(), json!({"requestId": id}));
        }
        *resp.body_mut() = Body::from(body.to_string());
    }
    resp
}

/// A response body waiting for `meta.requestId`.
#[derive(Clone)]
struct Pending(Value);

fn respond(status: StatusCode, body: Value) -> Response {
    let mut resp = status.into_response();
    // Unkey sends its 429 as a problem document; the SDK matches on it.
    let ctype = if status == StatusCode::TOO_MANY_REQUESTS { "application/problem+json" } else { "application/json" };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.extensions_mut().insert(Pending(body));
    resp
}

fn ok(data: Value) -> Response {
    respond(StatusCode::OK, json!({ "data": data }))
}

// ---- errors ---------------------------------------------------------------

/// One entry of a 400's `errors`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldError {
    location: String,
    message: String,
    fix: Option<String>,
}

/// An Unkey error response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    status: StatusCode,
    /// Unkey's error code path, e.g. `unkey/data/key_not_found`.
    code: &'static str,
    detail: String,
    /// Only for 400.
    errors: Vec<FieldError>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new() }
    }

    /// 400 naming the offending field.
    fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        let (location, message) = (location.into(), message.into());
        let detail = format!("{location}: {message}");
        let mut p = Self::new(StatusCode::BAD_REQUEST, "unkey/application/invalid_input", detail);
        p.errors.push(FieldError { location, message, fix: None });
        p
    }

    /// Adds a suggestion to the (single) field error.
    fn fix(mut self, fix: impl Into<String>) -> Self {
        if let Some(e) = self.errors.last_mut() {
            e.fix = Some(fix.into());
        }
        self
    }

    fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    fn title(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        }
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "title": self.title(),
            "detail": self.detail,
            "status": self.status.as_u16(),
            "type": format!("{ERROR_DOCS}{}", self.code),
        });
        if self.status == StatusCode::BAD_REQUEST
            && let Value::Object(m) = &mut error
        {
            let errors: Vec<Value> = self
                .errors
                .iter()
                .map(|e| {
                    let mut v = json!({"location": e.location, "message": e.message});
                    if let (Some(fix), Value::Object(m)) = (&e.fix, &mut v) {
                        m.insert("fix".into(), fix.clone().into());
                    }
                    v
                })
                .collect();
            m.insert("errors".into(), errors.into());
        }
        json!({ "error": error })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        respond(self.status, self.body())
    }
}

/// Maps an engine error onto Unkey's errors; a 400 names the field as Unkey
/// spells it.
fn engine_problem(e: keyward::Error) -> Problem {
    use keyward::Error as E;
    match e {
        E::NotFound { kind: "key", id } => {
            Problem::not_found("unkey/data/key_not_found", format!("key {id} not found"))
        }
        E::NotFound { kind: "workspace", id } => {
            Problem::not_found("unkey/data/api_not_found", format!("API {id} not found"))
        }
        E::NotFound { kind, id } => Problem::not_found("unkey/data/not_found", format!("{kind} {id} not found")),
        E::Invalid { field, message } => Problem::invalid(format!("body.{}", unkey_field(field)), message),
        E::InsufficientPermissions(m) => {
            Problem::new(StatusCode::FORBIDDEN, "unkey/authorization/insufficient_permissions", m)
        }
        E::PlanInactive => Problem::new(
            StatusCode::FORBIDDEN,
            "unkey/authorization/workspace_disabled",
            "the workspace plan has no API access",
        ),
        E::AlreadyExists { kind, id } => {
            Problem::new(StatusCode::CONFLICT, "unkey/data/conflict", format!("{kind} {id} already exists"))
        }
        E::Conflict(m) => Problem::new(StatusCode::CONFLICT, "unkey/data/conflict", m),
        // The store's own message (file paths, server addresses) is for
        // operators: `/healthz` shows it; the client learns what to do.
        E::Storage(_) | E::Io(_) | E::Corrupt(_) => {
            crate::envelope::note_error(&e);
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unkey/application/service_unavailable", STORE_DOWN)
        }
        _ => {
            crate::envelope::note_error(&e);
            let detail = crate::envelope::internal_message(&crate::envelope::current_request_id());
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "unkey/application/unexpected_error", detail)
        }
    }
}

/// What a client is told when the store could not record a change.
pub(crate) const STORE_DOWN: &str = "not changed: the store is unavailable; retry later";

/// Unkey's name for a keyward field.
fn unkey_field(field: &str) -> &str {
    match field {
        "external_id" => "externalId",
        "expires_at" => "expires",
        "limits" => "ratelimits",
        other => other,
    }
}

async fn method_not_allowed(body: Body) -> Response {
    drain(body).await;
    let mut resp = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "unkey/application/method_not_allowed", "use POST")
        .into_response();
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// Any other `/v2/` operation.
async fn unsupported(body: Body) -> Response {
    drain(body).await;
    Problem::not_found(
        "unkey/application/route_not_found",
        "keyward serves only keys.createKey, keys.verifyKey, keys.getKey, keys.whoami, keys.updateKey, \
         keys.deleteKey, keys.rerollKey, keys.updateCredits and apis.listKeys under /v2/",
    )
    .into_response()
}

/// Reads (and drops) a body: a body left unread makes hyper close the
/// connection, which a pooling client only finds out on its next request.
async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, MAX_BODY).await;
}

// ---- the verdict codes ----------------------------------------------------

/// Unkey's `verifyKey` code for a keyward verdict code. Unkey has fewer codes:
/// every refusal by a quota other than credits is `RATE_LIMITED`, a key that
/// does not exist for the caller (unknown, malformed, revoked, deleted) is
/// `NOT_FOUND`, and refusals Unkey has no code for are `FORBIDDEN`.
pub(crate) fn unkey_code(code: Code) -> &'static str {
    match code {
        Code::Valid => "VALID",
        Code::Malformed | Code::NotFound | Code::Revoked => "NOT_FOUND",
        Code::Expired => "EXPIRED",
        Code::Disabled => "DISABLED",
        Code::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
        Code::RateLimited | Code::Cooldown | Code::DailyLimit | Code::ConcurrencyLimit => "RATE_LIMITED",
        Code::UsageExhausted => "USAGE_EXCEEDED",
        _ => "FORBIDDEN",
    }
}

// ---- request bodies -------------------------------------------------------

/// A field as sent: absent, `null`, or a value.
#[derive(Clone, Copy, Debug)]
enum Slot<'a> {
    Absent,
    Null,
    Set(&'a Value),
}

/// Typed access to a JSON object; errors name the field as Unkey does
/// (`body.credits.refill.amount`).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    fn loc(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    fn slot(&self, key: &str) -> Slot<'a> {
        match self.map.get(key) {
            None => Slot::Absent,
            Some(Value::Null) => Slot::Null,
            Some(v) => Slot::Set(v),
        }
    }

    /// The value, `null` counting as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.slot(key) {
            Slot::Set(v) => Some(v),
            _ => None,
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Problem::invalid(self.loc(key), "must be a string")),
        }
    }

    fn required_string(&self, key: &str) -> Result<&'a str, Problem> {
        self.string(key)?.ok_or_else(|| Problem::invalid(self.loc(key), "is required"))
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Problem::invalid(self.loc(key), "must be true or false")),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<u64>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| Problem::invalid(self.loc(key), "must be a non-negative integer"))
            }
        }
    }

    fn required_integer(&self, key: &str) -> Result<u64, Problem> {
        self.integer(key)?.ok_or_else(|| Problem::invalid(self.loc(key), "is required"))
    }

    fn object(&self, key: &str) -> Result<Option<Obj<'a>>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => self.as_object(v, self.loc(key)).map(Some),
        }
    }

    fn as_object(&self, v: &'a Value, at: String) -> Result<Obj<'a>, Problem> {
        match v {
            Value::Object(map) => Ok(Obj { map, at }),
            _ => Err(Problem::invalid(at, "must be an object")),
        }
    }

    fn array(&self, key: &str, max: usize) -> Result<Option<&'a Vec<Value>>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() <= max => Ok(Some(a)),
            Some(Value::Array(_)) => Err(Problem::invalid(self.loc(key), format!("at most {max} entries"))),
            Some(_) => Err(Problem::invalid(self.loc(key), "must be an array")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, Problem> {
        let Some(a) = self.array(key, MAX_ARRAY)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Problem::invalid(format!("{}[{i}]", self.loc(key)), "must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A JSON object to store as metadata.
    fn meta(&self, key: &str) -> Result<Option<Value>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(_) => Err(Problem::invalid(self.loc(key), "must be an object")),
        }
    }

    fn permissions(&self, key: &str) -> Result<Option<Vec<Permission>>, Problem> {
        let Some(list) = self.strings(key)? else { return Ok(None) };
        list.iter()
            .enumerate()
            .map(|(i, p)| {
                Permission::parse(p).map_err(|e| {
                    Problem::invalid(format!("{}[{i}]", self.loc(key)), e.to_string())
                        .fix("use letters, digits and : . _ - with an optional trailing *, e.g. documents.read")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn key_id(&self) -> Result<KeyId, Problem> {
        let raw = self.required_string("keyId")?;
        KeyId::parse(raw)
            .map_err(|_| Problem::not_found("unkey/data/key_not_found", format!("key {} not found", quote(raw))))
    }

    /// `credits` of createKey: `{remaining: int|null, refill?}`. `None` is
    /// unlimited.
    fn credits(&self, key: &str) -> Result<Option<Credits>, Problem> {
        let Some(c) = self.object(key)? else { return Ok(None) };
        let refill = match c.object("refill")? {
            Some(r) => Some(r.refill()?),
            None => None,
        };
        match (c.integer("remaining")?, refill) {
            (Some(initial), refill) => Ok(Some(Credits { initial, refill })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Problem::invalid(c.loc("remaining"), "is required with a refill")
                .fix("set remaining to the starting balance")),
        }
    }

    /// A refill object: `{interval: daily|monthly, amount, refillDay?}`.
    fn refill(&self) -> Result<Refill, Problem> {
        let amount = self.required_integer("amount")?;
        let day = self.integer("refillDay")?;
        let interval = match self.required_string("interval")? {
            "daily" => {
                if day.is_some() {
                    return Err(Problem::invalid(self.loc("refillDay"), "only applies to a monthly refill"));
                }
                RefillInterval::Daily
            }
            "monthly" => {
                let day = u8::try_from(day.unwrap_or(1))
                    .ok()
                    .filter(|d| (1..=31).contains(d))
                    .ok_or_else(|| Problem::invalid(self.loc("refillDay"), "must be 1 to 31"))?;
                RefillInterval::Monthly { day }
            }
            _ => {
                return Err(Problem::invalid(self.loc("interval"), "must be \"daily\" or \"monthly\""));
            }
        };
        Ok(Refill { interval, amount })
    }

    /// `ratelimits` of createKey and updateKey: `[{name, limit, duration, autoApply?}]`.
    fn rate_limits(&self, key: &str) -> Result<Option<Vec<RateLimit>>, Problem> {
        let Some(list) = self.array(key, MAX_RATELIMITS)? else { return Ok(None) };
        let mut out: Vec<RateLimit> = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let r = self.as_object(v, format!("{}[{i}]", self.loc(key)))?;
            let name = rate_name(&r)?;
            if out.iter().any(|o| o.name == name) {
                return Err(Problem::invalid(r.loc("name"), format!("`{name}` is used twice")));
            }
            let limit = positive(&r, "limit", r.required_integer("limit")?)?;
            let window_ms = positive(&r, "duration", r.required_integer("duration")?)?;
            let auto_apply = r.boolean("autoApply")?.unwrap_or(false);
            out.push(RateLimit { name: name.to_owned(), limit, window_ms, auto_apply });
        }
        Ok(Some(out))
    }
}

fn rate_name<'a>(r: &Obj<'a>) -> Result<&'a str, Problem> {
    let name = r.required_string("name")?;
    if valid_rate_name(name) {
        Ok(name)
    } else {
        Err(Problem::invalid(r.loc("name"), "must be 1 to 64 characters of A-Z a-z 0-9 . _ -"))
    }
}

fn positive(r: &Obj<'_>, key: &str, n: u64) -> Result<u64, Problem> {
    if n == 0 { Err(Problem::invalid(r.loc(key), "must be at least 1")) } else { Ok(n) }
}

/// At most 40 characters of user input, for messages.
fn quote(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Reads a JSON object body (Unkey's SDKs always send one).
async fn read_json(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, Problem> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "unkey/application/request_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    })?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(Problem::invalid("header.Content-Type", "must be application/json"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::invalid("body", "must be a JSON object")),
        Err(e) => Err(Problem::invalid("body", format!("invalid JSON: {e}"))),
    }
}

fn root(map: &Map<String, Value>) -> Obj<'_> {
    Obj { map, at: "body".into() }
}

// ---- the caller -----------------------------------------------------------

/// The root key: `Authorization: Bearer <key>` holding `need`. No header (or
/// not a bearer token) is 400; a key that does not verify, 401; one lacking
/// the permission or refused by its IP rules or plan, 403; one over its own
/// rate limits, 429. Root keys' rate limits count every call; their credits
/// are not spent.
fn authorize(state: &AppState, peer: &Peer, headers: &HeaderMap, need: &str) -> Result<(KeyId, WorkspaceId), Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let missing = headers.get(header::AUTHORIZATION).is_none();
        let message = if missing { "is missing" } else { "is sent more than once" };
        return Err(Problem::invalid("header.Authorization", message).fix("send Authorization: Bearer <root key>"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let v = v.trim_matches([' ', '\t']);
            let (scheme, rest) = v.split_once([' ', '\t'])?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim_matches([' ', '\t']))
        })
        .filter(|t| !t.is_empty() && !t.contains([' ', '\t']))
        .ok_or_else(|| {
            Problem::invalid("header.Authorization", "must be `Bearer <root key>`")
                .fix("send Authorization: Bearer <root key>")
        })?;
    let counted = [RateCost::named(AUTO_APPLIED, 1)];
    let req = keyward::Request {
        ip: client_ip(state, peer, headers),
        permissions: &[need],
        cost: Cost { credits: 0, rates: &counted },
        ..Default::default()
    };
    // On a shared store a limited root key is charged there: off the workers.
    let v = verifying(&state.engine, || state.engine.verify(token, &req));
    if let Some(id) = v.key_id {
        state.engine.release(id, None, &v.leases);
    }
    crate::envelope::note_key(v.key_id, v.workspace_id);
    match (v.code, v.key_id, v.workspace_id) {
        (Code::Valid, Some(k), Some(w)) => Ok((k, w)),
        (code, _, _) => Err(match code.http_status() {
            403 if code == Code::InsufficientPermissions => Problem::new(
                StatusCode::FORBIDDEN,
                "unkey/authorization/insufficient_permissions",
                format!("the root key lacks the `{need}` permission"),
            ),
            403 => Problem::new(
                StatusCode::FORBIDDEN,
                "unkey/authorization/forbidden",
                format!("the root key is refused: {}", code.as_str()),
            ),
            429 => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "unkey/application/rate_limited",
                format!(
                    "the root key is over its limits ({}); retry in {} ms",
                    code.as_str(),
                    v.retry_after_ms.unwrap_or(0)
                ),
            ),
            _ => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unkey/authentication/key_not_found",
                format!("the root key does not verify: {}", code.as_str()),
            ),
        }),
    }
}

/// The workspace an `apiId` names, which must be the root key's.
fn api(o: &Obj<'_>, ws: WorkspaceId) -> Result<WorkspaceId, Problem> {
    let raw = o.required_string("apiId")?;
    match WorkspaceId::parse(raw) {
        Ok(id) if id == ws => Ok(id),
        _ => Err(Problem::not_found("unkey/data/api_not_found", format!("API {} not found", quote(raw)))),
    }
}

/// The key `keyId` names, if the caller's workspace holds it.
/// Off the async workers: on a shared store reading a key asks the store.
async fn own_key(state: &AppState, caller: KeyId, id: KeyId) -> Result<KeyInfo, Problem> {
    off_workers(&state.engine, move |e| e.key_as(id, &Actor::Key(caller))).await.map_err(engine_problem)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(p) => return Problem::into_response(p),
        }
    };
}

// ---- views ----------------------------------------------------------------

/// A short stable id derived from public facts (Unkey gives limits and
/// identities ids of their own; keyward names them).
fn derived_id(prefix: &str, parts: &[&str]) -> String {
    format!("{prefix}_{}", &KeyHash::of(&parts.join("\u{1f}")).to_hex()[..16])
}

fn credits_json(k: &KeyInfo) -> Option<Value> {
    let policy = k.limits.credits?;
    let mut c = json!({ "remaining": k.credits_remaining.unwrap_or(policy.initial) });
    if let (Some(r), Value::Object(m)) = (policy.refill, &mut c) {
        m.insert("refill".into(), refill_json(r));
    }
    Some(c)
}

fn refill_json(r: Refill) -> Value {
    match r.interval {
        RefillInterval::Daily => json!({"interval": "daily", "amount": r.amount}),
        RefillInterval::Monthly { day } => json!({"interval": "monthly", "amount": r.amount, "refillDay": day}),
    }
}

fn identity_json(k: &KeyInfo) -> Option<Value> {
    let external = k.external_id.as_deref()?;
    let ws = k.workspace.to_string();
    Some(json!({"id": derived_id("id", &[&ws, external]), "externalId": external}))
}

fn ratelimit_id(k: KeyId, name: &str) -> String {
    derived_id("rl", &[&k.to_string(), name])
}

/// Unkey's `KeyResponseData`.
fn key_json(k: &KeyInfo) -> Value {
    let mut m = Map::new();
    m.insert("keyId".into(), k.id.to_string().into());
    m.insert("start".into(), k.start.clone().into());
    m.insert("enabled".into(), (!k.disabled).into());
    m.insert("name".into(), k.name.clone().into());
    if let Some(meta) = &k.meta {
        m.insert("meta".into(), meta.clone());
    }
    m.insert("createdAt".into(), k.created_at.get().into());
    if let Some(t) = k.last_used_at {
        m.insert("lastUsedAt".into(), t.get().into());
    }
    if let Some(t) = k.expires_at {
        m.insert("expires".into(), t.get().into());
    }
    m.insert("permissions".into(), k.permissions.iter().map(Permission::as_str).collect::<Vec<_>>().into());
    m.insert("roles".into(), k.roles.clone().into());
    if let Some(c) = credits_json(k) {
        m.insert("credits".into(), c);
    }
    if let Some(i) = identity_json(k) {
        m.insert("identity".into(), i);
    }
    if !k.limits.rates.is_empty() {
        let rates: Vec<Value> = k
            .limits
            .rates
            .iter()
            .map(|r| {
                json!({
                    "id": ratelimit_id(k.id, &r.name),
                    "name": r.name,
                    "limit": r.limit,
                    "duration": r.window_ms,
                    "autoApply": r.auto_apply,
                })
            })
            .collect();
        m.insert("ratelimits".into(), rates.into());
    }
    Value::Object(m)
}

/// One entry of `verifyKey`'s `ratelimits`; `reset` is when the limit is
/// fully replenished, in Unix milliseconds.
fn rate_report_json(key: KeyId, r: &RateReport, now: UnixMillis) -> Value {
    json!({
        "exceeded": r.exceeded,
        "id": ratelimit_id(key, &r.name),
        "name": r.name,
        "limit": r.limit,
        "duration": r.window_ms,
        "reset": now.plus(r.reset_ms).get(),
        "remaining": r.remaining,
        "autoApply": r.auto_apply,
    })
}

// ---- operations -----------------------------------------------------------

/// `keys.createKey`.
async fn create_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, ws) = tri!(authorize(&state, &peer, &headers, "keys:write"));
    let map = tri!(map);
    let o = root(&map);
    let ws = tri!(api(&o, ws));
    let prefix = match tri!(o.string("prefix")) {
        None => None,
        Some(p) => Some(tri!(Prefix::parse(p).map_err(|_| {
            Problem::invalid(o.loc("prefix"), "must be 1 to 16 characters of a-z 0-9, in groups joined by _")
                .fix("use a lowercase prefix such as prod")
        }))),
    };
    if let Some(n) = tri!(o.integer("byteLength"))
        && !(MIN_BYTE_LENGTH..=MAX_BYTE_LENGTH).contains(&n)
    {
        return Problem::invalid(o.loc("byteLength"), format!("must be {MIN_BYTE_LENGTH} to {MAX_BYTE_LENGTH}"))
            .fix("keyward keys always carry 178 random bits; omit byteLength")
            .into_response();
    }
    if tri!(o.boolean("recoverable")) == Some(true) {
        return Problem::invalid(o.loc("recoverable"), "keyward never stores keys, so none is recoverable")
            .fix("omit recoverable or set it to false")
            .into_response();
    }
    let credits = tri!(o.credits("credits"));
    let rates = tri!(o.rate_limits("ratelimits")).unwrap_or_default();
    let limits = (credits.is_some() || !rates.is_empty()).then(|| Limits { rates, credits, ..Limits::default() });
    let spec = NewKey {
        name: tri!(o.string("name")).unwrap_or(DEFAULT_NAME).to_owned(),
        expires_at: tri!(o.integer("expires")).map(UnixMillis),
        permissions: tri!(o.permissions("permissions")).unwrap_or_default(),
        limits,
        meta: tri!(o.meta("meta")),
        disabled: !tri!(o.boolean("enabled")).unwrap_or(true),
        prefix,
        external_id: tri!(o.string("externalId")).map(str::to_owned),
        roles: tri!(o.strings("roles")).unwrap_or_default(),
        ..NewKey::default()
    };
    let created = tri!(
        off_workers(&state.engine, move |e| e.create_key(ws, spec, &Actor::Key(caller))).await.map_err(engine_problem)
    );
    ok(json!({"keyId": created.info.id.to_string(), "key": created.token.expose()}))
}

/// `keys.verifyKey`: always 200 for a verdict; the root key needs `keys:verify`.
async fn verify_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (_, ws) = tri!(authorize(&state, &peer, &headers, "keys:verify"));
    let map = tri!(map);
    let o = root(&map);
    let key = tri!(o.required_string("key"));
    // Tags only feed Unkey's analytics; checked for shape, then unused.
    tri!(o.strings("tags"));
    if tri!(o.string("migrationId")).is_some() {
        return Problem::invalid(o.loc("migrationId"), "keyward has no on-demand migrations")
            .fix("import keys by hash with `keyward key import`, then omit migrationId")
            .into_response();
    }
    let query = match tri!(o.string("permissions")) {
        None => None,
        Some(text) => Some(tri!(PermissionQuery::parse(text).map_err(|e| {
            Problem::invalid(o.loc("permissions"), e.to_string())
                .fix("join permission names with AND / OR and group with parentheses, e.g. (a OR b) AND c")
        }))),
    };
    let credits = match tri!(o.object("credits")) {
        None => 1,
        Some(c) => tri!(c.required_integer("cost")),
    };
    let mut names: Vec<String> = Vec::new();
    let mut numbers: Vec<(u64, Option<u64>, Option<u64>)> = Vec::new();
    if let Some(list) = tri!(o.array("ratelimits", MAX_RATELIMITS)) {
        for (i, v) in list.iter().enumerate() {
            let r = tri!(o.as_object(v, format!("{}[{i}]", o.loc("ratelimits"))));
            names.push(tri!(rate_name(&r)).to_owned());
            let cost = tri!(r.integer("cost")).unwrap_or(1);
            let limit = match tri!(r.integer("limit")) {
                Some(n) => Some(tri!(positive(&r, "limit", n))),
                None => None,
            };
            let duration = match tri!(r.integer("duration")) {
                Some(n) => Some(tri!(positive(&r, "duration", n))),
                None => None,
            };
            numbers.push((cost, limit, duration));
        }
    }
    // Unkey counts rate limits on every verification, even at cost 0.
    let mut rates = vec![RateCost::named(AUTO_APPLIED, 1)];
    for (name, &(cost, limit, window_ms)) in names.iter().zip(&numbers) {
        rates.push(RateCost { name: name.as_str(), cost, limit, window_ms });
    }
    let req = keyward::Request {
        ip: client_ip(&state, &peer, &headers),
        cost: Cost { credits, rates: &rates },
        ..Default::default()
    };
    let checks = Checks { workspace: Some(ws), permission_query: query.as_ref() };
    let out = verifying(&state.engine, || state.engine.verify_with(key, &req, &checks));
    let v = &out.verdict;
    crate::envelope::note_key(v.key_id, v.workspace_id);
    // Leases from a verification are not held: a verify call is not a job.
    if let Some(id) = v.key_id {
        state.engine.release(id, None, &v.leases);
    }
    let mut d = Map::new();
    d.insert("valid".into(), v.is_valid().into());
    d.insert("code".into(), unkey_code(v.code).into());
    // As in Unkey, a `NOT_FOUND` (here also a revoked key) describes no key.
    if let (Some(k), Some(_), false) = (&out.key, v.key_id, unkey_code(v.code) == "NOT_FOUND") {
        d.insert("keyId".into(), k.id.to_string().into());
        d.insert("name".into(), k.name.clone().into());
        if let Some(meta) = &k.meta {
            d.insert("meta".into(), meta.clone());
        }
        if let Some(t) = k.expires_at {
            d.insert("expires".into(), t.get().into());
        }
        if k.limits.credits.is_some()
            && let Some(left) = v.quota.credits_remaining.or(k.credits_remaining)
        {
            d.insert("credits".into(), left.into());
        }
        d.insert("enabled".into(), (!k.disabled).into());
        d.insert("permissions".into(), k.permissions.iter().map(Permission::as_str).collect::<Vec<_>>().into());
        d.insert("roles".into(), k.roles.clone().into());
        if let Some(i) = identity_json(k) {
            d.insert("identity".into(), i);
        }
        if !out.rates.is_empty() {
            let now = state.engine.now();
            let list: Vec<Value> = out.rates.iter().map(|r| rate_report_json(k.id, r, now)).collect();
            d.insert("ratelimits".into(), list.into());
        }
    }
    let mut resp = ok(Value::Object(d));
    resp.extensions_mut().insert(VerdictTag(v.code.as_str()));
    resp
}

/// `keys.getKey`.
async fn get_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, _) = tri!(authorize(&state, &peer, &headers, "keys:read"));
    let map = tri!(map);
    let o = root(&map);
    if tri!(o.boolean("decrypt")) == Some(true) {
        return Problem::invalid(o.loc("decrypt"), "keyward never stores keys, so none can be decrypted")
            .fix("omit decrypt or set it to false")
            .into_response();
    }
    let id = tri!(o.key_id());
    ok(key_json(&tri!(own_key(&state, caller, id).await)))
}

/// `keys.whoami`: the key a token belongs to, without verifying it.
async fn whoami(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (_, ws) = tri!(authorize(&state, &peer, &headers, "keys:read"));
    let map = tri!(map);
    let o = root(&map);
    let key = tri!(o.required_string("key"));
    match state.engine.find_key(key) {
        Some(k) if k.workspace == ws => ok(key_json(&k)),
        _ => Problem::not_found("unkey/data/key_not_found", "no key of this workspace matches").into_response(),
    }
}

/// `keys.updateKey`: an absent field is kept, `null` clears it.
async fn update_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, _) = tri!(authorize(&state, &peer, &headers, "keys:write"));
    let map = tri!(map);
    let o = root(&map);
    let id = tri!(o.key_id());
    let current = tri!(own_key(&state, caller, id).await);
    let mut update = KeyUpdate {
        name: match o.slot("name") {
            Slot::Absent => None,
            Slot::Null => Some(DEFAULT_NAME.to_owned()),
            Slot::Set(_) => tri!(o.string("name")).map(str::to_owned),
        },
        external_id: match o.slot("externalId") {
            Slot::Absent => None,
            Slot::Null => Some(None),
            Slot::Set(_) => Some(tri!(o.string("externalId")).map(str::to_owned)),
        },
        meta: match o.slot("meta") {
            Slot::Absent => None,
            Slot::Null => Some(None),
            Slot::Set(_) => Some(tri!(o.meta("meta"))),
        },
        expires_at: match o.slot("expires") {
            Slot::Absent => None,
            Slot::Null => Some(None),
            Slot::Set(_) => Some(tri!(o.integer("expires")).map(UnixMillis)),
        },
        disabled: tri!(o.boolean("enabled")).map(|e| !e),
        roles: tri!(o.strings("roles")),
        permissions: tri!(o.permissions("permissions")),
        ..KeyUpdate::default()
    };
    let mut limits = current.limits.clone();
    let mut limits_changed = false;
    match o.slot("ratelimits") {
        Slot::Absent => {}
        Slot::Null => {
            limits.rates.clear();
            limits_changed = true;
        }
        Slot::Set(_) => {
            limits.rates = tri!(o.rate_limits("ratelimits")).unwrap_or_default();
            limits_changed = true;
        }
    }
    // A new balance is set after the update, so it takes effect even when
    // the credits policy itself is unchanged.
    let mut balance = None;
    match o.slot("credits") {
        Slot::Absent => {}
        Slot::Null => {
            limits.credits = None;
            limits_changed = true;
        }
        Slot::Set(v) => {
            let c = tri!(o.as_object(v, o.loc("credits")));
            let now_left = current.credits_remaining;
            let refill = match c.slot("refill") {
                Slot::Absent => current.limits.credits.and_then(|p| p.refill),
                Slot::Null => None,
                Slot::Set(r) => Some(tri!(tri!(c.as_object(r, c.loc("refill"))).refill())),
            };
            limits.credits = match c.slot("remaining") {
                // Unlimited: the refill schedule goes too.
                Slot::Null => None,
                Slot::Set(_) => {
                    let n = tri!(c.required_integer("remaining"));
                    balance = Some(n);
                    Some(Credits { initial: n, refill })
                }
                Slot::Absent => match now_left {
                    Some(left) => Some(Credits { initial: left, refill }),
                    None if refill.is_some() => {
                        return Problem::invalid(c.loc("remaining"), "is required: the key has no credits yet")
                            .fix("set remaining to the starting balance")
                            .into_response();
                    }
                    None => None,
                },
            };
            limits_changed = true;
        }
    }
    if limits_changed {
        update.limits = Some(limits);
    }
    update.credits = balance.map(CreditChange::Set);
    // Every field in one engine call: one commit, all of it or nothing.
    tri!(
        off_workers(&state.engine, move |e| e.update_key(id, update, &Actor::Key(caller)))
            .await
            .map_err(engine_problem)
    );
    ok(json!({}))
}

/// `keys.deleteKey`. keyward deletes for good either way (`permanent`).
async fn delete_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, _) = tri!(authorize(&state, &peer, &headers, "keys:write"));
    let map = tri!(map);
    let o = root(&map);
    tri!(o.boolean("permanent"));
    let id = tri!(o.key_id());
    tri!(own_key(&state, caller, id).await);
    tri!(off_workers(&state.engine, move |e| e.delete_key(id, &Actor::Key(caller))).await.map_err(engine_problem));
    ok(json!({}))
}

/// `keys.rerollKey`: a new key with the same settings and counters; the old
/// one keeps working for `expiration` ms.
async fn reroll_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, _) = tri!(authorize(&state, &peer, &headers, "keys:write"));
    let map = tri!(map);
    let o = root(&map);
    let id = tri!(o.key_id());
    let grace_ms = tri!(o.required_integer("expiration"));
    tri!(own_key(&state, caller, id).await);
    let created = tri!(
        off_workers(&state.engine, move |e| e.rotate_key(id, grace_ms, &Actor::Key(caller)))
            .await
            .map_err(engine_problem)
    );
    ok(json!({"keyId": created.info.id.to_string(), "key": created.token.expose()}))
}

/// `keys.updateCredits`: `set` (a `null` value makes the key unlimited),
/// `increment` or `decrement` (down to 0).
async fn update_credits(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (caller, _) = tri!(authorize(&state, &peer, &headers, "keys:write"));
    let map = tri!(map);
    let o = root(&map);
    let id = tri!(o.key_id());
    let operation = tri!(o.required_string("operation"));
    let value = tri!(o.integer("value"));
    let actor = Actor::Key(caller);
    let current = tri!(own_key(&state, caller, id).await);
    // Only the credits limit changes; the key's other limits are kept as the
    // engine holds them when it commits.
    let set_policy = |credits: Option<Credits>| {
        let update = KeyUpdate { credit_limit: Some(credits), ..KeyUpdate::default() };
        off_workers(&state.engine, move |e| e.update_key(id, update, &actor))
    };
    let change = match (operation, value) {
        ("set", None) => {
            tri!(set_policy(None).await.map_err(engine_problem));
            return ok(json!({"remaining": null}));
        }
        ("set", Some(n)) if current.limits.credits.is_none() => {
            tri!(set_policy(Some(Credits { initial: n, refill: None })).await.map_err(engine_problem));
            return ok(json!({"remaining": n}));
        }
        ("set", Some(n)) => CreditChange::Set(n),
        ("increment" | "decrement", None) => {
            return Problem::invalid(o.loc("value"), format!("is required to {operation}")).into_response();
        }
        ("increment" | "decrement", Some(_)) if current.limits.credits.is_none() => {
            return Problem::invalid(o.loc("operation"), format!("cannot {operation} a key with unlimited credits"))
                .fix("use operation \"set\" to give the key a balance first")
                .into_response();
        }
        ("increment", Some(n)) => CreditChange::Increment(n),
        ("decrement", Some(n)) => CreditChange::Decrement(n),
        _ => {
            return Problem::invalid(o.loc("operation"), "must be \"set\", \"increment\" or \"decrement\"")
                .into_response();
        }
    };
    let remaining =
        tri!(off_workers(&state.engine, move |e| e.update_credits(id, change, &actor)).await.map_err(engine_problem));
    let mut data = json!({ "remaining": remaining });
    if let (Some(r), Value::Object(m)) = (current.limits.credits.and_then(|c| c.refill), &mut data) {
        m.insert("refill".into(), refill_json(r));
    }
    ok(data)
}

/// `apis.listKeys`: newest first, with a cursor while there are more.
async fn list_keys(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let map = read_json(&headers, body).await;
    let (_, ws) = tri!(authorize(&state, &peer, &headers, "keys:read"));
    let map = tri!(map);
    let o = root(&map);
    let ws = tri!(api(&o, ws));
    if tri!(o.boolean("decrypt")) == Some(true) {
        return Problem::invalid(o.loc("decrypt"), "keyward never stores keys, so none can be decrypted")
            .fix("omit decrypt or set it to false")
            .into_response();
    }
    // There is no cache to revalidate: every change is visible at once.
    tri!(o.boolean("revalidateKeysCache"));
    let limit = tri!(o.integer("limit")).unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Problem::invalid(o.loc("limit"), format!("must be 1 to {MAX_LIMIT}")).into_response();
    }
    let cursor = tri!(o.string("cursor"));
    let external = tri!(o.string("externalId"));
    let page = tri!(state.engine.list_keys_of(ws, external, limit as usize, cursor).map_err(|e| match e {
        keyward::Error::Invalid { field: "cursor", message } => Problem::invalid(o.loc("cursor"), message),
        other => engine_problem(other),
    }));
    let mut pagination = json!({ "hasMore": page.next_cursor.is_some() });
    if let (Some(c), Value::Object(m)) = (&page.next_cursor, &mut pagination) {
        m.insert("cursor".into(), c.clone().into());
    }
    let data: Vec<Value> = page.items.iter().map(key_json).collect();
    respond(StatusCode::OK, json!({"data": data, "pagination": pagination}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyward_code_maps_to_an_unkey_code() {
        let table: Vec<(&str, &str)> = Code::ALL.iter().map(|c| (c.as_str(), unkey_code(*c))).collect();
        assert_eq!(
            table,
            [
                ("VALID", "VALID"),
                ("MALFORMED", "NOT_FOUND"),
                ("NOT_FOUND", "NOT_FOUND"),
                ("EXPIRED", "EXPIRED"),
                ("REVOKED", "NOT_FOUND"),
                ("DISABLED", "DISABLED"),
                ("PLAN_INACTIVE", "FORBIDDEN"),
                ("IP_DENIED", "FORBIDDEN"),
                ("INSUFFICIENT_PERMISSIONS", "INSUFFICIENT_PERMISSIONS"),
                ("TOOL_DISABLED", "FORBIDDEN"),
                ("UNKNOWN_TOOL", "FORBIDDEN"),
                ("RATE_LIMITED", "RATE_LIMITED"),
                ("COOLDOWN", "RATE_LIMITED"),
                ("DAILY_LIMIT", "RATE_LIMITED"),
                ("CONCURRENCY_LIMIT", "RATE_LIMITED"),
                ("USAGE_EXHAUSTED", "USAGE_EXCEEDED"),
                ("INVALID_SIGNATURE", "FORBIDDEN"),
                ("NONCE_REUSED", "FORBIDDEN"),
                ("STORE_UNAVAILABLE", "FORBIDDEN"),
            ]
        );
        // Every one is in the SDK's enum.
        let unkey = [
            "VALID",
            "NOT_FOUND",
            "FORBIDDEN",
            "INSUFFICIENT_PERMISSIONS",
            "USAGE_EXCEEDED",
            "RATE_LIMITED",
            "DISABLED",
            "EXPIRED",
        ];
        assert!(table.iter().all(|(_, u)| unkey.contains(u)));
    }

    #[test]
    fn problem_bodies() {
        let p = Problem::invalid("body.apiId", "is required").fix("send the workspace id");
        assert_eq!(
            p.body(),
            json!({"error": {
                "title": "Bad Request",
                "detail": "body.apiId: is required",
                "status": 400,
                "type": "https://unkey.com/docs/errors/unkey/application/invalid_input",
                "errors": [{"location": "body.apiId", "message": "is required", "fix": "send the workspace id"}],
            }})
        );
        let p = Problem::not_found("unkey/data/key_not_found", "key x not found");
        assert_eq!(
            p.body(),
            json!({"error": {
                "title": "Not Found",
                "detail": "key x not found",
                "status": 404,
                "type": "https://unkey.com/docs/errors/unkey/data/key_not_found",
            }})
        );
        let resp =
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "unkey/application/rate_limited", "slow down").into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/problem+json");
        let resp = ok(json!({}));
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn engine_errors_map_to_unkey_statuses() {
        use keyward::Error as E;
        let cases = [
            (E::NotFound { kind: "key", id: "key_x".into() }, 404, "unkey/data/key_not_found"),
            (E::NotFound { kind: "workspace", id: "ws_x".into() }, 404, "unkey/data/api_not_found"),
            (E::Invalid { field: "external_id", message: "bad".into() }, 400, "unkey/application/invalid_input"),
            (E::InsufficientPermissions("no".into()), 403, "unkey/authorization/insufficient_permissions"),
            (E::PlanInactive, 403, "unkey/authorization/workspace_disabled"),
            (E::Conflict("rotated".into()), 409, "unkey/data/conflict"),
            (E::Storage("disk".into()), 503, "unkey/application/service_unavailable"),
            (E::NoSnapshotKey, 500, "unkey/application/unexpected_error"),
        ];
        for (e, status, code) in cases {
            let p = engine_problem(e);
            assert_eq!((p.status.as_u16(), p.code), (status, code));
        }
        let p = engine_problem(E::Invalid { field: "external_id", message: "bad".into() });
        assert_eq!(p.errors[0].location, "body.externalId");
    }

    /// The router end to end, without sockets: status, content type,
    /// request id and exact bodies.
    mod wire {
        use axum::http::Request;
        use keyward::{Engine, NewWorkspace};
        use tower::ServiceExt;

        use super::*;

        struct App {
            _dir: tempfile::TempDir,
            engine: Engine,
            router: Router,
            ws: WorkspaceId,
            root: String,
        }

        fn app() -> App {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(dir.path().join("k.redb")).unwrap();
            let ws = engine.create_workspace(NewWorkspace::named("t"), &Actor::Admin).unwrap().policy.id;
            let spec =
                NewKey { name: "root".into(), permissions: vec![Permission::parse("*").unwrap()], ..NewKey::default() };
            let root = engine.create_key(ws, spec, &Actor::Admin).unwrap().token.expose().to_owned();
            App { _dir: dir, router: crate::router(AppState::new(engine.clone())), engine, ws, root }
        }

        async fn call(app: &App, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String, Value) {
            let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", format!("Bearer {a}"));
            }
            let resp = app.router.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(meta) = v.as_object_mut().and_then(|m| m.remove("meta")) {
                assert_eq!(meta["requestId"].as_str(), id.as_deref(), "X-Request-Id is meta.requestId");
                assert!(id.is_some_and(|id| id.starts_with("req_") && id.len() == 24));
            }
            (status, ctype, v)
        }

        #[tokio::test]
        async fn create_and_verify() {
            let a = app();
            let body = json!({"apiId": a.ws.to_string(), "name": "k", "credits": {"remaining": 1}}).to_string();
            let (status, ctype, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
            assert_eq!((status, ctype.as_str()), (200, "application/json"), "{v}");
            let key = v["data"]["key"].as_str().unwrap().to_owned();
            let key_id = v["data"]["keyId"].as_str().unwrap().to_owned();
            assert_eq!(v, json!({"data": {"keyId": key_id, "key": key}}));

            let verify = |k: &str| json!({ "key": k }).to_string();
            let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
            assert_eq!(status, 200);
            assert_eq!(
                v,
                json!({"data": {
                    "valid": true, "code": "VALID", "keyId": key_id, "name": "k", "credits": 0,
                    "enabled": true, "permissions": [], "roles": [],
                }})
            );
            // Every verdict is a 200.
            let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
            assert_eq!(status, 200);
            assert_eq!((&v["data"]["valid"], &v["data"]["code"]), (&json!(false), &json!("USAGE_EXCEEDED")));
            let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify("kw_live_x")).await;
            assert_eq!((status, v), (200, json!({"data": {"valid": false, "code": "NOT_FOUND"}})));
            // A revoked key is NOT_FOUND, and described no more than an unknown one.
            a.engine.revoke_key(KeyId::parse(&key_id).unwrap(), &Actor::Admin).unwrap();
            let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
            assert_eq!((status, v), (200, json!({"data": {"valid": false, "code": "NOT_FOUND"}})));
        }

        #[tokio::test]
        async fn errors() {
            let a = app();
            let get = json!({"keyId": "key_x"}).to_string();
            let (status, ctype, v) = call(&a, "POST", "/v2/keys.getKey", None, &get).await;
            assert_eq!((status, ctype.as_str()), (400, "application/json"));
            assert_eq!(v["error"]["errors"][0]["location"], "header.Authorization");
            assert_eq!(v["error"]["status"], 400);
            let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some("kw_live_nope"), &get).await;
            assert_eq!((status, &v["error"]["title"]), (401, &json!("Unauthorized")));
            assert!(v["error"].get("errors").is_none());
            let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some(&a.root), &get).await;
            assert_eq!((status, &v["error"]["type"]), (404, &json!(format!("{ERROR_DOCS}unkey/data/key_not_found"))));
            let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some(&a.root), "{").await;
            assert_eq!((status, &v["error"]["errors"][0]["location"]), (400, &json!("body")));
            let (status, _, _) = call(&a, "GET", "/v2/keys.getKey", Some(&a.root), "").await;
            assert_eq!(status, 405);
            let (status, _, v) = call(&a, "POST", "/v2/ratelimit.limit", Some(&a.root), "{}").await;
            assert_eq!((status, &v["error"]["status"]), (404, &json!(404)));
            let big = format!("{{\"key\":\"{}\"}}", "a".repeat(MAX_BODY));
            let (status, _, _) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &big).await;
            assert_eq!(status, 413);
            // The rest of the API keeps keyward's envelope.
            let (status, _, v) = call(&a, "GET", "/healthz", None, "").await;
            assert_eq!((status, &v["success"]), (200, &json!(true)));
        }

        #[tokio::test]
        async fn a_root_key_over_its_limit_gets_a_problem_document() {
            let a = app();
            let spec = json!({
                "apiId": a.ws.to_string(),
                "permissions": ["keys:read"],
                "ratelimits": [{"name": "api", "limit": 1, "duration": 60_000, "autoApply": true}],
            });
            let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &spec.to_string()).await;
            let limited = v["data"]["key"].as_str().unwrap().to_owned();
            let whoami = json!({ "key": limited }).to_string();
            let (status, _, v) = call(&a, "POST", "/v2/keys.whoami", Some(&limited), &whoami).await;
            assert_eq!((status, &v["data"]["name"]), (200, &json!(DEFAULT_NAME)));
            let (status, ctype, v) = call(&a, "POST", "/v2/keys.whoami", Some(&limited), &whoami).await;
            assert_eq!((status, ctype.as_str()), (429, "application/problem+json"));
            assert_eq!(v["error"]["title"], "Too Many Requests");
            let (status, _, _) = call(&a, "POST", "/v2/keys.createKey", Some(&limited), &spec.to_string()).await;
            assert_eq!(status, 403, "permissions are checked before limits");
        }
    }

    #[test]
    fn derived_ids_are_stable() {
        let k = KeyId([7; 16]);
        assert_eq!(ratelimit_id(k, "calls"), ratelimit_id(k, "calls"));
        assert_ne!(ratelimit_id(k, "calls"), ratelimit_id(k, "tokens"));
        assert!(ratelimit_id(k, "calls").starts_with("rl_"));
        assert_eq!(ratelimit_id(k, "calls").len(), 3 + 16);
    }
}
