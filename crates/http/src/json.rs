//! Request bodies in (read into the types of [`crate::wire`], then turned
//! into the engine's with their values checked), key and tool views out.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use keyward::{BatchKey, ImportKey, KeyInfo, KeyUpdate, NewKey, NewSigning, NewTool, ToolUpdate, Workspace};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{
    Concurrency, Credits, LimitsError, MAX_RATE_LIMIT, MAX_WINDOW_MS, RateLimit, Refill, RefillInterval,
    valid_rate_name,
};
use keyward_core::permission::Permission;
use keyward_core::signature::NoncePolicy;
use keyward_core::{KeyHash, Limits, Token, UnixMillis};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::body::{self, BodyError, Path};
use crate::envelope::ApiError;
use crate::wire;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest accepted body of `POST /v1/api-keys/batch` (up to
/// [`MAX_BATCH_SPECS`] key specs).
pub const MAX_BATCH_BODY: usize = 4 * 1024 * 1024;

/// Most key specs one `POST /v1/api-keys/batch` takes.
pub const MAX_BATCH_SPECS: usize = 1_000;

/// Most entries of a list in a request body (permissions, IP rules, tools,
/// rates).
const MAX_LIST: usize = 256;

/// Reads a JSON body of at most [`MAX_BODY`] bytes as a `T`.
pub(crate) fn read<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    read_within(headers, body, MAX_BODY)
}

/// [`read`] of a body of at most `max` bytes.
pub(crate) fn read_within<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes, max: usize) -> Result<T, ApiError> {
    if blank(headers, body, max)? {
        return Err(ApiError::invalid("body", "a JSON object is required"));
    }
    body::parse(body).map_err(|e| body_error(e, body, "body"))
}

/// [`read`], where a blank body is the default `T` (every field absent).
pub(crate) fn read_or_default<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    if blank(headers, body, MAX_BODY)? {
        return Ok(T::default());
    }
    body::parse(body).map_err(|e| body_error(e, body, "body"))
}

/// Whether the body is blank; refuses one over `max` bytes, or one that is
/// not declared JSON.
fn blank(headers: &HeaderMap, body: &Bytes, max: usize) -> Result<bool, ApiError> {
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body over {max} bytes"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(true);
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::invalid("content-type", "must be application/json"));
    }
    Ok(false)
}

/// A body that could not be read as its type, as a 400 (`root` names the
/// whole body).
fn body_error(e: BodyError, bytes: &[u8], root: &str) -> ApiError {
    // Not JSON at all: the path of a syntax error is only where the reader
    // stopped (`limits.?`); the body as a whole is wrong.
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return ApiError::invalid(root, format!("invalid JSON: {}", e.message));
    }
    value_error(e, root)
}

/// A value of a well-formed body that its type refuses, as a 400 naming
/// the value's path (`root` for the whole body). A missing field is named
/// itself, and a value that should be an object says so rather than name
/// a Rust type.
fn value_error(e: BodyError, root: &str) -> ApiError {
    let at = if e.path.is_empty() { Path::root() } else { Path::at(e.path) };
    let name = |p: &Path| if p.as_str().is_empty() { root.to_owned() } else { p.to_string() };
    if let Some(field) = e.message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        return ApiError::invalid(&name(&at.field(field)), "is required");
    }
    if e.message.starts_with("invalid type: ") && e.message.contains(", expected struct ") {
        return ApiError::invalid(&name(&at), "must be a JSON object");
    }
    // serde's names for JSON's arrays, objects and numbers.
    let message = e
        .message
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected an object")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u8", "expected an integer from 0 to 255");
    ApiError::invalid(&name(&at), message)
}

/// 400 naming the value at `at`.
fn invalid(at: &Path, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(if at.as_str().is_empty() { "body" } else { at.as_str() }, message)
}

fn at_most<T>(list: &[T], at: &Path) -> Result<(), ApiError> {
    if list.len() > MAX_LIST { Err(invalid(at, format!("at most {MAX_LIST} entries"))) } else { Ok(()) }
}

/// A time: RFC 3339 text or Unix milliseconds.
fn time_at(t: wire::Time, at: &Path) -> Result<UnixMillis, ApiError> {
    match t {
        wire::Time::Millis(ms) => Ok(UnixMillis(ms)),
        wire::Time::Text(s) => UnixMillis::parse_rfc3339(&s)
            .ok_or_else(|| invalid(at, "must be an RFC 3339 time such as 2024-03-01T10:00:00.000Z")),
    }
}

