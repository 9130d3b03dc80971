//! `copy_store`: everything one store holds into an empty one, redb and
//! Redis either way. The Redis tests start Debian's `redis-server` on a free
//! loopback port, and skip with a message without it unless
//! `KEYWARD_REQUIRE_REDIS=1`.

mod common;
#[cfg(feature = "redis")]
#[path = "common/redis_server.rs"]
mod redis_server;

use std::path::Path;

use common::{Env, MASTER, SNAP, login};
use keyward::{
    Actor, AuditEvent, CopyError, CopyProgress, CopyReport, CopyStage, CreatedKey, CreditChange, Engine, Error,
    KeyInfo, KeyUsageReport, ManualClock, NewKey, NewSigning, NewTool, Page, Request, StoreLocation, Workspace,
    copy_store,
};
use keyward_core::limits::Credits;
use keyward_core::signature::NoncePolicy;
use keyward_core::{Code, KeyId, Limits, WorkspaceId};

/// What a populated source holds, read through its engine.
struct Facts {
    ws: WorkspaceId,
    /// Every token made, the key id it verifies as, and its verdict now.
    tokens: Vec<(String, KeyId, Code)>,
    keys: Vec<KeyInfo>,
    usage: Vec<KeyUsageReport>,
    audit: Page<AuditEvent>,
    workspaces: Vec<Workspace>,
    tools: Vec<keyward::Tool>,
    signer: CreatedKey,
    session: String,
}

/// A key of every kind: with credits, used, rotated in its grace period,
/// signing (with a session and a spent nonce), revoked, deleted; and a tool.
fn populate(env: &Env) -> Facts {
    let (e, ws, admin) = (&env.engine, env.ws, &Actor::Admin);
    let tool = NewTool {
        name: "reports".into(),
        enabled: true,
        permission: None,
        cooldown_ms: None,
        daily_limit: Some(5),
        upstream: None,
        timeout_ms: None,
    };
    e.create_tool(ws, tool, admin).unwrap();
    let credits = Limits { credits: Some(Credits { initial: 10, refill: None }), ..Limits::default() };
    let paid = env.key_with(NewKey { name: "paid".into(), limits: Some(credits), ..NewKey::default() });
    assert!(e.verify(paid.token.expose(), &Request { tool: Some("reports"), ..Request::default() }).is_valid());
    e.update_credits(paid.info.id, CreditChange::Decrement(2), admin).unwrap();
    let rotated = e.rotate_key(paid.info.id, 60_000, admin).unwrap();
    let signer = env.key_with(NewKey {
        name: "signer".into(),
        signing: Some(NewSigning { user_id: "u1".into(), nonce_policy: NoncePolicy::Monotonic }),
        // Verified as a bearer token in the copy: the flag is copied too.
        bearer: true,
        ..NewKey::default()
    });
    let session = e.authenticate_user(&login(&signer, "5"), None).unwrap();
    let revoked = env.key("revoked");
    e.revoke_key(revoked.info.id, admin).unwrap();
    let deleted = env.key("deleted");
    e.delete_key(deleted.info.id, admin).unwrap();
    e.flush().unwrap();

    let ids = [paid.info.id, rotated.info.id, signer.info.id, revoked.info.id];
    let tokens = vec![
        (paid.token.expose().to_owned(), paid.info.id, Code::Valid),
        (rotated.token.expose().to_owned(), rotated.info.id, Code::Valid),
        (signer.token.expose().to_owned(), signer.info.id, Code::Valid),
        (revoked.token.expose().to_owned(), revoked.info.id, Code::Revoked),
    ];
    let facts = Facts {
        ws,
        tokens,
        keys: ids.iter().map(|id| e.key(*id).unwrap()).collect(),
        usage: ids.iter().map(|id| e.usage(*id).unwrap()).collect(),
        audit: e.audit(None, 0, 100).unwrap(),
        workspaces: e.workspaces(),
        tools: e.tools(ws).unwrap(),
        session: session.token.expose().to_owned(),
        signer,
    };
    assert_eq!(facts.keys[0].credits_remaining, Some(7), "10, one call, minus 2");
    assert_eq!(facts.usage[0].valid, 1);
    // The workspace, the tool, 4 keys created, credits, the rotation, the
    // revocation, the deletion.
    assert_eq!(facts.audit.items.len(), 10);
    assert_eq!(facts.audit.next_cursor, None);
    assert!(e.verify(deleted.token.expose(), &Request::default()).code == Code::NotFound);
    facts
}

