//! Request bodies in, key and tool views out.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use keyward::{BatchKey, ImportKey, KeyInfo, NewKey, NewSigning, Workspace};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{Concurrency, Credits, RateLimit, Refill, RefillInterval};
use keyward_core::permission::Permission;
use keyward_core::signature::NoncePolicy;
use keyward_core::{KeyHash, Limits, Token, UnixMillis};
use serde_json::{Map, Value};

use crate::envelope::ApiError;
use crate::wire;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest accepted body of `POST /v1/api-keys/batch` (up to
/// [`MAX_BATCH_SPECS`] key specs).
pub const MAX_BATCH_BODY: usize = 4 * 1024 * 1024;

/// Most key specs one `POST /v1/api-keys/batch` takes.
pub const MAX_BATCH_SPECS: usize = 1_000;

/// Parses a JSON object body. An empty body is an empty object when
/// `empty_ok`; the content type must be JSON otherwise.
pub(crate) fn object(headers: &HeaderMap, body: &Bytes, empty_ok: bool) -> Result<Map<String, Value>, ApiError> {
    object_within(headers, body, empty_ok, MAX_BODY)
}

/// [`object`] of a body of at most `max` bytes.
pub(crate) fn object_within(
    headers: &HeaderMap,
    body: &Bytes,
    empty_ok: bool,
    max: usize,
) -> Result<Map<String, Value>, ApiError> {
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body over {max} bytes"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok { Ok(Map::new()) } else { Err(ApiError::invalid("body", "a JSON object is required")) };
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::invalid("content-type", "must be application/json"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("invalid JSON: {e}"))),
    }
}

