//! `keys.createKey`, and the rate limit and refill objects updateKey shares.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keyward::{Actor, NewKey};
use keyward_core::limits::{Credits, RateLimit, Refill, RefillInterval};
use keyward_core::{Limits, Prefix, UnixMillis};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::problem::{Problem, engine_problem};
use super::{DEFAULT_NAME, MAX_ARRAY, MAX_RATELIMITS, api, at_most, begin, body, ok, permissions, positive, rate_name};
use crate::AppState;
use crate::blocking::off_workers;
use crate::body::Path;
use crate::routes::Peer;

/// Largest `byteLength` keyward can honour: its tokens carry 30 random base62
/// characters, 178 bits, at least 22 bytes' worth.
const MAX_BYTE_LENGTH: u64 = 22;
/// Unkey's smallest `byteLength`.
const MIN_BYTE_LENGTH: u64 = 16;

/// Unkey's `V2KeysCreateKeyRequestBody`. A `null` counts as absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct CreateKeyRequest {
    api_id: String,
    prefix: Option<String>,
    name: Option<String>,
    byte_length: Option<u64>,
    external_id: Option<String>,
    meta: Option<Map<String, Value>>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    expires: Option<u64>,
    credits: Option<KeyCreditsData>,
    ratelimits: Option<Vec<RatelimitRequest>>,
    enabled: Option<bool>,
    recoverable: Option<bool>,
}

/// Unkey's `KeyCreditsData`: `remaining` absent or `null` is unlimited.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct KeyCreditsData {
    remaining: Option<u64>,
    refill: Option<CreditsRefill>,
}

/// Unkey's `KeyCreditsRefill` (and `UpdateKeyCreditsRefill`, the same shape).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct CreditsRefill {
    interval: Interval,
    amount: u64,
    refill_day: Option<u64>,
}

/// Read from a string only (serde would also take `{"daily": null}`).
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
enum Interval {
    Daily,
    Monthly,
}

impl TryFrom<String> for Interval {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "daily" => Ok(Self::Daily),
            "monthly" => Ok(Self::Monthly),
            _ => Err("must be \"daily\" or \"monthly\""),
        }
    }
}

impl CreditsRefill {
    /// The engine's refill; `at` locates this object.
    pub(super) fn refill(self, at: &Path) -> Result<Refill, Problem> {
        let interval = match (self.interval, self.refill_day) {
            (Interval::Daily, None) => RefillInterval::Daily,
            (Interval::Daily, Some(_)) => {
                return Err(Problem::invalid(at.field("refillDay"), "only applies to a monthly refill"));
            }
            (Interval::Monthly, day) => {
                let day = u8::try_from(day.unwrap_or(1))
                    .ok()
                    .filter(|d| (1..=31).contains(d))
                    .ok_or_else(|| Problem::invalid(at.field("refillDay"), "must be 1 to 31"))?;
                RefillInterval::Monthly { day }
            }
        };
        Ok(Refill { interval, amount: self.amount })
    }
}

/// Unkey's `RatelimitRequest`: one named rate limit of a key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RatelimitRequest {
    name: String,
    limit: u64,
    duration: u64,
    auto_apply: Option<bool>,
}

/// `ratelimits` of createKey and updateKey: names unique and well-formed,
/// `limit` and `duration` at least 1. `at` locates the array.
pub(super) fn rate_limits(list: Vec<RatelimitRequest>, at: &Path) -> Result<Vec<RateLimit>, Problem> {
    at_most(&list, MAX_RATELIMITS, at)?;
    let mut out: Vec<RateLimit> = Vec::with_capacity(list.len());
    for (i, r) in list.into_iter().enumerate() {
        let at = at.index(i);
        rate_name(&r.name, &at.field("name"))?;
        if out.iter().any(|o| o.name == r.name) {
            return Err(Problem::invalid(at.field("name"), format!("`{}` is used twice", r.name)));
        }
        let limit = positive(r.limit, &at.field("limit"))?;
        let window_ms = positive(r.duration, &at.field("duration"))?;
        out.push(RateLimit { name: r.name, limit, window_ms, auto_apply: r.auto_apply.unwrap_or(false) });
    }
    Ok(out)
}

