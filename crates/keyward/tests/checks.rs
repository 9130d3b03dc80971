//! Key labels (prefix, external id, roles), permission queries, ad-hoc rate
//! limits and `verify_with`'s per-limit report: what the Unkey surface needs.

mod common;

use common::{Env, T0, perm};
use keyward::{Actor, Checks, CreditChange, Error, KeyUpdate, NewKey, NewWorkspace, Request};
use keyward_core::limits::{AUTO_APPLIED, Cost, Credits, RateCost, RateLimit, RateReport};
use keyward_core::query::PermissionQuery;
use keyward_core::{Code, Limits, Prefix};

fn rate(name: &str, limit: u64, window_ms: u64, auto_apply: bool) -> RateLimit {
    RateLimit { name: name.into(), limit, window_ms, auto_apply }
}

#[test]
fn prefix_external_id_and_roles_are_stored_and_survive_rotation() {
    let env = Env::new();
    let e = &env.engine;
    let k = env.key_with(NewKey {
        name: "labelled".into(),
        prefix: Some(Prefix::parse("prod").unwrap()),
        external_id: Some("user_123".into()),
        roles: vec!["admin".into(), "billing.viewer".into()],
        ..NewKey::default()
    });
    assert!(k.token.expose().starts_with("prod_"));
    assert_eq!(k.info.start, k.token.expose()[..9]);
    assert_eq!(k.info.external_id.as_deref(), Some("user_123"));
    assert_eq!(k.info.roles, ["admin", "billing.viewer"]);
    assert_eq!(e.verify(k.token.expose(), &Request::default()).code, Code::Valid);

    // Rotation keeps all three.
    let r = e.rotate_key(k.info.id, 0, &Actor::Admin).unwrap();
    assert!(r.token.expose().starts_with("prod_"), "{}", r.token.expose());
    assert_eq!((r.info.external_id.as_deref(), r.info.roles.clone()), (Some("user_123"), k.info.roles.clone()));

    // Update: `Some(None)` clears the external id; roles are replaced.
    let u = e
        .update_key(
            r.info.id,
            KeyUpdate { external_id: Some(None), roles: Some(vec!["ops".into()]), ..KeyUpdate::default() },
            &Actor::Admin,
        )
        .unwrap();
    assert_eq!((u.external_id, u.roles), (None, vec!["ops".to_owned()]));
    let u = e.update_key(r.info.id, KeyUpdate::default(), &Actor::Admin).unwrap();
    assert_eq!(u.roles, ["ops"], "absent fields are kept");

    // Stored: still there after a reopen.
    let id = r.info.id;
    let env = env.reopen();
    assert_eq!(env.engine.key(id).unwrap().roles, ["ops"]);
}

#[test]
fn labels_are_validated() {
    let env = Env::new();
    let bad = |spec: NewKey| match env.engine.create_key(env.ws, spec, &Actor::Admin) {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let named = |f: fn(&mut NewKey)| {
        let mut k = NewKey { name: "x".into(), ..NewKey::default() };
        f(&mut k);
        k
    };
    assert_eq!(bad(named(|k| k.external_id = Some(String::new()))), "external_id");
    assert_eq!(bad(named(|k| k.external_id = Some("a b".into()))), "external_id");
    assert_eq!(bad(named(|k| k.external_id = Some("x".repeat(256)))), "external_id");
    assert_eq!(bad(named(|k| k.roles = vec!["ok".into(), "ok".into()])), "roles");
    assert_eq!(bad(named(|k| k.roles = vec!["a*".into()])), "roles");
    assert_eq!(bad(named(|k| k.roles = (0..65).map(|i| format!("r{i}")).collect())), "roles");
    assert!(env.engine.create_key(env.ws, named(|k| k.external_id = Some("x".repeat(255))), &Actor::Admin).is_ok());
    let err = env
        .engine
        .update_key(
            env.key("k").info.id,
            KeyUpdate { roles: Some(vec![String::new()]), ..KeyUpdate::default() },
            &Actor::Admin,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "roles", .. }), "{err:?}");
}