/// Typed access to the fields of a JSON object, with errors naming the field.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self { map, prefix: String::new() }
    }

    /// The fields of `map`, named under `prefix` (e.g. `keys[3].`).
    pub(crate) fn under(map: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Self { map, prefix: prefix.into() }
    }

    fn nested(map: &'a Map<String, Value>, prefix: String) -> Self {
        Self { map, prefix }
    }

    pub(crate) fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// Refuses a field not in `known`, naming it: a typo in a field name is
    /// an error, not a setting silently left as it was.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(&self.name(k), "unknown field")),
            None => Ok(()),
        }
    }

    /// A duration in whole seconds, as milliseconds: `Some(None)` for JSON
    /// `null` (cleared), `None` when absent.
    pub(crate) fn seconds_or_null(&self, field: &str) -> Result<Option<Option<u64>>, ApiError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v
                .as_u64()
                .and_then(|s| s.checked_mul(1000))
                .map(|ms| Some(Some(ms)))
                .ok_or_else(|| ApiError::invalid(&self.name(field), "must be a whole number of seconds, or null")),
        }
    }

    /// The value, treating JSON `null` as absent.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether the field is present (even as `null`).
    pub(crate) fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub(crate) fn str(&self, field: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(&self.name(field), "must be a string")),
        }
    }

    pub(crate) fn bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(&self.name(field), "must be true or false")),
        }
    }

    pub(crate) fn u64(&self, field: &str) -> Result<Option<u64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(&self.name(field), "must be a non-negative integer")),
        }
    }

    pub(crate) fn object(&self, field: &str) -> Result<Option<Fields<'a>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields::nested(m, format!("{}.", self.name(field))))),
            Some(_) => Err(ApiError::invalid(&self.name(field), "must be an object")),
        }
    }

    pub(crate) fn array(&self, field: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                if a.len() > 256 {
                    return Err(ApiError::invalid(&self.name(field), "at most 256 entries"));
                }
                Ok(Some(a))
            }
            Some(_) => Err(ApiError::invalid(&self.name(field), "must be an array")),
        }
    }

    pub(crate) fn strings(&self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(a) = self.array(field)? else { return Ok(None) };
        a.iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid(&self.name(field), "must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A time: RFC 3339 text or Unix milliseconds.
    pub(crate) fn time(&self, field: &str) -> Result<Option<UnixMillis>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => UnixMillis::parse_rfc3339(s).map(Some).ok_or_else(|| {
                ApiError::invalid(&self.name(field), "must be an RFC 3339 time such as 2024-03-01T10:00:00.000Z")
            }),
            Some(v) => v
                .as_u64()
                .map(|ms| Some(UnixMillis(ms)))
                .ok_or_else(|| ApiError::invalid(&self.name(field), "must be an RFC 3339 time or Unix milliseconds")),
        }
    }

    pub(crate) fn permissions(&self, field: &str) -> Result<Option<Vec<Permission>>, ApiError> {
        let Some(list) = self.strings(field)? else { return Ok(None) };
        list.iter()
            .map(|p| Permission::parse(p).map_err(|e| ApiError::invalid(&self.name(field), e)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(crate) fn ip_rules(&self, field: &str) -> Result<Option<IpRules>, ApiError> {
        let Some(list) = self.array(field)? else { return Ok(None) };
        let name = self.name(field);
        let mut rules = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let Value::Object(m) = v else {
                return Err(ApiError::invalid(
                    &format!("{name}[{i}]"),
                    "must be {\"action\":\"allow\"|\"deny\",\"cidr\":…}",
                ));
            };
            let f = Fields::nested(m, format!("{name}[{i}]."));
            let action = f.str("action")?.ok_or_else(|| ApiError::invalid(&f.name("action"), "is required"))?;
            let cidr = f.str("cidr")?.ok_or_else(|| ApiError::invalid(&f.name("cidr"), "is required"))?;
            rules.push(IpRule::parse(action, cidr).map_err(|e| ApiError::invalid(&name, e))?);
        }
        Ok(Some(IpRules(rules)))
    }

    pub(crate) fn limits(&self, field: &str) -> Result<Option<Limits>, ApiError> {
        let Some(f) = self.object(field)? else { return Ok(None) };
        let mut limits = Limits::default();
        if let Some(r) = f.object("rate")? {
            let limit = r.u64("limit")?.ok_or_else(|| ApiError::invalid(&r.name("limit"), "is required"))?;
            let window_ms =
                r.u64("window_ms")?.ok_or_else(|| ApiError::invalid(&r.name("window_ms"), "is required"))?;
            limits.rates.push(RateLimit { name: "default".into(), limit, window_ms, auto_apply: true });
        }
        if let Some(list) = f.array("rates")? {
            for (i, v) in list.iter().enumerate() {
                let Value::Object(m) = v else {
                    return Err(ApiError::invalid(&f.name(&format!("rates[{i}]")), "must be an object"));
                };
                let r = Fields::nested(m, format!("{}rates[{i}].", f.prefix));
                let name = r.str("name")?.unwrap_or("default").to_owned();
                let limit = r.u64("limit")?.ok_or_else(|| ApiError::invalid(&r.name("limit"), "is required"))?;
                let window_ms =
                    r.u64("window_ms")?.ok_or_else(|| ApiError::invalid(&r.name("window_ms"), "is required"))?;
                let auto_apply = r.bool("auto_apply")?.unwrap_or(true);
                limits.rates.push(RateLimit { name, limit, window_ms, auto_apply });
            }
        }
        limits.cooldown_ms = f.u64("cooldown_ms")?;
        limits.daily = f.u64("daily")?;
        limits.concurrency = match f.get("concurrency") {
            None => None,
            Some(Value::Object(m)) => {
                let c = Fields::nested(m, f.name("concurrency."));
                let max = c.u64("max")?.ok_or_else(|| ApiError::invalid(&c.name("max"), "is required"))?;
                Some(Concurrency {
                    max: u32::try_from(max).map_err(|_| ApiError::invalid(&c.name("max"), "too large"))?,
                    lease_ms: c.u64("lease_ms")?.unwrap_or(DEFAULT_LEASE_MS),
                })
            }
            Some(v) => {
                let max = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| ApiError::invalid(&f.name("concurrency"), "must be a positive integer"))?;
                Some(Concurrency { max, lease_ms: DEFAULT_LEASE_MS })
            }
        };
        if let Some(c) = f.object("credits")? {
            let remaining =
                c.u64("remaining")?.ok_or_else(|| ApiError::invalid(&c.name("remaining"), "is required"))?;
            let refill = match c.object("refill")? {
                None => None,
                Some(r) => {
                    let amount = r.u64("amount")?.ok_or_else(|| ApiError::invalid(&r.name("amount"), "is required"))?;
                    let interval = match r.str("interval")? {
                        Some("daily") => RefillInterval::Daily,
                        Some("monthly") => {
                            let day = r.u64("day")?.unwrap_or(1);
                            let day = u8::try_from(day)
                                .ok()
                                .filter(|d| (1..=31).contains(d))
                                .ok_or_else(|| ApiError::invalid(&r.name("day"), "must be 1 to 31"))?;
                            RefillInterval::Monthly { day }
                        }
                        _ => return Err(ApiError::invalid(&r.name("interval"), "must be \"daily\" or \"monthly\"")),
                    };
                    Some(Refill { interval, amount })
                }
            };
            limits.credits = Some(Credits { initial: remaining, refill });
        }
        limits.validate().map_err(|e| ApiError::invalid(&self.name(field), e))?;
        Ok(Some(limits))
    }

    pub(crate) fn signing(&self, field: &str) -> Result<Option<NewSigning>, ApiError> {
        let Some(f) = self.object(field)? else { return Ok(None) };
        let user_id = match f.get("user_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            _ => return Err(ApiError::invalid(&f.name("user_id"), "is required (string or integer)")),
        };
        let nonce_policy = match f.str("nonce_policy")? {
            None | Some("monotonic") => NoncePolicy::Monotonic,
            Some("unique") | Some("unique_in_window") => {
                let window_ms = f.u64("nonce_window_ms")?.unwrap_or(600_000);
                NoncePolicy::Unique { window_ms, capacity: 4096 }
            }
            Some(_) => return Err(ApiError::invalid(&f.name("nonce_policy"), "must be \"monotonic\" or \"unique\"")),
        };
        Ok(Some(NewSigning { user_id, nonce_policy }))
    }
}