pub(crate) fn permissions(list: &[String], at: &Path) -> Result<Vec<Permission>, ApiError> {
    at_most(list, at)?;
    list.iter().enumerate().map(|(i, p)| Permission::parse(p).map_err(|e| invalid(&at.index(i), e))).collect()
}

pub(crate) fn strings(list: Vec<String>, at: &Path) -> Result<Vec<String>, ApiError> {
    at_most(&list, at)?;
    Ok(list)
}

pub(crate) fn ip_rules(list: &[wire::IpRule], at: &Path) -> Result<IpRules, ApiError> {
    at_most(list, at)?;
    let rules = list.iter().enumerate().map(|(i, r)| {
        let action = match r.action {
            wire::IpAction::Allow => "allow",
            wire::IpAction::Deny => "deny",
        };
        IpRule::parse(action, &r.cidr).map_err(|e| invalid(&at.index(i).field("cidr"), e))
    });
    Ok(IpRules(rules.collect::<Result<_, _>>()?))
}

/// The checks of [`Limits::validate`] on one rate limit, naming the field
/// at fault: `limits.rates[1].window_ms: must be at least 1`.
fn check_rate(r: &RateLimit, at: &Path) -> Result<(), ApiError> {
    if !valid_rate_name(&r.name) {
        return Err(invalid(&at.field("name"), LimitsError::RateName));
    }
    for (field, value, max) in [("limit", r.limit, MAX_RATE_LIMIT), ("window_ms", r.window_ms, MAX_WINDOW_MS)] {
        if value == 0 {
            return Err(invalid(&at.field(field), "must be at least 1"));
        }
        if value > max {
            return Err(invalid(&at.field(field), format!("must be at most {max}")));
        }
    }
    Ok(())
}

pub(crate) fn limits(spec: wire::LimitsSpec, at: &Path) -> Result<Limits, ApiError> {
    let mut limits = Limits::default();
    if let Some(list) = spec.rates {
        at_most(&list, &at.field("rates"))?;
        for (i, r) in list.into_iter().enumerate() {
            let rate = RateLimit {
                name: r.name.unwrap_or_else(|| "default".into()),
                limit: r.limit,
                window_ms: r.window_ms,
                auto_apply: r.auto_apply.unwrap_or(true),
            };
            let here = at.field("rates").index(i);
            check_rate(&rate, &here)?;
            if limits.rates.iter().any(|o| o.name == rate.name) {
                return Err(invalid(&here.field("name"), format!("`{}` names an earlier rate limit too", rate.name)));
            }
            limits.rates.push(rate);
        }
    }
    if let Some(r) = spec.rate {
        let rate = RateLimit { name: "default".into(), limit: r.limit, window_ms: r.window_ms, auto_apply: true };
        check_rate(&rate, &at.field("rate"))?;
        // A key's limits as the API shows them name the default rate twice
        // (`rate` and an entry of `rates`): sent back unchanged, they are
        // the same limits.
        match limits.rates.iter().find(|l| l.name == "default") {
            None => limits.rates.insert(0, rate),
            Some(same) if *same == rate => {}
            Some(_) => {
                return Err(invalid(
                    &at.field("rate"),
                    "differs from the entry of rates named default; give one of them",
                ));
            }
        }
    }
    limits.cooldown_ms = spec.cooldown_ms;
    limits.daily = spec.daily;
    limits.concurrency = match spec.concurrency {
        None => None,
        Some(wire::ConcurrencySpec::Max(max)) => {
            let max = u32::try_from(max)
                .ok()
                .filter(|&m| m > 0)
                .ok_or_else(|| invalid(&at.field("concurrency"), "must be a positive integer"))?;
            Some(Concurrency { max, lease_ms: DEFAULT_LEASE_MS })
        }
        Some(wire::ConcurrencySpec::Leased(c)) => {
            let at = at.field("concurrency").field("max");
            let max = u32::try_from(c.max).map_err(|_| invalid(&at, "too large"))?;
            if max == 0 {
                return Err(invalid(&at, "must be at least 1"));
            }
            Some(Concurrency { max, lease_ms: c.lease_ms.unwrap_or(DEFAULT_LEASE_MS) })
        }
    };
    if let Some(c) = spec.credits {
        let refill = match c.refill {
            None => None,
            Some(r) => {
                let interval = match r.interval {
                    wire::RefillInterval::Daily => RefillInterval::Daily,
                    wire::RefillInterval::Monthly => {
                        let day = r.day.unwrap_or(1);
                        if !(1..=31).contains(&day) {
                            let at = at.field("credits").field("refill").field("day");
                            return Err(invalid(&at, "must be 1 to 31"));
                        }
                        RefillInterval::Monthly { day }
                    }
                };
                Some(Refill { interval, amount: r.amount })
            }
        };
        limits.credits = Some(Credits { initial: c.initial, refill });
    }
    limits.validate().map_err(|e| invalid(at, e))?;
    Ok(limits)
}

