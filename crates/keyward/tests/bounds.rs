//! Creator bounds: a key acting on keys never makes or changes a key into
//! one that can do more than itself, and never touches a key holding a
//! permission it lacks. Each refusal names its bound and changes nothing.

mod common;

use common::{Env, T0, perm};
use keyward::{Actor, Error, KeyUpdate, NewKey, NewTool, ToolUpdate};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::RateLimit;
use keyward_core::{Code, Limits, UnixMillis};

fn rules(list: &[(&str, &str)]) -> IpRules {
    IpRules(list.iter().map(|(a, c)| IpRule::parse(a, c).unwrap()).collect())
}

fn refused(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InsufficientPermissions(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const DAY: u64 = 86_400_000;

fn parent_limits() -> Limits {
    Limits {
        rates: vec![RateLimit { name: "default".into(), limit: 10, window_ms: 1_000, auto_apply: true }],
        daily: Some(100),
        ..Limits::default()
    }
}

/// A workspace with a tool, and a parent key restricted every way.
fn setup() -> (Env, keyward::CreatedKey) {
    let env = Env::new();
    let tool = NewTool {
        name: "search".into(),
        enabled: true,
        permission: None,
        cooldown_ms: None,
        daily_limit: None,
        upstream: None,
        timeout_ms: None,
    };
    env.engine.create_tool(env.ws, tool, &Actor::Admin).unwrap();
    let parent = env.key_with(NewKey {
        name: "parent".into(),
        permissions: vec![perm("keys:*"), perm("tools:search")],
        expires_at: Some(UnixMillis(T0.get() + DAY)),
        ip_rules: rules(&[("allow", "10.0.0.0/8"), ("deny", "10.9.0.0/16")]),
        tools: vec!["search".into()],
        limits: Some(parent_limits()),
        ..NewKey::default()
    });
    (env, parent)
}

#[test]
fn a_new_key_carries_its_creators_restrictions() {
    let (env, parent) = setup();
    let by = Actor::Key(parent.info.id);
    let child = env.engine.create_key(env.ws, NewKey { name: "child".into(), ..NewKey::default() }, &by).unwrap();
    let c = env.engine.key(child.info.id).unwrap();
    assert_eq!(c.expires_at, Some(UnixMillis(T0.get() + DAY)));
    assert_eq!(c.ip_rules, rules(&[("deny", "10.9.0.0/16"), ("allow", "10.0.0.0/8")]));
    assert_eq!(c.tools, ["search"]);
    assert_eq!(c.limits, parent_limits());
    // Allow rules meet where the networks overlap; denies add up.
    let spec = NewKey {
        name: "narrow".into(),
        ip_rules: rules(&[("allow", "0.0.0.0/0"), ("allow", "10.1.0.0/16"), ("deny", "10.1.2.0/24")]),
        limits: Some(Limits { daily: Some(50), ..parent_limits() }),
        ..NewKey::default()
    };
    let narrow = env.engine.create_key(env.ws, spec, &by).unwrap();
    let n = env.engine.key(narrow.info.id).unwrap();
    assert_eq!(
        n.ip_rules,
        rules(&[("deny", "10.9.0.0/16"), ("deny", "10.1.2.0/24"), ("allow", "10.0.0.0/8"), ("allow", "10.1.0.0/16")])
    );
    assert_eq!(n.limits.daily, Some(50));
    // The carried rules hold at verification.
    let at = |ip: &str| keyward::Request { ip: Some(ip.parse().unwrap()), ..keyward::Request::default() };
    assert_eq!(env.engine.verify(child.token.expose(), &at("10.1.1.1")).code, Code::Valid);
    assert_eq!(env.engine.verify(child.token.expose(), &at("10.9.1.1")).code, Code::IpDenied);
    assert_eq!(env.engine.verify(child.token.expose(), &at("192.0.2.1")).code, Code::IpDenied);
}

#[test]
fn a_key_cannot_make_a_key_that_can_do_more() {
    let (env, parent) = setup();
    let by = Actor::Key(parent.info.id);
    let audit_before = env.engine.audit(None, 0, 100).unwrap().items.len();
    let keys_before = env.engine.key_count();
    let make = |spec: NewKey| refused(env.engine.create_key(env.ws, NewKey { name: "x".into(), ..spec }, &by));
    assert_eq!(
        make(NewKey { permissions: vec![perm("billing:read")], ..NewKey::default() }),
        "cannot grant `billing:read`: the acting key lacks it"
    );
    assert_eq!(
        make(NewKey { expires_at: Some(UnixMillis(T0.get() + 2 * DAY)), ..NewKey::default() }),
        "expires_at: must be no later than the acting key's (2024-03-02T10:00:00.000Z)"
    );
    assert_eq!(
        make(NewKey { ip_rules: rules(&[("allow", "192.168.0.0/16")]), ..NewKey::default() }),
        "ip_rules: they allow no address the acting key's rules allow"
    );
    assert_eq!(
        make(NewKey { tools: vec!["other".into()], ..NewKey::default() }),
        "tools: `other` is not among the acting key's tools"
    );
    assert_eq!(
        make(NewKey { limits: Some(Limits { daily: Some(1_000), ..parent_limits() }), ..NewKey::default() }),
        "limits.daily: must be at most 100, as the acting key's"
    );
    assert_eq!(
        make(NewKey { limits: Some(Limits { daily: Some(100), ..Limits::default() }), ..NewKey::default() }),
        "limits.rates.default: must be at most 10 calls per 1000 ms, as the acting key's"
    );
    // Nothing was made, nothing recorded.
    assert_eq!(
        (env.engine.key_count(), env.engine.audit(None, 0, 100).unwrap().items.len()),
        (keys_before, audit_before)
    );
}

#[test]
fn a_key_cannot_touch_a_broader_key_nor_lift_its_own_restrictions() {
    let (env, parent) = setup();
    let root = env.key_with(NewKey { name: "root".into(), permissions: vec![perm("*")], ..NewKey::default() });
    let by = Actor::Key(parent.info.id);
    let broader = format!("key {} holds `*`, which the acting key lacks: it cannot change that key", root.info.id);
    assert_eq!(refused(env.engine.revoke_key(root.info.id, &by)), broader);
    assert_eq!(refused(env.engine.delete_key(root.info.id, &by)), broader);
    assert_eq!(refused(env.engine.rotate_key(root.info.id, 0, &by)), broader);
    let disable = KeyUpdate { disabled: Some(true), ..KeyUpdate::default() };
    assert_eq!(refused(env.engine.update_key(root.info.id, disable, &by)), broader);
    assert_eq!(refused(env.engine.update_credits(root.info.id, keyward::CreditChange::Set(1), &by)), broader);
    assert_eq!(env.engine.verify(root.token.expose(), &keyward::Request::default()).code, Code::Valid);

    // Its own restrictions stay.
    let lift = KeyUpdate { expires_at: Some(None), ..KeyUpdate::default() };
    assert_eq!(
        refused(env.engine.update_key(parent.info.id, lift, &by)),
        "expires_at: must be no later than the acting key's (2024-03-02T10:00:00.000Z)"
    );
    let open = KeyUpdate { ip_rules: Some(IpRules::none()), ..KeyUpdate::default() };
    assert_eq!(
        refused(env.engine.update_key(parent.info.id, open, &by)),
        "ip_rules: must refuse every address the acting key's rules refuse"
    );
    let loose = KeyUpdate { limits: Some(Limits::default()), ..KeyUpdate::default() };
    assert_eq!(
        refused(env.engine.update_key(parent.info.id, loose, &by)),
        "limits.rates.default: must be at most 10 calls per 1000 ms, as the acting key's"
    );
    // What stays within bounds is allowed: a rename, a tighter limit.
    let tighter = KeyUpdate {
        name: Some("parent-2".into()),
        limits: Some(Limits { daily: Some(10), ..parent_limits() }),
        ..KeyUpdate::default()
    };
    env.engine.update_key(parent.info.id, tighter, &by).unwrap();
    assert_eq!(env.engine.key(parent.info.id).unwrap().limits.daily, Some(10));
}

#[test]
fn a_tools_permission_changes_only_by_a_key_holding_it() {
    let (env, parent) = setup();
    let by = Actor::Key(parent.info.id);
    let tool = |p: &str| NewTool {
        name: "admin_tool".into(),
        enabled: true,
        permission: Some(perm(p)),
        cooldown_ms: None,
        daily_limit: None,
        upstream: None,
        timeout_ms: None,
    };
    assert_eq!(
        refused(env.engine.create_tool(env.ws, tool("tools:admin"), &by)),
        "permission: a tool needing `tools:admin` can only be made by a key holding it"
    );
    env.engine.create_tool(env.ws, tool("tools:admin"), &Actor::Admin).unwrap();
    let drop_it = ToolUpdate { permission: Some(None), ..ToolUpdate::default() };
    assert_eq!(
        refused(env.engine.update_tool(env.ws, "admin_tool", drop_it, &by)),
        "permission: changing tool `admin_tool` needs `tools:admin`, which the acting key lacks"
    );
    let held = ToolUpdate { permission: Some(Some(perm("tools:search"))), ..ToolUpdate::default() };
    assert!(env.engine.update_tool(env.ws, "search", held, &by).is_ok());
}