/// `keys.createKey`.
pub(super) async fn create_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (caller, ws, req): (_, _, CreateKeyRequest) = begin(&state, &peer, &headers, raw, "keys:write").await?;
    let at = body();
    let ws = api(&req.api_id, ws)?;
    let prefix = match req.prefix {
        None => None,
        Some(p) => Some(Prefix::parse(&p).map_err(|_| {
            Problem::invalid(at.field("prefix"), "must be 1 to 16 characters of a-z 0-9, in groups joined by _")
                .fix("use a lowercase prefix such as prod")
        })?),
    };
    if let Some(n) = req.byte_length
        && !(MIN_BYTE_LENGTH..=MAX_BYTE_LENGTH).contains(&n)
    {
        return Err(Problem::invalid(
            at.field("byteLength"),
            format!("must be {MIN_BYTE_LENGTH} to {MAX_BYTE_LENGTH}"),
        )
        .fix("keyward keys always carry 178 random bits; omit byteLength"));
    }
    if req.recoverable == Some(true) {
        return Err(Problem::invalid(at.field("recoverable"), "keyward never stores keys, so none is recoverable")
            .fix("omit recoverable or set it to false"));
    }
    let credits = match req.credits {
        None => None,
        Some(c) => {
            let at = at.field("credits");
            let refill = c.refill.map(|r| r.refill(&at.field("refill"))).transpose()?;
            match (c.remaining, refill) {
                (Some(initial), refill) => Some(Credits { initial, refill }),
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(Problem::invalid(at.field("remaining"), "is required with a refill")
                        .fix("set remaining to the starting balance"));
                }
            }
        }
    };
    let rates = match req.ratelimits {
        Some(list) => rate_limits(list, &at.field("ratelimits"))?,
        None => Vec::new(),
    };
    let limits = (credits.is_some() || !rates.is_empty()).then(|| Limits { rates, credits, ..Limits::default() });
    let permissions = match &req.permissions {
        Some(list) => permissions(list, &at.field("permissions"))?,
        None => Vec::new(),
    };
    let roles = req.roles.unwrap_or_default();
    at_most(&roles, MAX_ARRAY, &at.field("roles"))?;
    let spec = NewKey {
        name: req.name.unwrap_or_else(|| DEFAULT_NAME.to_owned()),
        expires_at: req.expires.map(UnixMillis),
        permissions,
        limits,
        meta: req.meta.map(Value::Object),
        disabled: !req.enabled.unwrap_or(true),
        prefix,
        external_id: req.external_id,
        roles,
        ..NewKey::default()
    };
    let created = off_workers(&state.engine, move |e| e.create_key(ws, spec, &Actor::Key(caller)))
        .await
        .map_err(engine_problem)?;
    Ok(ok(json!({"keyId": created.info.id.to_string(), "key": created.token.expose()})))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{app, call};

    #[tokio::test]
    async fn an_unknown_field_is_refused_by_name() {
        let a = app();
        let body = json!({"apiId": a.ws.to_string(), "name": "k", "expiresAt": 1}).to_string();
        let (status, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!(status, 400, "{v}");
        let e = &v["error"]["errors"][0];
        assert_eq!(e["location"], "body.expiresAt");
        assert!(e["message"].as_str().unwrap().starts_with("unknown field `expiresAt`"), "{e}");
        // Nested objects too.
        let body = json!({"apiId": a.ws.to_string(), "credits": {"remaining": 1, "reset": 2}}).to_string();
        let (status, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!((status, &v["error"]["errors"][0]["location"]), (400, &json!("body.credits.reset")));
        // An object given as an array of its fields is not one.
        let body = json!({"apiId": a.ws.to_string(), "credits": [5, null]}).to_string();
        let (status, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!(
            (status, &v["error"]["errors"][0]),
            (400, &json!({"location": "body.credits", "message": "invalid type: sequence, expected an object"}))
        );
        assert!(a.engine.list_keys_of(a.ws, None, 10, None).unwrap().items.len() == 1, "only the root key");
    }

    #[tokio::test]
    async fn errors_locate_the_value_by_its_path() {
        let a = app();
        let rate = |duration: serde_json::Value| json!({"name": "r", "limit": 1, "duration": duration});
        let create = |rates: serde_json::Value| json!({"apiId": a.ws.to_string(), "ratelimits": rates}).to_string();
        // A value of the wrong type, found by serde.
        let body = create(json!([rate(json!(1000)), rate(json!("1s"))]));
        let (status, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!(status, 400, "{v}");
        let e = &v["error"]["errors"][0];
        assert_eq!(e["location"], "body.ratelimits[1].duration");
        assert_eq!(v["error"]["detail"], format!("body.ratelimits[1].duration: {}", e["message"].as_str().unwrap()));
        // A value out of range, found by the checks after it.
        let body = create(json!([{"name": "a", "limit": 1, "duration": 1}, {"name": "b", "limit": 1, "duration": 0}]));
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!(
            v["error"]["errors"][0],
            json!({"location": "body.ratelimits[1].duration", "message": "must be at least 1"})
        );
        // A missing field is named itself.
        let body = create(json!([{"name": "a", "duration": 1}]));
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
        assert_eq!(v["error"]["errors"][0], json!({"location": "body.ratelimits[0].limit", "message": "is required"}));
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), "{}").await;
        assert_eq!(v["error"]["errors"][0], json!({"location": "body.apiId", "message": "is required"}));
        let body = json!({"apiId": a.ws.to_string(), "credits": {"remaining": 5, "refill": {"interval": "weekly", "amount": 1}}});
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body.to_string()).await;
        assert_eq!(
            v["error"]["errors"][0],
            json!({"location": "body.credits.refill.interval", "message": "must be \"daily\" or \"monthly\""})
        );
        // Limits on lists stay.
        let many: Vec<_> = (0..65).map(|i| json!({"name": format!("r{i}"), "limit": 1, "duration": 1})).collect();
        let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &create(json!(many))).await;
        assert_eq!(v["error"]["errors"][0], json!({"location": "body.ratelimits", "message": "at most 64 entries"}));
    }
}
