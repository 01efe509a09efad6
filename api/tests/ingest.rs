//! Ingest through the real collector `Exporter` into the API server over TCP:
//! acknowledged flows are stored, a resent batch is stored once, a failing
//! store gets no acknowledgement (the exporter resends), and a server restarted
//! on the same port gets every unacknowledged flow again; batches of one
//! stream are inserted together and acknowledged in order.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netverdict_api::store::{
    FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreError, StoreStatus,
};
use netverdict_api::{MemoryStore, serve_shared};
use netverdict_collector::cluster::SharedState;
use netverdict_collector::export::{Backoff, ExportCounters, Exporter, ExporterConfig};
use netverdict_proto::v1 as pb;
use pb::ingest_client::IngestClient;
use support::*;
use tokio::sync::mpsc;

fn exporter_config(endpoint: String) -> ExporterConfig {
    let mut c = ExporterConfig::new(endpoint, "node-a");
    c.batch_size = 10;
    c.batch_delay = Duration::from_millis(20);
    c.ack_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        jitter: false,
    };
    c
}

fn spawn_exporter(endpoint: String) -> (mpsc::Sender<pb::Flow>, Arc<ExportCounters>) {
    let exporter = Exporter::new(exporter_config(endpoint)).unwrap();
    let counters = exporter.counters();
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(exporter.run(rx));
    (tx, counters)
}

#[tokio::test]
async fn exporter_flows_are_acknowledged_and_stored() {
    let store = memory(10_000);
    let server = start(store.clone()).await;
    let (tx, counters) = spawn_exporter(url(&server));
    let ids: Vec<String> = (0..95).map(|i| format!("node-a/1/{i:03}")).collect();
    for id in &ids {
        tx.send(flow(id)).await.unwrap();
    }
    wait_until("every flow acknowledged", async || {
        counters.snapshot().flows_acked == 95
    })
    .await;
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(stored_ids(&*store).await, expected);
    let m = server.metrics();
    assert_eq!(m.ingest_flows.get(), 95);
    assert_eq!(m.ingest_duplicates.get(), 0);
    assert!(m.ingest_batches.get() >= 10, "{}", m.ingest_batches.get());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resent_batch_is_stored_once_and_acknowledged_again() {
    let store = memory(10_000);
    let server = start(store.clone()).await;
    let mut client = IngestClient::connect(url(&server)).await.unwrap();
    let batch = pb::FlowBatch {
        node_name: "node-a".into(),
        sequence: 7,
        flows: vec![flow("node-a/1/1"), flow("node-a/1/2")],
    };
    let (tx, rx) = mpsc::channel(4);
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch.clone()).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 7);
    tx.send(batch).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 7);
    assert_eq!(stored_ids(&*store).await, ["node-a/1/1", "node-a/1/2"]);
    assert_eq!(server.metrics().ingest_duplicates.get(), 2);
    assert_eq!(server.metrics().ingest_flows.get(), 4);
    // A flow the store could never take is dropped, named and counted; the
    // rest of its batch is stored and the batch acknowledged.
    let mut bad = flow("node-a/1/3");
    bad.last_seen = None;
    tx.send(pb::FlowBatch {
        node_name: "node-a".into(),
        sequence: 8,
        flows: vec![bad, flow("node-a/1/4")],
    })
    .await
    .unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 8);
    assert_eq!(
        stored_ids(&*store).await,
        ["node-a/1/1", "node-a/1/2", "node-a/1/4"]
    );
    assert_eq!(server.metrics().ingest_invalid_flows.get(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_store_gets_no_ack_and_the_exporter_resends() {
    let store = Arc::new(Scripted::new());
    store.failing.store(true, Ordering::SeqCst);
    let server = start(store.clone()).await;
    // The stream ends with UNAVAILABLE and no acknowledgement.
    let mut client = IngestClient::connect(url(&server)).await.unwrap();
    let batch = pb::FlowBatch {
        node_name: "node-b".into(),
        sequence: 1,
        flows: vec![flow("node-b/1/1")],
    };
    let mut acks = client
        .push(tokio_stream::iter([batch]))
        .await
        .unwrap()
        .into_inner();
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("injected failure"), "{status}");

    let (tx, counters) = spawn_exporter(url(&server));
    for i in 0..25 {
        tx.send(flow(&format!("node-a/1/{i:02}"))).await.unwrap();
    }
    wait_until("an insert error", async || {
        server.metrics().store_insert_errors.get() >= 3
    })
    .await;
    assert_eq!(counters.snapshot().flows_acked, 0);
    store.failing.store(false, Ordering::SeqCst);
    wait_until("every flow acknowledged", async || {
        counters.snapshot().flows_acked == 25
    })
    .await;
    assert_eq!(stored_ids(&store.inner).await.len(), 25);
    assert!(counters.snapshot().batches_resent >= 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_server_gets_every_unacknowledged_flow() {
    let first_store = memory(100_000);
    let first = start(first_store.clone()).await;
    let addr = first.grpc_addr();
    let (tx, counters) = spawn_exporter(format!("http://{addr}"));
    let id = |i: usize| format!("node-a/1/{i:04}");
    for i in 0..200 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("the first flows acknowledged", async || {
        counters.snapshot().flows_acked == 200
    })
    .await;
    first.shutdown().await.unwrap();
    // Flows keep coming while the server is down; some are batched and sent
    // into the dead stream, none can be acknowledged.
    for i in 200..400 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("the exporter to hold the new flows", async || {
        counters.snapshot().buffered == 200
    })
    .await;
    assert_eq!(counters.snapshot().flows_acked, 200);
    let second_store = memory(100_000);
    let second = serve_shared(config(addr), second_store.clone(), SharedState::default())
        .await
        .unwrap();
    for i in 400..500 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("every flow acknowledged", async || {
        counters.snapshot().flows_acked == 500
    })
    .await;
    assert!(counters.snapshot().reconnects >= 1);
    // Nothing acknowledged is lost: the first 200 were in the first store
    // when acknowledged; everything sent after it stopped is in the second.
    let first_ids = stored_ids(&*first_store).await;
    assert_eq!(first_ids, (0..200).map(id).collect::<Vec<_>>());
    let second_ids = stored_ids(&*second_store).await;
    assert_eq!(second_ids, (200..500).map(id).collect::<Vec<_>>());
    assert_eq!(second.metrics().ingest_duplicates.get(), 0);
    second.shutdown().await.unwrap();
}

/// A memory store whose inserts fail while `failing` is set or when the
/// batch starts with a `/fail` flow, and wait for a permit of `gate` when it
/// starts with a `/gated` flow; counts inserts running at once (`peak`: the
/// most seen).
struct Scripted {
    inner: MemoryStore,
    failing: AtomicBool,
    gate: tokio::sync::Semaphore,
    active: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Scripted {
    fn new() -> Scripted {
        Scripted {
            inner: MemoryStore::new(Default::default()).unwrap(),
            failing: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
            active: Default::default(),
            peak: Default::default(),
        }
    }

    async fn insert_gated(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        if flows[0].id.ends_with("/gated") {
            self.gate.acquire().await.unwrap().forget();
        }
        if self.failing.load(Ordering::SeqCst) || flows[0].id.ends_with("/fail") {
            return Err(StoreError::Backend {
                backend: "memory",
                message: "injected failure".into(),
            });
        }
        self.inner.insert(flows).await
    }
}

impl Store for Scripted {
    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let result = self.insert_gated(flows).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        result
    }
    async fn flows(&self, q: &FlowQuery) -> Result<Vec<pb::Flow>> {
        self.inner.flows(q).await
    }
    async fn denied(&self, q: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        self.inner.denied(q).await
    }
    async fn dns_failures(&self, q: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        self.inner.dns_failures(q).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.inner.status().await
    }
}

#[tokio::test]
async fn batches_are_inserted_together_and_acknowledged_in_order() {
    let store = Arc::new(Scripted::new());
    let server = start(store.clone()).await;
    let (tx, mut acks) = open_push(&server).await;
    // Batch 1 waits in the store while 2 and 3 are inserted behind it.
    for b in [batch(1, "gated"), batch(2, "ok"), batch(3, "ok")] {
        tx.send(b).await.unwrap();
    }
    wait_until("batches 2 and 3 stored while 1 waits", async || {
        stored_ids(&store.inner).await == ["node-a/2/ok", "node-a/3/ok"]
    })
    .await;
    store.gate.add_permits(1);
    for expected in 1..=3 {
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.sequence, expected, "acknowledged out of order");
    }
    // A failed batch ends the stream after the batches before it are
    // acknowledged; the one behind it is not acknowledged.
    for b in [batch(4, "gated"), batch(5, "fail"), batch(6, "ok")] {
        tx.send(b).await.unwrap();
    }
    wait_until("batch 6 stored while 4 waits", async || {
        stored_ids(&store.inner).await.len() == 3
    })
    .await;
    store.gate.add_permits(1);
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 4);
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("injected failure"), "{status}");
    assert!(
        store.peak.load(Ordering::SeqCst) >= 2,
        "inserts never overlapped"
    );
    server.shutdown().await.unwrap();
}

