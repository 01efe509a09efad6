//! Faults at ingest into ClickHouse (the shared server, a database of the
//! test's own): the measured scenario (one flow with an enum value
//! from a newer collector, one dated 200 years ahead, good flows around them)
//! pushed over gRPC like a collector does, and rows ClickHouse itself rejects
//! in a batch the writer merged from two collectors.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use netverdict_api::store::{FlowQuery, Store};
use netverdict_api::{ApiConfig, serve_shared};
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow;
use netverdict_testing::flow::now_nanos;
use pb::ingest_client::IngestClient;
use tokio::sync::mpsc;

fn server_config() -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_collectors_enum_and_a_flow_from_the_future_jam_nothing() {
    let db = TestDb::shared();
    let store = Arc::new(db.connect().await);
    let server = serve_shared(server_config(), store.clone(), SharedState::default())
        .await
        .unwrap();
    let mut client = IngestClient::connect(format!("http://{}", server.grpc_addr()))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let now = now_nanos();
    let good = |i: usize| {
        flow(format!("node-a/1/{i}"))
            .at_nanos(now - 1_000_000 * i as i64)
            .build()
    };
    // Batch 1: 9 good flows and one with a verdict this server does not know.
    let mut newer = good(9);
    newer.verdict = 99;
    let mut first: Vec<pb::Flow> = (0..9).map(good).collect();
    first.push(newer);
    // Batch 2: one flow dated 200 years ahead.
    let future = flow("node-a/1/future")
        .at_nanos(now + 200 * 365 * 86_400 * 1_000_000_000)
        .build();
    // Batch 3: 10 good flows.
    let third: Vec<pb::Flow> = (10..20).map(good).collect();
    for (sequence, flows) in [(1, first), (2, vec![future]), (3, third)] {
        tx.send(pb::FlowBatch {
            node_name: "node-a".into(),
            sequence,
            flows,
        })
        .await
        .unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        let ack = tokio::time::timeout(Duration::from_secs(30), acks.message())
            .await
            .expect("an ack within 30 s")
            .expect("the stream goes on")
            .expect("an ack, not the end");
        answers.push((ack.sequence, ack.refused));
    }
    assert_eq!(
        answers,
        [(1, 0), (2, 1), (3, 0)],
        "every batch acknowledged; only the flow from the future refused"
    );
    let name = &db.name;
    assert_eq!(
        db.sql(&format!(
            "SELECT count() FROM {name}.flows WHERE id != 'node-a/1/9' FORMAT TSV"
        ))
        .trim(),
        "19",
        "all 19 good flows stored"
    );
    // The newer collector's flow is stored too: its Enum8 column holds the
    // zero value (the table stays readable), its flow keeps the number.
    assert_eq!(
        db.sql(&format!(
            "SELECT toString(verdict) FROM {name}.flows WHERE id = 'node-a/1/9' FORMAT TSV"
        ))
        .trim(),
        "VERDICT_UNSPECIFIED"
    );
    let stored = store.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 20);
    let kept = stored.iter().find(|f| f.id == "node-a/1/9").unwrap();
    assert_eq!(kept.verdict, 99, "GetFlows returns the number as sent");
    let metrics = server.metrics();
    assert_eq!(metrics.ingest_invalid_flows.get(), 1);
    assert_eq!(metrics.ingest_unknown_enum_flows.get(), 1);
    drop(tx);
    server.shutdown().await.unwrap();
}

/// How many gathered batches the writer has stored (its latency histogram's
/// count).
fn batches_processed(stats: &netverdict_api::clickhouse::ClickHouseStats) -> u64 {
    let h = &stats.insert_latency;
    h.buckets.iter().map(|b| b.load(Relaxed)).sum::<u64>() + h.overflow.load(Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_clickhouse_rejects_are_set_aside_and_every_other_collectors_rows_stored() {
    let db = TestDb::shared();
    // Long enough a gathering delay that both collectors' batches go into
    // one INSERT, as under load.
    let store = netverdict_api::clickhouse::ClickHouseStore::connect(
        netverdict_api::clickhouse::ClickHouseConfig {
            batch_max_delay: Duration::from_millis(500),
            ..db.config()
        },
    )
    .await
    .unwrap();
    let name = &db.name;
    // What ClickHouse refuses: rows whose id marks them (a constraint an
    // operator added; 18.16 has no CONSTRAINT, a MATERIALIZED throwIf is the
    // same refusal, of the whole INSERT).
    db.sql(&format!(
        "ALTER TABLE {name}.flows ADD COLUMN poison UInt8 MATERIALIZED throwIf(like(id, '%/poison%'))"
    ));
    let base = now_nanos() - 60_000_000_000;
    let a: Vec<pb::Flow> = (0..40)
        .map(|i| {
            let id = if i == 7 || i == 30 {
                format!("node-a/1/{i}/poison")
            } else {
                format!("node-a/1/{i}")
            };
            flow(id).at_nanos(base + i * 1_000_000).build()
        })
        .collect();
    let b: Vec<pb::Flow> = (0..40)
        .map(|i| {
            flow(format!("node-b/1/{i}"))
                .at_nanos(base + i * 1_000_000)
                .build()
        })
        .collect();
    let stats = store.stats();
    let before = batches_processed(&stats);
    let (out_a, out_b) = tokio::join!(store.insert(a), store.insert(b));
    let (out_a, out_b) = (out_a.unwrap(), out_b.unwrap());
    assert_eq!(
        batches_processed(&stats) - before,
        1,
        "both collectors' batches went into one gathered batch"
    );
    assert_eq!((out_a.stored, out_a.rejected), (38, 2), "{out_a:?}");
    assert_eq!((out_b.stored, out_b.rejected), (40, 0), "{out_b:?}");
    assert_eq!(
        db.sql(&format!("SELECT count() FROM {name}.flows FORMAT TSV"))
            .trim(),
        "78"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT sum(flows) FROM {name}.flows_by_minute FORMAT TSV"
        ))
        .trim(),
        "78",
        "the rollups count the stored flows"
    );
    let letters = db.sql(&format!(
        "SELECT id, error LIKE '%throwIf%' FROM {name}.dead_letters ORDER BY id FORMAT TSV"
    ));
    assert_eq!(letters, "node-a/1/30/poison\t1\nnode-a/1/7/poison\t1\n");
    assert_eq!(stats.rows_dead_lettered.load(Relaxed), 2);
    assert!(stats.insert_rejections.load(Relaxed) >= 2);
    assert_eq!(stats.rows_spooled.load(Relaxed), 0, "nothing spooled");
    assert_eq!(store.status().await.unwrap().flows_dead_lettered, 2);
    // The same batch again (a collector that lost the ack): stored once, and
    // set aside once.
    let again: Vec<pb::Flow> = (0..40)
        .map(|i| {
            let id = if i == 7 || i == 30 {
                format!("node-a/1/{i}/poison")
            } else {
                format!("node-a/1/{i}")
            };
            flow(id).at_nanos(base + i * 1_000_000).build()
        })
        .collect();
    let out = store.insert(again).await.unwrap();
    assert_eq!((out.duplicates, out.rejected), (38, 2), "{out:?}");
    assert_eq!(
        db.sql(&format!(
            "SELECT count(), uniqExact(id) FROM {name}.dead_letters FORMAT TSV"
        ))
        .trim(),
        "2\t2"
    );
}
