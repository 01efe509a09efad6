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

/// The spool segments on disk, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nvs"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_record_is_quarantined_and_the_records_after_it_replayed() {
    let mut server = OwnServer::start();
    let db = TestDb::new(&server.addr());
    let base = now_nanos() - 600_000_000_000;
    let store = db.connect().await;
    server.kill();
    // 30 flows acknowledged while down, in one segment.
    for k in 0..3 {
        let out = store.insert(batch("c", k * 10, 10, base)).await.unwrap();
        assert_eq!(out.stored, 10);
    }
    drop(store);
    let files = segments(db.spool.path());
    assert_eq!(files.len(), 1, "{files:?}");
    // Corrupt the length of the fifth record: before checksums, the reader
    // lost every record after it and the file was removed as replayed.
    let mut data = std::fs::read(&files[0]).unwrap();
    let mut offset = 8; // the segment header
    for _ in 0..4 {
        let len = u32::from_le_bytes(data[offset + 4..offset + 8].try_into().unwrap());
        offset += 12 + len as usize;
    }
    data[offset + 6] ^= 0x40;
    std::fs::write(&files[0], data).unwrap();

    server.restart();
    let store = db.connect().await;
    let stats = store.stats();
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(60),
        async || segments(db.spool.path()).is_empty(),
    )
    .await;
    let stored = db.sql(&format!("SELECT id FROM {}.flows ORDER BY id", db.name));
    let stored: BTreeSet<&str> = stored.lines().collect();
    let expected: BTreeSet<String> = (0..30)
        .filter(|i| *i != 4)
        .map(|i| format!("node-a/c/{i}"))
        .collect();
    assert_eq!(
        stored,
        expected.iter().map(String::as_str).collect(),
        "every record but the corrupt one replayed"
    );
    assert!(stats.spool_corrupt_bytes.load(Relaxed) > 0);
    let quarantine = db.spool.path().join("quarantine");
    let kept: Vec<_> = std::fs::read_dir(&quarantine).unwrap().collect();
    assert_eq!(kept.len(), 1, "the corrupt bytes kept for a person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_replays_beside_new_inserts_in_chunks() {
    let mut server = OwnServer::start();
    let db = TestDb::new(&server.addr());
    let config = netverdict_api::clickhouse::ClickHouseConfig {
        replay_chunk_rows: 1000,
        ..db.config()
    };
    let base = now_nanos() - 600_000_000_000;
    let store = ClickHouseStore::connect(config.clone()).await.unwrap();
    server.kill();
    const SPOOLED: u64 = 100_000;
    for k in 0..SPOOLED / 10_000 {
        store
            .insert(batch("s", k * 10_000, 10_000, base))
            .await
            .unwrap();
    }
    drop(store);
    server.restart();
    let store = ClickHouseStore::connect(config).await.unwrap();
    let stats = store.stats();
    wait_until("the replay to start", Duration::from_secs(60), async || {
        stats.rows_replayed.load(Relaxed) > 0
    })
    .await;
    // A new batch does not wait for the whole spool.
    let out = store.insert(batch("live", 0, 10, base)).await.unwrap();
    assert_eq!(out.stored, 10);
    let replayed = stats.rows_replayed.load(Relaxed);
    assert!(
        replayed < SPOOLED,
        "the new batch was stored after the whole replay ({replayed} rows)"
    );
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(120),
        async || segments(db.spool.path()).is_empty(),
    )
    .await;
    assert_eq!(
        db.sql(&format!(
            "SELECT count(), uniqExact(id) FROM {}.flows FORMAT TSV",
            db.name
        ))
        .trim(),
        format!("{}\t{}", SPOOLED + 10, SPOOLED + 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_inserts_and_drops_nothing_acknowledged() {
    let mut server = OwnServer::start();
    let db = TestDb::new(&server.addr());
    let config = netverdict_api::clickhouse::ClickHouseConfig {
        spool_max_bytes: 64 << 10,
        spool_segment_bytes: 16 << 10,
        ..db.config()
    };
    let base = now_nanos() - 600_000_000_000;
    let store = ClickHouseStore::connect(config).await.unwrap();
    server.kill();
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for k in 0..100 {
        let flows = batch("f", k * 20, 20, base);
        let ids: Vec<String> = flows.iter().map(|f| f.id.clone()).collect();
        match store.insert(flows).await {
            Ok(out) => {
                assert_eq!(out.stored, 20);
                acked.extend(ids);
            }
            Err(e) => {
                assert!(
                    matches!(e, netverdict_api::store::StoreError::Full { .. }),
                    "{e}"
                );
                assert!(e.to_string().contains("the spool is full"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && !acked.is_empty(),
        "{refused} refused, {} acked",
        acked.len()
    );
    let stats = store.stats();
    assert_eq!(stats.spool_full_refusals.load(Relaxed), refused);
    assert!(stats.spool_bytes.load(Relaxed) <= 64 << 10);
    server.restart();
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(60),
        async || segments(db.spool.path()).is_empty(),
    )
    .await;
    // Room again: inserts are acknowledged.
    store.insert(batch("f", 10_000, 20, base)).await.unwrap();
    acked.extend((10_000..10_020).map(|i| format!("node-a/f/{i}")));
    let stored = db.sql(&format!("SELECT id FROM {}.flows ORDER BY id", db.name));
    let stored: BTreeSet<&str> = stored.lines().collect();
    assert_eq!(
        stored,
        acked.iter().map(String::as_str).collect(),
        "exactly the acknowledged flows"
    );
}
