//! `keys.verifyKey`, and Unkey's verdict codes.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keyward::Checks;
use keyward_core::Code;
use keyward_core::limits::{AUTO_APPLIED, Cost, RateCost};
use keyward_core::permission::Permission;
use keyward_core::query::PermissionQuery;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::problem::Problem;
use super::view::{identity_json, rate_report_json};
use super::{MAX_ARRAY, MAX_RATELIMITS, at_most, begin, body, ok, positive, rate_name};
use crate::AppState;
use crate::blocking::verifying;
use crate::envelope::VerdictTag;
use crate::routes::{Peer, client_ip};

/// Unkey's `V2KeysVerifyKeyRequestBody`. A `null` counts as absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "a JSON object")]
struct VerifyKeyRequest {
    key: String,
    /// Tags only feed Unkey's analytics; checked for shape, then unused.
    tags: Option<Vec<String>>,
    permissions: Option<String>,
    credits: Option<VerifyCredits>,
    ratelimits: Option<Vec<VerifyRatelimit>>,
    migration_id: Option<String>,
}

/// Unkey's `KeysVerifyKeyCredits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct VerifyCredits {
    cost: u64,
}

/// Unkey's `KeysVerifyKeyRatelimit`: a limit of the key applied at `cost`
/// (default 1), its numbers replaced for this call by `limit` and
/// `duration`, or an ad-hoc limit when the key has none of that name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct VerifyRatelimit {
    name: String,
    cost: Option<u64>,
    limit: Option<u64>,
    duration: Option<u64>,
}

/// Unkey's `verifyKey` code for a keyward verdict code. Unkey has fewer codes:
/// every refusal by a quota other than credits is `RATE_LIMITED`, a key that
/// does not exist for the caller (unknown, malformed, revoked, deleted) is
/// `NOT_FOUND`, and refusals Unkey has no code for are `FORBIDDEN`.
fn unkey_code(code: Code) -> &'static str {
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

/// `keys.verifyKey`: always 200 for a verdict; the root key needs `keys:verify`.
pub(super) async fn verify_key(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, Problem> {
    let (_, ws, req): (_, _, VerifyKeyRequest) = begin(&state, &peer, &headers, raw, "keys:verify").await?;
    let at = body();
    if let Some(tags) = &req.tags {
        at_most(tags, MAX_ARRAY, &at.field("tags"))?;
    }
    if req.migration_id.is_some() {
        return Err(Problem::invalid(at.field("migrationId"), "keyward has no on-demand migrations")
            .fix("import keys by hash with `keyward key import`, then omit migrationId"));
    }
    let query = match &req.permissions {
        None => None,
        Some(text) => Some(PermissionQuery::parse(text).map_err(|e| {
            Problem::invalid(at.field("permissions"), e.to_string())
                .fix("join permission names with AND / OR and group with parentheses, e.g. (a OR b) AND c")
        })?),
    };
    let credits = req.credits.map_or(1, |c| c.cost);
    // Unkey counts rate limits on every verification, even at cost 0.
    let mut rates = vec![RateCost::named(AUTO_APPLIED, 1)];
    let named = req.ratelimits.as_deref().unwrap_or_default();
    at_most(named, MAX_RATELIMITS, &at.field("ratelimits"))?;
    for (i, r) in named.iter().enumerate() {
        let at = at.field("ratelimits").index(i);
        rate_name(&r.name, &at.field("name"))?;
        let limit = r.limit.map(|n| positive(n, &at.field("limit"))).transpose()?;
        let window_ms = r.duration.map(|n| positive(n, &at.field("duration"))).transpose()?;
        rates.push(RateCost { name: r.name.as_str(), cost: r.cost.unwrap_or(1), limit, window_ms });
    }
    let call = keyward::Request {
        ip: client_ip(&state, &peer, &headers),
        cost: Cost { credits, rates: &rates },
        ..Default::default()
    };
    let checks = Checks { workspace: Some(ws), permission_query: query.as_ref() };
    let out = verifying(&state.engine, || state.engine.verify_with(&req.key, &call, &checks));
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
    Ok(resp)
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
}
