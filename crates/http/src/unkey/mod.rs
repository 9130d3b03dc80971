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
//!
//! Each operation has a file of its own holding its Unkey-shaped request
//! types. A body is read whole and parsed with [`crate::body::parse`] (an
//! object only from a JSON object, no key twice), so an unknown field is
//! refused by name and a 400's `location` is the JSON path of the
//! offending value under `body` (`body.ratelimits[1].duration`), as Unkey
//! reports it.

mod create_key;
mod delete_key;
mod get_key;
mod list_keys;
mod problem;
mod reroll_key;
#[cfg(test)]
mod tests;
mod update_credits;
mod update_key;
mod verify_key;
mod view;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use keyward::{Actor, KeyInfo};
use keyward_core::limits::{AUTO_APPLIED, Cost, RateCost, valid_rate_name};
use keyward_core::permission::Permission;
use keyward_core::{Code, KeyId, WorkspaceId};
use serde_json::{Value, json};

use self::problem::{Problem, engine_problem};
use crate::AppState;
use crate::blocking::{off_workers, verifying};
use crate::body::Path;
use crate::envelope::RequestId;
use crate::json::MAX_BODY;
use crate::routes::{Peer, client_ip};

pub(crate) use self::problem::STORE_DOWN;

/// Name given to keys created without one: Unkey's `name` is optional,
/// keyward's is not.
const DEFAULT_NAME: &str = "unnamed";
/// Most entries in a `ratelimits` array.
const MAX_RATELIMITS: usize = 64;
/// Most entries in any other array.
const MAX_ARRAY: usize = 256;

/// The `/v2/` routes, with their own request-id and metrics middleware
/// instead of keyward's envelope.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/keys.createKey", post(create_key::create_key).fallback(method_not_allowed))
        .route("/v2/keys.verifyKey", post(verify_key::verify_key).fallback(method_not_allowed))
        .route("/v2/keys.getKey", post(get_key::get_key).fallback(method_not_allowed))
        .route("/v2/keys.whoami", post(get_key::whoami).fallback(method_not_allowed))
        .route("/v2/keys.updateKey", post(update_key::update_key).fallback(method_not_allowed))
        .route("/v2/keys.deleteKey", post(delete_key::delete_key).fallback(method_not_allowed))
        .route("/v2/keys.rerollKey", post(reroll_key::reroll_key).fallback(method_not_allowed))
        .route("/v2/keys.updateCredits", post(update_credits::update_credits).fallback(method_not_allowed))
        .route("/v2/apis.listKeys", post(list_keys::list_keys).fallback(method_not_allowed))
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

// ---- request bodies -------------------------------------------------------

/// How every operation starts: the body read whole (its content type
/// checked), then the root key with permission `need` (a bad root key is
/// reported before a bad body), then the body parsed as a `T`. Returns the
/// root key, its workspace and the request.
async fn begin<T: serde::de::DeserializeOwned>(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    raw: Body,
    need: &str,
) -> Result<(KeyId, WorkspaceId, T), Problem> {
    let bytes = read_body(headers, raw).await;
    let (caller, ws) = authorize(state, peer, headers, need)?;
    let req = crate::body::parse(&bytes?)?;
    Ok((caller, ws, req))
}

/// Reads a body whole, checking its content type.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
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
    Ok(bytes)
}

/// Where Unkey locates a request's fields: `body.credits.refill.amount`.
fn body() -> Path {
    Path::at("body")
}

/// Refuses a list longer than `max`.
fn at_most<T>(list: &[T], max: usize, at: &Path) -> Result<(), Problem> {
    if list.len() > max { Err(Problem::invalid(at, format!("at most {max} entries"))) } else { Ok(()) }
}

/// A rate limit's name, checked.
fn rate_name(name: &str, at: &Path) -> Result<(), Problem> {
    if valid_rate_name(name) {
        Ok(())
    } else {
        Err(Problem::invalid(at, "must be 1 to 64 characters of A-Z a-z 0-9 . _ -"))
    }
}

/// A count that must be at least 1 (a limit, a duration).
fn positive(n: u64, at: &Path) -> Result<u64, Problem> {
    if n == 0 { Err(Problem::invalid(at, "must be at least 1")) } else { Ok(n) }
}

/// `permissions` of createKey and updateKey, in keyward's syntax.
fn permissions(list: &[String], at: &Path) -> Result<Vec<Permission>, Problem> {
    at_most(list, MAX_ARRAY, at)?;
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Permission::parse(p).map_err(|e| {
                Problem::invalid(at.index(i), e.to_string())
                    .fix("use letters, digits and : . _ - with an optional trailing *, e.g. documents.read")
            })
        })
        .collect()
}

/// At most 40 characters of user input, for messages.
fn quote(s: &str) -> String {
    s.chars().take(40).collect()
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
fn api(raw: &str, ws: WorkspaceId) -> Result<WorkspaceId, Problem> {
    match WorkspaceId::parse(raw) {
        Ok(id) if id == ws => Ok(id),
        _ => Err(Problem::not_found("unkey/data/api_not_found", format!("API {} not found", quote(raw)))),
    }
}

/// The key a `keyId` names; one that cannot be an id is not found either.
fn key_id(raw: &str) -> Result<KeyId, Problem> {
    KeyId::parse(raw)
        .map_err(|_| Problem::not_found("unkey/data/key_not_found", format!("key {} not found", quote(raw))))
}

/// The key `keyId` names, if the caller's workspace holds it.
/// Off the async workers: on a shared store reading a key asks the store.
async fn own_key(state: &AppState, caller: KeyId, id: KeyId) -> Result<KeyInfo, Problem> {
    off_workers(&state.engine, move |e| e.key_as(id, &Actor::Key(caller))).await.map_err(engine_problem)
}