/// Counts of a copy of [`populate`]'s source: (workspaces, tools, keys,
/// usage, nonces, sessions, audit events, commits).
const POPULATED: (u64, u64, u64, u64, u64, u64, u64, u64) = (1, 1, 4, 2, 1, 1, 10, 2);

fn counts(r: &CopyReport) -> (u64, u64, u64, u64, u64, u64, u64, u64) {
    (r.workspaces, r.tools, r.keys, r.usage, r.nonces, r.sessions, r.audit_events, r.commits)
}

type Step = (CopyStage, u64, Option<u64>);

/// The steps a copy reported.
fn steps(seen: &[CopyProgress]) -> Vec<Step> {
    seen.iter().map(|p| (p.stage, p.done, p.total)).collect()
}

/// The steps of a copy of `events` audit events and `records` records (a
/// workspace's highest key serial and a key's last use count as one each),
/// each stage small enough for one commit.
fn small(events: u64, records: u64) -> Vec<Step> {
    vec![
        (CopyStage::Audit, 0, None),
        (CopyStage::Audit, events, None),
        (CopyStage::Records, 0, Some(records)),
        (CopyStage::Records, records, Some(records)),
    ]
}

/// The copy, opened as the source was: the same clock, master and
/// snapshot keys.
fn open_redb(path: &Path, clock: &ManualClock) -> Engine {
    Engine::builder().clock(clock.clone()).master_key(MASTER).snapshot_key(SNAP).open(path).unwrap()
}

/// Everything `f` saw in the source, seen again in `e`.
fn assert_same(e: &Engine, f: &Facts) {
    let ids: Vec<KeyId> = f.keys.iter().map(|k| k.id).collect();
    assert_eq!(ids.iter().map(|id| e.key(*id).unwrap()).collect::<Vec<_>>(), f.keys);
    assert_eq!(ids.iter().map(|id| e.usage(*id).unwrap()).collect::<Vec<_>>(), f.usage);
    assert_eq!(e.audit(None, 0, 100).unwrap(), f.audit);
    assert_eq!(e.workspaces(), f.workspaces);
    assert_eq!(e.tools(f.ws).unwrap(), f.tools);
    for (token, id, code) in &f.tokens {
        let v = e.verify(token, &Request::default());
        assert_eq!((v.code, v.key_id), (*code, Some(*id)), "{token}");
    }
    // 7 copied, then one call with each of the two tokens that share them.
    assert_eq!(e.key(ids[1]).unwrap().credits_remaining, Some(5));
    assert_eq!(e.session_count(), 1);
    let v = e.verify_session(&f.session, &Request::default());
    assert_eq!((v.code, v.key_id), (Code::Valid, Some(f.signer.info.id)));
    assert_eq!(e.authenticate_user(&login(&f.signer, "5"), None).unwrap_err().code, Code::NonceReused);
    assert!(e.authenticate_user(&login(&f.signer, "6"), None).is_ok(), "the same master key signs");
}

/// Copies with the progress recorded.
fn copy(from: &StoreLocation, to: &StoreLocation) -> (Result<CopyReport, CopyError>, Vec<CopyProgress>) {
    let mut seen = Vec::new();
    let result = copy_store(from, to, |p| seen.push(p));
    (result, seen)
}

#[test]
fn a_redb_copy_verifies_the_same_tokens_and_keeps_the_audit_log() {
    let env = Env::new();
    let facts = populate(&env);
    let (src, clock) = (env.path(), env.clock.clone());
    env.engine.close().unwrap();
    drop(env.engine);
    let before = std::fs::read(&src).unwrap();
    let dst = env.dir.path().join("copy.redb");

    let mut seen = Vec::new();
    let report = copy_store(&StoreLocation::Redb(src.clone()), &StoreLocation::Redb(dst.clone()), |p| {
        // Nothing can write the source while it is copied.
        let opened = Engine::open(&src).err();
        seen.push((p.stage, p.done, p.total, opened));
    });
    assert_eq!(counts(&report.unwrap()), POPULATED);
    let busy = Some(Error::InUse(src.display().to_string()));
    let expected: Vec<_> = small(10, 12).into_iter().map(|(s, d, t)| (s, d, t, busy.clone())).collect();
    assert_eq!(seen, expected);
    assert_eq!(std::fs::read(&src).unwrap(), before, "the source is only read");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let e = open_redb(&dst, &clock);
    assert_same(&e, &facts);
    assert_eq!(e.check().unwrap(), 4);
}

