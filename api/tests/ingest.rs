//! Ingest over TCP into the API server from plain gRPC clients: a resent
//! batch is stored once; batches of one stream are inserted together and
//! acknowledged in order, a failed one ending the stream; flows in flight are
//! bounded across streams. (The collector's `Exporter` against this server is
//! tested in the CLI crate, `cli/tests/export_ingest.rs`.)

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use netverdict_api::serve_shared;
use netverdict_api::store::Store;
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use pb::ingest_client::IngestClient;
use support::*;
use tokio::sync::mpsc;

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
            max_in_flight_bytes: 1,
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

#[tokio::test]
async fn bad_flows_are_refused_one_by_one_and_counted_in_the_ack() {
    let store = memory(10_000);
    let server = start(store.clone()).await;
    let (tx, mut acks) = open_push(&server).await;
    let mut newer = flow("node-a/1/newer");
    newer.verdict = 99;
    newer.protocol = 42;
    let mut ahead = flow("node-a/1/ahead");
    ahead.last_seen = Some(netverdict_proto::time::timestamp(
        std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 3600),
    ));
    let mut no_id = flow("");
    no_id.id.clear();
    tx.send(pb::FlowBatch {
        node_name: "node-a".into(),
        sequence: 1,
        flows: vec![flow("node-a/1/ok"), newer, ahead, no_id],
    })
    .await
    .unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.sequence, ack.refused), (1, 2));
    // The newer collector's flow is stored with its numbers as sent.
    assert_eq!(stored_ids(&*store).await, ["node-a/1/newer", "node-a/1/ok"]);
    let stored = store
        .flows(&netverdict_api::store::FlowQuery::default())
        .await
        .unwrap();
    let kept = stored.iter().find(|f| f.id == "node-a/1/newer").unwrap();
    assert_eq!((kept.verdict, kept.protocol), (99, 42));
    let m = server.metrics();
    assert_eq!(m.ingest_invalid_flows.get(), 2);
    assert_eq!(m.ingest_unknown_enum_flows.get(), 1);
    // The stream goes on.
    tx.send(batch(2, "ok")).await.unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.sequence, ack.refused), (2, 0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_above_the_limit_is_refused_after_the_batches_before_it_are_acknowledged() {
    let store = Arc::new(Scripted::new());
    let server = serve_shared(
        netverdict_api::ApiConfig {
            max_message_bytes: 2048,
            ..config("127.0.0.1:0".parse().unwrap())
        },
        store.clone(),
        SharedState::default(),
    )
    .await
    .unwrap();
    let (tx, mut acks) = open_push(&server).await;
    // Batch 1 waits in the store while batch 2, too large, is read.
    let mut big = batch(2, "ok");
    big.flows[0].reason = "x".repeat(4096);
    for b in [batch(1, "gated"), big, batch(3, "ok")] {
        tx.send(b).await.unwrap();
    }
    wait_until("batch 1 in the store", async || {
        store.active.load(Ordering::SeqCst) == 1
    })
    .await;
    store.gate.add_permits(1);
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 1);
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    assert_eq!(stored_ids(&store.inner).await, ["node-a/1/gated"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn streams_are_bounded_in_number() {
    let store = memory(10_000);
    let server = serve_shared(
        netverdict_api::ApiConfig {
            max_streams: 1,
            ..config("127.0.0.1:0".parse().unwrap())
        },
        store.clone(),
        SharedState::default(),
    )
    .await
    .unwrap();
    let (tx, mut acks) = open_push(&server).await;
    tx.send(batch(1, "ok")).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 1);
    let mut client = IngestClient::connect(url(&server)).await.unwrap();
    let (_tx2, rx2) = mpsc::channel(1);
    let status = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("max_streams"), "{status}");
    assert_eq!(server.metrics().ingest_streams_refused.get(), 1);
    // Once the first stream ends, another is taken.
    drop(tx);
    assert!(acks.message().await.unwrap().is_none());
    wait_until("the stream to close", async || {
        server.metrics().ingest_streams.get() == 0
    })
    .await;
    let (tx3, mut acks3) = open_push(&server).await;
    tx3.send(batch(2, "ok")).await.unwrap();
    assert_eq!(acks3.message().await.unwrap().unwrap().sequence, 2);
    server.shutdown().await.unwrap();
}
