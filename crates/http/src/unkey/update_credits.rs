//! `keys.updateCredits`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keyward::{Actor, CreditChange, KeyUpdate};
use keyward_core::limits::Credits;
use serde::Deserialize;
use serde_json::{Value, json};

use super::problem::{Problem, engine_problem};
use super::view::refill_json;
use super::{begin, body, key_id, ok, own_key};
use crate::AppState;
use crate::blocking::off_workers;
use crate::routes::Peer;

/// Unkey's `V2KeysUpdateCreditsRequestBody`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct UpdateCreditsRequest {
    key_id: String,
    operation: Operation,
    /// Absent or `null`: with `set`, unlimited.
    value: Option<u64>,
}

/// Read from a string only (serde would also take `{"set": null}`).
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
enum Operation {
    Set,
    Increment,
    Decrement,
}

impl TryFrom<String> for Operation {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "set" => Ok(Self::Set),
            "increment" => Ok(Self::Increment),
            "decrement" => Ok(Self::Decrement),
            _ => Err("must be \"set\", \"increment\" or \"decrement\""),
        }
    }
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Increment => "increment",
            Self::Decrement => "decrement",
        }
    }
}

/// `keys.updateCredits`: `set` (a `null` value makes the key unlimited),
/// `increment` or `decrement` (down to 0).
pub(super) async fn update_credits(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, _, req): (_, _, UpdateCreditsRequest) = begin(&state, &peer, &headers, raw, "keys:write").await?;
    let at = body();
    let id = key_id(&req.key_id)?;
    let (operation, value) = (req.operation, req.value);
    let actor = Actor::Key(caller);
    let current = own_key(&state, caller, id).await?;
    // Only the credits limit changes; the key's other limits are kept as the
    // engine holds them when it commits.
    let set_policy = |credits: Option<Credits>| {
        let update = KeyUpdate { credit_limit: Some(credits), ..KeyUpdate::default() };
        off_workers(&state.engine, move |e| e.update_key(id, update, &actor))
    };
    let change = match (operation, value) {
        (Operation::Set, None) => {
            set_policy(None).await.map_err(engine_problem)?;
            return Ok(ok(json!({"remaining": null})));
        }
        (Operation::Set, Some(n)) if current.limits.credits.is_none() => {
            set_policy(Some(Credits { initial: n, refill: None })).await.map_err(engine_problem)?;
            return Ok(ok(json!({"remaining": n})));
        }
        (Operation::Set, Some(n)) => CreditChange::Set(n),
        (Operation::Increment | Operation::Decrement, None) => {
            return Err(Problem::invalid(at.field("value"), format!("is required to {}", operation.as_str())));
        }
        (Operation::Increment | Operation::Decrement, Some(_)) if current.limits.credits.is_none() => {
            return Err(Problem::invalid(
                at.field("operation"),
                format!("cannot {} a key with unlimited credits", operation.as_str()),
            )
            .fix("use operation \"set\" to give the key a balance first"));
        }
        (Operation::Increment, Some(n)) => CreditChange::Increment(n),
        (Operation::Decrement, Some(n)) => CreditChange::Decrement(n),
    };
    let remaining =
        off_workers(&state.engine, move |e| e.update_credits(id, change, &actor)).await.map_err(engine_problem)?;
    let mut data = json!({ "remaining": remaining });
    if let (Some(r), Value::Object(m)) = (current.limits.credits.and_then(|c| c.refill), &mut data) {
        m.insert("refill".into(), refill_json(r));
    }
    Ok(ok(data))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{app, call};

    #[tokio::test]
    async fn the_operation_is_one_of_three_strings() {
        let a = app();
        let body = json!({"apiId": a.ws.to_string(), "credits": {"remaining": 3}}).to_string();
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        let key_id = v["data"]["keyId"].clone();
        let set_or = "must be \"set\", \"increment\" or \"decrement\"";
        let wrong = [
            ("double", json!("double"), set_or),
            ("map", json!({"set": null}), "invalid type: map, expected a string"),
        ];
        for (what, operation, message) in wrong {
            let body = json!({"keyId": key_id, "operation": operation, "value": 1}).to_string();
            let (status, _, v) = call(&a, "POST", "/v2/keys.updateCredits", Some(&a.root), &body).await;
            assert_eq!(status, 400, "{what}: {v}");
            assert_eq!(v["error"]["errors"][0], json!({"location": "body.operation", "message": message}), "{what}");
        }
        let body = json!({"keyId": key_id, "operation": "increment"}).to_string();
        let (_, _, v) = call(&a, "POST", "/v2/keys.updateCredits", Some(&a.root), &body).await;
        assert_eq!(v["error"]["errors"][0], json!({"location": "body.value", "message": "is required to increment"}));
        let body = json!({"keyId": key_id, "operation": "increment", "value": 2}).to_string();
        let (status, _, v) = call(&a, "POST", "/v2/keys.updateCredits", Some(&a.root), &body).await;
        assert_eq!((status, v), (200, json!({"data": {"remaining": 5}})));
    }
}
