//! Creating a key: token generation, record, audit event and index update, in
//! one committed redb transaction that is fsynced before `create_key` returns.
//! The figure is mostly the disk's flush latency.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_benches::{Fixture, plain_key};

fn create(c: &mut Criterion) {
    let fx = Fixture::open().expect("open bench database");
    let mut g = c.benchmark_group("create");
    g.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    g.bench_function("create_key_durable", |b| b.iter(|| fx.key(plain_key("bench")).expect("create key")));
    g.finish();
}

criterion_group!(benches, create);
criterion_main!(benches);
