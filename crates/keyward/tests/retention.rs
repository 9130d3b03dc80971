//! Memory and retention settings: redb's page cache (`cache_mb`) and the
//! audit retention.

mod common;
#[allow(dead_code)]
#[path = "common/faulty.rs"]
mod faulty;

use std::sync::atomic::Ordering;

use common::{MASTER, T0, open};
use faulty::FaultyBackend;
use keyward::{Actor, AuditRetention, Engine, ManualClock, NewKey, NewWorkspace};

const DAY: u64 = 86_400_000;

fn open_with(dir: &tempfile::TempDir, clock: &ManualClock, keep: AuditRetention) -> Engine {
    Engine::builder()
        .clock(clock.clone())
        .master_key(MASTER)
        .flush_interval(std::time::Duration::from_secs(3600))
        .audit_retention(keep)
        .open(dir.path().join("keyward.redb"))
        .unwrap()
}

/// Creates a key named `name` now (one audit event); returns its event's seq.
fn event(e: &Engine, ws: keyward_core::WorkspaceId, name: &str) -> u64 {
    e.create_key(ws, NewKey { name: name.into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    e.audit(None, 0, 100).unwrap().items.last().unwrap().seq
}

fn seqs(e: &Engine) -> Vec<(u64, String)> {
    e.audit(None, 0, 100).unwrap().items.into_iter().map(|a| (a.seq, a.target)).collect()
}

#[test]
fn days_retention_removes_older_events_and_keeps_the_numbers_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open_with(&dir, &clock, AuditRetention::Days(7));
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let old = event(&e, ws, "old");
    clock.advance(3 * DAY);
    let mid = event(&e, ws, "mid");
    clock.advance(5 * DAY);
    let new = event(&e, ws, "new");
    let before = seqs(&e);

    // Now T0 + 8 days: the workspace's and the first key's events are older than 7 days.
    e.trim_audit().unwrap();
    let after = seqs(&e);
    assert!(after.iter().all(|(s, _)| *s > old), "{after:?}");
    let kept: Vec<_> = before.iter().filter(|(s, _)| *s >= mid).cloned().collect();
    assert_eq!(after, kept, "the events kept keep their sequence numbers");
    assert_eq!(after.last().map(|(s, _)| *s), Some(new));

    // A cursor taken before the trim still pages from the same place.
    let page = e.audit(None, mid, 100).unwrap().items;
    assert_eq!(page.first().map(|a| a.seq), Some(new));

    // Everything older than 7 days: the log empties, and numbering goes on.
    clock.advance(30 * DAY);
    e.trim_audit().unwrap();
    assert!(seqs(&e).is_empty());
    let next = event(&e, ws, "later");
    assert_eq!(next, new + 1);
    drop(e);
    // And across a reopen.
    let e = open_with(&dir, &clock, AuditRetention::Days(7));
    assert_eq!(seqs(&e).first().map(|(s, _)| *s), Some(new + 1));
    assert_eq!(event(&e, ws, "reopened"), new + 2);
}

#[test]
fn count_retention_keeps_the_last_n() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open_with(&dir, &clock, AuditRetention::Count(3));
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    for i in 0..6 {
        event(&e, ws, &format!("k{i}"));
    }
    let before = seqs(&e);
    assert_eq!(before.len(), 7);
    e.trim_audit().unwrap();
    assert_eq!(seqs(&e), before[4..].to_vec());
    // Trimming again keeps the same three.
    e.trim_audit().unwrap();
    assert_eq!(seqs(&e), before[4..].to_vec());
}

#[test]
fn forever_keeps_everything_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open(&dir, &clock);
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    event(&e, ws, "a");
    clock.advance(365 * DAY);
    e.trim_audit().unwrap();
    assert_eq!(seqs(&e).len(), 2);
    drop(e);
    for keep in [AuditRetention::Days(0), AuditRetention::Count(0)] {
        let r = Engine::builder().audit_retention(keep).open(dir.path().join("keyward.redb"));
        assert!(matches!(r, Err(keyward::Error::Invalid { .. })), "{keep:?}");
    }
}

