//! Bulk creation and import: one commit per batch, all or nothing.

mod common;
#[path = "common/faulty.rs"]
mod faulty;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::{Env, MASTER, T0, perm};
use faulty::FaultyBackend;
use keyward::{
    Actor, AuditAction, BatchKey, Engine, Error, ImportKey, MAX_BATCH, ManualClock, NewKey, NewSigning, NewWorkspace,
    Request,
};
use keyward_core::limits::Credits;
use keyward_core::signature::NoncePolicy;
use keyward_core::{Code, KeyHash, Limits, Token, UnixMillis};

fn named(name: &str) -> NewKey {
    NewKey { name: name.into(), ..NewKey::default() }
}

fn new(name: &str) -> BatchKey {
    BatchKey::New(named(name))
}

fn by_token(token: &str, name: &str) -> BatchKey {
    BatchKey::Token { token: Token::parse_foreign(token).unwrap(), key: named(name) }
}

fn by_hash(token: &str, name: &str) -> BatchKey {
    BatchKey::Hash(ImportKey { hash: Some(KeyHash::of(token)), key: named(name), start: Some("sk_test".into()) })
}

fn audit_actions(e: &Engine) -> Vec<(AuditAction, String, String)> {
    e.audit(None, 0, 100).unwrap().items.into_iter().map(|a| (a.action, a.target, a.detail)).collect()
}