/// Fields of a new key's spec (`POST /v1/api-keys`, each item of
/// `POST /v1/api-keys/batch`, each line of `keyward key import`).
pub const KEY_SPEC_FIELDS: &[&str] = &[
    "name",
    "title",
    "expire_now",
    "expires_at",
    "permissions",
    "ip_rules",
    "limits",
    "tools",
    "bearer",
    "meta",
    "signing",
    "disabled",
];

/// Fields a spec of a key issued elsewhere may add (`keyward key import`):
/// its token, or the SHA-256 of it (hex), and a display start with a hash.
pub const IMPORT_FIELDS: &[&str] = &["token", "hash", "start"];

/// A new key's settings from a spec object; errors name the field under
/// the spec's prefix.
/// A key spec; omitted `permissions` are `inherited` (the creator's).
pub(crate) fn new_key(f: &Fields<'_>, inherited: &[Permission]) -> Result<NewKey, ApiError> {
    let name = match (f.str("name")?, f.str("title")?) {
        (Some(n), _) | (None, Some(n)) => n.to_owned(),
        (None, None) if f.has("name") || f.has("title") => {
            return Err(ApiError::invalid(&f.name("name"), "must be a string"));
        }
        (None, None) => return Err(ApiError::invalid(&f.name("name"), "is required")),
    };
    Ok(NewKey {
        name,
        expire_now: f.bool("expire_now")?.unwrap_or(false),
        expires_at: f.time("expires_at")?,
        permissions: match f.permissions("permissions")? {
            Some(p) => p,
            None => inherited.to_vec(),
        },
        ip_rules: f.ip_rules("ip_rules")?.unwrap_or_default(),
        limits: f.limits("limits")?,
        tool_limits: Vec::new(),
        tools: f.strings("tools")?.unwrap_or_default(),
        meta: match f.get("meta") {
            None => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(ApiError::invalid(&f.name("meta"), "must be a JSON object")),
        },
        signing: f.signing("signing")?,
        bearer: f.bool("bearer")?.unwrap_or(false),
        disabled: f.bool("disabled")?.unwrap_or(false),
        ..NewKey::default()
    })
}

/// One key of a batch from a spec object whose fields are named under
/// `prefix` (`keys[3].` over HTTP, `` for a line of an import file).
/// Unknown fields are refused. With `import`, a spec may carry `token` (a
/// key issued elsewhere, by its token) or `hash` (by the SHA-256 hex of
/// its token, with an optional display `start`); with neither, or without
/// `import`, the key is new and its token is minted.
pub fn key_spec(spec: &Value, prefix: &str, import: bool, inherited: &[Permission]) -> Result<BatchKey, ApiError> {
    let Value::Object(map) = spec else {
        let at = prefix.strip_suffix('.').unwrap_or(prefix);
        return Err(ApiError::invalid(if at.is_empty() { "spec" } else { at }, "must be a JSON object"));
    };
    let f = Fields::under(map, prefix);
    if import {
        f.only(&[KEY_SPEC_FIELDS, IMPORT_FIELDS].concat())?;
    } else {
        f.only(KEY_SPEC_FIELDS)?;
    }
    let key = new_key(&f, inherited)?;
    match (f.str("token")?, f.str("hash")?, f.str("start")?) {
        (Some(_), Some(_), _) => Err(ApiError::invalid(&f.name("hash"), "give token or hash, not both")),
        (Some(_), None, Some(_)) => {
            Err(ApiError::invalid(&f.name("start"), "only with hash (a token's start is its first characters)"))
        }
        (Some(t), None, None) => match Token::parse_foreign(t) {
            Ok(token) => Ok(BatchKey::Token { token, key }),
            Err(e) => Err(ApiError::invalid(&f.name("token"), e)),
        },
        (None, Some(h), start) => match KeyHash::from_hex(h) {
            Some(hash) => Ok(BatchKey::Hash(ImportKey { hash: Some(hash), key, start: start.map(str::to_owned) })),
            None => Err(ApiError::invalid(&f.name("hash"), "must be 64 hex characters (SHA-256 of the token)")),
        },
        (None, None, Some(_)) => Err(ApiError::invalid(&f.name("start"), "only with hash")),
        (None, None, None) => Ok(BatchKey::New(key)),
    }
}

