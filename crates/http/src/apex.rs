//! APEX-style endpoints for exchange SDKs: `/ap/AuthenticateUser` and `/ap/LogOut`.
//!
//! These answer in APEX's own wire format, not keyward's `{"success":…}`
//! envelope, so clients such as the Python `notbank` SDK work unchanged. The
//! signed scheme itself is SPEC §5 ([`keyward::Engine::authenticate_user`]);
//! this module only maps it onto APEX's field names.
//!
//! Refusals are sent with HTTP 200 and a body that says so
//! (`"Authenticated":false` or `"result":false`), as APEX does: that is what
//! the SDKs read to raise their own error with our message. A 4xx would make
//! them raise a generic "http error" carrying the raw body instead.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use keyward_core::Code;
use keyward_core::credentials::{self, Credential, CredentialError, SignedHeaders};
use keyward_core::signature::parse_decimal_nonce;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::blocking::off_workers;
use crate::envelope::VerdictTag;
use crate::routes::{Peer, client_ip};

/// APEX `errorcode` values, as the SDKs know them (`notbank` refuses others).
mod errorcode {
    pub(super) const SUCCESS: u16 = 0;
    pub(super) const NOT_AUTHORIZED: u16 = 20;
    pub(super) const INVALID_REQUEST: u16 = 100;
    pub(super) const SERVER_ERROR: u16 = 102;
    pub(super) const NOT_FOUND: u16 = 104;
}

/// `OMSId` reported for every user: keyward has one order-management system.
const OMS_ID: u64 = 1;

/// The `/ap/` routes: APEX's own body format, no envelope.
///
/// Every handler takes the request body (and ignores it): a body left unread
/// makes hyper close the connection, which a client that pools connections
/// only finds out on its next request.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/ap/AuthenticateUser",
            get(authenticate_user)
                .post(authenticate_user)
                .fallback(|_: Bytes| async { method_not_allowed("GET, POST") }),
        )
        .route("/ap/LogOut", post(log_out).fallback(|_: Bytes| async { method_not_allowed("POST") }))
        .route("/ap/{*call}", any(unsupported))
}

fn reply(status: StatusCode, body: Value, verdict: Option<&'static str>) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(code) = verdict {
        resp.extensions_mut().insert(VerdictTag(code));
    }
    resp
}

/// APEX's standard response: `{"result","errormsg","errorcode","detail"}`.
fn standard(errormsg: Option<&str>, errorcode: u16, detail: Option<&str>) -> Value {
    json!({"result": errormsg.is_none(), "errormsg": errormsg, "errorcode": errorcode, "detail": detail})
}

fn method_not_allowed(allow: &'static str) -> Response {
    let body = standard(Some("Method Not Allowed"), errorcode::INVALID_REQUEST, None);
    let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, body, None);
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Any other `/ap/` call: keyward is not an exchange.
async fn unsupported(_body: Bytes) -> Response {
    let body = standard(
        Some("Endpoint Not Found"),
        errorcode::NOT_FOUND,
        Some("keyward serves only AuthenticateUser and LogOut under /ap/"),
    );
    reply(StatusCode::NOT_FOUND, body, None)
}

/// The `errormsg` of a refused authentication: a sentence, then our code.
fn refusal(code: Code) -> String {
    let why = match code {
        Code::Malformed => "Malformed credentials",
        Code::NotFound => "Unknown API key",
        Code::Expired => "API key expired",
        Code::Revoked => "API key revoked",
        Code::Disabled => "API key disabled",
        Code::PlanInactive => "Workspace plan has no API access",
        Code::IpDenied => "Client IP not allowed",
        Code::InvalidSignature => "Invalid signature",
        Code::NonceReused => "Nonce already used",
        Code::RateLimited => "Too many authentications, retry later",
        Code::StoreUnavailable => "Storage unavailable, retry later",
        _ => "Not authorized",
    };
    format!("{why} ({})", code.as_str())
}

fn not_authenticated(errormsg: String, verdict: &'static str) -> Response {
    reply(StatusCode::OK, json!({"Authenticated": false, "errormsg": errormsg}), Some(verdict))
}

