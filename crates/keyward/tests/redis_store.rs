//! The Redis store against a real `redis-server` the test starts on a free
//! loopback port (Debian's package). Without `redis-server` the tests skip
//! with a message, unless `KEYWARD_REQUIRE_REDIS=1` (CI) makes them fail.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::{MASTER, T0, login};
use keyward::{
    Actor, AuditAction, CreditChange, Engine, Error, ManualClock, NewKey, NewSigning, NewTool, NewWorkspace, Request,
};
use keyward_core::limits::Credits;
use keyward_core::policy::Status;
use keyward_core::signature::NoncePolicy;
use keyward_core::{Code, Limits};
use redis_server::{Cluster, Redis};

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
        upstream: Some("https://reports.internal:8443/v2".into()),
        timeout_ms: Some(2500),
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
    assert_eq!(e.tools(ws).unwrap()[0].policy.limits.daily, Some(5));
    let reports = e.tool(ws, "reports").unwrap();
    assert_eq!((reports.upstream.as_deref(), reports.timeout_ms), (Some("https://reports.internal:8443/v2"), 2500));
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
    within("the store answers again", || e.health().degraded.is_none());
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
        // Verified as a bearer token on B: the flag travels with the record.
        bearer: true,
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

    let tool = NewTool {
        name: "reports".into(),
        enabled: true,
        permission: None,
        cooldown_ms: None,
        daily_limit: None,
        upstream: None,
        timeout_ms: None,
    };
    a.create_tool(ws, tool, &Actor::Admin).unwrap();
    let on_tool =
        |e: &Engine| e.verify(rotated.token.expose(), &Request { tool: Some("reports"), ..Request::default() }).code;
    within("a tool", || on_tool(&b) == Code::Valid);
    let routed = keyward::ToolUpdate { upstream: Some(Some("http://10.0.0.5:9000".into())), ..Default::default() };
    a.update_tool(ws, "reports", routed, &Actor::Admin).unwrap();
    within("an upstream", || b.tool(ws, "reports").unwrap().upstream.as_deref() == Some("http://10.0.0.5:9000"));
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

