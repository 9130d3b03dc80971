//! Time-dependent behaviour driven by an injected clock, never by sleeps.

mod common;

use common::{Env, T0};
use keyward::{Actor, CreditChange, NewKey, NewTool, Request};
use keyward_core::limits::{Credits, Refill, RefillInterval};
use keyward_core::time::DAY_MS;
use keyward_core::{Code, Limits, UnixMillis};

#[test]
fn expiry() {
    let env = Env::new();
    let k = env.key_with(NewKey { name: "e".into(), expires_at: Some(T0.plus(1_000)), ..NewKey::default() });
    assert_eq!(env.engine.verify(k.token.expose(), &Request::default()).code, Code::Valid);
    env.clock.advance(999);
    assert_eq!(env.engine.verify(k.token.expose(), &Request::default()).code, Code::Valid);
    env.clock.advance(1);
    assert_eq!(env.engine.verify(k.token.expose(), &Request::default()).code, Code::Expired);
    assert_eq!(env.engine.key(k.info.id).unwrap().status, keyward_core::policy::Status::Expired);
}

#[test]
fn daily_rollover_at_utc_midnight() {
    let env = Env::new();
    env.engine
        .create_tool(
            env.ws,
            NewTool {
                name: "gen".into(),
                enabled: true,
                permission: None,
                cooldown_ms: None,
                daily_limit: Some(2),
                upstream: None,
                timeout_ms: None,
            },
            &Actor::Admin,
        )
        .unwrap();
    let k = env.key("d");
    let req = Request { tool: Some("gen"), ..Request::default() };
    let call = || env.engine.verify(k.token.expose(), &req);
    assert!(call().is_valid());
    assert!(call().is_valid());
    let v = call();
    assert_eq!((v.code, v.retry_after_ms), (Code::DailyLimit, Some(14 * 3_600_000)));
    env.clock.set(UnixMillis((T0.day() + 1) * DAY_MS - 1));
    assert_eq!(call().code, Code::DailyLimit);
    env.clock.advance(1);
    assert!(call().is_valid());
}

#[test]
fn monthly_refill_and_credit_updates() {
    let env = Env::new();
    let limits = Limits {
        credits: Some(Credits {
            initial: 2,
            refill: Some(Refill { interval: RefillInterval::Monthly { day: 15 }, amount: 5 }),
        }),
        ..Limits::default()
    };
    let k = env.key_with(NewKey { name: "m".into(), limits: Some(limits), ..NewKey::default() });
    let call = || env.engine.verify(k.token.expose(), &Request::default());
    assert!(call().is_valid());
    assert!(call().is_valid());
    let v = call();
    // 2024-03-01T10:00Z → 2024-03-15T00:00Z.
    let refill = UnixMillis::from_date(2024, 3, 15);
    assert_eq!((v.code, v.retry_after_ms), (Code::UsageExhausted, Some(refill.get() - T0.get())));
    env.clock.set(refill);
    assert_eq!(call().quota.credits_remaining, Some(4));
    let e = &env.engine;
    assert_eq!(e.update_credits(k.info.id, CreditChange::Increment(10), &Actor::Admin).unwrap(), 14);
    assert_eq!(e.update_credits(k.info.id, CreditChange::Decrement(20), &Actor::Admin).unwrap(), 0);
    assert_eq!(call().code, Code::UsageExhausted);
    assert_eq!(e.update_credits(k.info.id, CreditChange::Set(1), &Actor::Admin).unwrap(), 1);
    assert!(call().is_valid());
    let no_credits = env.key("plain");
    assert!(matches!(
        e.update_credits(no_credits.info.id, CreditChange::Set(1), &Actor::Admin),
        Err(keyward::Error::Invalid { .. })
    ));
}

#[test]
fn rotation_grace_period() {
    let env = Env::new();
    let limits = Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() };
    let old = env.key_with(NewKey { name: "r".into(), limits: Some(limits), ..NewKey::default() });
    let e = &env.engine;
    assert!(e.verify(old.token.expose(), &Request::default()).is_valid());
    let new = e.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap();
    assert_ne!(new.info.id, old.info.id);
    assert_eq!(new.info.name, "r");
    assert_eq!(new.info.credits_remaining, Some(9), "counters move to the new key");
    // Both work during the grace and share one balance.
    assert_eq!(e.verify(old.token.expose(), &Request::default()).quota.credits_remaining, Some(8));
    assert_eq!(e.verify(new.token.expose(), &Request::default()).quota.credits_remaining, Some(7));
    env.clock.advance(59_999);
    assert!(e.verify(old.token.expose(), &Request::default()).is_valid());
    env.clock.advance(1);
    assert_eq!(e.verify(old.token.expose(), &Request::default()).code, Code::Expired);
    assert!(e.verify(new.token.expose(), &Request::default()).is_valid());
    let env = env.reopen();
    assert_eq!(env.engine.key(new.info.id).unwrap().credits_remaining, Some(5));
    let audit = env.engine.audit(None, 0, 100).unwrap();
    assert!(
        audit.items.iter().any(|a| a.action == keyward::AuditAction::KeyRotated && a.target == old.info.id.to_string())
    );
}