#[test]
fn list_by_external_id() {
    let env = Env::new();
    let mut ids = Vec::new();
    for (i, owner) in ["alice", "bob", "alice", "alice"].iter().enumerate() {
        env.clock.set(T0.plus(i as u64));
        let spec = NewKey { name: format!("k{i}"), external_id: Some((*owner).into()), ..NewKey::default() };
        ids.push(env.key_with(spec).info.id);
    }
    let page = env.engine.list_keys_of(env.ws, Some("alice"), 2, None).unwrap();
    assert_eq!(page.items.iter().map(|k| k.id).collect::<Vec<_>>(), [ids[3], ids[2]]);
    let rest = env.engine.list_keys_of(env.ws, Some("alice"), 2, page.next_cursor.as_deref()).unwrap();
    assert_eq!(rest.items.iter().map(|k| k.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(env.engine.list_keys_of(env.ws, Some("carol"), 10, None).unwrap().items, []);
    assert_eq!(env.engine.list_keys(env.ws, 10, None).unwrap().items.len(), 4);
}

#[test]
fn verify_with_scopes_queries_and_reports() {
    let env = Env::new();
    let e = &env.engine;
    let k = env.key_with(NewKey {
        name: "q".into(),
        permissions: vec![perm("docs.read"), perm("billing:*")],
        limits: Some(Limits {
            rates: vec![rate("calls", 2, 1_000, true), rate("tokens", 100, 60_000, false)],
            credits: Some(Credits { initial: 10, refill: None }),
            ..Limits::default()
        }),
        ..NewKey::default()
    });
    let t = k.token.expose();

    // Another workspace's key is not found, and nothing is charged.
    let other = e.create_workspace(NewWorkspace::named("other"), &Actor::Admin).unwrap().policy.id;
    let elsewhere = Checks { workspace: Some(other), ..Checks::default() };
    for _ in 0..5 {
        let v = e.verify_with(t, &Request::default(), &elsewhere);
        assert_eq!((v.verdict.code, v.verdict.key_id, v.key.is_none()), (Code::NotFound, None, true));
    }
    assert_eq!(e.key(k.info.id).unwrap().credits_remaining, Some(10));

    // A query: refused before limits, so nothing is charged either.
    let q = PermissionQuery::parse("docs.read AND (docs.write OR admin)").unwrap();
    let checks = Checks { workspace: Some(env.ws), permission_query: Some(&q) };
    let v = e.verify_with(t, &Request::default(), &checks);
    assert_eq!(v.verdict.code, Code::InsufficientPermissions);
    assert_eq!(v.key.as_ref().map(|k| k.credits_remaining), Some(Some(10)));
    let q = PermissionQuery::parse("docs.read AND (docs.write OR billing:invoices)").unwrap();
    let checks = Checks { workspace: Some(env.ws), permission_query: Some(&q) };

    // Named, auto-applied and ad-hoc limits, reported one by one.
    let named = [RateCost::named("tokens", 30), RateCost::with_limit("search", 1, 1, 10_000)];
    let req = Request { cost: Cost { credits: 2, rates: &named }, ..Request::default() };
    let v = e.verify_with(t, &req, &checks);
    assert_eq!(v.verdict.code, Code::Valid);
    assert_eq!(v.verdict.quota.credits_remaining, Some(8));
    let report = |name: &str, limit, window_ms, remaining, reset_ms, auto_apply, ad_hoc, exceeded| RateReport {
        name: name.into(),
        limit,
        window_ms,
        remaining,
        reset_ms,
        auto_apply,
        ad_hoc,
        exceeded,
    };
    assert_eq!(
        v.rates,
        [
            report("calls", 2, 1_000, 1, 500, true, false, false),
            report("tokens", 100, 60_000, 70, 18_000, false, false, false),
            report("search", 1, 10_000, 0, 10_000, false, true, false),
        ]
    );
    // The ad-hoc limit's counter was kept: the same call is refused by it.
    let v = e.verify_with(t, &req, &checks);
    assert_eq!((v.verdict.code, v.verdict.retry_after_ms), (Code::RateLimited, Some(10_000)));
    let exceeded: Vec<(&str, bool)> = v.rates.iter().map(|r| (r.name.as_str(), r.exceeded)).collect();
    assert_eq!(exceeded, [("calls", false), ("tokens", false), ("search", true)]);
    // Refused at the rate limits, before credits: the key still has 8.
    assert_eq!(v.verdict.quota.credits_remaining, None);
    assert_eq!(v.key.and_then(|k| k.credits_remaining), Some(8), "a refused call charges nothing");

    // Check-only calls (no credits) count rate limits when `*` prices them.
    env.clock.advance(10_000);
    let free = [RateCost::named(AUTO_APPLIED, 1)];
    let req = Request { cost: Cost { credits: 0, rates: &free }, ..Request::default() };
    assert_eq!(e.verify_with(t, &req, &checks).verdict.code, Code::Valid);
    assert_eq!(e.verify_with(t, &req, &checks).verdict.code, Code::Valid);
    let v = e.verify_with(t, &req, &checks);
    assert_eq!((v.verdict.code, v.verdict.retry_after_ms), (Code::RateLimited, Some(500)));
    assert_eq!(e.key(k.info.id).unwrap().credits_remaining, Some(8));
}

#[test]
fn ad_hoc_limit_on_a_key_without_limits() {
    let env = Env::new();
    let k = env.key("plain");
    let t = k.token.expose();
    let adhoc = [RateCost::with_limit("burst", 1, 2, 1_000)];
    let req = Request { cost: Cost { credits: 1, rates: &adhoc }, ..Request::default() };
    let codes: Vec<Code> = (0..3).map(|_| env.engine.verify_with(t, &req, &Checks::default()).verdict.code).collect();
    assert_eq!(codes, [Code::Valid, Code::Valid, Code::RateLimited]);
    // Calls that do not name it are not limited by it.
    assert_eq!(env.engine.verify(t, &Request::default()).code, Code::Valid);
    env.clock.set(T0.plus(500));
    assert_eq!(env.engine.verify(t, &req).code, Code::Valid);
}

#[test]
fn find_key_charges_nothing() {
    let env = Env::new();
    let limits = Limits { credits: Some(Credits { initial: 1, refill: None }), ..Limits::default() };
    let k = env.key_with(NewKey { name: "f".into(), limits: Some(limits), ..NewKey::default() });
    for _ in 0..3 {
        assert_eq!(env.engine.find_key(k.token.expose()).map(|i| i.id), Some(k.info.id));
    }
    assert_eq!(env.engine.key(k.info.id).unwrap().credits_remaining, Some(1));
    assert!(env.engine.find_key("kw_live_nope").is_none());
    assert!(env.engine.find_key("").is_none());
    let again = env.engine.update_credits(k.info.id, CreditChange::Increment(2), &Actor::Admin).unwrap();
    assert_eq!(again, 3);
}
