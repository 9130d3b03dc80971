//! Deciding a call: the one place the order of checks lives (SPEC §4).
//!
//! [`lookup`] turns a raw token into the key it names (or `MALFORMED`,
//! `NOT_FOUND`), [`decide`] runs every later check on a [`Call`] of that key
//! and charges its limits, and [`admit`] is the status, plan and IP part of it
//! on its own. The storage engine, the edge and `LocalVerifier` all go
//! through these functions.

use core::net::IpAddr;

use crate::code::Code;
use crate::limits::{self, Cost, LeaseId, LeaseScope, Quota, Scope, UsageState};
use crate::permission;
use crate::policy::{KeyPolicy, Status, ToolPolicy, WorkspacePolicy};
use crate::query::PermissionQuery;
use crate::time::UnixMillis;
use crate::token::{self, KeyHash};
use crate::verdict::Verdict;

/// What a request asks for, besides its credential.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// Client address, if known. With IP rules in place, unknown fails closed.
    pub ip: Option<IpAddr>,
    /// Tool being called, if any.
    pub tool: Option<&'a str>,
    /// Permissions the caller requires, all of them.
    pub permissions: &'a [&'a str],
    /// A query the key's permissions must satisfy too, checked with
    /// `permissions`.
    pub permission_query: Option<&'a PermissionQuery>,
    /// What the call costs.
    pub cost: Cost<'a>,
    /// The time of the decision.
    pub now: UnixMillis,
}

/// Result of looking the requested tool up.
#[derive(Clone, Copy, Debug)]
pub enum ToolLookup<'a> {
    /// The request names no tool.
    NotRequested,
    /// The request names a tool that does not exist.
    Unknown,
    /// The tool.
    Found(&'a ToolPolicy),
}

/// The counters `decide` may charge.
#[derive(Debug)]
pub struct Usage<'a> {
    /// The key's counters.
    pub key: &'a mut UsageState,
    /// This key's counters under the tool's limits (needed when a tool is found).
    pub tool: Option<&'a mut UsageState>,
    /// This key's counters under its own key×tool limits.
    pub key_tool: Option<&'a mut UsageState>,
}

impl<'a> Usage<'a> {
    /// The counters `call` charges: `key`, the key's own, and when the call
    /// names a tool that was found, the pair kept for that tool (under the
    /// tool's limits, then under the key×tool limits), which `per_tool`
    /// hands out by the tool's name and makes on its first call. A call of
    /// no tool, or of an unknown one, touches no tool's counters.
    pub fn of(
        call: &Call<'_>,
        key: &'a mut UsageState,
        per_tool: impl FnOnce(&str) -> &'a mut (UsageState, UsageState),
    ) -> Self {
        match (call.request.tool, call.tool) {
            (Some(name), ToolLookup::Found(_)) => {
                let (tool, key_tool) = per_tool(name);
                Usage { key, tool: Some(tool), key_tool: Some(key_tool) }
            }
            _ => Usage { key, tool: None, key_tool: None },
        }
    }
}

/// Keys by the SHA-256 of their token: what [`lookup`] searches.
pub trait KeyIndex {
    /// What the index hands back for a key: a position, a reference, a
    /// shared pointer.
    type Key;

    /// The key whose token hashes to `hash`, if any.
    fn by_hash(&self, hash: &KeyHash) -> Option<Self::Key>;

    /// Whether `key` was imported with a token issued elsewhere.
    fn imported(&self, key: &Self::Key) -> bool;

    /// Whether any key here was imported. While none is, a token that fails
    /// the format check is refused without being hashed.
    fn any_imported(&self) -> bool;
}

/// The format and lookup steps (SPEC §4): the key a raw token names in
/// `index`, or the code refusing it before lookup (`MALFORMED`) or at lookup
/// (`NOT_FOUND`).
///
/// A token that fails the format check may still be one issued elsewhere and
/// imported: it is hashed as it is and may only match a key imported as such.
/// Anything else it matches, or nothing, leaves it `MALFORMED`.
#[inline]
pub fn lookup<I: KeyIndex + ?Sized>(index: &I, raw: &str) -> Result<I::Key, Code> {
    match token::check(raw) {
        Ok(()) => index.by_hash(&KeyHash::of(raw)).ok_or(Code::NotFound),
        Err(_) if index.any_imported() && token::check_foreign(raw).is_ok() => match index.by_hash(&KeyHash::of(raw)) {
            Some(key) if index.imported(&key) => Ok(key),
            _ => Err(Code::Malformed),
        },
        Err(_) => Err(Code::Malformed),
    }
}

