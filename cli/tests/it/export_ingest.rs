//! Ingest through the real collector `Exporter` into the API server over TCP:
//! acknowledged flows are stored, a failing store gets no acknowledgement (the
//! exporter resends), and a server restarted on the same port gets every
//! unacknowledged flow again. Here rather than in the API server's tests, so
//! that the API server does not depend on the collector.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::api::{self, ScriptedStore, memory, stored_ids, url};
use netverdict_testing::grpc::{batch, push_stream};
use netverdict_testing::wait_until;

use crate::support::spawn_exporter;

const WAIT: Duration = Duration::from_secs(20);

/// A flow of node-a with this id.
fn flow(id: &str) -> pb::Flow {
    netverdict_testing::flow(id).build()
}

#[tokio::test]
async fn exporter_flows_are_acknowledged_and_stored() {
    let store = memory(10_000);
    let server = api::serve(store.clone()).await;
    let (tx, counters) = spawn_exporter(url(&server), 10);
    let ids: Vec<String> = (0..95).map(|i| format!("node-a/1/{i:03}")).collect();
    for id in &ids {
        tx.send(flow(id)).await.unwrap();
    }
    wait_until("every flow acknowledged", WAIT, async || {
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
async fn a_failing_store_gets_no_ack_and_the_exporter_resends() {
    let store = Arc::new(ScriptedStore::new());
    store.failing.store(true, Ordering::SeqCst);
    let server = api::serve(store.clone()).await;
    // The stream ends with UNAVAILABLE and no acknowledgement.
    let (push, mut acks) = push_stream(&url(&server)).await;
    push.send(batch("node-b", 1, vec![flow("node-b/1/1")]))
        .await
        .unwrap();
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("injected failure"), "{status}");

    let (tx, counters) = spawn_exporter(url(&server), 10);
    for i in 0..25 {
        tx.send(flow(&format!("node-a/1/{i:02}"))).await.unwrap();
    }
    wait_until("an insert error", WAIT, async || {
        server.metrics().store_insert_errors.get() >= 3
    })
    .await;
    assert_eq!(counters.snapshot().flows_acked, 0);
    store.failing.store(false, Ordering::SeqCst);
    wait_until("every flow acknowledged", WAIT, async || {
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
    let first = api::serve(first_store.clone()).await;
    let addr = first.grpc_addr();
    let (tx, counters) = spawn_exporter(format!("http://{addr}"), 10);
    let id = |i: usize| format!("node-a/1/{i:04}");
    for i in 0..200 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("the first flows acknowledged", WAIT, async || {
        counters.snapshot().flows_acked == 200
    })
    .await;
    first.shutdown().await.unwrap();
    // Flows keep coming while the server is down; some are batched and sent
    // into the dead stream, none can be acknowledged.
    for i in 200..400 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("the exporter to hold the new flows", WAIT, async || {
        counters.snapshot().buffered == 200
    })
    .await;
    assert_eq!(counters.snapshot().flows_acked, 200);
    let second_store = memory(100_000);
    let second = api::serve_with(
        api::config_on(addr),
        second_store.clone(),
        SharedState::default(),
    )
    .await;
    for i in 400..500 {
        tx.send(flow(&id(i))).await.unwrap();
    }
    wait_until("every flow acknowledged", WAIT, async || {
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
