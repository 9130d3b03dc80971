//! The write path under contention: one writer, commit then publish, one
//! lock order. Every test here runs its work on other threads and waits for
//! it with a watchdog, so a deadlock fails the test instead of hanging it.
//!
//! Regression: signed logins held a key's counter mutex while waiting for
//! the write transaction, and the flusher held the transaction while waiting
//! for that mutex; with a 1 ms flush interval the engine wedged for good
//! within half a second.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{MASTER, SNAP, T0};
use keyward::{Actor, CreditChange, Engine, Error, KeyUpdate, ManualClock, NewKey, NewSigning, NewWorkspace, Request};
use keyward_core::credentials::SignedHeaders;
use keyward_core::limits::{Cost, Credits};
use keyward_core::signature::{NoncePolicy, sign_hex};
use keyward_core::{Code, KeyId, Limits};
use zeroize::Zeroizing;

/// The longest the contended work may take before the test fails.
const WATCHDOG: Duration = Duration::from_secs(30);
/// How long the threads keep going.
const RUN: Duration = Duration::from_secs(3);

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> Engine {
    Engine::builder()
        .clock(clock.clone())
        .master_key(MASTER)
        .snapshot_key(SNAP)
        .strict_credits(true)
        .flush_interval(Duration::from_millis(1))
        .session_mint_limit(1_000_000, Duration::from_secs(1))
        .open(dir.path().join("keyward.redb"))
        .unwrap()
}

/// Runs `work` on its own thread; fails the test if it is not done in time.
fn with_watchdog<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(v) => v,
        Err(_) => panic!("{what}: not finished after {WATCHDOG:?}: the engine is wedged"),
    }
}

fn signed(token: &str, secret: &str, nonce: &str) -> SignedHeaders {
    let secret = keyward_core::signature::ApiSecret::new(secret.as_bytes().to_vec());
    SignedHeaders {
        api_key: Zeroizing::new(token.to_owned()),
        signature: sign_hex(&secret, nonce, "u1", token),
        user_id: "u1".into(),
        nonce: nonce.into(),
    }
}

/// A key with a signing identity (random nonces) that is a bearer key too
/// (its token is verified alone as well), a daily limit and, when `credits`
/// is given, a balance (strict mode commits each charge).
fn spec(name: &str, credits: Option<u64>) -> NewKey {
    NewKey {
        name: name.into(),
        signing: Some(NewSigning {
            user_id: "u1".into(),
            nonce_policy: NoncePolicy::Unique { window_ms: 3_600_000, capacity: 65_536 },
        }),
        bearer: true,
        limits: Some(Limits {
            daily: Some(100_000_000),
            credits: credits.map(|initial| Credits { initial, refill: None }),
            ..Limits::default()
        }),
        ..NewKey::default()
    }
}

