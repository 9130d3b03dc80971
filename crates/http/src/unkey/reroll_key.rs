//! `keys.rerollKey`.

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

/// Unkey's `V2KeysRerollKeyRequestBody`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct RerollKeyRequest {
    key_id: String,
    /// How long the old key keeps working, in ms.
    expiration: u64,
}

/// `keys.rerollKey`: a new key with the same settings and counters; the old
/// one keeps working for `expiration` ms.
pub(super) async fn reroll_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, _, req): (_, _, RerollKeyRequest) = begin(&state, &peer, &headers, raw, "keys:write").await?;
    let id = key_id(&req.key_id)?;
    let grace_ms = req.expiration;
    own_key(&state, caller, id).await?;
    let created = off_workers(&state.engine, move |e| e.rotate_key(id, grace_ms, &Actor::Key(caller)))
        .await
        .map_err(engine_problem)?;
    Ok(ok(json!({"keyId": created.info.id.to_string(), "key": created.token.expose()})))
}
