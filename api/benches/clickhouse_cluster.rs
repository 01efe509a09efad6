//! Cluster mode's ingest figure: flows per second through the ClickHouse
//! store into 2 shards against 1, on the local cluster
//! `scripts/start-clickhouse-cluster.sh` starts (2 shards x 2 replicas and
//! ZooKeeper, in a temporary directory, killed at the end): the store talks to
//! s1r1 with `--clickhouse-cluster netverdict` (2 shards) and, in another
//! database, `netverdict_one_shard` (shard 1's two replicas). Eight collectors
//! insert batches of 1 000 flows at once (each batch one INSERT, the cluster
//! writer's unit) until `NETVERDICT_BENCH_FLOWS` flows (default 200 000) are
//! acknowledged; `NETVERDICT_BENCH_ROUNDS` rounds (default 2), the order
//! alternating. Every server runs on this machine, so the figure says how the
//! layouts compare here, not what separate machines would do.
//!
//! Run with `cargo bench -p netverdict-api --bench clickhouse_cluster`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::Store;
use netverdict_testing::clickhouse::{LocalCluster, http_sql, unique};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

const COLLECTORS: u64 = 8;
const BATCH: u64 = 1_000;

/// Flows per second of `n` flows inserted by [`COLLECTORS`] concurrent
/// collectors into a fresh database on `cluster_name`, through s1r1.
async fn rate(cluster: &LocalCluster, cluster_name: &str, n: u64) -> f64 {
    let db = unique("nvbench_cluster");
    let spool = tempfile::tempdir().expect("a spool directory");
    let addr = &cluster.server("s1r1").addr;
    let store = Arc::new(
        ClickHouseStore::connect(ClickHouseConfig {
            cluster: Some(cluster_name.to_string()),
            batch_max_delay: Duration::from_millis(5),
            ..ClickHouseConfig::new(format!("http://{addr}"), &db, spool.path())
        })
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} ({cluster_name}): {e}")),
    );
    let end = SystemTime::now() - Duration::from_secs(60);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..COLLECTORS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c * BATCH;
            while i < n {
                let flows = (i..(i + BATCH).min(n))
                    .map(|k| support::spread_flow(k, n, end, Duration::from_secs(3600)))
                    .collect();
                store.insert(flows).await.expect("batch acknowledged");
                i += COLLECTORS * BATCH;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a collector task");
    }
    let elapsed = started.elapsed();
    // Every flow readable once the replicas have fetched what the other
    // replica of their shard took (a read may ask either).
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = http_sql(addr, &format!("SELECT count() FROM {db}.flows"))
            .unwrap_or_else(|e| panic!("{e}"));
        if stored.trim() == n.to_string() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        stored.trim(),
        n.to_string(),
        "every acknowledged flow stored"
    );
    assert!(
        store
            .stats()
            .rows_spooled
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0,
        "nothing spooled"
    );
    eprintln!(
        "  {cluster_name}: {n} flows acknowledged in {elapsed:?} ({} read back)",
        stored.trim()
    );
    let _ = http_sql(
        addr,
        &format!("DROP DATABASE IF EXISTS {db} ON CLUSTER {cluster_name}"),
    );
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; a filter or --list is not ours to answer.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_u64("NETVERDICT_BENCH_FLOWS", 200_000);
    let rounds = env_u64("NETVERDICT_BENCH_ROUNDS", 2);
    let cluster = LocalCluster::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let one = format!("{}_one_shard", LocalCluster::NAME);
    for round in 1..=rounds {
        let (mut two_rate, mut one_rate) = (0.0, 0.0);
        let order: [&str; 2] = if round % 2 == 1 {
            [LocalCluster::NAME, &one]
        } else {
            [&one, LocalCluster::NAME]
        };
        for name in order {
            let r = runtime.block_on(rate(&cluster, name, n));
            if name == LocalCluster::NAME {
                two_rate = r;
            } else {
                one_rate = r;
            }
        }
        println!(
            "cluster round {round}: {n} flows, {COLLECTORS} collectors x {BATCH}-flow batches: \
             2 shards {two_rate:.0} flows/s, 1 shard {one_rate:.0} flows/s, ratio {:.2}",
            two_rate / one_rate
        );
    }
}