#[test]
fn commits_hold_at_most_a_thousand_changes() {
    let env = Env::new();
    for i in 0..1_100 {
        env.key_with(NewKey { name: format!("k{i}"), ..NewKey::default() });
    }
    let (src, dir) = (env.path(), &env.dir);
    env.engine.close().unwrap();
    drop(env.engine);
    let dst = dir.path().join("copy.redb");

    let (report, seen) = copy(&StoreLocation::Redb(src), &StoreLocation::Redb(dst.clone()));
    let report = report.unwrap();
    // 1 workspace, its highest key serial and 1,100 keys, 1,101 events:
    // two commits of each.
    assert_eq!(counts(&report), (1, 0, 1_100, 0, 0, 0, 1_101, 4));
    assert_eq!(
        steps(&seen),
        [
            (CopyStage::Audit, 0, None),
            (CopyStage::Audit, 1_000, None),
            (CopyStage::Audit, 1_101, None),
            (CopyStage::Records, 0, Some(1_102)),
            (CopyStage::Records, 1_000, Some(1_102)),
            (CopyStage::Records, 1_102, Some(1_102)),
        ]
    );
    let e = Engine::open(&dst).unwrap();
    assert_eq!(e.key_count(), 1_100);
    assert_eq!(e.audit(None, 1_099, 10).unwrap().items.iter().map(|a| a.seq).collect::<Vec<_>>(), [1_100, 1_101]);
    // The copy numbers new keys after the last one copied.
    let ws = e.workspaces()[0].policy.id;
    let k = e.create_key(ws, NewKey { name: "next".into(), ..NewKey::default() }, &keyward::Actor::Admin).unwrap();
    assert_eq!(k.info.serial, Some(1_101));
}

#[test]
fn a_destination_that_holds_data_is_refused_and_left_as_it_was() {
    let env = Env::new();
    env.key("k");
    let src = env.path();
    drop(env.engine);
    let other = Env::new();
    let dst = other.path();
    drop(other.engine);
    let before = std::fs::read(&dst).unwrap();

    let (result, seen) = copy(&StoreLocation::Redb(src.clone()), &StoreLocation::Redb(dst.clone()));
    assert_eq!(
        result.unwrap_err(),
        CopyError::DestinationNotEmpty { store: dst.display().to_string(), found: "1 workspace, an audit log".into() }
    );
    assert_eq!(seen, []);
    assert_eq!(std::fs::read(&dst).unwrap(), before);

    // An empty keyward file is not data: it takes the copy.
    let empty = other.dir.path().join("empty.redb");
    drop(Engine::open(&empty).unwrap());
    let report = copy_store(&StoreLocation::Redb(src), &StoreLocation::Redb(empty.clone()), |_| {}).unwrap();
    assert_eq!(counts(&report), (1, 0, 1, 0, 0, 0, 2, 2));
    assert_eq!(Engine::open(&empty).unwrap().key_count(), 1);
}