#[test]
fn audit_is_append_only_with_cursor_and_never_holds_tokens() {
    let env = Env::new();
    let k = env.key("a");
    env.engine.revoke_key(k.info.id, &Actor::Admin).unwrap();
    let all = env.engine.audit(None, 0, 100).unwrap();
    let actions: Vec<&str> = all.items.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["workspace.created", "key.created", "key.revoked"]);
    assert_eq!(all.items.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let first = env.engine.audit(None, 0, 2).unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = env.engine.audit(None, first.next_cursor.unwrap().parse().unwrap(), 2).unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    let debug = format!("{all:?}");
    assert!(!debug.contains(k.token.expose()));
    assert!(!debug.contains(&k.token.hash().to_hex()));
    // The file never holds the token either.
    drop(env.engine.close());
    let bytes = std::fs::read(env.path()).unwrap();
    let needle = k.token.expose().as_bytes();
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn snapshot_export_round_trips_and_verifies_alike() {
    let env = Env::new();
    let k = env.key("s");
    let revoked = env.key("r");
    env.engine.revoke_key(revoked.info.id, &Actor::Admin).unwrap();
    let bytes = env.engine.export_snapshot().unwrap();
    let mut local = keyward_core::LocalVerifier::load(&bytes, common::SNAP).unwrap();
    let req = keyward_core::Request { now: env.engine.now(), ..keyward_core::Request::default() };
    assert_eq!(local.verify(k.token.expose(), &req).verdict.code, Code::Valid);
    assert_eq!(local.verify(revoked.token.expose(), &req).verdict.code, Code::Revoked);
    assert!(keyward_core::LocalVerifier::load(&bytes, b"wrong-key-wrong-key-wrong").is_err());
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(k.token.expose()));
}

/// The edge reads tokens alone: a signing key passes there only if it is a
/// bearer key too; otherwise the snapshot does not hold it.
#[test]
fn snapshots_hold_only_bearer_keys() {
    let env = Env::new();
    let signing = || {
        Some(keyward::NewSigning { user_id: "9".into(), nonce_policy: keyward_core::signature::NoncePolicy::Monotonic })
    };
    let signer = env.key_with(keyward::NewKey { name: "s".into(), signing: signing(), ..Default::default() });
    let both =
        env.key_with(keyward::NewKey { name: "b".into(), signing: signing(), bearer: true, ..Default::default() });
    let plain = env.key("p");
    let snap = env.engine.snapshot();
    let mut ids: Vec<_> = snap.keys.iter().map(|k| k.id).collect();
    ids.sort();
    let mut want = vec![both.info.id, plain.info.id];
    want.sort();
    assert_eq!(ids, want);
    let bytes = env.engine.export_snapshot().unwrap();
    let mut local = keyward_core::LocalVerifier::load(&bytes, common::SNAP).unwrap();
    let req = keyward_core::Request { now: env.engine.now(), ..keyward_core::Request::default() };
    assert_eq!(local.verify(signer.token.expose(), &req).verdict.code, Code::NotFound);
    assert_eq!(local.verify(both.token.expose(), &req).verdict.code, Code::Valid);
}

/// Each update's audit event lists the fields it set, in a fixed order; a
/// change of `disabled` is its own action.
#[test]
fn updates_list_what_they_set() {
    let env = Env::new();
    let e = &env.engine;
    let k = env.key("a");
    let disable = keyward::KeyUpdate { disabled: Some(true), name: Some("b".into()), ..Default::default() };
    e.update_key(k.info.id, disable, &Actor::Admin).unwrap();
    let again = keyward::KeyUpdate { disabled: Some(true), ..Default::default() };
    e.update_key(k.info.id, again, &Actor::Admin).unwrap();
    let tool = NewTool {
        name: "t".into(),
        enabled: true,
        permission: None,
        cooldown_ms: None,
        daily_limit: None,
        upstream: None,
        timeout_ms: None,
    };
    e.create_tool(env.ws, tool, &Actor::Admin).unwrap();
    let off = keyward::ToolUpdate { enabled: Some(false), daily_limit: Some(Some(3)), ..Default::default() };
    e.update_tool(env.ws, "t", off, &Actor::Admin).unwrap();
    let plan = keyward::WorkspaceUpdate { api_access: Some(false), ..Default::default() };
    e.update_workspace(env.ws, plan, &Actor::Admin).unwrap();
    let items = e.audit(None, 0, 100).unwrap().items;
    let tail: Vec<(&str, &str)> = items[2..].iter().map(|a| (a.action.as_str(), a.detail.as_str())).collect();
    assert_eq!(
        tail,
        [
            ("key.disabled", "name,disabled"),
            ("key.updated", "disabled"),
            ("tool.created", ""),
            ("tool.updated", "enabled,daily_limit"),
            ("workspace.updated", "api_access"),
        ]
    );
}