fn signing(spec: wire::SigningSpec) -> NewSigning {
    let user_id = match spec.user_id {
        wire::UserId::Text(s) => s,
        wire::UserId::Number(n) => n.to_string(),
    };
    let nonce_policy = match spec.nonce_policy {
        None | Some(wire::NoncePolicySpec::Monotonic) => NoncePolicy::Monotonic,
        Some(wire::NoncePolicySpec::Unique) => {
            NoncePolicy::Unique { window_ms: spec.nonce_window_ms.unwrap_or(600_000), capacity: 4096 }
        }
    };
    NewSigning { user_id, nonce_policy }
}

/// A new key's settings from its spec at `at`; omitted `permissions` are
/// `inherited` (the creator's).
pub(crate) fn new_key(spec: wire::KeySpec, at: &Path, inherited: &[Permission]) -> Result<NewKey, ApiError> {
    let Some(name) = spec.name.or(spec.title) else {
        return Err(invalid(&at.field("name"), "is required"));
    };
    Ok(NewKey {
        name,
        expire_now: spec.expire_now.unwrap_or(false),
        expires_at: spec.expires_at.map(|t| time_at(t, &at.field("expires_at"))).transpose()?,
        permissions: match &spec.permissions {
            Some(p) => permissions(p, &at.field("permissions"))?,
            None => inherited.to_vec(),
        },
        ip_rules: match &spec.ip_rules {
            Some(r) => ip_rules(r, &at.field("ip_rules"))?,
            None => IpRules::default(),
        },
        limits: spec.limits.map(|l| limits(l, &at.field("limits"))).transpose()?,
        tool_limits: Vec::new(),
        tools: spec.tools.map(|t| strings(t, &at.field("tools"))).transpose()?.unwrap_or_default(),
        meta: spec.meta.map(Value::Object),
        signing: spec.signing.map(signing),
        bearer: spec.bearer.unwrap_or(false),
        disabled: spec.disabled.unwrap_or(false),
        ..NewKey::default()
    })
}

/// One spec of a batch at `at` (`keys[3]`): read on its own, so every
/// refused spec of a batch is named.
pub(crate) fn batch_key(item: wire::BatchItem, at: &Path, inherited: &[Permission]) -> Result<BatchKey, ApiError> {
    let spec = item.0.map_err(|e| {
        let path = if e.path.is_empty() { at.clone() } else { Path::at(format!("{at}.{}", e.path)) };
        value_error(BodyError { path: path.to_string(), message: e.message }, "body")
    })?;
    new_key(spec, at, inherited).map(BatchKey::New)
}

/// A line of a `keyward key import --file` file: a key spec (the fields of
/// `POST /v1/api-keys`), with `token` (a key issued elsewhere, by its
/// token) or `hash` (by the SHA-256 hex of its token, with an optional
/// display `start`); with neither, the key is new and its token is minted.
/// Unknown fields are refused; errors name the path of the value
/// (`limits.rates[0].window_ms: …`), or `spec` for the whole line.
pub fn import_spec(line: &[u8]) -> Result<BatchKey, ApiError> {
    let spec: wire::ImportSpec = body::parse(line).map_err(|e| body_error(e, line, "spec"))?;
    let (spec, [token, hash, start]) = spec.split();
    let at = Path::root();
    let key = new_key(spec, &at, &[])?;
    match (token, hash, start) {
        (Some(_), Some(_), _) => Err(invalid(&at.field("hash"), "give token or hash, not both")),
        (Some(_), None, Some(_)) => {
            Err(invalid(&at.field("start"), "only with hash (a token's start is its first characters)"))
        }
        (Some(t), None, None) => match Token::parse_foreign(&t) {
            Ok(token) => Ok(BatchKey::Token { token, key }),
            Err(e) => Err(invalid(&at.field("token"), e)),
        },
        (None, Some(h), start) => match KeyHash::from_hex(&h) {
            Some(hash) => Ok(BatchKey::Hash(ImportKey { hash: Some(hash), key, start })),
            None => Err(invalid(&at.field("hash"), "must be 64 hex characters (SHA-256 of the token)")),
        },
        (None, None, Some(_)) => Err(invalid(&at.field("start"), "only with hash")),
        (None, None, None) => Ok(BatchKey::New(key)),
    }
}

