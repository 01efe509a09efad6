//! The in-memory store: inserting batches of 500 flows; ingest over gRPC on
//! loopback (a collector's push stream, 20 batches of 500 flows in flight,
//! through the API server into the store), in plaintext and over mutual TLS,
//! so that the two throughputs (criterion's elements/s) give the cost of TLS;
//! and the `denied` report and flow queries (the newest 100; a filter no flow
//! matches, which reads every record) over a large store (1 million records
//! by default; set `NETVERDICT_BENCH_FLOWS` for another size, e.g. 10000000).
//! Before the `denied` benchmarks it prints the heap bytes the large store
//! holds per flow, counted by the global allocator (every allocation of this
//! process goes through a counting wrapper of the system allocator), and the
//! store's own estimate. Its stores are bounded by record count only.

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netverdict_api::store::{FlowQuery, ReportQuery, Store};
use netverdict_api::{ApiConfig, ApiServer, MemoryConfig, MemoryStore};
use netverdict_cluster::SharedState;
use netverdict_proto::filter::FilterSet;
use netverdict_proto::v1 as pb;
use netverdict_tls::certs::{Pki, PkiOptions, write_pki};
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles, Target};
use support::flow;

mod support;

/// Counts the bytes allocated and not yet freed.
#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

/// Batches per measured round of the ingest benchmark, and flows per batch.
const INGEST_BATCHES: u64 = 20;
const BATCH_FLOWS: u64 = 500;

/// An API server over a memory store, plaintext or mutual TLS, and an open
/// push stream of the collector `bench-node` to it.
struct Ingest {
    server: ApiServer,
    batches: tokio::sync::mpsc::Sender<pb::FlowBatch>,
    acks: tonic::Streaming<pb::Ack>,
}

async fn ingest(pki: Option<&Pki>) -> Ingest {
    let store = Arc::new(
        MemoryStore::new(MemoryConfig {
            max_flows: 1_000_000,
            max_bytes: usize::MAX,
            ..Default::default()
        })
        .unwrap(),
    );
    let server = netverdict_api::serve_shared(
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            tls: pki.map(|pki| ServerTlsFiles {
                cert: pki.api.cert.clone(),
                key: pki.api.key.clone(),
                client_ca: Some(pki.api.ca.clone()),
            }),
            ..Default::default()
        },
        store,
        SharedState::default(),
    )
    .await
    .unwrap();
    let tls = pki.map(|pki| {
        let node = &pki.collectors[0].1;
        ClientTlsFiles {
            ca: node.ca.clone(),
            cert: Some(node.cert.clone()),
            key: Some(node.key.clone()),
            server_name: None,
        }
    });
    let target = Target::new(&server.grpc_addr().to_string(), 0, tls, false).unwrap();
    let channel = target
        .connect_default(Duration::from_secs(5))
        .await
        .unwrap();
    let (batches, rx) = tokio::sync::mpsc::channel(64);
    let acks = pb::ingest_client::IngestClient::new(channel)
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Ingest {
        server,
        batches,
        acks,
    }
}

/// The next round's batches (after `next`, the last sequence sent), with new
/// ids of node `bench-node`.
fn round(next: &mut u64, base: SystemTime) -> Vec<pb::FlowBatch> {
    (0..INGEST_BATCHES)
        .map(|_| {
            let first = *next * BATCH_FLOWS;
            *next += 1;
            pb::FlowBatch {
                node_name: "bench-node".into(),
                sequence: *next,
                flows: (first..first + BATCH_FLOWS)
                    .map(|i| {
                        let mut f = flow(i, base);
                        f.id = format!("bench-node/1/{i}");
                        f.node_name = "bench-node".into();
                        f
                    })
                    .collect(),
            }
        })
        .collect()
}

impl Ingest {
    /// Sends the batches and waits for the last one's acknowledgement.
    async fn push(&mut self, round: Vec<pb::FlowBatch>) {
        let last = round.last().map_or(0, |b| b.sequence);
        for batch in round {
            self.batches.send(batch).await.unwrap();
        }
        loop {
            let ack = self.acks.message().await.unwrap().expect("an ack");
            if ack.sequence >= last {
                return;
            }
        }
    }
}

fn bench_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = write_pki(
        certs.path(),
        &PkiOptions {
            nodes: vec!["bench-node".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let base = SystemTime::now() - Duration::from_secs(600);
    let mut group = c.benchmark_group("memory_ingest_grpc");
    group.throughput(Throughput::Elements(INGEST_BATCHES * BATCH_FLOWS));
    for (name, pki) in [("plaintext", None), ("mutual_tls", Some(&pki))] {
        let mut ingest = rt.block_on(ingest(pki));
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || round(&mut next, base),
                |round| rt.block_on(ingest.push(round)),
                BatchSize::PerIteration,
            )
        });
        let Ingest { server, .. } = ingest;
        rt.block_on(server.shutdown()).unwrap();
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let base = SystemTime::now() - Duration::from_secs(7200);
    let store = MemoryStore::new(MemoryConfig {
        max_flows: 1_000_000,
        max_bytes: usize::MAX,
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
    // Heap bytes of the store: allocated after filling it minus before
    // creating it (each batch is freed by the time the next is built).
    let before = ALLOCATOR.allocated();
    let big = MemoryStore::new(MemoryConfig {
        max_flows: n as usize,
        max_bytes: usize::MAX,
        ..Default::default()
    })
    .unwrap();
    for start in (0..n).step_by(10_000) {
        let batch = (start..n.min(start + 10_000))
            .map(|i| flow(i, base))
            .collect();
        rt.block_on(big.insert(batch)).unwrap();
    }
    let held = ALLOCATOR.allocated().saturating_sub(before);
    let stored = rt.block_on(big.status()).unwrap().flows_stored;
    println!(
        "memory_store_bytes: {stored} flows hold {held} heap bytes, {:.0} bytes per flow \
         (the store's estimate: {} bytes)",
        held as f64 / stored.max(1) as f64,
        big.bytes()
    );
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
    let mut group = c.benchmark_group("memory_flows");
    group.sample_size(10);
    group.bench_function(format!("newest_100_of_{n}_flows"), |b| {
        let q = FlowQuery {
            limit: 100,
            ..Default::default()
        };
        b.iter(|| rt.block_on(big.flows(&q)).unwrap())
    });
    group.bench_function(format!("filter_matching_none_of_{n}_flows"), |b| {
        let filter = pb::FlowFilter {
            namespace: vec!["nope".into()],
            ..Default::default()
        };
        let q = FlowQuery {
            filters: FilterSet::compile(&[filter], &[]).unwrap(),
            limit: 100,
            ..Default::default()
        };
        b.iter(|| rt.block_on(big.flows(&q)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench, bench_ingest);
criterion_main!(benches);
