//! Fault injection: a store that refuses writes. A failing commit returns an
//! error and changes nothing, in memory or on disk; reads keep answering;
//! the engine reports itself degraded and recovers when the disk does.

mod common;
#[path = "common/faulty.rs"]
mod faulty;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{MASTER, T0, login};
use faulty::FaultyBackend;
use keyward::{Actor, CreditChange, Engine, Error, ManualClock, NewKey, NewSigning, NewWorkspace, Request};
use keyward_core::limits::Credits;
use keyward_core::policy::Status;
use keyward_core::signature::NoncePolicy;
use keyward_core::{Code, Limits};

fn builder(clock: &ManualClock) -> keyward::EngineBuilder {
    // A long interval: this test flushes by hand.
    Engine::builder()
        .clock(clock.clone())
        .master_key(MASTER)
        .strict_credits(true)
        .flush_interval(Duration::from_secs(3600))
}

#[test]
fn a_failing_store_changes_nothing_and_the_engine_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.redb");
    let clock = ManualClock::new(T0);
    let disk = FaultyBackend::open(&path);
    let engine = builder(&clock).open_backend(disk.clone()).unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let spec = NewKey {
        name: "k".into(),
        limits: Some(Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() }),
        signing: Some(NewSigning { user_id: "u1".into(), nonce_policy: NoncePolicy::Monotonic }),
        // Verified below as a bearer token too.
        bearer: true,
        ..NewKey::default()
    };
    let k = engine.create_key(ws, spec, &Actor::Admin).unwrap();
    let id = k.info.id;
    let token = k.token.expose().to_owned();
    let free = Request { cost: keyward_core::limits::Cost { credits: 0, rates: &[] }, ..Request::default() };
    let h = engine.health();
    assert_eq!((h.degraded, h.write_failures, h.flush_failures), (None, 0, 0));

    disk.fail(true);
    // Changes fail with an error and leave memory as it was.
    let created = engine.create_key(ws, NewKey { name: "x".into(), ..NewKey::default() }, &Actor::Admin);
    assert!(matches!(created, Err(Error::Storage(_) | Error::Corrupt(_))), "{created:?}");
    assert_eq!(engine.key_count(), 1);
    assert!(engine.revoke_key(id, &Actor::Admin).is_err());
    assert_eq!(engine.key(id).unwrap().status, Status::Active, "a failed revoke is not live");
    assert!(engine.update_credits(id, CreditChange::Set(99), &Actor::Admin).is_err());
    assert_eq!(engine.key(id).unwrap().credits_remaining, Some(10));
    // A strict charge that cannot be made durable is refused, uncharged.
    let v = engine.verify(&token, &Request::default());
    assert_eq!((v.code, v.retry_after_ms), (Code::StoreUnavailable, Some(1_000)));
    assert_eq!(engine.key(id).unwrap().credits_remaining, Some(10));
    // A login that cannot be recorded mints nothing and burns no nonce.
    assert_eq!(engine.authenticate_user(&login(&k, "7"), None).unwrap_err().code, Code::StoreUnavailable);
    assert_eq!(engine.session_count(), 0);
    // Reads keep answering from memory.
    assert_eq!(engine.verify(&token, &free).code, Code::Valid);
    assert!(engine.flush().is_err());
    let h = engine.health();
    assert!(h.degraded.as_deref().is_some_and(|r| r.contains("injected fault")), "{h:?}");
    assert_eq!(h.flush_failures, 1);
    assert_eq!(h.write_failures, 6, "create, revoke, credits, strict charge, login, flush");
    assert!(disk.refused.load(Ordering::SeqCst) >= 6);

    // The disk comes back: the next commit reopens the store and succeeds.
    disk.fail(false);
    engine.flush().unwrap();
    assert_eq!(engine.health().degraded, None);
    assert_eq!(engine.verify(&token, &Request::default()).code, Code::Valid);
    assert_eq!(engine.key(id).unwrap().credits_remaining, Some(9));
    engine.authenticate_user(&login(&k, "7"), None).unwrap();
    engine.revoke_key(id, &Actor::Admin).unwrap();
    engine.close().unwrap();
    drop(engine);

    // On disk: what succeeded, and nothing of what failed.
    let engine = builder(&clock).open(&path).unwrap();
    assert_eq!(engine.key_count(), 1, "the failed create left nothing");
    let info = engine.key(id).unwrap();
    assert_eq!((info.status, info.credits_remaining), (Status::Revoked, Some(9)));
    assert_eq!(engine.session_count(), 1);
    assert_eq!(engine.usage(id).unwrap().valid, 2, "the free check and the strict charge");
}

#[test]
fn the_flusher_probes_a_degraded_store_until_it_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let disk = FaultyBackend::open(&dir.path().join("keyward.redb"));
    let engine = Engine::builder()
        .clock(clock.clone())
        .flush_interval(Duration::from_millis(2))
        .open_backend(disk.clone())
        .unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    disk.fail(true);
    assert!(engine.create_workspace(NewWorkspace::named("b"), &Actor::Admin).is_err());
    assert!(engine.health().degraded.is_some());
    disk.fail(false);
    // Nothing is dirty, yet the flusher's probe clears the state by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.health().degraded.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(engine.health().degraded, None);
    assert_eq!(engine.workspaces().len(), 1);
    assert_eq!(engine.workspaces()[0].policy.id, ws);
}
