//! The in-memory store: inserting batches of 500 flows, and the `denied`
//! report over a large store (1 million records by default; set
//! `NETVERDICT_BENCH_FLOWS` for another size, e.g. 10000000).

use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use netverdict_api::store::{ReportQuery, Store};
use netverdict_api::{MemoryConfig, MemoryStore};
use netverdict_proto::v1 as pb;
use support::flow;

mod support;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let base = SystemTime::now() - Duration::from_secs(7200);
    let store = MemoryStore::new(MemoryConfig {
        max_flows: 1_000_000,
        ..Default::default()
    })
    .unwrap();
    let mut next = 0u64;
    c.bench_function("memory_insert_batch_500", |b| {
        b.iter_batched(
            || {
                let batch: Vec<pb::Flow> = (next..next + 500).map(|i| flow(i, base)).collect();
                next += 500;
                batch
            },
            |batch| rt.block_on(store.insert(batch)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let n: u64 = std::env::var("NETVERDICT_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let big = MemoryStore::new(MemoryConfig {
        max_flows: n as usize,
        ..Default::default()
    })
    .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let batch = chunk.iter().map(|&i| flow(i, base)).collect();
        rt.block_on(big.insert(batch)).unwrap();
    }
    let mut group = c.benchmark_group("memory_denied");
    group.sample_size(10);
    group.bench_function(format!("all_namespaces_{n}_flows"), |b| {
        b.iter(|| rt.block_on(big.denied(&ReportQuery::default())).unwrap())
    });
    group.bench_function(format!("namespace_shop_{n}_flows"), |b| {
        let q = ReportQuery {
            namespaces: vec!["shop".into()],
            limit: 1000,
            ..Default::default()
        };
        b.iter(|| rt.block_on(big.denied(&q)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