async fn open_push(
    server: &netverdict_api::ApiServer,
) -> (mpsc::Sender<pb::FlowBatch>, tonic::Streaming<pb::Ack>) {
    let mut client = IngestClient::connect(url(server)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, acks)
}

fn batch(sequence: u64, id: &str) -> pb::FlowBatch {
    pb::FlowBatch {
        node_name: "node-a".into(),
        sequence,
        flows: vec![flow(&format!("node-a/{sequence}/{id}"))],
    }
}

#[tokio::test]
async fn flows_in_flight_are_bounded_across_the_server() {
    let store = Arc::new(Scripted::new());
    let server = serve_shared(
        netverdict_api::ApiConfig {
            max_in_flight_flows: 1,
            ..config("127.0.0.1:0".parse().unwrap())
        },
        store.clone(),
        SharedState::default(),
    )
    .await
    .unwrap();
    // Two streams; batch 1 holds the only permit while it waits in the store.
    let (tx_a, mut acks_a) = open_push(&server).await;
    let (tx_b, mut acks_b) = open_push(&server).await;
    tx_a.send(batch(1, "gated")).await.unwrap();
    wait_until("batch 1 in the store", async || {
        store.active.load(Ordering::SeqCst) == 1
    })
    .await;
    // A batch larger than the bound waits for all of it, then goes alone.
    let mut big = batch(2, "ok");
    big.flows.push(flow("node-a/2/ok2"));
    tx_b.send(big).await.unwrap();
    tx_a.send(batch(3, "ok")).await.unwrap();
    wait_until("batches 2 and 3 waiting for room", async || {
        server.metrics().ingest_batches_waiting.get() == 2
    })
    .await;
    store.gate.add_permits(1);
    assert_eq!(acks_a.message().await.unwrap().unwrap().sequence, 1);
    assert_eq!(acks_a.message().await.unwrap().unwrap().sequence, 3);
    assert_eq!(acks_b.message().await.unwrap().unwrap().sequence, 2);
    assert_eq!(store.peak.load(Ordering::SeqCst), 1, "inserts overlapped");
    assert_eq!(stored_ids(&store.inner).await.len(), 4);
    assert_eq!(server.metrics().ingest_batches_waiting.get(), 0);
    server.shutdown().await.unwrap();
}