/// A found key's call: what [`decide`] reads besides the counters it charges.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The key the credential named.
    pub key: &'a KeyPolicy,
    /// The key's workspace.
    pub workspace: &'a WorkspacePolicy,
    /// The requested tool, as found in the key's workspace.
    pub tool: ToolLookup<'a>,
    /// What the call asks for.
    pub request: &'a Request<'a>,
}

/// Decides a call of a key that was found into `v`, applying SPEC §4's
/// order: revoked/expired/disabled → plan → IP → tool → permissions →
/// limits. Limits are charged to `usage` only if every other check passed,
/// and all-or-nothing.
///
/// Every field of `v` is set, whatever it held: a caller that returns the
/// verdict on decides in place instead of copying it back up, and may reuse
/// one verdict for many calls. Format (`MALFORMED`) and lookup (`NOT_FOUND`)
/// come before this: see [`lookup`].
pub fn decide(v: &mut Verdict, call: &Call<'_>, usage: Usage<'_>) {
    v.key_id = Some(call.key.id);
    v.workspace_id = Some(call.key.workspace);
    v.retry_after_ms = None;
    v.leases.clear();
    v.code = match check_and_charge(v, call, usage) {
        Ok(()) => Code::Valid,
        Err(code) => code,
    };
}

/// The checks of [`decide`], charging the limits last. Fills `v`'s quota,
/// leases and retry time; the code is the caller's to set.
fn check_and_charge(v: &mut Verdict, call: &Call<'_>, usage: Usage<'_>) -> Result<(), Code> {
    let &Call { key, workspace, tool, request: req } = call;
    v.quota = Quota::default();
    admit(key, workspace, req.ip, req.now)?;
    let tool = match (req.tool, tool) {
        (None, _) | (Some(_), ToolLookup::NotRequested) => None,
        (Some(_), ToolLookup::Unknown) => return Err(Code::UnknownTool),
        (Some(name), ToolLookup::Found(t)) => {
            if t.name != name || t.workspace != key.workspace {
                return Err(Code::UnknownTool);
            }
            if !t.enabled {
                return Err(Code::ToolDisabled);
            }
            Some(t)
        }
    };
    if let Some(t) = tool {
        if !key.tools.is_empty() && !key.tools.contains(&t.name) {
            return Err(Code::InsufficientPermissions);
        }
        if let Some(p) = &t.permission
            && !permission::granted(&key.permissions, p.as_str())
        {
            return Err(Code::InsufficientPermissions);
        }
    }
    if !req.permissions.iter().all(|p| permission::granted(&key.permissions, p)) {
        return Err(Code::InsufficientPermissions);
    }
    if req.permission_query.is_some_and(|q| !q.allows(&key.permissions)) {
        return Err(Code::InsufficientPermissions);
    }

    // Limits: key, then the tool's limits for this key, then key×tool.
    let Usage { key: key_state, tool: tool_state, key_tool: key_tool_state } = usage;
    let key_scope = Scope { limits: &key.limits, state: key_state };
    let tool_scope =
        tool.filter(|t| !t.limits.is_empty()).zip(tool_state).map(|(t, state)| Scope { limits: &t.limits, state });
    let key_tool_scope = tool
        .and_then(|t| key.limits_for_tool(&t.name))
        .zip(key_tool_state)
        .map(|(limits, state)| Scope { limits, state });
    let has_tool_scope = tool_scope.is_some();
    let Verdict { quota, leases, .. } = v;
    // `i` is the scope's position in the array charged below.
    let lease = |i: usize, id: LeaseId| {
        let scope = match i {
            0 => LeaseScope::Key,
            1 if has_tool_scope => LeaseScope::Tool,
            _ => LeaseScope::KeyTool,
        };
        leases.push((scope, id));
    };
    // Charge the scopes that apply from a stack array (no allocation on the
    // hot path).
    let charged = match (tool_scope, key_tool_scope) {
        (None, None) => limits::charge_into(&mut [key_scope], req.now, &req.cost, quota, lease),
        (Some(t), None) | (None, Some(t)) => limits::charge_into(&mut [key_scope, t], req.now, &req.cost, quota, lease),
        (Some(t), Some(kt)) => limits::charge_into(&mut [key_scope, t, kt], req.now, &req.cost, quota, lease),
    };
    charged.map_err(|(code, retry_after_ms)| {
        v.retry_after_ms = retry_after_ms;
        code
    })
}

