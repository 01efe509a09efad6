//! Cluster mode (`ClickHouseConfig::cluster`, `--clickhouse-cluster`) on a
//! real local cluster: 2 shards x 2 replicas and ZooKeeper, started by
//! `scripts/start-clickhouse-cluster.sh` (Debian's `zookeeper` package) and
//! torn down by its guard. First, the deduplication the writer relies on is
//! checked with plain INSERTs. Then the schema is created once across the
//! cluster; two API servers A and B (real gRPC ingest, A on s1r1, B on s2r1) take
//! batches at once, some resent to both (a collector whose acknowledgement
//! was lost) and some to both at the same moment; during ingest a replica no
//! API server talks to is killed (no outage), then B's own server (B spools
//! what it acknowledges). Once they are back, every acknowledged flow is
//! stored exactly once, in `flows` and in the rollups, on both replicas of
//! its shard. A third API server then starts while a server is down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::{ReportQuery, Store};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::{LocalCluster, http_sql, unique};
use netverdict_testing::flow::now_nanos;
use netverdict_testing::grpc::{batch, push_acked, push_stream};
use netverdict_testing::{api, flow, wait_until};

/// A store in cluster mode on the server at `addr`, spooling to `spool`.
fn config(addr: &str, db: &str, spool: &std::path::Path) -> ClickHouseConfig {
    ClickHouseConfig {
        cluster: Some(LocalCluster::NAME.to_string()),
        batch_max_delay: Duration::from_millis(10),
        retry_backoff: Duration::from_millis(50),
        replay_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(30),
        ..ClickHouseConfig::new(format!("http://{addr}"), db, spool)
    }
}

/// The flows of batch `b` of collector `node`: 40 flows a second apart
/// (each batch after the one before) from `base`, every fourth denied by a
/// policy.
fn flows_of(node: &str, b: u64, base: i64) -> Vec<pb::Flow> {
    (0..40)
        .map(|i| {
            let f = flow(format!("{node}/{b}/{i}"))
                .node(node)
                .at_nanos(base + (b as i64 * 40 + i) * 1_000_000_000);
            if i % 4 == 0 {
                f.denied().denied_by(["prod/deny-all"]).build()
            } else {
                f.build()
            }
        })
        .collect()
}

/// Waits until both replicas of each shard hold the same rows of `db`'s
/// tables (an insert is acknowledged once one replica has it; the other
/// fetches it): nothing left in any replication queue, and each shard's
/// replicas with the same row counts. Reads through `Distributed` tables
/// then see every row whichever replica they ask.
async fn replicas_in_step(cluster: &LocalCluster, db: &str) {
    let tables = [
        "flows",
        "flows_by_minute",
        "denied_by_minute",
        "denied_groups_by_minute",
    ];
    let rows = |addr: &str| -> Option<Vec<String>> {
        tables
            .iter()
            .map(|t| http_sql(addr, &format!("SELECT count() FROM {db}.{t}_local")).ok())
            .collect()
    };
    wait_until(
        "the replicas of each shard to hold the same rows",
        Duration::from_secs(60),
        async || {
            let queues_empty = cluster.servers.iter().all(|s| {
                http_sql(
                    &s.addr,
                    &format!("SELECT sum(queue_size) FROM system.replicas WHERE database = '{db}'"),
                )
                .is_ok_and(|n| n.trim() == "0")
            });
            queues_empty
                && [("s1r1", "s1r2"), ("s2r1", "s2r2")].iter().all(|(a, b)| {
                    let (a, b) = (rows(&cluster.server(a).addr), rows(&cluster.server(b).addr));
                    a.is_some() && a == b
                })
        },
    )
    .await;
}

fn one_number(addr: &str, sql: &str) -> u64 {
    let out = http_sql(addr, sql).unwrap_or_else(|e| panic!("{e}"));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {out:?}: {e}"))
}

