//! Where an engine's memory per key goes. Measurements, not
//! checks: run in release, one at a time, each in its own process so RSS
//! deltas are this test's alone, e.g.
//!
//! ```text
//! KEYWARD_MEMORY_DB=/dev/shm/m.redb KEYWARD_MEMORY_KEYS=100000 \
//!   cargo test --release -p keyward --lib memory_probe::build -- --ignored --nocapture
//! KEYWARD_MEMORY_DB=/dev/shm/m.redb KEYWARD_MEMORY_CACHE_MB=1024 \
//!   cargo test --release -p keyward --lib memory_probe::open -- --ignored --nocapture
//! ```
//!
//! The figures are in `docs/benchmarks.md`.

use std::mem::size_of;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keyward_core::KeyPolicy;
use keyward_core::signature::NonceState;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{DEFAULT_CACHE_BYTES, Engine, KeyCounters, LiveKey, UsageCell};
use crate::history::Activity;
use crate::model::{Actor, KeyRecord, NewKey, NewWorkspace};
use crate::store::Store;
use crate::store::redb::RedbStore;
use crate::store::tables::KEYS;

fn db() -> PathBuf {
    std::env::var_os("KEYWARD_MEMORY_DB").map_or_else(|| PathBuf::from("/dev/shm/keyward-memory.redb"), PathBuf::from)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident set size now, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Creates the database of `KEYWARD_MEMORY_KEYS` keys (as `keyward-loadgen
/// --bulk` does: named, no limits of their own), replacing any.
#[test]
#[ignore = "a measurement"]
fn build() {
    let n = env_u64("KEYWARD_MEMORY_KEYS", 100_000) as usize;
    let path = db();
    let _ = std::fs::remove_file(&path);
    let e = Engine::open(&path).unwrap();
    let ws = e.create_workspace(NewWorkspace::named("bench"), &Actor::Admin).unwrap().policy.id;
    let t = Instant::now();
    let mut from = 0;
    while from < n {
        let to = n.min(from + crate::MAX_BATCH);
        let batch = (from..to)
            .map(|i| crate::BatchKey::New(NewKey { name: format!("bench-{i}"), ..NewKey::default() }))
            .collect();
        e.create_keys(ws, batch, &Actor::Admin).unwrap();
        from = to;
    }
    e.close().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!("built {n} keys in {:.1}s; file {}", t.elapsed().as_secs_f64(), mib(size));
}

/// Sizes of the parts of one key in memory, and the heap of a typical record.
#[test]
#[ignore = "a measurement"]
fn sizes() {
    println!("size_of LiveKey {} (KeyPolicy {})", size_of::<LiveKey>(), size_of::<KeyPolicy>());
    println!("size_of KeyRecord {}", size_of::<KeyRecord>());
    println!(
        "size_of UsageCell {} (KeyCounters {}, made on first use)",
        size_of::<UsageCell>(),
        size_of::<KeyCounters>()
    );
    println!("size_of Activity {} (inside the UsageCell)", size_of::<Activity>());
    println!("size_of Mutex<NonceState> {} (keys with a signing identity only)", size_of::<Mutex<NonceState>>());
    println!("size_of Arc<LiveKey> {} (+16 B counts per Arc allocation)", size_of::<Arc<LiveKey>>());
    println!("key map slots (by hash, by id): {} B each", size_of::<Arc<LiveKey>>());
    let path = db();
    let store = RedbStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
    let loaded = store.load().unwrap();
    let Some(rec) = loaded.keys.get(loaded.keys.len() / 2) else { return };
    let p = &rec.policy;
    let strings = [&p.name, &p.meta, &rec.start, &rec.created_by];
    let string_heap: usize = strings.iter().map(|s| s.capacity()).sum();
    let allocs = strings.iter().filter(|s| s.capacity() > 0).count()
        + usize::from(p.permissions.capacity() > 0)
        + usize::from(p.tools.capacity() > 0)
        + usize::from(p.tool_limits.capacity() > 0)
        + usize::from(rec.roles.capacity() > 0);
    println!(
        "typical record: strings {string_heap} B (name {:?}, start {:?}, created_by {:?}, meta {} B), permissions {}, \
         tools {}, tool_limits {}, roles {}, heap allocations {allocs}",
        p.name,
        rec.start,
        rec.created_by,
        p.meta.len(),
        p.permissions.len(),
        p.tools.len(),
        p.tool_limits.len(),
        rec.roles.len(),
    );
}

/// Opens the database in phases, timing each and noting RSS after it.
#[test]
#[ignore = "a measurement"]
fn open() {
    let path = db();
    let cache = env_u64("KEYWARD_MEMORY_CACHE_MB", 1024);
    let cache_bytes = usize::try_from(cache * 1048576).unwrap();
    if std::env::var_os("KEYWARD_MEMORY_ENGINE_ONLY").is_some() {
        // RSS of the engine alone, in a process that did nothing before.
        let r0 = rss();
        let t = Instant::now();
        let e = Engine::builder().cache_mb(cache).open(&path).unwrap();
        let open = t.elapsed();
        let r1 = rss();
        let n = e.key_count() as u64;
        println!(
            "engine alone (cache {cache} MiB): open {:.0} ms, RSS +{} = {} B per key ({n} keys)",
            open.as_secs_f64() * 1e3,
            mib(r1 - r0),
            (r1 - r0) / n.max(1)
        );
        return;
    }
    let r0 = rss();
    // 1. Store read: every key record's bytes, copied out, not decoded.
    let t = Instant::now();
    let raw: Vec<Vec<u8>> = {
        let db = redb::Database::builder().set_cache_size(cache_bytes).create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(KEYS).unwrap();
        let mut out = Vec::with_capacity(usize::try_from(t.len().unwrap()).unwrap());
        for row in t.iter().unwrap() {
            out.push(row.unwrap().1.value().to_vec());
        }
        let r = rss();
        println!("read (redb, cache {cache} MiB): RSS +{} with the database open", mib(r - r0));
        out
    };
    let read = t.elapsed();
    let n = raw.len() as u64;
    let bytes: usize = raw.iter().map(Vec::len).sum();
    println!("keys {n}; encoded {} B per key", bytes as u64 / n.max(1));
    // 2. Decode.
    let t = Instant::now();
    let recs: Vec<KeyRecord> = raw.iter().map(|b| KeyRecord::decode(b).unwrap()).collect();
    let decode = t.elapsed();
    drop(raw);
    let r_recs = rss();
    drop(recs);
    // The store's whole load (every table, read and decoded), as the engine does it.
    let t = Instant::now();
    let store = RedbStore::open(&path, cache_bytes).unwrap();
    let loaded = store.load().unwrap();
    let load = t.elapsed();
    drop(loaded);
    drop(store);
    // 3. The engine's own open: store read, decode, index.
    let r1 = rss();
    let t = Instant::now();
    let e = Engine::builder().cache_mb(cache).open(&path).unwrap();
    let open = t.elapsed();
    let r2 = rss();
    println!(
        "phases: read {:.0} ms, decode {:.0} ms; store load {:.0} ms; engine open {:.0} ms (index ≈ open − load)",
        read.as_secs_f64() * 1e3,
        decode.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        open.as_secs_f64() * 1e3
    );
    println!(
        "decoded records alone: RSS +{} ({} B per key)",
        mib(r_recs.saturating_sub(r0)),
        r_recs.saturating_sub(r0) / n.max(1)
    );
    println!(
        "engine open: RSS {} → {} (+{}, {} B per key); keys in the engine {}",
        mib(r1),
        mib(r2),
        mib(r2 - r1),
        (r2 - r1) / n.max(1),
        e.key_count()
    );
}
