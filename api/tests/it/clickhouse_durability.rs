//! Durability against a clickhouse-server process of the test's own: killed
//! during ingest, flows keep being acknowledged (spooled), and once it is back
//! every acknowledged flow is stored exactly once (rollups included); spool
//! files left by a stopped process are replayed by the next one at connect.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use netverdict_api::clickhouse::ClickHouseStore;
use netverdict_api::store::Store;
use netverdict_testing::clickhouse::{OwnServer, TestDb};
use netverdict_testing::flow::now_nanos;
use netverdict_testing::{flow, wait_until};

/// Flows `node-a/<run>/<i>` for `i` in `from..from + n`, 1 ms apart from `base`.
fn batch(run: &str, from: u64, n: u64, base: i64) -> Vec<netverdict_proto::v1::Flow> {
    (from..from + n)
        .map(|i| {
            flow(format!("node-a/{run}/{i}"))
                .at_nanos(base + i as i64 * 1_000_000)
                .build()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_during_ingest_then_restarted_stores_every_ack_once() {
    let mut server = OwnServer::start();
    let db = TestDb::new(&server.addr());
    let store = db.connect().await;
    let stats = store.stats();
    let base = now_nanos() - 600_000_000_000;
    let mut acked = BTreeSet::new();
    let mut next = 0;

    // Ingest while the server runs, is killed, and stays down.
    let ingest = move |store: netverdict_api::clickhouse::ClickHouseStore, from: u64| async move {
        let flows = batch("1", from, 50, base);
        let ids: Vec<String> = flows.iter().map(|f| f.id.clone()).collect();
        let out = store.insert(flows).await.expect("insert acknowledged");
        assert_eq!(out.stored + out.duplicates, 50);
        ids
    };
    for _ in 0..5 {
        acked.extend(ingest(store.clone(), next).await);
        next += 50;
    }
    // Kill the server while inserts are in flight.
    let inflight = tokio::spawn({
        let store = store.clone();
        async move {
            let mut ids = Vec::new();
            for k in 0..10 {
                ids.extend(ingest(store.clone(), 10_000 + k * 50).await);
            }
            ids
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.kill();
    for _ in 0..5 {
        acked.extend(ingest(store.clone(), next).await);
        next += 50;
    }
    acked.extend(inflight.await.unwrap());
    assert!(
        stats.rows_spooled.load(Relaxed) > 0,
        "flows were spooled while the server was down"
    );
    assert!(stats.spool_pending_rows.load(Relaxed) > 0);
    // A resend of an acknowledged batch while down: spooled again, stored once.
    acked.extend(ingest(store.clone(), 0).await);

    server.restart();
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(60),
        async || stats.spool_pending_rows.load(Relaxed) == 0,
    )
    .await;
    // Ingest goes straight to ClickHouse again.
    acked.extend(ingest(store.clone(), next).await);

    let stored = db.sql(&format!("SELECT id FROM {}.flows ORDER BY id", db.name));
    let stored_ids: Vec<&str> = stored.lines().collect();
    let unique: BTreeSet<&str> = stored_ids.iter().copied().collect();
    assert_eq!(stored_ids.len(), unique.len(), "a flow stored twice");
    let acked_ids: BTreeSet<&str> = acked.iter().map(String::as_str).collect();
    assert_eq!(
        unique, acked_ids,
        "stored flows are exactly the acknowledged ones"
    );
    let rollup = db.sql(&format!(
        "SELECT sum(flows) FROM {}.flows_by_minute",
        db.name
    ));
    assert_eq!(
        rollup.trim(),
        unique.len().to_string(),
        "rollups count each flow once"
    );
    assert!(
        std::fs::read_dir(db.spool.path()).unwrap().next().is_none(),
        "spool emptied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_left_by_a_stopped_process_is_replayed_at_connect() {
    let mut server = OwnServer::start();
    let db = TestDb::new(&server.addr());
    let base = now_nanos() - 600_000_000_000;
    let store = db.connect().await;
    store.insert(batch("2", 0, 20, base)).await.unwrap();
    server.kill();
    // Acknowledged while down: spooled (fsynced) before insert returns.
    let out = store.insert(batch("2", 20, 30, base)).await.unwrap();
    assert_eq!(out.stored, 30);
    assert_eq!(store.stats().spool_pending_rows.load(Relaxed), 30);
    drop(store); // the process stops with flows in the spool
    let files = std::fs::read_dir(db.spool.path()).unwrap().count();
    assert!(files > 0, "spool files remain");

    server.restart();
    let store = db.connect().await;
    let stats = store.stats();
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(60),
        async || {
            stats.rows_replayed.load(Relaxed) == 30 && stats.spool_pending_rows.load(Relaxed) == 0
        },
    )
    .await;
    wait_until(
        "spool files to be removed",
        Duration::from_secs(10),
        async || std::fs::read_dir(db.spool.path()).unwrap().next().is_none(),
    )
    .await;
    let counts = db.sql(&format!(
        "SELECT count(), uniqExact(id) FROM {}.flows",
        db.name
    ));
    assert_eq!(counts, "50\t50\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_started_while_clickhouse_is_down_spools_then_applies_the_schema_and_replays() {
    let mut server = OwnServer::start();
    server.kill();
    let db = TestDb::new(&server.addr());
    let err = ClickHouseStore::connect(db.config()).await.unwrap_err();
    assert!(err.to_string().contains("connecting to"), "{err}");
    let store = ClickHouseStore::start(db.config())
        .await
        .expect("starts without ClickHouse");
    assert!(store.features().is_none());
    let stats = store.stats();
    let base = now_nanos() - 60_000_000_000;
    let outcome = store.insert(batch("down", 0, 50, base)).await.unwrap();
    assert_eq!(outcome.stored, 50, "acknowledged: spooled");
    assert_eq!(stats.rows_spooled.load(Relaxed), 50);
    let err = store
        .denied(&netverdict_api::store::ReportQuery::default())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("clickhouse: "), "{err}");

    server.restart();
    wait_until(
        "the schema applied and the spool replayed",
        Duration::from_secs(60),
        async || store.features().is_some() && stats.spool_pending_rows.load(Relaxed) == 0,
    )
    .await;
    let name = &db.name;
    assert_eq!(
        db.sql(&format!(
            "SELECT count(), uniqExact(id) FROM {name}.flows FORMAT TSV"
        ))
        .trim(),
        "50\t50"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT sum(flows) FROM {name}.flows_by_minute FORMAT TSV"
        ))
        .trim(),
        "50",
        "the rollups saw the replayed flows"
    );
    // From now on flows go straight in.
    store.insert(batch("up", 0, 10, base)).await.unwrap();
    assert_eq!(
        db.sql(&format!("SELECT count() FROM {name}.flows FORMAT TSV"))
            .trim(),
        "60"
    );
    assert_eq!(stats.rows_spooled.load(Relaxed), 50);
    assert_eq!(stats.spool_pending_rows.load(Relaxed), 0);
}