/// One cluster for both checks (four servers and ZooKeeper are heavy on a
/// two-core machine): started, used, and torn down by its guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_cluster_mode_on_a_local_2x2_cluster() {
    let started = Instant::now();
    let cluster = LocalCluster::start();
    eprintln!("cluster started in {:?}", started.elapsed());
    a_block_inserted_twice_is_stored_and_rolled_up_once(&cluster).await;
    eprintln!("block deduplication checked at {:?}", started.elapsed());
    two_api_servers_store_every_acknowledged_flow_once_while_a_replica_dies(&cluster, started)
        .await;
    eprintln!("cluster test done at {:?}", started.elapsed());
    drop(cluster);
    eprintln!("cluster stopped at {:?}", started.elapsed());
}

async fn two_api_servers_store_every_acknowledged_flow_once_while_a_replica_dies(
    cluster: &LocalCluster,
    started: Instant,
) {
    let db = unique("nvcluster");
    let (a_addr, b_addr) = (
        cluster.server("s1r1").addr.clone(),
        cluster.server("s2r1").addr.clone(),
    );
    let (spool_a, spool_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // Both API servers start at once: the schema is created ON CLUSTER once
    // (a migration the other applied meanwhile is retried until it sees it).
    let (store_a, store_b) = tokio::join!(
        ClickHouseStore::start(config(&a_addr, &db, spool_a.path())),
        ClickHouseStore::start(config(&b_addr, &db, spool_b.path())),
    );
    let (store_a, store_b) = (Arc::new(store_a.unwrap()), Arc::new(store_b.unwrap()));
    wait_until(
        "both stores to have the schema",
        Duration::from_secs(120),
        async || store_a.features().is_some() && store_b.features().is_some(),
    )
    .await;
    eprintln!("schema applied at {:?}", started.elapsed());
    // A new database gets its tables whole: no `ALTER ... ON CLUSTER`, whose
    // race between the replicas of a shard stops a 18.16 server's DDLWorker.
    assert_eq!(
        one_number(
            &a_addr,
            &format!(
                "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl' \
                 AND value LIKE '%ALTER TABLE {db}.%'"
            )
        ),
        0,
        "ALTER statements ON CLUSTER for a new database"
    );
    assert!(
        one_number(
            &a_addr,
            &format!(
                "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl' \
                 AND value LIKE '%CREATE TABLE IF NOT EXISTS {db}.flows_local%'"
            )
        ) > 0,
        "the DDL queue is where ON CLUSTER statements are: the check above looks there"
    );
    for s in &cluster.servers {
        for table in [
            "flows_local",
            "flows",
            "flows_by_minute_local",
            "schema_migrations",
        ] {
            assert_eq!(
                one_number(
                    &s.addr,
                    &format!(
                        "SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{table}'"
                    )
                ),
                1,
                "{table} on {}",
                s.name
            );
        }
        let features = store_a.features().expect("the schema is applied");
        let versions = netverdict_api::clickhouse::migration_versions(&features).len();
        assert_eq!(
            one_number(
                &s.addr,
                &format!("SELECT uniqExact(version) FROM {db}.schema_migrations")
            ),
            versions as u64,
            "every migration recorded, seen on {}",
            s.name
        );
    }
    assert!(
        http_sql(&a_addr, &format!("SHOW CREATE TABLE {db}.flows_local"))
            .unwrap()
            .contains("ReplicatedReplacingMergeTree"),
    );

    let server_a = api::serve(store_a.clone()).await;
    let server_b = api::serve(store_b.clone()).await;
    let base = now_nanos() - 3_000_000_000_000; // 50 min ago
    let mut acked: BTreeSet<String> = BTreeSet::new();

    // Three collectors, 12 batches each. Each batch goes to A or B; every
    // third is resent to the other server after its acknowledgement, and
    // every fourth is sent to both at the same moment. s1r2 is killed after
    // the first third.
    let collectors = ["node-1", "node-2", "node-3"];
    let mut sent_twice = 0;
    let (mut a_tx, mut a_acks) = push_stream(&api::url(&server_a)).await;
    let (mut b_tx, mut b_acks) = push_stream(&api::url(&server_b)).await;
    let mut seq = 0u64;
    for b in 0..12u64 {
        if b == 4 {
            cluster.kill("s1r2");
            eprintln!("s1r2 killed at {:?}", started.elapsed());
        }
        if b == 8 {
            // B's own server: B spools what it acknowledges from now on.
            cluster.kill("s2r1");
            eprintln!("s2r1 killed at {:?}", started.elapsed());
        }
        for (c, node) in collectors.iter().enumerate() {
            let flows = flows_of(node, b, base);
            acked.extend(flows.iter().map(|f| f.id.clone()));
            seq += 1;
            let to_a = (b + c as u64).is_multiple_of(2);
            if b % 4 == 3 {
                let (x, y) = (batch(node, seq, flows.clone()), batch(node, seq, flows));
                tokio::join!(
                    push_acked(&a_tx, &mut a_acks, x),
                    push_acked(&b_tx, &mut b_acks, y)
                );
                sent_twice += 1;
                continue;
            }
            let (first, second) = if to_a {
                ((&mut a_tx, &mut a_acks), (&mut b_tx, &mut b_acks))
            } else {
                ((&mut b_tx, &mut b_acks), (&mut a_tx, &mut a_acks))
            };
            push_acked(first.0, first.1, batch(node, seq, flows.clone())).await;
            if b % 3 == 0 {
                push_acked(second.0, second.1, batch(node, seq, flows)).await;
                sent_twice += 1;
            }
        }
    }
    eprintln!(
        "{} flows acknowledged ({sent_twice} batches twice) at {:?}",
        acked.len(),
        started.elapsed()
    );
    let (stats_a, stats_b) = (store_a.stats(), store_b.stats());
    assert_eq!(
        stats_a.rows_spooled.load(Relaxed),
        0,
        "A's server is up: a dead replica elsewhere is no outage for A"
    );
    assert!(
        stats_b.rows_spooled.load(Relaxed) > 0,
        "B's server is down: B spools what it acknowledges"
    );

    // The killed servers come back, B replays its spool, and the killed
    // replicas catch up with their shards.
    cluster.restart_stopped();
    eprintln!("s1r2 and s2r1 restarted at {:?}", started.elapsed());
    wait_until(
        "B to replay its spool",
        Duration::from_secs(120),
        async || stats_b.spool_pending_rows.load(Relaxed) == 0,
    )
    .await;
    replicas_in_step(cluster, &db).await;
    eprintln!(
        "spool replayed, replicas in step at {:?}",
        started.elapsed()
    );

    // Exactly the acknowledged flows, once each, read through either server.
    let denied = acked
        .iter()
        .filter(|id| {
            id.rsplit('/')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| i % 4 == 0)
        })
        .count() as u64;
    for addr in [&a_addr, &b_addr] {
        let ids = http_sql(addr, &format!("SELECT id FROM {db}.flows ORDER BY id")).unwrap();
        let ids: Vec<&str> = ids.lines().collect();
        let unique_ids: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique_ids.len(), "a flow stored twice");
        assert_eq!(
            unique_ids,
            acked.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            "stored flows are exactly the acknowledged ones"
        );
        let n = acked.len() as u64;
        for (sql, want, what) in [
            (
                format!("SELECT sum(flows) FROM {db}.flows_by_minute"),
                n,
                "flows_by_minute",
            ),
            (
                format!("SELECT sum(flows) FROM {db}.denied_by_minute"),
                denied,
                "denied_by_minute",
            ),
            (
                format!("SELECT countMerge(flows) FROM {db}.denied_groups_by_minute"),
                denied,
                "denied_groups_by_minute",
            ),
        ] {
            assert_eq!(one_number(addr, &sql), want, "{what} counts each flow once");
        }
    }
    // Both shards hold flows (sharded by id).
    for name in ["s1r1", "s2r1"] {
        let n = one_number(
            &cluster.server(name).addr,
            &format!("SELECT count() FROM {db}.flows_local"),
        );
        assert!(n > 0 && n < acked.len() as u64, "{name} holds {n} flows");
    }
    // Some blocks reached ClickHouse twice (resends the read-back of stored
    // ids did not catch) and were dropped there as duplicates.
    let inserted = stats_a.rows_inserted.load(Relaxed) + stats_b.rows_inserted.load(Relaxed);
    eprintln!(
        "rows inserted by the two writers: {inserted} for {} flows",
        acked.len()
    );
    // The denied report through the API server's store counts each flow once.
    let groups = store_b.denied(&ReportQuery::default()).await.unwrap();
    let report_flows: u64 = groups.iter().map(|g| g.flows).sum();
    assert_eq!(
        report_flows, denied,
        "the denied report counts each flow once"
    );

    // A third API server starts while a ClickHouse server is down: the schema
    // is there, so it runs no ON CLUSTER statement (which would wait for the
    // dead server) and is ready at once; its flows are stored.
    cluster.kill("s2r2");
    let spool_c = tempfile::tempdir().unwrap();
    let c_started = Instant::now();
    let store_c = ClickHouseStore::connect(config(&a_addr, &db, spool_c.path()))
        .await
        .expect("a store starts while a server of the cluster is down");
    assert!(
        c_started.elapsed() < Duration::from_secs(20),
        "ready in {:?}",
        c_started.elapsed()
    );
    let late = flows_of("node-4", 0, base);
    store_c.insert(late.clone()).await.expect("acknowledged");
    assert_eq!(store_c.stats().rows_spooled.load(Relaxed), 0);
    let ids: Vec<String> = late.iter().map(|f| format!("'{}'", f.id)).collect();
    assert_eq!(
        one_number(
            &a_addr,
            &format!(
                "SELECT count() FROM {db}.flows WHERE id IN ({})",
                ids.join(", ")
            )
        ),
        late.len() as u64
    );
}

