//! What survives close/reopen, and the file itself: mode, locking, corruption.

mod common;

use common::{Env, perm};
use keyward::{Actor, Engine, KeyUpdate, NewKey, NewTool, Request};
use keyward_core::limits::{Concurrency, Cost, Credits, RateLimit};
use keyward_core::policy::Status;
use keyward_core::{Code, Limits};

#[test]
fn everything_survives_reopen() {
    let env = Env::new();
    let e = &env.engine;
    let kept = env.key_with(NewKey {
        name: "kept".into(),
        permissions: vec![perm("billing:*")],
        meta: Some(serde_json::json!({"plan": "pro"})),
        limits: Some(Limits {
            daily: Some(10),
            credits: Some(Credits { initial: 100, refill: None }),
            rates: vec![RateLimit { name: "default".into(), limit: 5, window_ms: 60_000, auto_apply: true }],
            ..Limits::default()
        }),
        ..NewKey::default()
    });
    let revoked = env.key("revoked");
    e.revoke_key(revoked.info.id, &Actor::Admin).unwrap();
    let rotated_old = env.key("rotated");
    let rotated = e.rotate_key(rotated_old.info.id, 60_000, &Actor::Admin).unwrap();
    let deleted = env.key("deleted");
    e.delete_key(deleted.info.id, &Actor::Admin).unwrap();
    e.create_tool(
        env.ws,
        NewTool {
            name: "gl_ping".into(),
            enabled: true,
            permission: None,
            cooldown_ms: Some(1000),
            daily_limit: None,
            upstream: None,
            timeout_ms: None,
        },
        &Actor::Admin,
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            e.verify(kept.token.expose(), &Request { cost: Cost { credits: 7, rates: &[] }, ..Request::default() })
                .code,
            Code::Valid
        );
    }
    env.clock.advance(5);
    let before = e.key(kept.info.id).unwrap();
    let usage_before = e.usage(kept.info.id).unwrap();
    let audit_before = e.audit(None, 0, 100).unwrap();

    let env = env.reopen();
    let e = &env.engine;
    let after = e.key(kept.info.id).unwrap();
    assert_eq!(after, before);
    assert_eq!(after.credits_remaining, Some(79));
    assert_eq!(after.last_used_at, Some(common::T0));
    assert_eq!(e.usage(kept.info.id).unwrap(), usage_before);
    assert_eq!(usage_before.valid, 3);
    assert_eq!(usage_before.daily_used, Some(3));
    assert_eq!(usage_before.quota.rate.as_ref().map(|r| r.remaining), Some(2));
    assert_eq!(e.verify(revoked.token.expose(), &Request::default()).code, Code::Revoked);
    assert_eq!(e.verify(rotated.token.expose(), &Request::default()).code, Code::Valid);
    assert_eq!(e.verify(rotated_old.token.expose(), &Request::default()).code, Code::Valid, "still in grace");
    assert_eq!(e.verify(deleted.token.expose(), &Request::default()).code, Code::NotFound);
    assert_eq!(e.tools(env.ws).unwrap().len(), 1);
    assert_eq!(e.audit(None, 0, 100).unwrap(), audit_before);
    assert_eq!(e.key(revoked.info.id).unwrap().status, Status::Revoked);
}

/// A key holding 10 credits and no refill.
fn ten_credits() -> NewKey {
    NewKey {
        name: "k".into(),
        limits: Some(Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() }),
        ..NewKey::default()
    }
}

