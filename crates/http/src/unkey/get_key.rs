//! `keys.getKey` and `keys.whoami`: one key, by id or by its secret.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::problem::Problem;
use super::view::key_json;
use super::{begin, body, key_id, ok, own_key};
use crate::AppState;
use crate::routes::Peer;

/// Unkey's `V2KeysGetKeyRequestBody`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct GetKeyRequest {
    key_id: String,
    decrypt: Option<bool>,
}

/// Unkey's `V2KeysWhoamiRequestBody`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct WhoamiRequest {
    key: String,
}

/// `keys.getKey`.
pub(super) async fn get_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, _, req): (_, _, GetKeyRequest) = begin(&state, &peer, &headers, raw, "keys:read").await?;
    if req.decrypt == Some(true) {
        return Err(Problem::invalid(body().field("decrypt"), "keyward never stores keys, so none can be decrypted")
            .fix("omit decrypt or set it to false"));
    }
    let id = key_id(&req.key_id)?;
    Ok(ok(key_json(&own_key(&state, caller, id).await?)))
}

/// `keys.whoami`: the key a token belongs to, without verifying it.
pub(super) async fn whoami(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (_, ws, req): (_, _, WhoamiRequest) = begin(&state, &peer, &headers, raw, "keys:read").await?;
    match state.engine.find_key(&req.key) {
        Some(k) if k.workspace == ws => Ok(ok(key_json(&k))),
        _ => Err(Problem::not_found("unkey/data/key_not_found", "no key of this workspace matches")),
    }
}