#[test]
fn contended_writes_complete_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = open(&dir, &clock);
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    // `strict`: credits (strict charges) and signed logins; `plain`: signed
    // logins and a daily limit, written behind; `doomed`: revoked mid-run;
    // `gone`: deleted mid-run.
    let strict = engine.create_key(ws, spec("strict", Some(1_000_000)), &Actor::Admin).unwrap();
    let plain = engine.create_key(ws, spec("plain", None), &Actor::Admin).unwrap();
    let doomed = engine.create_key(ws, spec("doomed", None), &Actor::Admin).unwrap();
    let gone = engine.create_key(ws, spec("gone", None), &Actor::Admin).unwrap();
    let secret = |k: &keyward::CreatedKey| k.signing.as_ref().unwrap().api_secret.to_string();
    let keys: Vec<(String, String, KeyId)> =
        [&strict, &plain, &doomed, &gone].iter().map(|k| (k.token.expose().to_owned(), secret(k), k.info.id)).collect();

    struct Tally {
        strict_admitted: AtomicU64,
        plain_admitted: AtomicU64,
        increments: AtomicU64,
        logins: AtomicU64,
        created: Mutex<Vec<KeyId>>,
        rotations: Mutex<Vec<KeyId>>,
        stop: AtomicBool,
    }
    let tally = Arc::new(Tally {
        strict_admitted: AtomicU64::new(0),
        plain_admitted: AtomicU64::new(0),
        increments: AtomicU64::new(0),
        logins: AtomicU64::new(0),
        created: Mutex::new(Vec::new()),
        rotations: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });

    let e = engine.clone();
    let t = Arc::clone(&tally);
    let (strict_id, plain_id, doomed_id, gone_id) = (keys[0].2, keys[1].2, keys[2].2, keys[3].2);
    with_watchdog("contended writes", move || {
        let deadline = Instant::now() + RUN;
        let running = || Instant::now() < deadline && !t.stop.load(Ordering::Relaxed);
        std::thread::scope(|s| {
            // Signed logins over every key, unique nonces.
            s.spawn(|| {
                let mut n = 0u64;
                while running() {
                    for (token, secret, _) in &keys {
                        n += 1;
                        if e.authenticate_user(&signed(token, secret, &format!("n{n}")), None).is_ok() {
                            t.logins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            // Strict verification: each admitted call is a commit.
            s.spawn(|| {
                while running() {
                    if e.verify(&keys[0].0, &Request::default()).is_valid() {
                        t.strict_admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            // Normal verification, written behind every millisecond.
            for _ in 0..2 {
                s.spawn(|| {
                    while running() {
                        if e.verify(&keys[1].0, &Request::default()).is_valid() {
                            t.plain_admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        // Cost 0 on the strict key: checked, never committed.
                        let free = Request { cost: Cost { credits: 0, rates: &[] }, ..Request::default() };
                        let _ = e.verify(&keys[0].0, &free);
                    }
                });
            }
            // Credits: increments only, so the final balance is exact.
            s.spawn(|| {
                while running() {
                    e.update_credits(strict_id, CreditChange::Increment(3), &Actor::Admin).unwrap();
                    t.increments.fetch_add(3, Ordering::Relaxed);
                }
            });
            // Rotations of `plain` (the successor each time), creates,
            // one revoke and one delete along the way.
            s.spawn(|| {
                let mut current = plain_id;
                let mut round = 0;
                while running() {
                    round += 1;
                    let next = e.rotate_key(current, 3_600_000, &Actor::Admin).unwrap();
                    // Rotating the same key again is refused: one successor.
                    assert!(matches!(e.rotate_key(current, 1_000, &Actor::Admin), Err(Error::Conflict(_))));
                    t.rotations.lock().unwrap().push(next.info.id);
                    current = next.info.id;
                    let k = e.create_key(ws, spec(&format!("new{round}"), Some(5)), &Actor::Admin).unwrap();
                    t.created.lock().unwrap().push(k.info.id);
                    if round == 3 {
                        e.revoke_key(doomed_id, &Actor::Admin).unwrap();
                        e.delete_key(gone_id, &Actor::Admin).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        });
    });

    let logins = tally.logins.load(Ordering::Relaxed);
    let strict_admitted = tally.strict_admitted.load(Ordering::Relaxed);
    let plain_admitted = tally.plain_admitted.load(Ordering::Relaxed);
    let increments = tally.increments.load(Ordering::Relaxed);
    let created = tally.created.lock().unwrap().clone();
    let rotations = tally.rotations.lock().unwrap().clone();
    println!(
        "logins {logins}, strict verifies {strict_admitted}, plain verifies {plain_admitted}, credits +{increments}, \
         rotations {}, creates {}",
        rotations.len(),
        created.len()
    );
    assert!(logins > 0 && strict_admitted > 0 && plain_admitted > 0 && rotations.len() >= 3, "every thread ran");

    let check = |e: &Engine, when: &str| {
        // Counters equal the admitted calls: credits exactly, daily exactly
        // (the rotated keys share one counter cell).
        let strict_now = e.key(strict_id).unwrap();
        assert_eq!(strict_now.credits_remaining, Some(1_000_000 + increments - strict_admitted), "{when}: credits");
        assert_eq!(e.usage(strict_id).unwrap().daily_used, Some(strict_admitted), "{when}: strict daily");
        let last = *rotations.last().unwrap();
        assert_eq!(e.usage(last).unwrap().daily_used, Some(plain_admitted), "{when}: daily across rotations");
        assert_eq!(
            e.key(doomed_id).unwrap().status,
            keyward_core::policy::Status::Revoked,
            "{when}: revoked stays revoked"
        );
        assert_eq!(e.verify(doomed.token.expose(), &Request::default()).code, Code::Revoked, "{when}");
        assert!(matches!(e.key(gone_id), Err(Error::NotFound { .. })), "{when}: a deleted key stays deleted");
        assert_eq!(e.verify(gone.token.expose(), &Request::default()).code, Code::NotFound, "{when}");
        for id in &created {
            assert_eq!(e.key(*id).unwrap().credits_remaining, Some(5), "{when}: created key {id}");
        }
    };
    check(&engine, "in memory");
    engine.close().unwrap();
    drop(engine);
    let engine = open(&dir, &clock);
    check(&engine, "after reopen");
}

#[test]
fn signed_logins_and_the_flusher_never_wedge() {
    // The reported wedge, as a user met it: logins on one thread, verifies
    // of the same key on another, a 1 ms flush interval.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = open(&dir, &clock);
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = engine.create_key(ws, spec("k", None), &Actor::Admin).unwrap();
    let (token, secret) = (k.token.expose().to_owned(), k.signing.as_ref().unwrap().api_secret.to_string());
    let e = engine.clone();
    let (logins, verifies) = with_watchdog("logins against the flusher", move || {
        let deadline = Instant::now() + Duration::from_secs(2);
        std::thread::scope(|s| {
            let login = s.spawn(|| {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    e.authenticate_user(&signed(&token, &secret, &format!("{n}")), None).unwrap();
                }
                n
            });
            let verify = s.spawn(|| {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    assert!(e.verify(&token, &Request::default()).is_valid());
                    n += 1;
                }
                n
            });
            (login.join().unwrap(), verify.join().unwrap())
        })
    });
    println!("{logins} logins, {verifies} verifies in 2 s");
    assert_eq!(engine.usage(k.info.id).unwrap().daily_used, Some(verifies));
    assert_eq!(engine.session_count(), usize::try_from(logins).unwrap());
}

#[test]
fn a_second_rotation_is_refused_and_each_key_keeps_its_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = open(&dir, &clock);
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let mut s = spec("k", Some(10));
    s.signing = Some(NewSigning { user_id: "u1".into(), nonce_policy: NoncePolicy::Monotonic });
    let old = engine.create_key(ws, s, &Actor::Admin).unwrap();
    let old_secret = old.signing.as_ref().unwrap().api_secret.to_string();
    engine.authenticate_user(&signed(old.token.expose(), &old_secret, "500"), None).unwrap();

    let new = engine.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap();
    // A retried rotation (its answer lost, say) forks nothing.
    let again = engine.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap_err();
    assert_eq!(
        again,
        Error::Conflict(format!(
            "key {} was already rotated (its successor is {}); rotate that key instead",
            old.info.id, new.info.id
        ))
    );
    assert_eq!(engine.key_count(), 2, "no second successor");
    // The old key's recorded login still replays as NONCE_REUSED in its
    // grace; the successor starts a history of its own.
    let replay = engine.authenticate_user(&signed(old.token.expose(), &old_secret, "500"), None).unwrap_err();
    assert_eq!(replay.code, Code::NonceReused);
    let new_secret = new.signing.as_ref().unwrap().api_secret.to_string();
    engine.authenticate_user(&signed(new.token.expose(), &new_secret, "1"), None).unwrap();
    // Both tokens spend the one balance of 10.
    for _ in 0..5 {
        assert!(engine.verify(old.token.expose(), &Request::default()).is_valid());
        assert!(engine.verify(new.token.expose(), &Request::default()).is_valid());
    }
    assert_eq!(engine.key(new.info.id).unwrap().credits_remaining, Some(0));
    assert_eq!(engine.verify(old.token.expose(), &Request::default()).code, Code::UsageExhausted);

    // The successor can be rotated in turn; the first key follows its counters.
    let third = engine.rotate_key(new.info.id, 60_000, &Actor::Admin).unwrap();
    engine.update_credits(third.info.id, CreditChange::Set(4), &Actor::Admin).unwrap();
    assert_eq!(engine.verify(old.token.expose(), &Request::default()).code, Code::Valid);
    assert_eq!(engine.key(third.info.id).unwrap().credits_remaining, Some(3));

    engine.close().unwrap();
    drop(engine);
    let engine = open(&dir, &clock);
    let replay = engine.authenticate_user(&signed(old.token.expose(), &old_secret, "500"), None).unwrap_err();
    assert_eq!(replay.code, Code::NonceReused, "after reopen");
    assert_eq!(engine.key(third.info.id).unwrap().credits_remaining, Some(3));
    assert_eq!(engine.key(old.info.id).unwrap().credits_remaining, Some(3), "shared after reopen");
}

#[test]
fn an_update_with_a_bad_field_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = open(&dir, &clock);
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = engine.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let before = engine.key(k.info.id).unwrap();
    // A name change and a credits change on a key without credits: refused
    // as one, nothing applied.
    let update =
        KeyUpdate { name: Some("renamed".into()), credits: Some(CreditChange::Set(5)), ..KeyUpdate::default() };
    let err = engine.update_key(k.info.id, update, &Actor::Admin).unwrap_err();
    assert_eq!(err, Error::Invalid { field: "credits", message: "the key has no credits limit".into() });
    assert_eq!(engine.key(k.info.id).unwrap(), before);
    // Limits and a balance in one call: one commit, one audit event.
    let update = KeyUpdate {
        name: Some("renamed".into()),
        limits: Some(Limits { credits: Some(Credits { initial: 100, refill: None }), ..Limits::default() }),
        credits: Some(CreditChange::Set(7)),
        ..KeyUpdate::default()
    };
    let info = engine.update_key(k.info.id, update, &Actor::Admin).unwrap();
    assert_eq!((info.name.as_str(), info.credits_remaining), ("renamed", Some(7)));
    let events = engine.audit(None, 0, 100).unwrap().items;
    let last = events.last().unwrap();
    assert_eq!((last.action.as_str(), last.detail.as_str()), ("key.updated", "name,limits,credits"));
}

#[test]
fn expired_sessions_are_purged_on_a_timer_and_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open_with = |dir: &tempfile::TempDir| {
        Engine::builder()
            .clock(clock.clone())
            .master_key(MASTER)
            .session_ttl(Duration::from_secs(60))
            .session_purge_interval(Duration::from_millis(5))
            .open(dir.path().join("keyward.redb"))
            .unwrap()
    };
    let engine = open_with(&dir);
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = engine.create_key(ws, spec("k", None), &Actor::Admin).unwrap();
    let secret = k.signing.as_ref().unwrap().api_secret.to_string();
    for n in 0..3 {
        engine.authenticate_user(&signed(k.token.expose(), &secret, &format!("a{n}")), None).unwrap();
    }
    assert_eq!(engine.session_count(), 3);
    clock.advance(61_000);
    engine.authenticate_user(&signed(k.token.expose(), &secret, "fresh"), None).unwrap();
    // The flusher purges the three expired ones within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.session_count() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.session_count(), 1);
    engine.close().unwrap();
    drop(engine);
    clock.advance(61_000);
    let engine = open_with(&dir);
    assert_eq!(engine.session_count(), 0, "purged on open");
}
