//! The exported snapshot (SPEC §6) at 100,000 keys: encoding (postcard +
//! HMAC-SHA256), decoding (HMAC check + postcard), and loading a
//! `LocalVerifier` (decode + index by hash), what an edge isolate does at start.
//!
//! The snapshot is built in memory: one workspace and 100,000 keys, each with
//! a name, one permission and one rate limit, no IP rules, no tools.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_benches::rate_limit;
use keyward_core::ip::IpRules;
use keyward_core::permission::Permission;
use keyward_core::{
    KeyId, KeyPolicy, Limits, LocalVerifier, Prefix, Snapshot, Token, UnixMillis, WorkspaceId, WorkspacePolicy,
};

const KEYS: usize = 100_000;
const SNAPSHOT_KEY: &[u8; 32] = b"keyward-bench-snapshot-key-32byt";

fn snapshot_of(n: usize) -> Snapshot {
    let mut rng = rand::rng();
    let prefix = Prefix::default_live();
    let workspace = WorkspacePolicy {
        id: WorkspaceId::generate(&mut rng),
        name: "bench".into(),
        api_access: true,
        prefix: prefix.clone(),
        ip_rules: IpRules::none(),
        default_limits: Limits::default(),
    };
    let permission = Permission::parse("billing:read").expect("valid permission");
    let keys = (0..n)
        .map(|i| KeyPolicy {
            id: KeyId::generate(&mut rng),
            workspace: workspace.id,
            hash: Token::generate(&prefix, &mut rng).hash(),
            name: format!("key-{i:06}"),
            revoked_at: None,
            expires_at: None,
            disabled: false,
            permissions: vec![permission.clone()],
            ip_rules: IpRules::none(),
            limits: rate_limit(100, 60_000),
            tool_limits: vec![],
            tools: vec![],
            meta: String::new(),
            imported: false,
        })
        .collect();
    Snapshot { created_at: UnixMillis(1_709_287_200_000), workspaces: vec![workspace], tools: vec![], keys }
}

fn snapshot(c: &mut Criterion) {
    let snap = snapshot_of(KEYS);
    let bytes = snap.encode(SNAPSHOT_KEY).expect("encode snapshot");
    assert_eq!(Snapshot::decode(&bytes, SNAPSHOT_KEY).expect("decode snapshot"), snap);
    eprintln!("snapshot: {KEYS} keys, {} bytes encoded", bytes.len());

    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(5)).sample_size(10);
    g.bench_function("encode_100k", |b| b.iter(|| black_box(&snap).encode(SNAPSHOT_KEY).expect("encode")));
    g.bench_function("decode_100k", |b| b.iter(|| Snapshot::decode(black_box(&bytes), SNAPSHOT_KEY).expect("decode")));
    g.bench_function("local_verifier_load_100k", |b| {
        b.iter(|| LocalVerifier::load(black_box(&bytes), SNAPSHOT_KEY).expect("load"))
    });
    g.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
