//! Every SPEC §4 verdict, produced by a real engine on a real file.

mod common;

use common::{Env, perm};
use keyward::{Actor, KeyUpdate, NewKey, NewTool, NewWorkspace, Request, WorkspaceUpdate};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{Concurrency, Cost, Credits, RateLimit};
use keyward_core::{Code, Limits, UnixMillis, credentials};

fn ip(s: &str) -> Option<std::net::IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn every_verdict() {
    let env = Env::new();
    let e = &env.engine;
    let req = Request::default();

    let valid = env.key("valid");
    let v = e.verify(valid.token.expose(), &req);
    assert_eq!((v.code, v.key_id, v.workspace_id), (Code::Valid, Some(valid.info.id), Some(env.ws)));

    // MALFORMED: no credential / bad checksum / wrong shape.
    assert_eq!(e.verify("", &req).code, Code::Malformed);
    let mut bad = valid.token.expose().to_string();
    let last = bad.pop().unwrap();
    bad.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(e.verify(&bad, &req).code, Code::Malformed);
    assert_eq!(e.verify("not a token", &req).code, Code::Malformed);

    // NOT_FOUND: well-formed, unknown.
    let other_engine_token = keyward_core::Token::generate(&keyward_core::Prefix::default_live(), &mut rand::rng());
    assert_eq!(e.verify(other_engine_token.expose(), &req).code, Code::NotFound);

    // EXPIRED, including expire_now.
    let now_expired = env.key_with(NewKey { name: "expired".into(), expire_now: true, ..NewKey::default() });
    assert_eq!(now_expired.info.status, keyward_core::policy::Status::Expired);
    assert_eq!(e.verify(now_expired.token.expose(), &req).code, Code::Expired);

    // REVOKED.
    let revoked = env.key("revoked");
    e.revoke_key(revoked.info.id, &Actor::Admin).unwrap();
    assert_eq!(e.verify(revoked.token.expose(), &req).code, Code::Revoked);

    // DISABLED, and re-enabled.
    let disabled = env.key("disabled");
    e.update_key(disabled.info.id, KeyUpdate { disabled: Some(true), ..KeyUpdate::default() }, &Actor::Admin).unwrap();
    assert_eq!(e.verify(disabled.token.expose(), &req).code, Code::Disabled);
    e.update_key(disabled.info.id, KeyUpdate { disabled: Some(false), ..KeyUpdate::default() }, &Actor::Admin).unwrap();
    assert_eq!(e.verify(disabled.token.expose(), &req).code, Code::Valid);

    // PLAN_INACTIVE: a workspace without API access can neither use nor create keys.
    let ws2 = e.create_workspace(NewWorkspace::named("free"), &Actor::Admin).unwrap().policy.id;
    let k2 = e.create_key(ws2, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    e.update_workspace(ws2, WorkspaceUpdate { api_access: Some(false), ..WorkspaceUpdate::default() }, &Actor::Admin)
        .unwrap();
    assert_eq!(e.verify(k2.token.expose(), &req).code, Code::PlanInactive);
    assert_eq!(
        e.create_key(ws2, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap_err(),
        keyward::Error::PlanInactive
    );

    // IP_DENIED: key rules and workspace rules.
    let ipk = env.key_with(NewKey {
        name: "ip".into(),
        ip_rules: IpRules(vec![IpRule::parse("allow", "10.0.0.0/8").unwrap()]),
        ..NewKey::default()
    });
    assert_eq!(e.verify(ipk.token.expose(), &Request { ip: ip("10.1.2.3"), ..Request::default() }).code, Code::Valid);
    assert_eq!(
        e.verify(ipk.token.expose(), &Request { ip: ip("::ffff:10.1.2.3"), ..Request::default() }).code,
        Code::Valid
    );
    assert_eq!(
        e.verify(ipk.token.expose(), &Request { ip: ip("11.0.0.1"), ..Request::default() }).code,
        Code::IpDenied
    );
    assert_eq!(e.verify(ipk.token.expose(), &Request::default()).code, Code::IpDenied, "unknown IP fails closed");

    // Tools.
    e.create_tool(
        env.ws,
        NewTool {
            name: "gl_ping".into(),
            enabled: true,
            permission: None,
            cooldown_ms: None,
            daily_limit: None,
            upstream: None,
            timeout_ms: None,
        },
        &Actor::Admin,
    )
    .unwrap();
    e.create_tool(
        env.ws,
        NewTool {
            name: "off".into(),
            enabled: false,
            permission: None,
            cooldown_ms: None,
            daily_limit: None,
            upstream: None,
            timeout_ms: None,
        },
        &Actor::Admin,
    )
    .unwrap();
    e.create_tool(
        env.ws,
        NewTool {
            name: "admin_tool".into(),
            enabled: true,
            permission: Some(perm("tools:admin")),
            cooldown_ms: None,
            daily_limit: None,
            upstream: None,
            timeout_ms: None,
        },
        &Actor::Admin,
    )
    .unwrap();
    let t = valid.token.expose();
    assert_eq!(e.verify(t, &Request { tool: Some("gl_ping"), ..Request::default() }).code, Code::Valid);
    assert_eq!(e.verify(t, &Request { tool: Some("nope"), ..Request::default() }).code, Code::UnknownTool);
    assert_eq!(e.verify(t, &Request { tool: Some("off"), ..Request::default() }).code, Code::ToolDisabled);
    assert_eq!(
        e.verify(t, &Request { tool: Some("admin_tool"), ..Request::default() }).code,
        Code::InsufficientPermissions
    );
    assert_eq!(
        e.verify(t, &Request { permissions: &["keys:write"], ..Request::default() }).code,
        Code::InsufficientPermissions
    );

    // Limits.
    let limited =
        |limits: Limits| env.key_with(NewKey { name: "limited".into(), limits: Some(limits), ..NewKey::default() });
    let rl = limited(Limits {
        rates: vec![RateLimit { name: "default".into(), limit: 1, window_ms: 60_000, auto_apply: true }],
        ..Limits::default()
    });
    assert_eq!(e.verify(rl.token.expose(), &req).code, Code::Valid);
    let v = e.verify(rl.token.expose(), &req);
    assert_eq!((v.code, v.retry_after_ms), (Code::RateLimited, Some(60_000)));

    let cd = limited(Limits { cooldown_ms: Some(5_000), ..Limits::default() });
    assert_eq!(e.verify(cd.token.expose(), &req).code, Code::Valid);
    let v = e.verify(cd.token.expose(), &req);
    assert_eq!((v.code, v.retry_after_ms), (Code::Cooldown, Some(5_000)));

    let daily = limited(Limits { daily: Some(1), ..Limits::default() });
    assert_eq!(e.verify(daily.token.expose(), &req).code, Code::Valid);
    let v = e.verify(daily.token.expose(), &req);
    // 2024-03-01T10:00Z: 14 hours to midnight.
    assert_eq!((v.code, v.retry_after_ms), (Code::DailyLimit, Some(14 * 3_600_000)));

    let conc = limited(Limits { concurrency: Some(Concurrency { max: 1, lease_ms: 30_000 }), ..Limits::default() });
    let cred = credentials::parse([("x-api-key", conc.token.expose())]).unwrap();
    let guard = e.acquire(&cred, &req).unwrap();
    assert_eq!(e.verify(conc.token.expose(), &req).code, Code::ConcurrencyLimit);
    drop(guard);
    assert_eq!(e.verify(conc.token.expose(), &req).code, Code::Valid, "the dropped guard released its lease");

    let credits = limited(Limits { credits: Some(Credits { initial: 3, refill: None }), ..Limits::default() });
    let cost2 = Request { cost: Cost { credits: 2, rates: &[] }, ..Request::default() };
    let v = e.verify(credits.token.expose(), &cost2);
    assert_eq!((v.code, v.quota.credits_remaining), (Code::Valid, Some(1)));
    assert_eq!(e.verify(credits.token.expose(), &cost2).code, Code::UsageExhausted);
    assert_eq!(e.key(credits.info.id).unwrap().credits_remaining, Some(1), "a refused call charged nothing");

    // INVALID_SIGNATURE and NONCE_REUSED come from the signed scheme: see tests/signed.rs.
    assert_eq!(e.verify(t, &Request { ip: None, ..Request::default() }).code, Code::Valid);
    let _ = UnixMillis(0);
}

#[test]
fn foreign_tokens_import_by_hash() {
    let env = Env::new();
    let e = &env.engine;
    let foreign = "sk_live_51HvLegacyToken0001";
    let info = e
        .import_key(
            env.ws,
            keyward::ImportKey {
                hash: Some(keyward_core::KeyHash::of(foreign)),
                key: NewKey { name: "legacy".into(), ..NewKey::default() },
                start: Some("sk_live_51Hv".into()),
            },
            &Actor::Admin,
        )
        .unwrap();
    assert!(info.imported);
    let v = e.verify(foreign, &Request::default());
    assert_eq!((v.code, v.key_id), (Code::Valid, Some(info.id)));
    assert_eq!(e.verify("sk_live_51HvLegacyToken0002", &Request::default()).code, Code::Malformed);
    let dup = e.import_key(
        env.ws,
        keyward::ImportKey {
            hash: Some(keyward_core::KeyHash::of(foreign)),
            key: NewKey { name: "again".into(), ..NewKey::default() },
            start: None,
        },
        &Actor::Admin,
    );
    assert!(matches!(dup, Err(keyward::Error::AlreadyExists { .. })));
}

#[test]
fn permission_bounds_and_isolation() {
    let env = Env::new();
    let e = &env.engine;
    let creator = env.key_with(NewKey {
        name: "creator".into(),
        permissions: vec![perm("keys:write"), perm("billing:*")],
        ..NewKey::default()
    });
    let actor = Actor::Key(creator.info.id);
    let ok = e.create_key(
        env.ws,
        NewKey { name: "child".into(), permissions: vec![perm("billing:read")], ..NewKey::default() },
        &actor,
    );
    assert_eq!(ok.unwrap().info.created_by, creator.info.id.to_string());
    let err = e
        .create_key(
            env.ws,
            NewKey { name: "child".into(), permissions: vec![perm("admin")], ..NewKey::default() },
            &actor,
        )
        .unwrap_err();
    assert!(matches!(err, keyward::Error::InsufficientPermissions(_)), "{err:?}");
    let err = e
        .create_key(env.ws, NewKey { name: "child".into(), permissions: vec![perm("*")], ..NewKey::default() }, &actor)
        .unwrap_err();
    assert!(matches!(err, keyward::Error::InsufficientPermissions(_)));
    // A narrower key cannot rotate a broader one (that would hand it the new token).
    let root = env.key_with(NewKey { name: "root".into(), permissions: vec![perm("*")], ..NewKey::default() });
    assert!(matches!(e.rotate_key(root.info.id, 0, &actor), Err(keyward::Error::InsufficientPermissions(_))));
    // Another workspace's keys are invisible to a key.
    let ws2 = e.create_workspace(NewWorkspace::named("other"), &Actor::Admin).unwrap().policy.id;
    let foreign = e.create_key(ws2, NewKey { name: "f".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert!(matches!(e.key_as(foreign.info.id, &actor), Err(keyward::Error::NotFound { kind: "key", .. })));
    assert!(matches!(e.revoke_key(foreign.info.id, &actor), Err(keyward::Error::NotFound { .. })));
    assert!(matches!(
        e.create_key(ws2, NewKey { name: "x".into(), ..NewKey::default() }, &actor),
        Err(keyward::Error::NotFound { .. })
    ));
}

#[test]
fn bad_input_changes_nothing() {
    let env = Env::new();
    let e = &env.engine;
    let before = e.audit(None, 0, 100).unwrap().items.len();
    for name in ["", " ", &"x".repeat(129), "a\nb"] {
        let err = e.create_key(env.ws, NewKey { name: name.into(), ..NewKey::default() }, &Actor::Admin).unwrap_err();
        assert!(matches!(err, keyward::Error::Invalid { field: "name", .. }), "{name:?}: {err:?}");
    }
    assert!(e.create_key(env.ws, NewKey { name: "x".repeat(128), ..NewKey::default() }, &Actor::Admin).is_ok());
    let err = e
        .create_key(
            env.ws,
            NewKey { name: "m".into(), meta: Some(serde_json::json!([1, 2])), ..NewKey::default() },
            &Actor::Admin,
        )
        .unwrap_err();
    assert!(matches!(err, keyward::Error::Invalid { field: "meta", .. }));
    let err = e
        .create_key(
            env.ws,
            NewKey { name: "t".into(), tools: vec!["bad tool".into()], ..NewKey::default() },
            &Actor::Admin,
        )
        .unwrap_err();
    assert!(matches!(err, keyward::Error::Invalid { field: "tools", .. }));
    let zero = Limits {
        rates: vec![RateLimit { name: "r".into(), limit: 0, window_ms: 1, auto_apply: true }],
        ..Limits::default()
    };
    let err = e
        .create_key(env.ws, NewKey { name: "l".into(), limits: Some(zero), ..NewKey::default() }, &Actor::Admin)
        .unwrap_err();
    assert!(matches!(err, keyward::Error::Invalid { field: "limits", .. }));
    let err = e
        .create_key(
            env.ws,
            NewKey {
                name: "s".into(),
                signing: Some(keyward::NewSigning {
                    user_id: "has space".into(),
                    nonce_policy: keyward_core::signature::NoncePolicy::Monotonic,
                }),
                ..NewKey::default()
            },
            &Actor::Admin,
        )
        .unwrap_err();
    assert!(matches!(err, keyward::Error::Invalid { field: "signing.user_id", .. }));
    assert_eq!(e.key_count(), 1);
    assert_eq!(e.audit(None, 0, 100).unwrap().items.len(), before + 1);
}

#[test]
fn listing_is_paginated_newest_first() {
    let env = Env::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        env.clock.advance(1);
        ids.push(env.key(&format!("k{i}")).info.id);
    }
    ids.reverse();
    let e = &env.engine;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = e.list_keys(env.ws, 3, cursor.as_deref()).unwrap();
        seen.extend(page.items.iter().map(|k| k.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(matches!(e.list_keys(env.ws, 3, Some("garbage")), Err(keyward::Error::Invalid { field: "cursor", .. })));
}