#[test]
fn results_come_in_order_and_survive_a_reopen() {
    let env = Env::new();
    let before = audit_actions(&env.engine).len();
    let credits = Limits { credits: Some(Credits { initial: 7, refill: None }), ..Limits::default() };
    let items = vec![
        new("a"),
        by_token("sk_live_foreign_1", "b"),
        BatchKey::New(NewKey { limits: Some(credits), ..named("c") }),
        by_hash("ghp_foreign2", "d"),
        BatchKey::New(NewKey {
            signing: Some(NewSigning { user_id: "u9".into(), nonce_policy: NoncePolicy::Monotonic }),
            // Its token alone is a credential too (checked below).
            bearer: true,
            ..named("e")
        }),
    ];
    let out = env.engine.create_keys(env.ws, items, &Actor::Admin).unwrap();
    let names: Vec<&str> = out.iter().map(|c| c.info.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let minted: Vec<bool> = out.iter().map(|c| c.token.is_some()).collect();
    assert_eq!(minted, [true, false, true, false, true]);
    let imported: Vec<bool> = out.iter().map(|c| c.info.imported).collect();
    assert_eq!(imported, [false, true, false, true, false]);
    assert_eq!(out[1].info.start, "sk_li");
    assert_eq!(out[3].info.start, "sk_test");
    assert_eq!(out[2].info.credits_remaining, Some(7));
    assert_eq!(out[4].signing.as_ref().map(|s| s.user_id.as_str()), Some("u9"));
    assert!(out[0].signing.is_none());
    let ids: Vec<_> = out.iter().map(|c| c.info.id).collect();
    let tokens: Vec<String> = out.iter().filter_map(|c| c.token.as_ref().map(|t| t.expose().to_owned())).collect();
    assert_eq!(tokens.len(), 3);

    // One audit event naming every id, in order.
    let log = audit_actions(&env.engine);
    assert_eq!(log.len(), before + 1);
    let joined = ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    assert_eq!(log[before], (AuditAction::KeysCreated, "5 keys (2 imported)".to_owned(), joined));
    assert_eq!(AuditAction::KeysCreated.as_str(), "keys.created");

    // Free calls: the credits stay as created.
    let free = Request { cost: keyward_core::limits::Cost { credits: 0, rates: &[] }, ..Request::default() };
    let check = |e: &Engine| {
        assert_eq!(e.key_count(), 5);
        for t in &tokens {
            assert_eq!(e.verify(t, &free).code, Code::Valid);
        }
        assert_eq!(e.verify("sk_live_foreign_1", &free).code, Code::Valid);
        assert_eq!(e.verify("ghp_foreign2", &free).code, Code::Valid);
        for (id, name) in ids.iter().zip(["a", "b", "c", "d", "e"]) {
            assert_eq!(e.key(*id).unwrap().name, name);
        }
        assert_eq!(e.key(ids[2]).unwrap().credits_remaining, Some(7));
    };
    check(&env.engine);
    let env = env.reopen();
    check(&env.engine);
    assert_eq!(audit_actions(&env.engine).len(), before + 1);
}

#[test]
fn one_refused_key_writes_nothing_and_every_refusal_is_named() {
    let env = Env::new();
    let kept = env.key("kept");
    let before = audit_actions(&env.engine);
    let items = vec![
        new("ok"),
        new(""),
        by_token("sk_live_foreign_1", "fine"),
        BatchKey::Hash(ImportKey {
            hash: Some(KeyHash::of("x")),
            key: NewKey {
                signing: Some(NewSigning { user_id: "u".into(), nonce_policy: NoncePolicy::Monotonic }),
                ..named("signed import")
            },
            start: None,
        }),
        BatchKey::Hash(ImportKey { hash: None, key: named("no hash"), start: None }),
    ];
    let err = env.engine.create_keys(env.ws, items, &Actor::Admin).unwrap_err();
    assert_eq!(
        err,
        Error::Batch {
            total: 5,
            refused: vec![
                (1, Error::Invalid { field: "name", message: "must be 1 to 128 characters".into() }),
                (
                    3,
                    Error::Invalid { field: "signing", message: "imported keys cannot have a signing identity".into() }
                ),
                (4, Error::Invalid { field: "hash", message: "SHA-256 of the token is required".into() }),
            ],
        }
    );
    assert_eq!(err.to_string(), "3 of 5 keys refused, none written; key 1: invalid name: must be 1 to 128 characters");
    let check = |e: &Engine| {
        assert_eq!(e.key_count(), 1);
        // No key is imported: a token without a checksum is malformed.
        assert_eq!(e.verify("sk_live_foreign_1", &Request::default()).code, Code::Malformed);
        assert_eq!(e.verify(kept.token.expose(), &Request::default()).code, Code::Valid);
    };
    check(&env.engine);
    assert_eq!(audit_actions(&env.engine), before);
    let env = env.reopen();
    check(&env.engine);
    assert_eq!(audit_actions(&env.engine), before);
}

#[test]
fn a_hash_in_use_or_repeated_refuses_the_batch() {
    let env = Env::new();
    env.engine.create_keys(env.ws, vec![by_hash("old-token", "old")], &Actor::Admin).unwrap();
    let items = vec![
        by_hash("new-token", "n1"),
        by_token("old-token", "again"),
        by_token("twice", "t1"),
        by_hash("twice", "t2"),
        new("fresh"),
    ];
    // A dry run finds the same refusals and writes nothing.
    let check = env.engine.check_keys(env.ws, items.clone(), &Actor::Admin).unwrap_err();
    let err = env.engine.create_keys(env.ws, items, &Actor::Admin).unwrap_err();
    assert_eq!(check, err);
    let dup = || Error::AlreadyExists { kind: "key", id: "with this hash".into() };
    assert_eq!(err, Error::Batch { total: 5, refused: vec![(1, dup()), (3, dup())] });
    assert_eq!(env.engine.key_count(), 1);
    // Unknown foreign tokens are malformed (only imported keys match them).
    assert_eq!(env.engine.verify("new-token", &Request::default()).code, Code::Malformed);
    assert_eq!(env.engine.verify("old-token", &Request::default()).code, Code::Valid);
    env.engine.check_keys(env.ws, vec![by_hash("new-token", "n1"), new("fresh")], &Actor::Admin).unwrap();
    assert_eq!(env.engine.key_count(), 1);
}

#[test]
fn creator_bounds_apply_to_each_key() {
    let env = Env::new();
    let limit = UnixMillis(T0.get() + 86_400_000);
    let creator = env.key_with(NewKey {
        permissions: vec![perm("keys:write"), perm("reports:read")],
        expires_at: Some(limit),
        ..named("creator")
    });
    let actor = Actor::Key(creator.info.id);
    let wants = |name: &str, p: &str| BatchKey::New(NewKey { permissions: vec![perm(p)], ..named(name) });
    let items = vec![
        wants("fine", "reports:read"),
        wants("greedy", "billing:write"),
        BatchKey::New(NewKey { expires_at: Some(UnixMillis(limit.get() + 1)), ..named("late") }),
    ];
    let err = env.engine.create_keys(env.ws, items, &actor).unwrap_err();
    assert_eq!(
        err,
        Error::Batch {
            total: 3,
            refused: vec![
                (1, Error::InsufficientPermissions("cannot grant `billing:write`: the acting key lacks it".into())),
                (
                    2,
                    Error::InsufficientPermissions(
                        "expires_at: must be no later than the acting key's (2024-03-02T10:00:00.000Z)".into()
                    )
                ),
            ],
        }
    );
    assert_eq!(env.engine.key_count(), 1);
    // Within bounds: the creator's restrictions are carried onto each key.
    let out = env.engine.create_keys(env.ws, vec![wants("a", "reports:read"), new("b")], &actor).unwrap();
    assert_eq!(out.len(), 2);
    for c in &out {
        assert_eq!(c.info.expires_at, Some(limit));
        assert_eq!(c.info.created_by, creator.info.id.to_string());
    }
    assert_eq!(out[0].info.permissions, vec![perm("reports:read")]);
    assert_eq!(out[1].info.permissions, vec![]);
}

#[test]
fn whole_call_refusals() {
    let env = Env::new();
    let too_many: Vec<BatchKey> = (0..=MAX_BATCH).map(|i| new(&format!("k{i}"))).collect();
    assert_eq!(
        env.engine.create_keys(env.ws, too_many, &Actor::Admin).unwrap_err(),
        Error::Invalid { field: "keys", message: format!("at most {MAX_BATCH} keys per batch, got {}", MAX_BATCH + 1) }
    );
    assert_eq!(env.engine.create_keys(env.ws, Vec::new(), &Actor::Admin).unwrap().len(), 0);
    let other = keyward_core::WorkspaceId([9; 16]);
    assert!(matches!(
        env.engine.create_keys(other, vec![new("x")], &Actor::Admin),
        Err(Error::NotFound { kind: "workspace", .. })
    ));
    let off = keyward::WorkspaceUpdate { api_access: Some(false), ..Default::default() };
    env.engine.update_workspace(env.ws, off, &Actor::Admin).unwrap();
    assert_eq!(env.engine.create_keys(env.ws, vec![new("x")], &Actor::Admin).unwrap_err(), Error::PlanInactive);
    assert_eq!(env.engine.key_count(), 0);
}

#[test]
fn a_failing_store_writes_nothing_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.redb");
    let clock = ManualClock::new(T0);
    let disk = FaultyBackend::open(&path);
    let builder =
        || Engine::builder().clock(clock.clone()).master_key(MASTER).flush_interval(Duration::from_secs(3600));
    let engine = builder().open_backend(disk.clone()).unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let audit_before = audit_actions(&engine);
    disk.fail(true);
    let items: Vec<BatchKey> = (0..500).map(|i| new(&format!("k{i}"))).chain([by_token("foreign-1", "f")]).collect();
    let err = engine.create_keys(ws, items, &Actor::Admin).unwrap_err();
    assert!(matches!(err, Error::Storage(_) | Error::Corrupt(_)), "{err:?}");
    assert_eq!(engine.key_count(), 0);
    assert_eq!(engine.verify("foreign-1", &Request::default()).code, Code::Malformed);
    disk.fail(false);
    // The disk is back: the same batch commits whole.
    let out = engine.create_keys(ws, vec![new("k"), by_token("foreign-1", "f")], &Actor::Admin).unwrap();
    assert_eq!(out.len(), 2);
    engine.close().unwrap();
    drop(engine);
    let engine = builder().open_backend(FaultyBackend::open(&path)).unwrap();
    assert_eq!(engine.key_count(), 2);
    assert_eq!(engine.verify("foreign-1", &Request::default()).code, Code::Valid);
    let log = audit_actions(&engine);
    assert_eq!(log.len(), audit_before.len() + 1, "the failed batch left no audit event");
    assert_eq!(log.last().map(|l| (l.0, l.1.as_str())), Some((AuditAction::KeysCreated, "2 keys (1 imported)")));
}