/// Decides a call of a found key whose workspace is gone into `v`:
/// `PLAN_INACTIVE`, as [`admit`] answers for a workspace that is not the
/// key's, with the key and its workspace named. Nothing is charged.
pub fn decide_without_workspace(v: &mut Verdict, key: &KeyPolicy) {
    *v = Verdict::bare(Code::PlanInactive);
    v.key_id = Some(key.id);
    v.workspace_id = Some(key.workspace);
}

/// Checks a key's status, plan and IP only: the part of [`decide`] that the
/// signed scheme runs before it verifies a signature.
pub fn admit(key: &KeyPolicy, workspace: &WorkspacePolicy, ip: Option<IpAddr>, now: UnixMillis) -> Result<(), Code> {
    match key.status(now) {
        Status::Active => {}
        Status::Revoked => return Err(Code::Revoked),
        Status::Expired => return Err(Code::Expired),
        Status::Disabled => return Err(Code::Disabled),
    }
    if !workspace.api_access || workspace.id != key.workspace {
        return Err(Code::PlanInactive);
    }
    if !key.ip_rules.permits(ip) || !workspace.ip_rules.permits(ip) {
        return Err(Code::IpDenied);
    }
    Ok(())
}

/// Quota figures without charging anything (for usage reports).
pub fn quota_of(limits: &limits::Limits, state: &UsageState, now: UnixMillis) -> Quota {
    let free = Cost { credits: 0, rates: &[] };
    match limits::peek(limits, state, now, &free) {
        Ok(q) => q,
        Err(r) => r.quota,
    }
}