/// Lease lifetime when a concurrency limit is given as a bare number.
pub const DEFAULT_LEASE_MS: u64 = 60_000;

pub(crate) fn time(t: Option<UnixMillis>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub(crate) fn limits_json(l: &Limits) -> wire::Limits {
    wire::Limits {
        rate: l
            .rates
            .iter()
            .find(|r| r.name == "default")
            .map(|r| wire::Rate { limit: r.limit, window_ms: r.window_ms }),
        rates: (!l.rates.is_empty()).then(|| {
            l.rates
                .iter()
                .map(|r| wire::NamedRate {
                    name: r.name.clone(),
                    limit: r.limit,
                    window_ms: r.window_ms,
                    auto_apply: r.auto_apply,
                })
                .collect()
        }),
        cooldown_ms: l.cooldown_ms,
        daily: l.daily,
        concurrency: l.concurrency.map(|c| wire::Concurrency { max: c.max, lease_ms: c.lease_ms }),
        credits: l.credits.map(|c| wire::CreditsView {
            initial: c.initial,
            refill: c.refill.map(|r| match r.interval {
                RefillInterval::Daily => {
                    wire::RefillView { interval: wire::RefillInterval::Daily, amount: r.amount, day: None }
                }
                RefillInterval::Monthly { day } => {
                    wire::RefillView { interval: wire::RefillInterval::Monthly, amount: r.amount, day: Some(day) }
                }
            }),
        }),
    }
}

pub(crate) fn ip_rules_json(rules: &IpRules) -> Vec<wire::IpRule> {
    rules
        .0
        .iter()
        .map(|r| wire::IpRule {
            action: if r.action() == "deny" { wire::IpAction::Deny } else { wire::IpAction::Allow },
            cidr: r.net().to_string(),
        })
        .collect()
}

/// A key's view: never a token or hash.
pub(crate) fn key_view(k: &KeyInfo) -> wire::Key {
    wire::Key {
        id: k.id.to_string(),
        workspace_id: k.workspace.to_string(),
        name: k.name.clone(),
        start: k.start.clone(),
        status: k.status.into(),
        created_at: k.created_at.to_rfc3339(),
        created_by: k.created_by.clone(),
        last_used_at: k.last_used_at.map(UnixMillis::to_rfc3339),
        expires_at: k.expires_at.map(UnixMillis::to_rfc3339),
        revoked_at: k.revoked_at.map(UnixMillis::to_rfc3339),
        disabled: k.disabled,
        permissions: k.permissions.iter().map(|p| p.as_str().to_owned()).collect(),
        ip_rules: ip_rules_json(&k.ip_rules),
        limits: limits_json(&k.limits),
        tools: k.tools.clone(),
        meta: k.meta.clone(),
        credits_remaining: k.credits_remaining,
        imported: k.imported,
        serial: k.serial,
        bearer: k.bearer,
        signing: k.signing_user_id.as_ref().map(|u| wire::SigningUser { user_id: u.clone() }),
    }
}

/// A key as JSON: never a token or hash.
pub(crate) fn key_json(k: &KeyInfo) -> Value {
    wire::value(&key_view(k))
}

pub(crate) fn tool_json(tool: &keyward::Tool) -> Value {
    let t = &tool.policy;
    wire::value(&wire::Tool {
        name: t.name.clone(),
        enabled: t.enabled,
        permission: t.permission.as_ref().map(|p| p.as_str().to_owned()),
        cooldown_ms: t.limits.cooldown_ms,
        daily_limit: t.limits.daily,
        upstream: tool.upstream.clone(),
        timeout_ms: tool.timeout_ms,
    })
}

/// A workspace as JSON. Key lifetimes are in seconds.
pub(crate) fn workspace_json(w: &Workspace) -> Value {
    let seconds = |ms: Option<u64>| ms.map(|ms| ms / 1000);
    wire::value(&wire::Workspace {
        id: w.policy.id.to_string(),
        name: w.policy.name.clone(),
        api_access: w.policy.api_access,
        prefix: w.policy.prefix.as_str().to_owned(),
        ip_rules: ip_rules_json(&w.policy.ip_rules),
        default_limits: limits_json(&w.policy.default_limits),
        limit_sync: w.limit_sync.to_string(),
        default_key_ttl: seconds(w.key_ttl.default_ms),
        max_key_ttl: seconds(w.key_ttl.max_ms),
        created_at: w.created_at.to_rfc3339(),
    })
}
