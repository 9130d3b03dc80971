//! The Redis store against a real `redis-server` the test starts on a free
//! loopback port (Debian's package). Without `redis-server` the tests skip
//! with a message, unless `KEYWARD_REQUIRE_REDIS=1` (CI) makes them fail.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::{MASTER, T0, login};
use keyward::{Actor, CreditChange, Engine, Error, ManualClock, NewKey, NewSigning, NewTool, NewWorkspace, Request};
use keyward_core::{Code, Credits, Limits, NoncePolicy, Status};
use redis_server::Redis;

fn open(url: &str, clock: &ManualClock) -> Engine {
    Engine::builder()
        .clock(clock.clone())
        .master_key(MASTER)
        .flush_interval(Duration::from_secs(3600))
        .open_redis(url)
        .unwrap()
}

#[test]
fn everything_round_trips_through_redis() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let e = open(&redis.url(), &clock);
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let tool = NewTool {
        name: "reports".into(),
        enabled: true,
        permission: None,
        cooldown_ms: Some(10),
        daily_limit: Some(5),
    };
    e.create_tool(ws, tool, &Actor::Admin).unwrap();
    let credits = Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() };
    let paid =
        e.create_key(ws, NewKey { name: "paid".into(), limits: Some(credits), ..NewKey::default() }, &Actor::Admin);
    let paid = paid.unwrap();
    let signer = NewKey {
        name: "signer".into(),
        signing: Some(NewSigning { user_id: "u1".into(), nonce_policy: NoncePolicy::Monotonic }),
        ..NewKey::default()
    };
    let signer = e.create_key(ws, signer, &Actor::Admin).unwrap();
    let revoked = e.create_key(ws, NewKey { name: "revoked".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let deleted = e.create_key(ws, NewKey { name: "deleted".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert!(e.verify(paid.token.expose(), &Request::default()).is_valid());
    e.update_credits(paid.info.id, CreditChange::Decrement(2), &Actor::Admin).unwrap();
    let rotated = e.rotate_key(paid.info.id, 60_000, &Actor::Admin).unwrap();
    e.revoke_key(revoked.info.id, &Actor::Admin).unwrap();
    e.delete_key(deleted.info.id, &Actor::Admin).unwrap();
    e.authenticate_user(&login(&signer, "5"), None).unwrap();
    let keys_before: Vec<_> =
        [paid.info.id, rotated.info.id, signer.info.id, revoked.info.id].iter().map(|id| e.key(*id).unwrap()).collect();
    let audit_before = e.audit(None, 0, 100).unwrap();
    assert_eq!(audit_before.items.len(), 10);
    assert_eq!(audit_before.items.iter().map(|a| a.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<u64>>());
    e.close().unwrap();
    drop(e);

    let e = open(&redis.url(), &clock);
    let keys_after: Vec<_> = keys_before.iter().map(|k| e.key(k.id).unwrap()).collect();
    assert_eq!(keys_after, keys_before);
    assert_eq!(keys_after[1].credits_remaining, Some(7), "10, one call, minus 2");
    assert_eq!(keys_after[3].status, Status::Revoked);
    assert!(matches!(e.key(deleted.info.id), Err(Error::NotFound { .. })));
    assert_eq!(e.verify(deleted.token.expose(), &Request::default()).code, Code::NotFound);
    assert_eq!(e.audit(None, 0, 100).unwrap(), audit_before);
    assert_eq!(e.audit(Some(ws), 3, 4).unwrap().items.iter().map(|a| a.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert_eq!(e.audit(Some(ws), 3, 4).unwrap().next_cursor.as_deref(), Some("7"));
    assert_eq!(e.tools(ws).unwrap()[0].limits.daily, Some(5));
    assert_eq!(e.session_count(), 1);
    assert_eq!(e.authenticate_user(&login(&signer, "5"), None).unwrap_err().code, Code::NonceReused);
    assert_eq!(e.check().unwrap(), 4);
}

#[test]
fn redis_down_changes_nothing_and_the_engine_recovers() {
    let Some(mut redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let e = open(&redis.url(), &clock);
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = e.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();

    redis.stop();
    let failed = e.create_key(ws, NewKey { name: "x".into(), ..NewKey::default() }, &Actor::Admin);
    assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
    assert!(e.revoke_key(k.info.id, &Actor::Admin).is_err());
    assert_eq!(e.key_count(), 1);
    assert_eq!(e.verify(k.token.expose(), &Request::default()).code, Code::Valid, "answers from memory");
    assert!(e.health().degraded.is_some());

    redis.restart();
    e.revoke_key(k.info.id, &Actor::Admin).unwrap();
    assert_eq!(e.health().degraded, None);
    e.close().unwrap();
    drop(e);
    let e = open(&redis.url(), &clock);
    assert_eq!((e.key_count(), e.key(k.info.id).unwrap().status), (1, Status::Revoked));
}

#[test]
fn a_foreign_or_newer_layout_is_refused() {
    let Some(redis) = Redis::start() else { return };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("HSET")
        .arg("{keyward}:meta")
        .arg("magic")
        .arg("keyward")
        .arg("schema_version")
        .arg(99)
        .query::<()>(&mut c)
        .unwrap();
    let err = Engine::builder().open_redis(&redis.url()).err().unwrap();
    assert_eq!(err, Error::SchemaTooNew { found: 99, supported: 1 });
    redis::cmd("HSET").arg("{keyward}:meta").arg("magic").arg("other").query::<()>(&mut c).unwrap();
    let err = Engine::builder().open_redis(&redis.url()).err().unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
}

/// Waits (at most 5 s) until `f` holds; returns how long it took.
fn within(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: not seen after 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

#[test]
fn a_second_node_follows_every_change_within_milliseconds() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let a = open(&redis.url(), &clock);
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let early = a.create_key(ws, NewKey { name: "early".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let b = open(&redis.url(), &clock);
    let valid = |e: &Engine, token: &str| e.verify(token, &Request::default()).code;
    assert_eq!(valid(&b, early.token.expose()), Code::Valid, "loaded on open");

    // Made on A after B opened: followed.
    let signer = NewKey {
        name: "late".into(),
        signing: Some(NewSigning { user_id: "u1".into(), nonce_policy: NoncePolicy::Monotonic }),
        ..NewKey::default()
    };
    let late = a.create_key(ws, signer, &Actor::Admin).unwrap();
    within("a new key", || valid(&b, late.token.expose()) == Code::Valid);
    a.revoke_key(early.info.id, &Actor::Admin).unwrap();
    let took = within("a revocation", || valid(&b, early.token.expose()) == Code::Revoked);
    println!("revocation seen on the other node after {took:?}");

    let session = a.authenticate_user(&login(&late, "9"), None).unwrap();
    within("a session", || b.verify_session(session.token.expose(), &Request::default()).code == Code::Valid);
    assert_eq!(b.authenticate_user(&login(&late, "9"), None).unwrap_err().code, Code::NonceReused, "nonce followed");

    let rotated = a.rotate_key(late.info.id, 60_000, &Actor::Admin).unwrap();
    within("a rotation", || valid(&b, rotated.token.expose()) == Code::Valid);
    assert_eq!(b.key(late.info.id).unwrap().expires_at, Some(T0.plus(60_000)));

    let tool =
        NewTool { name: "reports".into(), enabled: true, permission: None, cooldown_ms: None, daily_limit: None };
    a.create_tool(ws, tool, &Actor::Admin).unwrap();
    let on_tool =
        |e: &Engine| e.verify(rotated.token.expose(), &Request { tool: Some("reports"), ..Request::default() }).code;
    within("a tool", || on_tool(&b) == Code::Valid);
    let off = keyward::ToolUpdate { enabled: Some(false), ..keyward::ToolUpdate::default() };
    a.update_tool(ws, "reports", off, &Actor::Admin).unwrap();
    within("a disabled tool", || on_tool(&b) == Code::ToolDisabled);
    let closed = keyward::WorkspaceUpdate { api_access: Some(false), ..keyward::WorkspaceUpdate::default() };
    a.update_workspace(ws, closed, &Actor::Admin).unwrap();
    within("a workspace change", || valid(&b, rotated.token.expose()) == Code::PlanInactive);

    a.delete_key(rotated.info.id, &Actor::Admin).unwrap();
    within("a deletion", || valid(&b, rotated.token.expose()) == Code::NotFound);
    // And the other way round.
    b.revoke_key(late.info.id, &Actor::Admin).unwrap();
    within("a change made on B", || a.key(late.info.id).unwrap().status == Status::Revoked);
    a.close().unwrap();
    b.close().unwrap();
}