/// The change a key PATCH asks for.
pub(crate) fn key_update(patch: wire::KeyPatch) -> Result<KeyUpdate, ApiError> {
    let at = Path::root();
    Ok(KeyUpdate {
        name: patch.name.or(patch.title),
        expires_at: patch
            .expires_at
            .into_change()
            .map(|t| t.map(|t| time_at(t, &at.field("expires_at"))).transpose())
            .transpose()?,
        permissions: patch.permissions.map(|p| permissions(&p, &at.field("permissions"))).transpose()?,
        ip_rules: patch
            .ip_rules
            .into_change()
            .map(|r| r.map_or_else(|| Ok(IpRules::default()), |r| ip_rules(&r, &at.field("ip_rules"))))
            .transpose()?,
        limits: patch
            .limits
            .into_change()
            .map(|l| l.map_or_else(|| Ok(Limits::default()), |l| limits(l, &at.field("limits"))))
            .transpose()?,
        tools: patch
            .tools
            .into_change()
            .map(|t| t.map_or_else(|| Ok(Vec::new()), |t| strings(t, &at.field("tools"))))
            .transpose()?,
        meta: patch.meta.into_change().map(|m| m.map(Value::Object)),
        disabled: patch.disabled,
        credits: patch.credits.and_then(|c| c.remaining).map(keyward::CreditChange::Set),
        ..KeyUpdate::default()
    })
}

fn permission(p: &str, at: &Path) -> Result<Permission, ApiError> {
    Permission::parse(p).map_err(|e| invalid(at, e))
}

/// A new tool.
pub(crate) fn new_tool(spec: wire::ToolSpec) -> Result<NewTool, ApiError> {
    Ok(NewTool {
        permission: spec.permission.map(|p| permission(&p, &Path::root().field("permission"))).transpose()?,
        name: spec.name,
        enabled: spec.enabled.unwrap_or(true),
        cooldown_ms: spec.cooldown_ms,
        daily_limit: spec.daily_limit,
        upstream: spec.upstream,
        timeout_ms: spec.timeout_ms,
    })
}

/// The change a tool PATCH asks for.
pub(crate) fn tool_update(patch: wire::ToolPatch) -> Result<ToolUpdate, ApiError> {
    let at = Path::root().field("permission");
    Ok(ToolUpdate {
        enabled: patch.enabled,
        permission: patch.permission.into_change().map(|p| p.map(|p| permission(&p, &at)).transpose()).transpose()?,
        cooldown_ms: patch.cooldown_ms.into_change(),
        daily_limit: patch.daily_limit.into_change(),
        upstream: patch.upstream.into_change(),
        timeout_ms: patch.timeout_ms.into_change(),
    })
}