#[test]
fn a_full_batch_round_trips_through_redis() {
    let Some(redis) = redis_server::Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let open = || {
        Engine::builder()
            .clock(clock.clone())
            .master_key(MASTER)
            .flush_interval(Duration::from_secs(3600))
            .open_redis(&redis.url())
            .unwrap()
    };
    let e = open();
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let credits = Limits { credits: Some(Credits { initial: 3, refill: None }), ..Limits::default() };
    // The largest batch, every key with counters too: the most a script call carries.
    let items: Vec<BatchKey> = (0..MAX_BATCH)
        .map(|i| match i % 3 {
            0 => BatchKey::New(NewKey { limits: Some(credits.clone()), ..named(&format!("k{i}")) }),
            1 => by_token(&format!("foreign-{i}"), &format!("t{i}")),
            _ => by_hash(&format!("hashed-{i}"), &format!("h{i}")),
        })
        .collect();
    let out = e.create_keys(ws, items, &Actor::Admin).unwrap();
    assert_eq!(out.len(), MAX_BATCH);
    let first = out[0].token.as_ref().unwrap().expose().to_owned();
    let ids: Vec<_> = out.iter().map(|c| c.info.id).collect();
    e.close().unwrap();
    drop(e);

    let e = open();
    assert_eq!(e.key_count(), MAX_BATCH);
    assert_eq!(e.verify(&first, &Request::default()).code, Code::Valid);
    assert_eq!(e.verify("foreign-1", &Request::default()).code, Code::Valid);
    assert_eq!(e.verify("hashed-2", &Request::default()).code, Code::Valid);
    assert_eq!(e.key(ids[3]).unwrap().credits_remaining, Some(3));
    let log = e.audit(Some(ws), 0, 100).unwrap().items;
    let batch: Vec<_> = log.iter().filter(|a| a.action == AuditAction::KeysCreated).collect();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].target, format!("{MAX_BATCH} keys (6666 imported)"));
    assert_eq!(batch[0].detail.split(',').count(), MAX_BATCH);

    // A refused batch writes nothing to Redis either.
    let err = e.create_keys(ws, vec![new("x"), by_token("foreign-1", "dup")], &Actor::Admin).unwrap_err();
    assert!(matches!(err, Error::Batch { total: 2, .. }), "{err:?}");
    e.close().unwrap();
    drop(e);
    assert_eq!(open().key_count(), MAX_BATCH);
}
