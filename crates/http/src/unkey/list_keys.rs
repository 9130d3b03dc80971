//! `apis.listKeys`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::problem::{Problem, engine_problem};
use super::view::key_json;
use super::{api, begin, body, respond};
use crate::AppState;
use crate::routes::Peer;

/// Unkey's largest page.
const MAX_LIMIT: u64 = 100;

/// Unkey's `V2ApisListKeysRequestBody`. A `null` counts as absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct ListKeysRequest {
    api_id: String,
    limit: Option<u64>,
    cursor: Option<String>,
    external_id: Option<String>,
    decrypt: Option<bool>,
    /// There is no cache to revalidate: every change is visible at once.
    #[serde(rename = "revalidateKeysCache")]
    _revalidate_keys_cache: Option<bool>,
}

/// `apis.listKeys`: newest first, with a cursor while there are more.
pub(super) async fn list_keys(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (_, ws, req): (_, _, ListKeysRequest) = begin(&state, &peer, &headers, raw, "keys:read").await?;
    let at = body();
    let ws = api(&req.api_id, ws)?;
    if req.decrypt == Some(true) {
        return Err(Problem::invalid(at.field("decrypt"), "keyward never stores keys, so none can be decrypted")
            .fix("omit decrypt or set it to false"));
    }
    let limit = req.limit.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::invalid(at.field("limit"), format!("must be 1 to {MAX_LIMIT}")));
    }
    let page = state
        .engine
        .list_keys_of(ws, req.external_id.as_deref(), limit as usize, req.cursor.as_deref())
        .map_err(|e| match e {
            keyward::Error::Invalid { field: "cursor", message } => Problem::invalid(at.field("cursor"), message),
            other => engine_problem(other),
        })?;
    let mut pagination = json!({ "hasMore": page.next_cursor.is_some() });
    if let (Some(c), Value::Object(m)) = (&page.next_cursor, &mut pagination) {
        m.insert("cursor".into(), c.clone().into());
    }
    let data: Vec<Value> = page.items.iter().map(key_json).collect();
    Ok(respond(StatusCode::OK, json!({"data": data, "pagination": pagination})))
}