#[test]
fn a_missing_busy_empty_or_same_source_is_refused_before_anything_is_written() {
    let env = Env::new();
    env.key("k");
    let src = env.path();
    let dst = env.dir.path().join("copy.redb");
    let (from, to) = (StoreLocation::Redb(src.clone()), StoreLocation::Redb(dst.clone()));
    let shown = src.display().to_string();

    // Held by an engine.
    let err = copy_store(&from, &to, |_| {}).unwrap_err();
    assert_eq!(err, CopyError::Source { store: shown.clone(), error: Error::InUse(shown.clone()) });
    assert!(!dst.exists());
    drop(env.engine);

    let missing = env.dir.path().join("missing.redb");
    let err = copy_store(&StoreLocation::Redb(missing.clone()), &to, |_| {}).unwrap_err();
    let shown_missing = missing.display().to_string();
    let error = Error::Io(format!("{shown_missing}: no such file"));
    assert_eq!(err, CopyError::Source { store: shown_missing, error });
    assert!(!missing.exists() && !dst.exists());

    let empty = env.dir.path().join("empty.redb");
    drop(Engine::open(&empty).unwrap());
    let err = copy_store(&StoreLocation::Redb(empty.clone()), &to, |_| {}).unwrap_err();
    assert_eq!(err, CopyError::SourceEmpty(empty.display().to_string()));
    assert!(!dst.exists());

    let same = StoreLocation::Redb(env.dir.path().join(".").join("keyward.redb"));
    assert_eq!(copy_store(&from, &same, |_| {}).unwrap_err(), CopyError::SameStore(same.to_string()));

    let not_keyward = env.dir.path().join("notes.txt");
    std::fs::write(&not_keyward, b"not a database").unwrap();
    let err = copy_store(&StoreLocation::Redb(not_keyward), &to, |_| {}).unwrap_err();
    assert!(matches!(err, CopyError::Source { error: Error::Corrupt(_), .. }), "{err:?}");
    assert!(!dst.exists());
}

#[cfg(feature = "redis")]
mod redis_stores {
    use std::time::Duration;

    use super::*;
    use common::T0;
    use redis_server::Redis;

    fn open_redis(url: &str, clock: &ManualClock) -> Engine {
        Engine::builder()
            .clock(clock.clone())
            .master_key(MASTER)
            .snapshot_key(SNAP)
            .flush_interval(Duration::from_secs(3600))
            .open_redis(url)
            .unwrap()
    }

    /// Every key of a Redis database and its `DUMP`, sorted.
    fn dump(url: &str) -> Vec<(String, Vec<u8>)> {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut names: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        names.sort();
        names.into_iter().map(|n| (n.clone(), redis::cmd("DUMP").arg(&n).query(&mut c).unwrap())).collect()
    }

    fn db(redis: &Redis, n: u8) -> String {
        redis.url().replace("/0", &format!("/{n}"))
    }