#[test]
fn an_unreachable_store_is_answered_from_memory_for_the_stale_window_only() {
    let Some(mut redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let node = |fail_open: bool| {
        Engine::builder()
            .clock(clock.clone())
            .flush_interval(Duration::from_secs(3600))
            .store_stale(Duration::from_millis(1500))
            .fail_open_limits(fail_open)
            .open_redis(&redis.url())
            .unwrap()
    };
    let (a, b) = (node(false), node(true));
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let plain = a.create_key(ws, NewKey { name: "plain".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let credits = Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() };
    let paid = NewKey { name: "paid".into(), limits: Some(credits), ..NewKey::default() };
    let paid = a.create_key(ws, paid, &Actor::Admin).unwrap();
    within("b knows both keys", || b.key(paid.info.id).is_ok() && b.key(plain.info.id).is_ok());
    let req = Request::default();
    assert_eq!(a.verify(paid.token.expose(), &req).quota.credits_remaining, Some(9));
    assert_eq!(b.verify(paid.token.expose(), &req).quota.credits_remaining, Some(8));

    redis.stop();
    let stopped = std::time::Instant::now();
    within("a sees the store gone", || a.health().store_unreachable_ms.is_some());
    within("b sees the store gone", || b.health().store_unreachable_ms.is_some());
    let h = a.health();
    assert!(h.degraded.is_some() && !h.store_stale, "{h:?}");
    // Inside the window: known keys from memory; exact limits refuse at
    // once (or, failing open, count on the node alone); changes fail.
    assert_eq!(a.verify(plain.token.expose(), &req).code, Code::Valid);
    let v = a.verify(paid.token.expose(), &req);
    assert_eq!((v.code, v.retry_after_ms, v.key_id), (Code::StoreUnavailable, Some(1_000), Some(paid.info.id)));
    let v = b.verify(paid.token.expose(), &req);
    assert_eq!((v.code, v.quota.credits_remaining), (Code::Valid, Some(7)));
    assert!(matches!(a.revoke_key(plain.info.id, &Actor::Admin), Err(Error::Storage(_))));
    assert!(stopped.elapsed() < Duration::from_millis(1_500), "the checks above outlasted the window");

    // Past the window every key is refused: a revocation may have been missed.
    within("the window passes on a", || a.health().store_stale);
    within("the window passes on b", || b.health().store_stale);
    assert!(stopped.elapsed() >= Duration::from_millis(1_500));
    let v = a.verify(plain.token.expose(), &req);
    assert_eq!((v.code, v.retry_after_ms), (Code::StoreUnavailable, Some(1_000)));
    assert_eq!(b.verify(paid.token.expose(), &req).code, Code::StoreUnavailable);
    assert_eq!(a.verify("kw_live_nosuchkey", &req).code, Code::Malformed);

    // Back: both nodes answer again and follow what the other changes.
    redis.restart();
    within("a answers again", || a.health().store_unreachable_ms.is_none() && !a.health().store_stale);
    within("b answers again", || b.health().store_unreachable_ms.is_none());
    assert_eq!(a.verify(plain.token.expose(), &req).code, Code::Valid);
    b.revoke_key(plain.info.id, &Actor::Admin).unwrap();
    within("a sees b's revocation", || a.verify(plain.token.expose(), &req).code == Code::Revoked);
    // The store's balance: b's call counted while failing open is b's alone.
    assert_eq!(a.verify(paid.token.expose(), &req).quota.credits_remaining, Some(7));
}

#[test]
fn a_store_over_tls_trusts_the_ca_it_is_given() {
    let Some((redis, ca)) = Redis::start_tls() else { return };
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let clock = ManualClock::new(T0);
    let node = || {
        Engine::builder()
            .clock(clock.clone())
            .flush_interval(Duration::from_secs(3600))
            .store_ca(ca.as_bytes())
            .open_redis(&url)
    };
    let (a, b) = (node().unwrap(), node().unwrap());
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = a.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    within("b knows the key", || b.verify(k.token.expose(), &Request::default()).code == Code::Valid);
    a.revoke_key(k.info.id, &Actor::Admin).unwrap();
    within("b sees the revocation", || b.verify(k.token.expose(), &Request::default()).code == Code::Revoked);
    // Without the CA the server's certificate is not trusted.
    let err = Engine::builder().open_redis(&url).err().unwrap();
    assert!(matches!(&err, Error::Storage(m) if m.contains("UnknownIssuer")), "{err:?}");
    // A CA is for TLS only; a bad URL names the store.
    let err = Engine::builder().store_ca(ca.as_bytes()).open_redis("redis://127.0.0.1:1/0").err().unwrap();
    assert_eq!(err.to_string(), "invalid store: redis://127.0.0.1:1/0: a CA certificate is for rediss:// (TLS) only");
    let err = Engine::builder().open_redis("memcached://127.0.0.1:1").err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid store: memcached://127.0.0.1:1: unknown scheme `memcached://`: expected redis://, rediss://, \
         redis+cluster:// or rediss+cluster://"
    );
}

#[test]
fn nodes_on_a_cluster_follow_each_other() {
    let Some(cluster) = Cluster::start() else { return };
    let clock = ManualClock::new(T0);
    let (a, b) = (open(&cluster.url(), &clock), open(&cluster.url(), &clock));
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = a.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    within("b knows the key", || b.verify(k.token.expose(), &Request::default()).code == Code::Valid);
    b.revoke_key(k.info.id, &Actor::Admin).unwrap();
    within("a sees the revocation", || a.verify(k.token.expose(), &Request::default()).code == Code::Revoked);
    let actions: Vec<_> = a.audit(None, 0, 10).unwrap().items.iter().map(|e| (e.seq, e.action)).collect();
    assert_eq!(
        actions,
        [(1, AuditAction::WorkspaceCreated), (2, AuditAction::KeyCreated), (3, AuditAction::KeyRevoked)]
    );
    drop((a, b));
    let c = open(&cluster.url(), &clock);
    assert_eq!(c.key(k.info.id).unwrap().status, Status::Revoked);
}

#[test]
fn redis_killed_mid_load_loses_no_acknowledged_change() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    let Some(mut redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let url = redis.url();
    let node = || {
        Engine::builder()
            .clock(clock.clone())
            .flush_interval(Duration::from_secs(3600))
            .store_stale(Duration::from_secs(60))
            .open_redis(&url)
            .unwrap()
    };
    let (a, b) = (node(), node());
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let stop = AtomicBool::new(false);
    // Tokens whose revocation a acknowledged.
    let revoked: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let (created, failed) = std::thread::scope(|s| {
        // On a: create keys, revoke every other one; keep what was acknowledged.
        let writer = s.spawn(|| {
            let (mut created, mut failed) = (Vec::new(), 0);
            for i in 0.. {
                if stop.load(Relaxed) {
                    break;
                }
                let Ok(k) = a.create_key(ws, NewKey { name: format!("k{i}"), ..NewKey::default() }, &Actor::Admin)
                else {
                    failed += 1;
                    continue;
                };
                if i % 2 == 0 && a.revoke_key(k.info.id, &Actor::Admin).is_ok() {
                    revoked.lock().unwrap().push(k.token.expose().to_owned());
                }
                created.push(k);
            }
            (created, failed)
        });
        // On b: once a revoked key is refused, it is never valid again.
        let reader = s.spawn(|| {
            let mut refused: Vec<String> = Vec::new();
            while !stop.load(Relaxed) {
                let known = revoked.lock().unwrap().clone();
                for t in known {
                    let code = b.verify(&t, &Request::default()).code;
                    if refused.contains(&t) {
                        assert_ne!(code, Code::Valid, "a key b had seen revoked passed again");
                    } else if code == Code::Revoked {
                        refused.push(t);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        std::thread::sleep(Duration::from_millis(400));
        redis.stop();
        std::thread::sleep(Duration::from_millis(300));
        redis.restart();
        std::thread::sleep(Duration::from_millis(600));
        stop.store(true, Relaxed);
        reader.join().unwrap();
        writer.join().unwrap()
    });
    let revoked = revoked.into_inner().unwrap();
    assert!(created.len() > 20 && revoked.len() > 10 && failed > 0, "{} {} {failed}", created.len(), revoked.len());
    // Every acknowledged creation and revocation is in the store, and both
    // nodes, never restarted, agree with it (a revocation whose answer was
    // lost to the kill may have landed: the store decides, and the node
    // that made it follows the store too).
    let c = node();
    for n in [&a, &b, &c] {
        within("every node agrees with the store", || {
            created.iter().all(|k| {
                let stored = c.verify(k.token.expose(), &Request::default()).code;
                let acked = revoked.iter().any(|t| t == k.token.expose());
                // Every other key (k0, k2, …) had a revocation tried.
                let tried = k.info.name.trim_start_matches('k').parse::<u64>().is_ok_and(|i| i % 2 == 0);
                let want_ok = if acked { stored == Code::Revoked } else { tried || stored == Code::Valid };
                want_ok && n.verify(k.token.expose(), &Request::default()).code == stored
            })
        });
    }
    // A creation whose answer was lost to the kill may have landed.
    assert!((created.len()..=created.len() + failed).contains(&c.key_count()), "{} keys", c.key_count());
}

/// Nodes creating keys of one workspace at once hand out each number once:
/// the store counts them.
fn serials_across_nodes(url: &str) {
    let clock = ManualClock::new(T0);
    let (a, b) = (open(url, &clock), open(url, &clock));
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    within("b knows the workspace", || b.workspace(ws).is_ok());
    let mut serials: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .enumerate()
            .map(|(t, e)| {
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let spec = NewKey { name: format!("t{t}-{i}"), ..NewKey::default() };
                            e.create_key(ws, spec, &Actor::Admin).unwrap().info.serial.unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    serials.sort_unstable();
    assert_eq!(serials, (1..=100).collect::<Vec<u64>>());
    drop((a, b));
    // A node opened afterwards continues the count.
    let c = open(url, &clock);
    let k = c.create_key(ws, NewKey { name: "next".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert_eq!(k.info.serial, Some(101));
}

#[test]
fn nodes_number_keys_without_handing_a_number_out_twice() {
    let Some(redis) = Redis::start() else { return };
    serials_across_nodes(&redis.url());
}

#[test]
fn nodes_on_a_cluster_number_keys_without_handing_a_number_out_twice() {
    let Some(cluster) = Cluster::start() else { return };
    serials_across_nodes(&cluster.url());
}

/// On Redis too, `Engine::audited` names the event a call wrote: its place
/// in the shared log, as `audit` lists it.
#[test]
fn audited_names_the_event_in_the_shared_log() {
    let Some(redis) = Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let e = open(&redis.url(), &clock);
    let other = open(&redis.url(), &clock);
    let (ws, seq) = e.audited(|e| e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin));
    let ws = ws.unwrap().policy.id;
    assert_eq!(seq, Some(1));
    // Another node's event in between: the next number is this call's.
    other.create_workspace(NewWorkspace::named("other"), &Actor::Admin).unwrap();
    let (key, seq) = e.audited(|e| e.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin));
    let key = key.unwrap();
    let events = e.audit(None, 0, 100).unwrap().items;
    let event = events.iter().find(|ev| ev.action == AuditAction::KeyCreated).unwrap();
    assert_eq!((seq, event.target.as_str()), (Some(event.seq), key.info.id.to_string().as_str()));
    assert_eq!(event.seq, 3);
    assert_eq!(e.audited(|e| e.verify(key.token.expose(), &Request::default()).is_valid()), (true, None));
}