/// Releases a lease taken by [`decide`].
pub fn release(usage: Usage<'_>, scope: LeaseScope, lease: LeaseId) -> bool {
    match scope {
        LeaseScope::Key => usage.key.release(lease),
        LeaseScope::Tool => usage.tool.is_some_and(|s| s.release(lease)),
        LeaseScope::KeyTool => usage.key_tool.is_some_and(|s| s.release(lease)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{KeyId, WorkspaceId};
    use crate::ip::{IpRule, IpRules};
    use crate::limits::{Concurrency, Credits, Limits, RateLimit};
    use crate::permission::Permission;
    use crate::token::{KeyHash, Prefix};

    fn ws() -> WorkspacePolicy {
        WorkspacePolicy {
            id: WorkspaceId([1; 16]),
            name: "acme".into(),
            api_access: true,
            prefix: Prefix::default_live(),
            ip_rules: IpRules::none(),
            default_limits: Limits::default(),
        }
    }

    fn key() -> KeyPolicy {
        KeyPolicy {
            id: KeyId([2; 16]),
            workspace: WorkspaceId([1; 16]),
            hash: KeyHash::of("x"),
            name: "k".into(),
            revoked_at: None,
            expires_at: None,
            disabled: false,
            permissions: vec![Permission::parse("tools:*").unwrap(), Permission::parse("keys:read").unwrap()],
            ip_rules: IpRules::none(),
            limits: Limits::default(),
            tool_limits: vec![],
            tools: vec![],
            meta: String::new(),
            imported: false,
        }
    }

    fn tool(name: &str, enabled: bool, perm: Option<&str>) -> ToolPolicy {
        ToolPolicy {
            workspace: WorkspaceId([1; 16]),
            name: name.into(),
            enabled,
            permission: perm.map(|p| Permission::parse(p).unwrap()),
            limits: Limits::default(),
        }
    }

    /// [`decide`] into a fresh verdict.
    fn fresh(
        key: &KeyPolicy,
        workspace: &WorkspacePolicy,
        tool: ToolLookup<'_>,
        request: &Request<'_>,
        usage: Usage<'_>,
    ) -> Verdict {
        let mut v = Verdict::bare(Code::Valid);
        decide(&mut v, &Call { key, workspace, tool, request }, usage);
        v
    }

    fn run(k: &KeyPolicy, w: &WorkspacePolicy, t: ToolLookup<'_>, req: &Request<'_>, s: &mut UsageState) -> Verdict {
        let mut ts = UsageState::default();
        let mut kts = UsageState::default();
        fresh(k, w, t, req, Usage { key: s, tool: Some(&mut ts), key_tool: Some(&mut kts) })
    }

    fn code(k: &KeyPolicy, w: &WorkspacePolicy, t: ToolLookup<'_>, req: &Request<'_>) -> Code {
        run(k, w, t, req, &mut UsageState::default()).code
    }

    #[test]
    fn each_code_in_order() {
        let w = ws();
        let now = UnixMillis(1_000);
        let base = Request { now, ip: Some("10.0.0.1".parse().unwrap()), ..Request::default() };
        let k = key();
        assert_eq!(code(&k, &w, ToolLookup::NotRequested, &base), Code::Valid);

        let mut revoked = key();
        revoked.revoked_at = Some(UnixMillis(5));
        revoked.disabled = true;
        revoked.expires_at = Some(UnixMillis(0));
        assert_eq!(code(&revoked, &w, ToolLookup::NotRequested, &base), Code::Revoked, "revoked beats expired");

        let mut expired = key();
        expired.expires_at = Some(now);
        expired.disabled = true;
        assert_eq!(code(&expired, &w, ToolLookup::NotRequested, &base), Code::Expired, "expired at exactly expires_at");
        expired.expires_at = Some(UnixMillis(1_001));
        assert_eq!(code(&expired, &w, ToolLookup::NotRequested, &base), Code::Disabled);

        let mut inactive = ws();
        inactive.api_access = false;
        assert_eq!(code(&k, &inactive, ToolLookup::NotRequested, &base), Code::PlanInactive);

        let mut ipk = key();
        ipk.ip_rules = IpRules(vec![IpRule::parse("deny", "10.0.0.0/8").unwrap()]);
        assert_eq!(code(&ipk, &inactive, ToolLookup::NotRequested, &base), Code::PlanInactive, "plan before IP");
        assert_eq!(code(&ipk, &w, ToolLookup::NotRequested, &base), Code::IpDenied);
        let mut wip = ws();
        wip.ip_rules = IpRules(vec![IpRule::parse("allow", "192.168.0.0/16").unwrap()]);
        assert_eq!(code(&k, &wip, ToolLookup::NotRequested, &base), Code::IpDenied, "workspace rules apply too");

        let with_tool = Request { tool: Some("gl_ping"), ..base.clone() };
        assert_eq!(code(&ipk, &w, ToolLookup::Unknown, &with_tool), Code::IpDenied, "IP before tool");
        assert_eq!(code(&k, &w, ToolLookup::Unknown, &with_tool), Code::UnknownTool);
        let disabled_tool = tool("gl_ping", false, Some("admin"));
        assert_eq!(
            code(&k, &w, ToolLookup::Found(&disabled_tool), &with_tool),
            Code::ToolDisabled,
            "tool before permissions"
        );
        let admin_tool = tool("gl_ping", true, Some("admin"));
        assert_eq!(code(&k, &w, ToolLookup::Found(&admin_tool), &with_tool), Code::InsufficientPermissions);
        let open_tool = tool("gl_ping", true, Some("tools:gl_ping"));
        assert_eq!(code(&k, &w, ToolLookup::Found(&open_tool), &with_tool), Code::Valid);
        let mut only_other = key();
        only_other.tools = vec!["generate_image".into()];
        assert_eq!(code(&only_other, &w, ToolLookup::Found(&open_tool), &with_tool), Code::InsufficientPermissions);

        let needs = Request { permissions: &["keys:write"], ..base.clone() };
        assert_eq!(code(&k, &w, ToolLookup::NotRequested, &needs), Code::InsufficientPermissions);
        let has = Request { permissions: &["keys:read", "tools:x"], ..base.clone() };
        assert_eq!(code(&k, &w, ToolLookup::NotRequested, &has), Code::Valid);
    }

    #[test]
    fn permission_query_at_the_permissions_step() {
        let w = ws();
        let k = key(); // holds tools:* and keys:read
        let base = Request { now: UnixMillis(1_000), ..Request::default() };
        let run_q = |text: &str, req: &Request<'_>, key: &KeyPolicy| {
            let q = PermissionQuery::parse(text).unwrap();
            code(key, &w, ToolLookup::NotRequested, &Request { permission_query: Some(&q), ..req.clone() })
        };
        assert_eq!(run_q("keys:read AND (keys:write OR tools:x)", &base, &k), Code::Valid);
        assert_eq!(run_q("keys:read AND keys:write", &base, &k), Code::InsufficientPermissions);
        assert_eq!(run_q("keys:write OR tools:gl_ping", &base, &k), Code::Valid);
        // Both the list and the query must pass.
        let listed = Request { permissions: &["keys:write"], ..base.clone() };
        assert_eq!(run_q("keys:read", &listed, &k), Code::InsufficientPermissions);
        // Order (SPEC §4): after status and IP, before limits, charging nothing.
        let mut disabled = key();
        disabled.disabled = true;
        assert_eq!(run_q("nope", &base, &disabled), Code::Disabled);
        let mut limited = key();
        limited.limits = Limits { credits: Some(Credits { initial: 1, refill: None }), ..Limits::default() };
        let q = PermissionQuery::parse("nope").unwrap();
        let denied = Request { permission_query: Some(&q), ..base.clone() };
        let mut s = UsageState::default();
        assert_eq!(run(&limited, &w, ToolLookup::NotRequested, &denied, &mut s).code, Code::InsufficientPermissions);
        assert_eq!(run(&limited, &w, ToolLookup::NotRequested, &base, &mut s).quota.credits_remaining, Some(0));
    }

    #[test]
    fn refusals_before_limits_charge_nothing() {
        let w = ws();
        let mut k = key();
        k.limits = Limits { credits: Some(Credits { initial: 2, refill: None }), ..Limits::default() };
        let mut s = UsageState::default();
        let ok = Request { now: UnixMillis(0), ..Request::default() };
        let denied = Request { now: UnixMillis(0), permissions: &["keys:write"], ..Request::default() };
        for _ in 0..5 {
            assert_eq!(run(&k, &w, ToolLookup::NotRequested, &denied, &mut s).code, Code::InsufficientPermissions);
        }
        let v = run(&k, &w, ToolLookup::NotRequested, &ok, &mut s);
        assert_eq!((v.code, v.quota.credits_remaining), (Code::Valid, Some(1)));
        assert_eq!(run(&k, &w, ToolLookup::NotRequested, &ok, &mut s).quota.credits_remaining, Some(0));
        assert_eq!(run(&k, &w, ToolLookup::NotRequested, &ok, &mut s).code, Code::UsageExhausted);
    }

    #[test]
    fn tool_and_key_tool_limits() {
        let w = ws();
        let mut k = key();
        k.limits.rates = vec![RateLimit { name: "default".into(), limit: 100, window_ms: 1000, auto_apply: true }];
        k.tool_limits = vec![(
            "gl_ping".into(),
            Limits { concurrency: Some(Concurrency { max: 1, lease_ms: 60_000 }), ..Limits::default() },
        )];
        let mut t = tool("gl_ping", true, None);
        t.limits.cooldown_ms = Some(10);
        let req = |ms| Request { now: UnixMillis(ms), tool: Some("gl_ping"), ..Request::default() };
        let (mut s, mut ts, mut kts) = (UsageState::default(), UsageState::default(), UsageState::default());
        let call = |ms, s: &mut UsageState, ts: &mut UsageState, kts: &mut UsageState| {
            fresh(&k, &w, ToolLookup::Found(&t), &req(ms), Usage { key: s, tool: Some(ts), key_tool: Some(kts) })
        };
        let v = call(0, &mut s, &mut ts, &mut kts);
        assert_eq!(v.code, Code::Valid);
        assert_eq!(v.leases, vec![(LeaseScope::KeyTool, crate::limits::LeaseId(0))]);
        assert_eq!(call(5, &mut s, &mut ts, &mut kts).code, Code::Cooldown);
        assert_eq!(call(10, &mut s, &mut ts, &mut kts).code, Code::ConcurrencyLimit);
        assert!(release(
            Usage { key: &mut s, tool: Some(&mut ts), key_tool: Some(&mut kts) },
            LeaseScope::KeyTool,
            v.leases[0].1
        ));
        assert_eq!(call(10, &mut s, &mut ts, &mut kts).code, Code::Valid);
        // Two admitted calls charged the key's rate limit twice; the 10 ms
        // between them gave one back (100/s is one call per 10 ms).
        assert_eq!(quota_of(&k.limits, &s, UnixMillis(10)).rate.map(|r| r.remaining), Some(99));
        assert_eq!(quota_of(&k.limits, &s, UnixMillis(0)).rate.map(|r| r.remaining), Some(98));
    }

    /// `decide` sets every field, whatever the verdict held before: a
    /// reused verdict reads as a fresh one, for each kind of outcome.
    #[test]
    fn decide_overwrites_every_field() {
        let w = ws();
        let mut k = key();
        k.limits = Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 2, window_ms: 1_000, auto_apply: true }],
            concurrency: Some(Concurrency { max: 5, lease_ms: 60_000 }),
            ..Limits::default()
        };
        k.ip_rules = IpRules(vec![IpRule::parse("allow", "10.0.0.0/8").unwrap()]);
        let stale = Verdict {
            code: Code::Cooldown,
            key_id: Some(KeyId([9; 16])),
            workspace_id: Some(WorkspaceId([9; 16])),
            retry_after_ms: Some(77),
            quota: Quota { credits_remaining: Some(3), daily_remaining: Some(4), rate: None },
            leases: vec![(LeaseScope::Tool, LeaseId(42))],
        };
        let now = UnixMillis(1_000);
        let inside = Request { now, ip: Some("10.0.0.1".parse().unwrap()), ..Request::default() };
        let outside = Request { now, ip: Some("192.0.2.1".parse().unwrap()), ..Request::default() };
        // Valid, valid, then rate limited; and refused before the limits.
        let mut fresh_state = UsageState::default();
        let mut reused_state = UsageState::default();
        let mut codes = Vec::new();
        for req in [&inside, &inside, &inside, &outside] {
            let first = fresh(
                &k,
                &w,
                ToolLookup::NotRequested,
                req,
                Usage { key: &mut fresh_state, tool: None, key_tool: None },
            );
            let mut reused = stale.clone();
            let usage = Usage { key: &mut reused_state, tool: None, key_tool: None };
            let call = Call { key: &k, workspace: &w, tool: ToolLookup::NotRequested, request: req };
            decide(&mut reused, &call, usage);
            assert_eq!(reused, first);
            codes.push(first.code);
        }
        assert_eq!(codes, [Code::Valid, Code::Valid, Code::RateLimited, Code::IpDenied]);
        assert_eq!(fresh_state, reused_state);
    }

    /// `Usage::of` hands out a tool's counters only to a call that names a
    /// tool that was found, and asks for them by the requested name.
    #[test]
    fn usage_of_selects_tool_counters() {
        let (k, w, t) = (key(), ws(), tool("gl_ping", true, None));
        let named = Request { tool: Some("gl_ping"), ..Request::default() };
        let bare = Request::default();
        let cases = [
            (ToolLookup::Found(&t), &named, Some("gl_ping")),
            (ToolLookup::Unknown, &named, None),
            (ToolLookup::NotRequested, &bare, None),
            (ToolLookup::Found(&t), &bare, None),
        ];
        for (lookup, request, asked) in cases {
            let call = Call { key: &k, workspace: &w, tool: lookup, request };
            let mut own = UsageState::default();
            let mut pair = (UsageState::default(), UsageState::default());
            let mut named_as = None;
            let usage = Usage::of(&call, &mut own, |name| {
                named_as = Some(name.to_owned());
                &mut pair
            });
            assert_eq!(usage.tool.is_some() && usage.key_tool.is_some(), asked.is_some(), "{lookup:?}");
            assert_eq!(named_as.as_deref(), asked);
        }
    }

    /// A key whose workspace is gone is `PLAN_INACTIVE`, named, with every
    /// other field reset.
    #[test]
    fn without_workspace_is_plan_inactive() {
        let k = key();
        let mut v = Verdict {
            code: Code::Valid,
            key_id: None,
            workspace_id: None,
            retry_after_ms: Some(5),
            quota: Quota { credits_remaining: Some(1), daily_remaining: None, rate: None },
            leases: vec![(LeaseScope::Key, LeaseId(1))],
        };
        decide_without_workspace(&mut v, &k);
        let expected =
            Verdict { key_id: Some(k.id), workspace_id: Some(k.workspace), ..Verdict::bare(Code::PlanInactive) };
        assert_eq!(v, expected);
    }
}