    #[test]
    fn redb_to_redis_to_redis_to_redb_keeps_everything() {
        let Some(redis) = Redis::start() else { return };
        let env = Env::new();
        let facts = populate(&env);
        let (src, clock) = (env.path(), env.clock.clone());
        env.engine.close().unwrap();
        drop(env.engine);
        let (first, second) = (db(&redis, 0), db(&redis, 1));

        let (report, seen) = copy(&StoreLocation::Redb(src), &StoreLocation::redis(first.clone()));
        assert_eq!(counts(&report.unwrap()), POPULATED);
        assert_eq!(steps(&seen), small(10, 12));
        {
            // Read only: a verification would change the counters.
            let e = open_redis(&first, &clock);
            assert_eq!(e.audit(None, 0, 100).unwrap(), facts.audit);
            assert_eq!(e.key(facts.keys[1].id).unwrap(), facts.keys[1]);
            e.close().unwrap();
        }

        let before = dump(&first);
        let (report, _) = copy(&StoreLocation::redis(first.clone()), &StoreLocation::redis(second.clone()));
        assert_eq!(counts(&report.unwrap()), POPULATED);
        assert_eq!(dump(&first), before, "the source is only read");

        let back = env.dir.path().join("back.redb");
        let (report, _) = copy(&StoreLocation::redis(second), &StoreLocation::Redb(back.clone()));
        assert_eq!(counts(&report.unwrap()), POPULATED);
        let e = open_redb(&back, &clock);
        assert_same(&e, &facts);
        assert_eq!(
            e.audit(None, 0, 100).unwrap().items.iter().map(|a| a.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<u64>>()
        );
        // After two copies, the numbering goes on where the first store left it.
        let k = e.create_key(facts.ws, NewKey { name: "next".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
        assert_eq!(k.info.serial, Some(5));
    }

    #[test]
    fn a_redis_copy_of_a_redb_file_answers_as_the_file_did() {
        let Some(redis) = Redis::start() else { return };
        let env = Env::new();
        let facts = populate(&env);
        let (src, clock) = (env.path(), env.clock.clone());
        env.engine.close().unwrap();
        drop(env.engine);
        let (report, _) = copy(&StoreLocation::Redb(src), &StoreLocation::redis(redis.url()));
        assert_eq!(counts(&report.unwrap()), POPULATED);
        let e = open_redis(&redis.url(), &clock);
        assert_same(&e, &facts);
        assert_eq!(e.check().unwrap(), 4);
        e.close().unwrap();
    }

    #[test]
    fn a_redis_destination_with_data_or_an_empty_source_is_refused_unchanged() {
        let Some(redis) = Redis::start() else { return };
        let env = Env::new();
        env.key("k");
        let src = env.path();
        drop(env.engine);
        let (full, empty) = (db(&redis, 0), db(&redis, 1));
        let clock = ManualClock::new(T0);
        {
            let e = open_redis(&full, &clock);
            let ws = e.create_workspace(keyward::NewWorkspace::named("there"), &Actor::Admin).unwrap().policy.id;
            e.create_key(ws, NewKey { name: "a".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
            e.create_key(ws, NewKey { name: "b".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
            e.close().unwrap();
        }
        let before = dump(&full);
        let (result, seen) = copy(&StoreLocation::Redb(src.clone()), &StoreLocation::redis(full.clone()));
        assert_eq!(
            result.unwrap_err(),
            CopyError::DestinationNotEmpty { store: full.clone(), found: "1 workspace, 2 keys, an audit log".into() }
        );
        assert_eq!(seen, []);
        assert_eq!(dump(&full), before);

        // An empty Redis is no source, and looking does not write to it.
        let dst = env.dir.path().join("copy.redb");
        let err = copy_store(&StoreLocation::redis(empty.clone()), &StoreLocation::Redb(dst.clone()), |_| {});
        assert_eq!(err.unwrap_err(), CopyError::SourceEmpty(empty.clone()));
        assert_eq!(dump(&empty), []);
        assert!(!dst.exists());

        // Nobody listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let gone = format!("redis://127.0.0.1:{port}/0");
        let err = copy_store(&StoreLocation::Redb(src), &StoreLocation::redis(gone.clone()), |_| {}).unwrap_err();
        assert!(
            matches!(&err, CopyError::Destination { store, error: Error::Storage(_) } if *store == gone),
            "{err:?}"
        );
        let err = copy_store(&StoreLocation::redis(gone.clone()), &StoreLocation::Redb(dst.clone()), |_| {});
        assert!(matches!(err, Err(CopyError::Source { error: Error::Storage(_), .. })), "{err:?}");
        assert!(!dst.exists());
    }

    #[test]
    fn a_source_written_during_the_copy_fails_it() {
        let Some(redis) = Redis::start() else { return };
        let clock = ManualClock::new(T0);
        let (src, dst) = (db(&redis, 0), db(&redis, 1));
        let e = open_redis(&src, &clock);
        let ws = e.create_workspace(keyward::NewWorkspace::named("busy"), &Actor::Admin).unwrap().policy.id;
        let write = |p: CopyProgress| {
            if (p.stage, p.done) == (CopyStage::Records, 0) {
                e.create_key(ws, NewKey { name: "late".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
            }
        };

        // Into a file: it is removed.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("copy.redb");
        let err = copy_store(&StoreLocation::redis(src.clone()), &StoreLocation::Redb(file.clone()), write);
        assert_eq!(err.unwrap_err(), CopyError::SourceChanged { store: src.clone(), events: 1 });
        assert!(!file.exists());

        // Into Redis: what was written stays, and the error says so.
        let err = copy_store(&StoreLocation::redis(src.clone()), &StoreLocation::redis(dst.clone()), write);
        let err = err.unwrap_err();
        let changed = CopyError::SourceChanged { store: src.clone(), events: 1 };
        assert_eq!(err, CopyError::Interrupted { store: dst.clone(), cause: Box::new(changed) });
        assert_eq!(
            err.to_string(),
            format!(
                "source {src} changed while it was copied (1 audit events after the copied ones); destination \
                 {dst} now holds part of the copy: empty it before copying into it again"
            )
        );
        assert_eq!(open_redis(&dst, &clock).audit(None, 0, 100).unwrap().items.len(), 2, "ws and the first key");
        e.close().unwrap();
    }
}
