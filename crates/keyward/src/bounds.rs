//! Creator bounds (SPEC §6): a key acting on keys never makes or changes a
//! key into one that can do more than itself, and never touches a key
//! holding a permission it lacks.
//!
//! "Can do more" is read field by field: permissions (each granted by the
//! actor's), expiry (no later than the actor's), IP rules (no address the
//! actor's refuse), tools (only the actor's, if it is restricted) and limits
//! (each of the actor's present, and no looser). On creation the actor's
//! restrictions are carried onto what the spec leaves open; anything the
//! spec sets looser is refused with [`Error::InsufficientPermissions`]
//! naming the field, and nothing changes. Admin and system actors are not
//! bounded.

use ipnet::IpNet;
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::permission::first_uncovered;
use keyward_core::{KeyPolicy, Limits};

use crate::error::{Error, Result};

fn refused(field: &str, why: impl std::fmt::Display) -> Error {
    Error::InsufficientPermissions(format!("{field}: {why}"))
}

/// Carries the acting key's restrictions onto a new key's policy where the
/// spec left them open (`limits_given`: the spec set limits).
pub(crate) fn carry(acting: &KeyPolicy, child: &mut KeyPolicy, limits_given: bool) -> Result<()> {
    if child.expires_at.is_none() {
        child.expires_at = acting.expires_at;
    }
    child.ip_rules = both(&acting.ip_rules, &child.ip_rules)?;
    if child.tools.is_empty() {
        child.tools.clone_from(&acting.tools);
    }
    if !limits_given && !acting.limits.is_empty() {
        child.limits = acting.limits.clone();
    }
    for (tool, limits) in &acting.tool_limits {
        if !child.tool_limits.iter().any(|(t, _)| t == tool) {
            child.tool_limits.push((tool.clone(), limits.clone()));
        }
    }
    Ok(())
}

/// Refuses a policy that can do more than the acting key's.
pub(crate) fn check(acting: &KeyPolicy, child: &KeyPolicy) -> Result<()> {
    if let Some(p) = first_uncovered(&acting.permissions, &child.permissions) {
        return Err(refused("permissions", format!("cannot grant `{p}`: the acting key lacks it")));
    }
    if let Some(limit) = acting.expires_at {
        match child.expires_at {
            Some(e) if e <= limit => {}
            _ => {
                return Err(refused(
                    "expires_at",
                    format!("must be no later than the acting key's ({})", limit.to_rfc3339()),
                ));
            }
        }
    }
    if !within(&acting.ip_rules, &child.ip_rules) {
        return Err(refused("ip_rules", "must refuse every address the acting key's rules refuse"));
    }
    if !acting.tools.is_empty() {
        if child.tools.is_empty() {
            return Err(refused("tools", "the acting key is restricted to some tools; so is every key it makes"));
        }
        if let Some(t) = child.tools.iter().find(|t| !acting.tools.contains(t)) {
            return Err(refused("tools", format!("`{t}` is not among the acting key's tools")));
        }
    }
    no_looser("limits", &acting.limits, &child.limits)?;
    for (tool, limits) in &acting.tool_limits {
        let field = format!("tool_limits.{tool}");
        match child.tool_limits.iter().find(|(t, _)| t == tool) {
            Some((_, c)) => no_looser(&field, limits, c)?,
            None => return Err(refused(&field, "the acting key's limits for this tool must be kept")),
        }
    }
    Ok(())
}

/// Refuses touching `target` (updating, disabling, rotating, revoking,
/// deleting it, or changing its credits) if it holds a permission the
/// acting key lacks: a narrower key cannot act on a broader one.
pub(crate) fn may_touch(acting: &KeyPolicy, target: &KeyPolicy) -> Result<()> {
    match first_uncovered(&acting.permissions, &target.permissions) {
        Some(p) => Err(Error::InsufficientPermissions(format!(
            "key {} holds `{p}`, which the acting key lacks: it cannot change that key",
            target.id
        ))),
        None => Ok(()),
    }
}

/// The allow and the deny networks of some rules.
fn split(r: &IpRules) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut out = (Vec::new(), Vec::new());
    for rule in &r.0 {
        match *rule {
            IpRule::Allow(n) => out.0.push(n),
            IpRule::Deny(n) => out.1.push(n),
        }
    }
    out
}

