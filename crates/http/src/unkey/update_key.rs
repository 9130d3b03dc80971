//! `keys.updateKey`: an absent field is kept, `null` clears it.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keyward::{Actor, CreditChange, KeyUpdate};
use keyward_core::UnixMillis;
use keyward_core::limits::Credits;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::create_key::{CreditsRefill, RatelimitRequest, rate_limits};
use super::problem::{Problem, engine_problem};
use super::{DEFAULT_NAME, MAX_ARRAY, at_most, begin, body, key_id, ok, own_key, permissions};
use crate::AppState;
use crate::blocking::off_workers;
use crate::body::Patch;
use crate::routes::Peer;

/// Unkey's `V2KeysUpdateKeyRequestBody`. A [`Patch`] field tells absent
/// (kept) from `null` (cleared); for the others `null` counts as absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct UpdateKeyRequest {
    key_id: String,
    /// `null` names the key [`DEFAULT_NAME`].
    #[serde(default)]
    name: Patch<String>,
    #[serde(default)]
    external_id: Patch<String>,
    #[serde(default)]
    meta: Patch<Map<String, Value>>,
    #[serde(default)]
    expires: Patch<u64>,
    /// `null` makes the key unlimited.
    #[serde(default)]
    credits: Patch<UpdateKeyCreditsData>,
    /// `null` (or `[]`) removes them all.
    #[serde(default)]
    ratelimits: Patch<Vec<RatelimitRequest>>,
    enabled: Option<bool>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
}

/// Unkey's `UpdateKeyCreditsData`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct UpdateKeyCreditsData {
    /// A new balance; `null` makes the key unlimited (its refill goes too);
    /// absent keeps the balance.
    #[serde(default)]
    remaining: Patch<u64>,
    /// Absent keeps the refill, `null` removes it.
    #[serde(default)]
    refill: Patch<CreditsRefill>,
}

/// `keys.updateKey`: an absent field is kept, `null` clears it.
pub(super) async fn update_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, _, req): (_, _, UpdateKeyRequest) = begin(&state, &peer, &headers, raw, "keys:write").await?;
    let at = body();
    let id = key_id(&req.key_id)?;
    let current = own_key(&state, caller, id).await?;
    if let Some(roles) = &req.roles {
        at_most(roles, MAX_ARRAY, &at.field("roles"))?;
    }
    let mut update = KeyUpdate {
        name: match req.name {
            Patch::Keep => None,
            Patch::Clear => Some(DEFAULT_NAME.to_owned()),
            Patch::Set(name) => Some(name),
        },
        external_id: req.external_id.into_change(),
        meta: req.meta.into_change().map(|m| m.map(Value::Object)),
        expires_at: req.expires.into_change().map(|t| t.map(UnixMillis)),
        disabled: req.enabled.map(|e| !e),
        roles: req.roles,
        permissions: req.permissions.map(|list| permissions(&list, &at.field("permissions"))).transpose()?,
        ..KeyUpdate::default()
    };
    let mut limits = current.limits.clone();
    let mut limits_changed = false;
    match req.ratelimits {
        Patch::Keep => {}
        Patch::Clear => {
            limits.rates.clear();
            limits_changed = true;
        }
        Patch::Set(list) => {
            limits.rates = rate_limits(list, &at.field("ratelimits"))?;
            limits_changed = true;
        }
    }
    // A new balance is set after the update, so it takes effect even when
    // the credits policy itself is unchanged.
    let mut balance = None;
    match req.credits {
        Patch::Keep => {}
        Patch::Clear => {
            limits.credits = None;
            limits_changed = true;
        }
        Patch::Set(c) => {
            let at = at.field("credits");
            let refill = match c.refill {
                Patch::Keep => current.limits.credits.and_then(|p| p.refill),
                Patch::Clear => None,
                Patch::Set(r) => Some(r.refill(&at.field("refill"))?),
            };
            limits.credits = match c.remaining {
                // Unlimited: the refill schedule goes too.
                Patch::Clear => None,
                Patch::Set(n) => {
                    balance = Some(n);
                    Some(Credits { initial: n, refill })
                }
                Patch::Keep => match current.credits_remaining {
                    Some(left) => Some(Credits { initial: left, refill }),
                    None if refill.is_some() => {
                        return Err(Problem::invalid(at.field("remaining"), "is required: the key has no credits yet")
                            .fix("set remaining to the starting balance"));
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
    off_workers(&state.engine, move |e| e.update_key(id, update, &Actor::Key(caller))).await.map_err(engine_problem)?;
    Ok(ok(json!({})))
}

#[cfg(test)]
mod tests {
    use keyward_core::KeyId;
    use serde_json::json;

    use super::super::tests::{app, call};

    #[tokio::test]
    async fn null_clears_and_absent_keeps() {
        let a = app();
        let body = json!({"apiId": a.ws.to_string(), "name": "k", "expires": 4_102_444_800_000_u64, "meta": {"a": 1}});
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body.to_string()).await;
        let key_id = v["data"]["keyId"].as_str().unwrap().to_owned();
        let id = KeyId::parse(&key_id).unwrap();
        let update = |body: serde_json::Value| {
            let mut body = body;
            body["keyId"] = json!(key_id);
            body.to_string()
        };

        // Absent: kept.
        let (status, _, v) = call(&a, "POST", "/v2/keys.updateKey", Some(&a.root), &update(json!({"name": "n"}))).await;
        assert_eq!((status, v), (200, json!({"data": {}})));
        let k = a.engine.key(id).unwrap();
        assert_eq!((k.name.as_str(), k.expires_at.map(|t| t.get())), ("n", Some(4_102_444_800_000)));
        assert_eq!(k.meta, Some(json!({"a": 1})));

        // `null`: cleared (a name goes back to the default).
        let body = update(json!({"expires": null, "name": null}));
        let (status, _, _) = call(&a, "POST", "/v2/keys.updateKey", Some(&a.root), &body).await;
        assert_eq!(status, 200);
        let k = a.engine.key(id).unwrap();
        assert_eq!((k.name.as_str(), k.expires_at), (super::DEFAULT_NAME, None));
        assert_eq!(k.meta, Some(json!({"a": 1})), "meta was absent: kept");

        // A value: set; a wrong one is located.
        let (status, _, _) =
            call(&a, "POST", "/v2/keys.updateKey", Some(&a.root), &update(json!({"expires": 5}))).await;
        assert_eq!(status, 200);
        assert_eq!(a.engine.key(id).unwrap().expires_at.map(|t| t.get()), Some(5));
        let body = update(json!({"credits": {"remaining": -1}}));
        let (status, _, v) = call(&a, "POST", "/v2/keys.updateKey", Some(&a.root), &body).await;
        assert_eq!((status, &v["error"]["errors"][0]["location"]), (400, &json!("body.credits.remaining")));
    }
}
