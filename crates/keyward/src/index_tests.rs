//! The in-memory index's shape: what a key carries depends on what it uses.

use std::mem::size_of;

use keyward_core::limits::RateLimit;
use keyward_core::{Code, KeyId, Limits, UnixMillis};

use super::{Engine, UsageCell};
use crate::model::{Actor, KeyUpdate, NewKey, NewWorkspace};
use crate::verify::Request;
use crate::{Error, ManualClock};

/// 2024-03-01T10:00:00Z.
const T0: UnixMillis = UnixMillis(1_709_287_200_000);

struct Env {
    dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Engine,
    ws: keyward_core::WorkspaceId,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let engine = Self::open_in(&dir, &clock);
        let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
        Self { dir, clock, engine, ws }
    }

    fn open_in(dir: &tempfile::TempDir, clock: &ManualClock) -> Engine {
        Engine::builder().clock(clock.clone()).open(dir.path().join("k.redb")).unwrap()
    }

    fn reopen(self) -> Self {
        let Env { dir, clock, engine, ws } = self;
        engine.close().unwrap();
        drop(engine);
        let engine = Self::open_in(&dir, &clock);
        Env { dir, clock, engine, ws }
    }

    fn has_counters(&self, id: KeyId) -> bool {
        self.engine.inner.key(id).unwrap().usage.has_counters()
    }

    fn verify(&self, token: &str) -> Code {
        self.engine.verify(token, &Request::default()).code
    }
}

fn two_per_minute() -> Limits {
    Limits {
        rates: vec![RateLimit { name: "m".into(), limit: 2, window_ms: 60_000, auto_apply: true }],
        ..Limits::default()
    }
}

fn set_limits(env: &Env, id: KeyId, limits: Limits) -> Result<(), Error> {
    env.engine.update_key(id, KeyUpdate { limits: Some(limits), ..KeyUpdate::default() }, &Actor::Admin).map(drop)
}