/// Whether network `outer` holds all of network `inner`.
fn holds(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(inner)
}

/// Rules an address passes only if it passes both `a` and `b`: every deny
/// of either, and the allows they share (two networks meet only when one
/// holds the other, so the smaller of each such pair).
fn both(a: &IpRules, b: &IpRules) -> Result<IpRules> {
    let ((a_allow, a_deny), (b_allow, b_deny)) = (split(a), split(b));
    let mut rules: Vec<IpRule> = Vec::new();
    for n in a_deny.iter().chain(&b_deny) {
        if !rules.contains(&IpRule::Deny(*n)) {
            rules.push(IpRule::Deny(*n));
        }
    }
    let allowed: Vec<IpNet> = match (a_allow.is_empty(), b_allow.is_empty()) {
        (true, _) => b_allow,
        (_, true) => a_allow,
        _ => {
            let inside = |x: &IpNet, of: &[IpNet]| of.iter().any(|o| holds(o, x));
            let mut out: Vec<IpNet> = a_allow.iter().filter(|x| inside(x, &b_allow)).copied().collect();
            for y in b_allow.iter().filter(|y| inside(y, &a_allow)) {
                if !out.contains(y) {
                    out.push(*y);
                }
            }
            if out.is_empty() {
                return Err(refused("ip_rules", "they allow no address the acting key's rules allow"));
            }
            out
        }
    };
    rules.extend(allowed.into_iter().map(IpRule::Allow));
    Ok(IpRules(rules))
}

/// Whether every address `child` admits, `acting` admits too: each of the
/// actor's deny networks is within one of the child's, and if the actor
/// allows only some networks, the child does too, within them.
fn within(acting: &IpRules, child: &IpRules) -> bool {
    let ((a_allow, a_deny), (c_allow, c_deny)) = (split(acting), split(child));
    let denies_kept = a_deny.iter().all(|d| c_deny.iter().any(|c| holds(c, d)));
    let allows_kept =
        a_allow.is_empty() || (!c_allow.is_empty() && c_allow.iter().all(|c| a_allow.iter().any(|a| holds(a, c))));
    denies_kept && allows_kept
}

/// Refuses limits `child` looser than `acting`'s: each limit the actor has
/// must be there, at least as tight.
fn no_looser(field: &str, acting: &Limits, child: &Limits) -> Result<()> {
    for r in &acting.rates {
        let name = &r.name;
        let kept = child.rates.iter().find(|c| c.name == r.name);
        match kept {
            Some(c) if c.limit <= r.limit && c.window_ms >= r.window_ms && (c.auto_apply || !r.auto_apply) => {}
            _ => {
                return Err(refused(
                    &format!("{field}.rates.{name}"),
                    format!("must be at most {} calls per {} ms, as the acting key's", r.limit, r.window_ms),
                ));
            }
        }
    }
    if let Some(gap) = acting.cooldown_ms
        && child.cooldown_ms.is_none_or(|c| c < gap)
    {
        return Err(refused(&format!("{field}.cooldown_ms"), format!("must be at least {gap}, as the acting key's")));
    }
    if let Some(daily) = acting.daily
        && child.daily.is_none_or(|c| c > daily)
    {
        return Err(refused(&format!("{field}.daily"), format!("must be at most {daily}, as the acting key's")));
    }
    if let Some(conc) = acting.concurrency
        && child.concurrency.is_none_or(|c| c.max > conc.max)
    {
        return Err(refused(
            &format!("{field}.concurrency"),
            format!("must be at most {} jobs, as the acting key's", conc.max),
        ));
    }
    if let Some(credits) = acting.credits {
        let refill = |c: &keyward_core::limits::Credits| c.refill.map_or(0, |r| r.amount);
        let ok = child.credits.is_some_and(|c| c.initial <= credits.initial && refill(&c) <= refill(&credits));
        if !ok {
            return Err(refused(
                &format!("{field}.credits"),
                format!("must start at most at {} and refill no more, as the acting key's", credits.initial),
            ));
        }
    }
    Ok(())
}