/// The four signed headers. An `aptoken` is ignored: SDKs keep sending the
/// session of an earlier login when they authenticate again.
fn signed_headers(headers: &HeaderMap) -> Result<SignedHeaders, String> {
    const WANTED: &str = "send the APIKey, Signature, UserId and Nonce headers";
    let pairs = headers
        .iter()
        .filter(|(n, _)| !n.as_str().eq_ignore_ascii_case("aptoken"))
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    match credentials::parse(pairs) {
        Ok(Credential::Signed(s)) => Ok(s),
        Ok(_) | Err(CredentialError::Missing) => Err(WANTED.to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// `GET`/`POST /ap/AuthenticateUser` with `APIKey`, `Signature`, `UserId`, `Nonce`.
async fn authenticate_user(State(state): State<AppState>, peer: Peer, headers: HeaderMap, _body: Bytes) -> Response {
    let signed = match signed_headers(&headers) {
        Ok(s) => s,
        Err(why) => return not_authenticated(format!("{why} ({})", Code::Malformed.as_str()), "MALFORMED"),
    };
    let ip = client_ip(&state, &peer, &headers);
    let session = match crate::blocking::login(&state.engine, signed, ip).await {
        Ok(s) => {
            crate::envelope::note_key(Some(s.key_id), None);
            s
        }
        Err(v) => {
            crate::envelope::note_key(v.key_id, v.workspace_id);
            let mut resp = not_authenticated(refusal(v.code), v.code.as_str());
            if let Some(ms) = v.retry_after_ms.filter(|_| v.code == Code::RateLimited)
                && let Ok(secs) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            return resp;
        }
    };
    let mut body = Map::new();
    body.insert("Authenticated".into(), true.into());
    body.insert("SessionToken".into(), session.token.expose().into());
    // APEX user ids are integers; a non-numeric (or zero-padded) one has no `User`.
    if let Ok(user_id) = parse_decimal_nonce(&session.user_id) {
        // Off the async workers: on a shared store reading a key asks the store.
        let id = session.key_id;
        let name = off_workers(&state.engine, move |e| e.key(id)).await.map(|k| k.name).unwrap_or_default();
        body.insert(
            "User".into(),
            json!({
                "UserId": user_id,
                "UserName": name,
                "Email": "",
                "EmailVerified": false,
                "AccountId": user_id,
                "OMSId": OMS_ID,
                "Use2FA": false,
            }),
        );
    }
    body.insert("Locked".into(), false.into());
    body.insert("Requires2FA".into(), false.into());
    body.insert("errormsg".into(), Value::Null);
    reply(StatusCode::OK, Value::Object(body), Some(Code::Valid.as_str()))
}

/// `POST /ap/LogOut` with `aptoken`: ends the session.
async fn log_out(State(state): State<AppState>, headers: HeaderMap, _body: Bytes) -> Response {
    let pairs = headers
        .iter()
        .filter(|(n, _)| n.as_str().eq_ignore_ascii_case("aptoken"))
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let token = match credentials::parse(pairs) {
        Ok(Credential::Session(t)) => t,
        Ok(_) | Err(CredentialError::Missing) => {
            let body = standard(Some("Not Authorized"), errorcode::NOT_AUTHORIZED, Some("send aptoken"));
            return reply(StatusCode::OK, body, Some(Code::Malformed.as_str()));
        }
        Err(e) => {
            let body = standard(Some("Not Authorized"), errorcode::NOT_AUTHORIZED, Some(&e.to_string()));
            return reply(StatusCode::OK, body, Some(Code::Malformed.as_str()));
        }
    };
    match crate::blocking::audited(&state.engine, move |e| e.end_session(&token)).await {
        Ok(true) => reply(StatusCode::OK, standard(None, errorcode::SUCCESS, None), Some("VALID")),
        Ok(false) => {
            let body = standard(Some("Not Authorized"), errorcode::NOT_AUTHORIZED, Some("unknown or ended session"));
            reply(StatusCode::OK, body, Some(Code::NotFound.as_str()))
        }
        Err(e) => {
            crate::envelope::note_error(&e);
            let detail = crate::envelope::internal_message(&crate::envelope::current_request_id());
            let body = standard(Some("Server Error"), errorcode::SERVER_ERROR, Some(&detail));
            reply(StatusCode::INTERNAL_SERVER_ERROR, body, None)
        }
    }
}