/// The page cache setting reaches redb: with room for the file, a second
/// full read is answered from the cache; with none, it reads the disk again.
#[test]
fn cache_mb_sizes_the_page_cache() {
    let reads_of_second_check = |mb: u64| {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultyBackend::open(&dir.path().join("k.redb"));
        let e = Engine::builder().cache_mb(mb).open_backend(disk.clone()).unwrap();
        let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
        let batch = (0..300).map(|i| keyward::BatchKey::New(NewKey { name: format!("k{i}"), ..NewKey::default() }));
        e.create_keys(ws, batch.collect(), &Actor::Admin).unwrap();
        assert_eq!(e.check().unwrap(), 300);
        let before = disk.reads.load(Ordering::SeqCst);
        assert_eq!(e.check().unwrap(), 300);
        disk.reads.load(Ordering::SeqCst) - before
    };
    assert_eq!(reads_of_second_check(64), 0, "a 64 MiB cache holds the whole file");
    assert!(reads_of_second_check(0) > 0, "no cache: every page is read from the disk");
}

/// A trimmed log copies into a redb file with its numbers, and the copy's
/// next event continues them.
#[test]
fn a_trimmed_log_copies_with_its_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open_with(&dir, &clock, AuditRetention::Count(2));
    let ws = e.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    for i in 0..4 {
        event(&e, ws, &format!("k{i}"));
    }
    e.trim_audit().unwrap();
    let kept = seqs(&e);
    assert_eq!(kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4, 5]);
    e.close().unwrap();
    drop(e);
    let to = dir.path().join("copy.redb");
    let from = keyward::StoreLocation::Redb(dir.path().join("keyward.redb"));
    let report = keyward::copy_store(&from, &keyward::StoreLocation::Redb(to.clone()), |_| {}).unwrap();
    assert_eq!(report.audit_events, 2);
    let copy = Engine::builder().clock(clock.clone()).master_key(MASTER).open(&to).unwrap();
    assert_eq!(seqs(&copy), kept);
    assert_eq!(event(&copy, ws, "after"), 6);
}

/// The Redis store numbers events by their place in its list: it refuses a
/// retention before it connects.
#[cfg(feature = "redis")]
#[test]
fn the_redis_store_refuses_a_retention() {
    let r = Engine::builder().audit_retention(AuditRetention::Count(10)).open_redis("redis://127.0.0.1:1/0");
    match r {
        Err(keyward::Error::Invalid { field, .. }) => assert_eq!(field, "audit_retention"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    }
}

/// `Engine::audited` names the event a call wrote: its own, whatever other
/// threads write meanwhile, and none for a call that writes none.
#[test]
fn audited_names_the_event_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open_with(&dir, &clock, AuditRetention::Forever);
    let ws = e.create_workspace(NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let name = format!("k{t}-{i}");
                        let (created, seq) = e.audited(|e| {
                            e.create_key(ws, NewKey { name: name.clone(), ..NewKey::default() }, &Actor::Admin)
                        });
                        (created.unwrap().info.id.to_string(), seq.unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut named: Vec<(String, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    named.sort_by_key(|(_, seq)| *seq);
    named.dedup_by_key(|(_, seq)| *seq);
    assert_eq!(named.len(), 40, "one event each");
    // The log's events are the ones named.
    let created: Vec<(String, u64)> = e
        .audit(None, 0, 100)
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.action.as_str() == "key.created")
        .map(|event| (event.target, event.seq))
        .collect();
    assert_eq!(created, named);
    // Nested: the outer call sees the inner call's event; a read writes none.
    let ((inner, _), outer) =
        e.audited(|e| e.audited(|e| e.create_key(ws, NewKey { name: "n".into(), ..NewKey::default() }, &Actor::Admin)));
    assert_eq!(inner.map(|_| ()), Ok(()));
    assert_eq!(outer, Some(named.last().unwrap().1 + 1));
    assert_eq!(e.audited(|e| e.key_count()).1, None);
}
