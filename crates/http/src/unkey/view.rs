//! The Unkey-shaped JSON of keys, credits and rate limits.

use keyward::KeyInfo;
use keyward_core::limits::{RateReport, Refill, RefillInterval};
use keyward_core::permission::Permission;
use keyward_core::{KeyHash, KeyId, UnixMillis};
use serde_json::{Map, Value, json};

/// A short stable id derived from public facts (Unkey gives limits and
/// identities ids of their own; keyward names them).
fn derived_id(prefix: &str, parts: &[&str]) -> String {
    format!("{prefix}_{}", &KeyHash::of(&parts.join("\u{1f}")).to_hex()[..16])
}

fn credits_json(k: &KeyInfo) -> Option<Value> {
    let policy = k.limits.credits?;
    let mut c = json!({ "remaining": k.credits_remaining.unwrap_or(policy.initial) });
    if let (Some(r), Value::Object(m)) = (policy.refill, &mut c) {
        m.insert("refill".into(), refill_json(r));
    }
    Some(c)
}

pub(super) fn refill_json(r: Refill) -> Value {
    match r.interval {
        RefillInterval::Daily => json!({"interval": "daily", "amount": r.amount}),
        RefillInterval::Monthly { day } => json!({"interval": "monthly", "amount": r.amount, "refillDay": day}),
    }
}

pub(super) fn identity_json(k: &KeyInfo) -> Option<Value> {
    let external = k.external_id.as_deref()?;
    let ws = k.workspace.to_string();
    Some(json!({"id": derived_id("id", &[&ws, external]), "externalId": external}))
}

fn ratelimit_id(k: KeyId, name: &str) -> String {
    derived_id("rl", &[&k.to_string(), name])
}

/// Unkey's `KeyResponseData`.
pub(super) fn key_json(k: &KeyInfo) -> Value {
    let mut m = Map::new();
    m.insert("keyId".into(), k.id.to_string().into());
    m.insert("start".into(), k.start.clone().into());
    m.insert("enabled".into(), (!k.disabled).into());
    m.insert("name".into(), k.name.clone().into());
    if let Some(meta) = &k.meta {
        m.insert("meta".into(), meta.clone());
    }
    m.insert("createdAt".into(), k.created_at.get().into());
    if let Some(t) = k.last_used_at {
        m.insert("lastUsedAt".into(), t.get().into());
    }
    if let Some(t) = k.expires_at {
        m.insert("expires".into(), t.get().into());
    }
    m.insert("permissions".into(), k.permissions.iter().map(Permission::as_str).collect::<Vec<_>>().into());
    m.insert("roles".into(), k.roles.clone().into());
    if let Some(c) = credits_json(k) {
        m.insert("credits".into(), c);
    }
    if let Some(i) = identity_json(k) {
        m.insert("identity".into(), i);
    }
    if !k.limits.rates.is_empty() {
        let rates: Vec<Value> = k
            .limits
            .rates
            .iter()
            .map(|r| {
                json!({
                    "id": ratelimit_id(k.id, &r.name),
                    "name": r.name,
                    "limit": r.limit,
                    "duration": r.window_ms,
                    "autoApply": r.auto_apply,
                })
            })
            .collect();
        m.insert("ratelimits".into(), rates.into());
    }
    Value::Object(m)
}

/// One entry of `verifyKey`'s `ratelimits`; `reset` is when the limit is
/// fully replenished, in Unix milliseconds.
pub(super) fn rate_report_json(key: KeyId, r: &RateReport, now: UnixMillis) -> Value {
    json!({
        "exceeded": r.exceeded,
        "id": ratelimit_id(key, &r.name),
        "name": r.name,
        "limit": r.limit,
        "duration": r.window_ms,
        "reset": now.plus(r.reset_ms).get(),
        "remaining": r.remaining,
        "autoApply": r.auto_apply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable() {
        let k = KeyId([7; 16]);
        assert_eq!(ratelimit_id(k, "calls"), ratelimit_id(k, "calls"));
        assert_ne!(ratelimit_id(k, "calls"), ratelimit_id(k, "tokens"));
        assert!(ratelimit_id(k, "calls").starts_with("rl_"));
        assert_eq!(ratelimit_id(k, "calls").len(), 3 + 16);
    }
}