/// What the writer relies on, checked on the real servers: the same block
/// inserted twice through a `Distributed` table (to another shard's server,
/// as another API server would) is stored once, and the rollups' views see it
/// once (18.16 pushes no deduplicated block into views); a different block
/// whose view rows are the same is counted.
async fn a_block_inserted_twice_is_stored_and_rolled_up_once(cluster: &LocalCluster) {
    let db = unique("nvclusterdedup");
    let spool = tempfile::tempdir().unwrap();
    let store = ClickHouseStore::connect(config(&cluster.server("s1r1").addr, &db, spool.path()))
        .await
        .unwrap();
    let base = now_nanos() - 600_000_000_000;
    let insert = async |addr: &str, ids: &[&str]| {
        // One INSERT of rows made from the same values.
        let values: Vec<String> = ids
            .iter()
            .map(|id| format!("('{id}', toDateTime({}), {base})", base / 1_000_000_000))
            .collect();
        clickhouse::Client::default()
            .with_url(format!("http://{addr}"))
            .with_setting("insert_distributed_sync", "1")
            .query(&format!(
                "INSERT INTO {db}.flows (id, last_seen, last_seen_ns) VALUES {}",
                values.join(", ")
            ))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("insert {ids:?} through {addr}: {e}"));
    };
    let (s1, s2) = (
        cluster.server("s1r1").addr.clone(),
        cluster.server("s2r2").addr.clone(),
    );
    insert(&s1, &["x/1", "x/2", "x/3", "x/4"]).await;
    insert(&s2, &["x/1", "x/2", "x/3", "x/4"]).await;
    insert(&s1, &["x/1", "x/2", "x/3", "x/4"]).await;
    // Other flows, the same rollup rows.
    insert(&s1, &["y/1"]).await;
    insert(&s2, &["y/2"]).await;
    replicas_in_step(cluster, &db).await;
    for s in [&s1, &s2] {
        assert_eq!(one_number(s, &format!("SELECT count() FROM {db}.flows")), 6);
        assert_eq!(
            one_number(s, &format!("SELECT sum(flows) FROM {db}.flows_by_minute")),
            6
        );
    }
    drop(store);
}