#[test]
fn counters_written_behind_by_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.redb");
    let (id, token) = {
        let e = Engine::builder().flush_interval(std::time::Duration::from_millis(20)).open(&path).unwrap();
        let ws = e.create_workspace(keyward::NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
        let k = e.create_key(ws, ten_credits(), &Actor::Admin).unwrap();
        for _ in 0..4 {
            assert!(e.verify(k.token.expose(), &Request::default()).is_valid());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Leak the engine: no flush on drop, as after a crash.
        let id = k.info.id;
        let token = k.token.expose().to_owned();
        std::mem::forget(e);
        (id, token)
    };
    // The leaked engine still holds the file lock in this process, so read a copy.
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    let e = Engine::open(&copy).unwrap();
    assert_eq!(e.key(id).unwrap().credits_remaining, Some(6));
    assert!(e.verify(&token, &Request::default()).is_valid());
}

#[test]
fn strict_credits_are_durable_before_verify_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.redb");
    let e = Engine::builder()
        .flush_interval(std::time::Duration::from_secs(3600))
        .strict_credits(true)
        .open(&path)
        .unwrap();
    let ws = e.create_workspace(keyward::NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    let k = e.create_key(ws, ten_credits(), &Actor::Admin).unwrap();
    for _ in 0..3 {
        assert!(e.verify(k.token.expose(), &Request::default()).is_valid());
    }
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    std::mem::forget(e);
    let e = Engine::open(&copy).unwrap();
    assert_eq!(e.key(k.info.id).unwrap().credits_remaining, Some(7));
}

#[test]
fn file_mode_lock_and_corruption() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.redb");
    let e = Engine::open(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // Second open while held.
    match Engine::open(&path) {
        Err(keyward::Error::InUse(p)) => assert!(p.ends_with("k.redb")),
        Err(other) => panic!("expected InUse, got {other:?}"),
        Ok(_) => panic!("expected InUse, got an engine"),
    }
    drop(e);
    assert!(Engine::open(&path).is_ok());

    // Garbage file.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"this is not a database at all, just some text that goes on and on".repeat(100)).unwrap();
    let err = Engine::open(&junk).err().expect("junk must not open");
    assert!(matches!(err, keyward::Error::Corrupt(_) | keyward::Error::Io(_)), "{err:?}");

    // A redb file that is not ours.
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb_create(&foreign);
        drop(db);
    }
    assert!(matches!(Engine::open(&foreign), Err(keyward::Error::Corrupt(_))));

    // Truncated keyward file.
    let trunc = dir.path().join("trunc.redb");
    std::fs::copy(&path, &trunc).unwrap();
    let len = std::fs::metadata(&trunc).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&trunc).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let r = Engine::open(&trunc);
    assert!(r.is_err() || r.is_ok(), "never panics");
    // Random byte damage at many offsets never panics.
    let original = std::fs::read(&path).unwrap();
    for i in (0..original.len()).step_by(original.len() / 40 + 1) {
        let mut damaged = original.clone();
        damaged[i] ^= 0xff;
        let p = dir.path().join(format!("dmg{i}.redb"));
        std::fs::write(&p, &damaged).unwrap();
        let _ = Engine::open(&p).map(|e| e.check());
    }
}

fn redb_create(path: &std::path::Path) -> redb::Database {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<'_, &str, &str> = redb::TableDefinition::new("other_app");
        let mut t = txn.open_table(def).unwrap();
        t.insert("a", "b").unwrap();
    }
    txn.commit().unwrap();
    db
}

#[test]
fn update_is_visible_immediately_and_persists() {
    let env = Env::new();
    let k = env.key_with(NewKey { name: "k".into(), permissions: vec![perm("a")], ..NewKey::default() });
    let e = &env.engine;
    let need_b = Request { permissions: &["b"], ..Request::default() };
    assert_eq!(e.verify(k.token.expose(), &need_b).code, Code::InsufficientPermissions);
    e.update_key(k.info.id, KeyUpdate { permissions: Some(vec![perm("b")]), ..KeyUpdate::default() }, &Actor::Admin)
        .unwrap();
    assert_eq!(e.verify(k.token.expose(), &need_b).code, Code::Valid);
    let conc = Limits { concurrency: Some(Concurrency { max: 1, lease_ms: 1000 }), ..Limits::default() };
    e.update_key(k.info.id, KeyUpdate { limits: Some(conc), ..KeyUpdate::default() }, &Actor::Admin).unwrap();
    let v = e.verify(k.token.expose(), &need_b);
    assert_eq!(v.code, Code::Valid);
    assert_eq!(e.verify(k.token.expose(), &need_b).code, Code::ConcurrencyLimit);
    assert!(e.release(k.info.id, None, &v.leases));
    let env = env.reopen();
    assert_eq!(env.engine.verify(k.token.expose(), &need_b).code, Code::Valid);
}