#[test]
fn a_key_without_limits_has_no_counters_and_still_counts_its_calls() {
    let env = Env::new();
    let k = env.engine.create_key(env.ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    for _ in 0..3 {
        assert_eq!(env.verify(k.token.expose()), Code::Valid);
    }
    assert!(!env.has_counters(k.info.id));
    let u = env.engine.usage(k.info.id).unwrap();
    assert_eq!((u.valid, u.refused, u.last_used_at), (3, 0, Some(T0)));
    assert!(!env.has_counters(k.info.id), "reading the usage creates no counters");
    let id = k.info.id;
    let env = env.reopen();
    assert!(!env.has_counters(id));
    assert_eq!(env.engine.usage(id).unwrap().valid, 3);
}

#[test]
fn limits_added_count_from_nothing_and_removed_drop_the_counters() {
    let env = Env::new();
    let k = env.engine.create_key(env.ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let (id, token) = (k.info.id, k.token.expose());
    assert_eq!(env.verify(token), Code::Valid);
    set_limits(&env, id, two_per_minute()).unwrap();
    assert_eq!(env.verify(token), Code::Valid);
    assert_eq!(env.verify(token), Code::Valid);
    assert_eq!(env.verify(token), Code::RateLimited);
    assert!(env.has_counters(id));

    set_limits(&env, id, Limits::default()).unwrap();
    assert!(!env.has_counters(id), "no limits left: the counters went");
    for _ in 0..5 {
        assert_eq!(env.verify(token), Code::Valid);
    }
    assert!(!env.has_counters(id));
    let u = env.engine.usage(id).unwrap();
    assert_eq!((u.valid, u.refused), (8, 1), "the statistics stay");

    // Set again, within the same minute: counted from nothing.
    set_limits(&env, id, two_per_minute()).unwrap();
    assert_eq!(env.verify(token), Code::Valid);
    assert_eq!(env.verify(token), Code::Valid);
    assert_eq!(env.verify(token), Code::RateLimited);
    // And they are stored: after a restart the limit is still spent.
    let env = env.reopen();
    assert_eq!(env.verify(token), Code::RateLimited);
    env.clock.advance(60_000);
    assert_eq!(env.verify(token), Code::Valid);
}

#[test]
fn limits_removed_while_a_rotation_shares_the_counters_keep_them() {
    let env = Env::new();
    let spec = NewKey { name: "a".into(), limits: Some(two_per_minute()), ..NewKey::default() };
    let old = env.engine.create_key(env.ws, spec, &Actor::Admin).unwrap();
    assert_eq!(env.verify(old.token.expose()), Code::Valid);
    let new = env.engine.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap();
    set_limits(&env, new.info.id, Limits::default()).unwrap();
    // The old key still has the limit, on the counters it shares.
    assert_eq!(env.verify(old.token.expose()), Code::Valid);
    assert_eq!(env.verify(old.token.expose()), Code::RateLimited);
    assert!(env.has_counters(new.info.id));
}

#[test]
fn a_rotated_key_without_limits_hands_its_statistics_to_the_successor() {
    let env = Env::new();
    let old = env.engine.create_key(env.ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    for _ in 0..3 {
        assert_eq!(env.verify(old.token.expose()), Code::Valid);
    }
    let new = env.engine.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap();
    assert_eq!(env.engine.usage(new.info.id).unwrap().valid, 3);
    // Each token keeps its own last use.
    assert_eq!(env.engine.key(new.info.id).unwrap().last_used_at, None);
    env.clock.advance(1_000);
    assert_eq!(env.verify(new.token.expose()), Code::Valid);
    assert_eq!(env.verify(old.token.expose()), Code::Valid);
    env.clock.advance(1_000);
    assert_eq!(env.verify(old.token.expose()), Code::Valid);
    assert!(!env.has_counters(new.info.id));
    let (old_id, id) = (old.info.id, new.info.id);
    let env = env.reopen();
    assert_eq!(env.engine.usage(id).unwrap().valid, 6);
    assert_eq!(env.engine.key(id).unwrap().last_used_at, Some(UnixMillis(T0.get() + 1_000)));
    assert_eq!(env.engine.key(old_id).unwrap().last_used_at, Some(UnixMillis(T0.get() + 2_000)));
}

#[test]
fn only_keys_with_a_signing_identity_keep_nonces() {
    let env = Env::new();
    let k = env.engine.create_key(env.ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert!(env.engine.inner.key(k.info.id).unwrap().nonce.is_none());
}

#[test]
fn a_key_in_memory_gives_back_its_whole_record() {
    use crate::model::{KeyRecord, SigningRecord};
    let record = KeyRecord {
        policy: keyward_core::KeyPolicy {
            id: KeyId([1; 16]),
            workspace: keyward_core::WorkspaceId([2; 16]),
            hash: keyward_core::KeyHash([3; 32]),
            name: "n".into(),
            revoked_at: None,
            expires_at: Some(T0),
            disabled: false,
            permissions: Vec::new(),
            ip_rules: keyward_core::ip::IpRules::none(),
            limits: two_per_minute(),
            tool_limits: Vec::new(),
            tools: vec!["t".into()],
            meta: "{}".into(),
            imported: false,
        },
        start: "kw_live_abcd".into(),
        created_at: T0,
        created_by: "key:x".into(),
        signing: Some(SigningRecord {
            user_id: "u".into(),
            nonce_policy: keyward_core::signature::NoncePolicy::Monotonic,
        }),
        usage_owner: Some(KeyId([4; 16])),
        external_id: Some("ext".into()),
        roles: vec!["a".into(), "b".into()],
        bearer: true,
        serial: Some(7),
    };
    let cell = std::sync::Arc::new(UsageCell::from_record(KeyId([1; 16]), Default::default(), false));
    let live = super::LiveKey::new(record.clone(), std::sync::Arc::clone(&cell));
    assert_eq!(live.record(), record);
    assert!(live.is_bearer() && live.has_key_limits && live.nonce.is_some());
    // Longer than the encoder's stack buffer.
    let long = KeyRecord { roles: vec!["r".repeat(100); 5], external_id: Some("e".repeat(200)), ..record };
    assert_eq!(super::LiveKey::new(long.clone(), cell).record(), long);
}

/// What every key carries, on 64-bit targets (the figures of
/// `docs/benchmarks.md`, "Memory per key").
#[test]
#[cfg(target_pointer_width = "64")]
fn a_key_without_limits_is_small() {
    assert!(size_of::<UsageCell>() <= 160, "UsageCell is {} bytes", size_of::<UsageCell>());
    // The policy (keyward-core's `KeyPolicy`) and eight words.
    let policy = size_of::<keyward_core::KeyPolicy>();
    assert!(size_of::<super::LiveKey>() <= policy + 64, "LiveKey is {} bytes", size_of::<super::LiveKey>());
}

/// Enough keys that the open decodes and indexes them on several threads
/// (on a machine with several cores): every key comes back as it was, with
/// its counters, statistics and rotation shares.
#[test]
fn an_open_over_many_keys_gives_back_every_key_with_its_counters() {
    let env = Env::new();
    let n = 4 * crate::MAX_BATCH + 123;
    let mut tokens = Vec::with_capacity(n);
    let mut from = 0;
    while from < n {
        let to = n.min(from + crate::MAX_BATCH);
        let batch = (from..to)
            .map(|i| {
                let limits = (i % 3 == 0).then(two_per_minute);
                crate::BatchKey::New(NewKey { name: format!("k{i}"), limits, ..NewKey::default() })
            })
            .collect();
        for created in env.engine.create_keys(env.ws, batch, &Actor::Admin).unwrap() {
            tokens.push((created.info.id, created.token.unwrap()));
        }
        from = to;
    }
    // Every tenth key is called three times; a key with the limit is then spent.
    let mut expect = Vec::with_capacity(n);
    for (i, (id, token)) in tokens.iter().enumerate() {
        let calls = if i % 10 == 0 { 3 } else { 0 };
        let mut valid = 0;
        for _ in 0..calls {
            if env.verify(token.expose()) == Code::Valid {
                valid += 1;
            }
        }
        expect.push((*id, valid, calls - valid));
    }
    // Some keys rotated: old and new share counters.
    let mut rotated = Vec::new();
    for (id, token) in tokens.iter().step_by(997).take(20) {
        let new = env.engine.rotate_key(*id, 3_600_000, &Actor::Admin).unwrap();
        rotated.push((*id, token.expose().to_owned(), new.info.id, new.token));
    }
    let info_before: Vec<_> = tokens.iter().map(|(id, _)| env.engine.key(*id).unwrap()).collect();
    let env = env.reopen();
    assert_eq!(env.engine.key_count(), n + rotated.len());
    for (before, (id, valid, refused)) in info_before.iter().zip(&expect) {
        assert_eq!(&env.engine.key(*id).unwrap(), before);
        let u = env.engine.usage(*id).unwrap();
        assert_eq!((u.valid, u.refused), (*valid, *refused), "key {id}");
    }
    for (old, old_token, new, new_token) in &rotated {
        let a = env.engine.inner.key(*old).unwrap();
        let b = env.engine.inner.key(*new).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a.usage, &b.usage), "{old} shares {new}'s counters");
        assert_eq!(a.usage.owner(), *new);
        let before = env.engine.usage(*new).unwrap().valid;
        assert_eq!(env.verify(old_token), env.verify(new_token.expose()));
        assert!(env.engine.usage(*new).unwrap().valid >= before);
    }
    for (id, token) in tokens.iter().take(50) {
        let code = env.verify(token.expose());
        assert!(matches!(code, Code::Valid | Code::RateLimited), "{id}: {code:?}");
    }
}

/// The flusher writes the keys queued since the last flush: a key called,
/// then deleted, leaves no counters behind; one called after a flush is
/// written again.
#[test]
fn the_flush_writes_the_keys_called_since_and_none_deleted() {
    use crate::store::Store;
    let env = Env::new();
    let a = env.engine.create_key(env.ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let b = env.engine.create_key(env.ws, NewKey { name: "b".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert_eq!(env.verify(a.token.expose()), Code::Valid);
    assert_eq!(env.verify(b.token.expose()), Code::Valid);
    env.engine.flush().unwrap();
    assert_eq!(env.verify(a.token.expose()), Code::Valid);
    assert_eq!(env.verify(b.token.expose()), Code::Valid);
    env.engine.delete_key(b.info.id, &Actor::Admin).unwrap();
    env.engine.flush().unwrap();
    let path = env.dir.path().join("k.redb");
    env.engine.close().unwrap();
    drop(env.engine);
    let loaded = crate::store::redb::RedbStore::open(&path, 0).unwrap().load().unwrap();
    let usage: Vec<_> = loaded.usage.iter().map(|(id, u)| (*id, u.valid)).collect();
    assert_eq!(usage, vec![(a.info.id, 2)]);
}
