//! Ingest over TCP into the API server from plain gRPC clients: a resent
//! batch is stored once; batches of one stream are inserted together and
//! acknowledged in order, a failed one ending the stream; flows in flight are
//! bounded across streams. (The collector's `Exporter` against this server is
//! tested in the CLI crate, `cli/tests/it/export_ingest.rs`.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::api::{self, ScriptedStore, stored_ids};
use netverdict_testing::grpc::{batch as node_batch, push_stream};
use netverdict_testing::{flow, wait_until};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_resent_batch_is_stored_once_and_acknowledged_again() {
    let store = api::memory(10_000);
    let server = api::serve(store.clone()).await;
    let batch = node_batch(
        "node-a",
        7,
        vec![flow("node-a/1/1").build(), flow("node-a/1/2").build()],
    );
    let (tx, mut acks) = push_stream(&api::url(&server)).await;
    tx.send(batch.clone()).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 7);
    tx.send(batch).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 7);
    assert_eq!(stored_ids(&*store).await, ["node-a/1/1", "node-a/1/2"]);
    assert_eq!(server.metrics().ingest_duplicates.get(), 2);
    assert_eq!(server.metrics().ingest_flows.get(), 4);
    // A flow the store could never take is dropped, named and counted; the
    // rest of its batch is stored and the batch acknowledged.
    let bad = flow("node-a/1/3").with(|f| f.last_seen = None).build();
    tx.send(node_batch(
        "node-a",
        8,
        vec![bad, flow("node-a/1/4").build()],
    ))
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
async fn batches_are_inserted_together_and_acknowledged_in_order() {
    let store = Arc::new(ScriptedStore::new());
    let server = api::serve(store.clone()).await;
    let (tx, mut acks) = push_stream(&api::url(&server)).await;
    // Batch 1 waits in the store while 2 and 3 are inserted behind it.
    for b in [batch(1, "gated"), batch(2, "ok"), batch(3, "ok")] {
        tx.send(b).await.unwrap();
    }
    wait_until("batches 2 and 3 stored while 1 waits", WAIT, async || {
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
    wait_until("batch 6 stored while 4 waits", WAIT, async || {
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

/// Batch `sequence` of node-a with one flow `node-a/<sequence>/<id>` (the
/// scripted store fails a batch starting with a `fail` id and holds one
/// starting with a `gated` id).
fn batch(sequence: u64, id: &str) -> pb::FlowBatch {
    let flows = vec![flow(format!("node-a/{sequence}/{id}")).build()];
    node_batch("node-a", sequence, flows)
}

#[tokio::test]
async fn flows_in_flight_are_bounded_across_the_server() {
    let store = Arc::new(ScriptedStore::new());
    let config = netverdict_api::ApiConfig {
        max_in_flight_flows: 1,
        ..api::config()
    };
    let server = api::serve_with(config, store.clone(), SharedState::default()).await;
    // Two streams; batch 1 holds the only permit while it waits in the store.
    let (tx_a, mut acks_a) = push_stream(&api::url(&server)).await;
    let (tx_b, mut acks_b) = push_stream(&api::url(&server)).await;
    tx_a.send(batch(1, "gated")).await.unwrap();
    wait_until("batch 1 in the store", WAIT, async || {
        store.active.load(Ordering::SeqCst) == 1
    })
    .await;
    // A batch larger than the bound waits for all of it, then goes alone.
    let mut big = batch(2, "ok");
    big.flows.push(flow("node-a/2/ok2").build());
    tx_b.send(big).await.unwrap();
    tx_a.send(batch(3, "ok")).await.unwrap();
    wait_until("batches 2 and 3 waiting for room", WAIT, async || {
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