/// The change a workspace PATCH asks for. Key lifetimes are in seconds.
pub(crate) fn workspace_update(patch: wire::WorkspacePatch) -> Result<keyward::WorkspaceUpdate, ApiError> {
    let at = Path::root();
    let seconds = |p: body::Patch<u64>, field: &str| {
        p.into_change()
            .map(|s| s.map(|s| s.checked_mul(1000).ok_or_else(|| invalid(&at.field(field), "too large"))).transpose())
            .transpose()
    };
    Ok(keyward::WorkspaceUpdate {
        name: patch.name,
        prefix: patch
            .prefix
            .map(|p| keyward_core::Prefix::parse(&p).map_err(|e| invalid(&at.field("prefix"), e)))
            .transpose()?,
        api_access: patch.api_access,
        ip_rules: patch.ip_rules.map(|r| ip_rules(&r, &at.field("ip_rules"))).transpose()?,
        default_limits: patch.default_limits.map(|l| limits(l, &at.field("default_limits"))).transpose()?,
        limit_sync: patch
            .limit_sync
            .map(|s| s.parse::<keyward::LimitSync>().map_err(|e| invalid(&at.field("limit_sync"), e)))
            .transpose()?,
        default_key_ttl_ms: seconds(patch.default_key_ttl, "default_key_ttl")?,
        max_key_ttl_ms: seconds(patch.max_key_ttl, "max_key_ttl")?,
    })
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

/// A key as the API answers it (`GET /v1/api-keys/{id}`): never its token
/// or hash.
pub fn key_view(k: &KeyInfo) -> wire::Key {
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

/// A key just created as the API answers it (`POST /v1/api-keys`): its
/// view, its token (when minted here rather than imported by hash) and, for
/// a signing key, its signing secrets, shown this once.
pub fn created_key_view(
    info: &KeyInfo,
    token: Option<&Token>,
    signing: Option<&keyward::SigningSecrets>,
) -> wire::CreatedKey {
    wire::CreatedKey {
        key: key_view(info),
        secret: token.map(|t| t.expose().to_owned()),
        api_secret: signing.map(|s| s.api_secret.as_str().to_owned()),
        user_id: signing.map(|s| s.user_id.clone()),
        nonce: signing.map(|s| s.nonce),
        nonce_policy: signing.map(|s| match s.nonce_policy {
            NoncePolicy::Monotonic => wire::NoncePolicy::Monotonic,
            _ => wire::NoncePolicy::Unique,
        }),
    }
}

/// A rotated key as the API answers it (`POST /v1/api-keys/{id}/rotate`):
/// the new key, its token, and the id of the key it replaces.
pub fn rotated_key_view(created: &keyward::CreatedKey, rotated_from: keyward_core::KeyId) -> wire::RotatedKey {
    let signing = created.signing.as_ref();
    wire::RotatedKey {
        key: key_view(&created.info),
        secret: created.token.expose().to_owned(),
        rotated_from: rotated_from.to_string(),
        api_secret: signing.map(|s| s.api_secret.as_str().to_owned()),
        user_id: signing.map(|s| s.user_id.clone()),
        nonce: signing.map(|s| s.nonce),
    }
}

/// An audit event as the API answers it (`GET /v1/audit`).
pub fn audit_view(e: &keyward::AuditEvent) -> wire::AuditEvent {
    wire::AuditEvent {
        seq: e.seq,
        at: e.at.to_rfc3339(),
        actor: e.actor.clone(),
        action: e.action.as_str().to_owned(),
        target: e.target.clone(),
        detail: e.detail.clone(),
    }
}

/// A key as JSON: never a token or hash.
pub(crate) fn key_json(k: &KeyInfo) -> Value {
    wire::value(&key_view(k))
}

pub(crate) fn tool_json(tool: &keyward::Tool) -> Value {
    wire::value(&tool_view(tool))
}

/// A tool as the API answers it.
pub fn tool_view(tool: &keyward::Tool) -> wire::Tool {
    let t = &tool.policy;
    wire::Tool {
        name: t.name.clone(),
        enabled: t.enabled,
        permission: t.permission.as_ref().map(|p| p.as_str().to_owned()),
        cooldown_ms: t.limits.cooldown_ms,
        daily_limit: t.limits.daily,
        upstream: tool.upstream.clone(),
        timeout_ms: tool.timeout_ms,
    }
}

/// The verdict on a key as `POST /v1/verify` answers it; `lease_id` when
/// its leases are held.
pub fn verify_view(out: &keyward::Verification, lease_id: Option<String>) -> wire::VerifyResult {
    let v = &out.verdict;
    let k = out.key.as_ref();
    wire::VerifyResult {
        valid: v.is_valid(),
        code: v.code.as_str(),
        key_id: v.key_id.map(|k| k.to_string()),
        workspace_id: v.workspace_id.map(|w| w.to_string()),
        name: k.map(|k| k.name.clone()),
        permissions: k.map(|k| k.permissions.iter().map(|p| p.as_str().to_owned()).collect()),
        meta: k.and_then(|k| k.meta.clone()),
        expires_at: k.and_then(|k| k.expires_at).map(UnixMillis::to_rfc3339),
        remaining: v.quota.credits_remaining,
        retry_after_ms: v.retry_after_ms,
        ratelimit: v.quota.rate.as_ref().map(|r| wire::RateState {
            limit: r.limit,
            remaining: r.remaining,
            reset_ms: r.reset_ms,
        }),
        lease_id,
    }
}

/// A workspace as JSON. Key lifetimes are in seconds.
pub(crate) fn workspace_json(w: &Workspace) -> Value {
    wire::value(&workspace_view(w))
}

/// A workspace as the API answers it (`GET /v1/workspaces/{id}`). Key
/// lifetimes are in seconds.
pub fn workspace_view(w: &Workspace) -> wire::Workspace {
    let seconds = |ms: Option<u64>| ms.map(|ms| ms / 1000);
    wire::Workspace {
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
    }
}
