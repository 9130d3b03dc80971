//! `keys.deleteKey`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keyward::Actor;
use serde::Deserialize;
use serde_json::json;

use super::problem::{Problem, engine_problem};
use super::{begin, key_id, ok, own_key};
use crate::AppState;
use crate::blocking::off_workers;
use crate::routes::Peer;

/// Unkey's `V2KeysDeleteKeyRequestBody`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct DeleteKeyRequest {
    key_id: String,
    /// Accepted either way: keyward always deletes for good.
    #[serde(rename = "permanent")]
    _permanent: Option<bool>,
}

/// `keys.deleteKey`. keyward deletes for good either way (`permanent`).
pub(super) async fn delete_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, _, req): (_, _, DeleteKeyRequest) = begin(&state, &peer, &headers, raw, "keys:write").await?;
    let id = key_id(&req.key_id)?;
    own_key(&state, caller, id).await?;
    off_workers(&state.engine, move |e| e.delete_key(id, &Actor::Key(caller))).await.map_err(engine_problem)?;
    Ok(ok(json!({})))
}
