//! Measures the spool replay's memory: `fill` spools flows (a store whose
//! ClickHouse does not answer), `replay` starts a store on a live ClickHouse
//! with that spool and reports the process's peak resident memory while the
//! spool is replayed, and its size before.
//!
//! ```sh
//! cargo run -p netverdict-api --example spool_replay -- fill /tmp/spool 2000000
//! cargo run -p netverdict-api --example spool_replay -- replay /tmp/spool http://127.0.0.1:8123 nvreplay
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::Store;
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn spool_bytes(dir: &PathBuf) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn flow(i: u64, now: i64) -> pb::Flow {
    let endpoint = |ns: &str, pod: &str, port: u32| pb::Endpoint {
        ip: format!("10.{}.{}.{}", i % 200, (i / 200) % 250, i % 250),
        port,
        kind: pb::EndpointKind::Pod as i32,
        namespace: ns.into(),
        pod_name: format!("{pod}-{}", i % 50),
        workload: pod.into(),
        labels: [("app".to_string(), pod.to_string())].into(),
        node_name: "node-a".into(),
    };
    let at = UnixNanos::from_nanos(now - (i as i64 % 3_600) * 1_000_000_000).to_timestamp();
    pb::Flow {
        id: format!("node-a/replay/{i}"),
        first_seen: Some(at),
        last_seen: Some(at),
        count: 1,
        node_name: "node-a".into(),
        source: Some(endpoint("shop", "web", 40000)),
        destination: Some(endpoint("shop", "api", 8080)),
        protocol: pb::Protocol::Tcp as i32,
        verdict: pb::Verdict::Denied as i32,
        outcome: pb::Outcome::Dropped as i32,
        reason: "denied by shop/default-deny".into(),
        denied_by: vec![pb::PolicyRef {
            namespace: "shop".into(),
            name: "default-deny".into(),
            kind: pb::PolicyKind::NetworkPolicy as i32,
            tier: pb::PolicyTier::NetworkPolicy as i32,
        }],
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fill", dir, n] => {
            let n: u64 = n.parse().expect("a number of flows");
            let config = ClickHouseConfig {
                spool_max_bytes: 64 << 30,
                insert_attempts: 1,
                ..ClickHouseConfig::new("http://127.0.0.1:9", "nvreplay", *dir)
            };
            let store = ClickHouseStore::start(config)
                .await
                .expect("a spooling store");
            let now = UnixNanos::now().nanos_saturating();
            let started = Instant::now();
            for chunk in 0..n.div_ceil(10_000) {
                let flows = (chunk * 10_000..((chunk + 1) * 10_000).min(n))
                    .map(|i| flow(i, now))
                    .collect();
                store.insert(flows).await.expect("spooled");
            }
            println!(
                "spooled {n} flows, {} MiB, in {:?}",
                spool_bytes(&PathBuf::from(dir)) >> 20,
                started.elapsed()
            );
        }
        ["replay", dir, url, db] => {
            let dir = PathBuf::from(dir);
            let bytes = spool_bytes(&dir);
            let before = peak_rss_mib();
            let config = ClickHouseConfig::new(*url, *db, &dir);
            let started = Instant::now();
            let store = ClickHouseStore::connect(config)
                .await
                .expect("ClickHouse answers");
            let stats = store.stats();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let left = std::fs::read_dir(&dir)
                    .expect("the spool")
                    .filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "nvs"));
                if !left {
                    break;
                }
            }
            println!(
                "replayed {} flows ({} MiB of spool) in {:?}; peak RSS {:.0} MiB (before the store: {:.0} MiB)",
                stats
                    .rows_replayed
                    .load(std::sync::atomic::Ordering::Relaxed),
                bytes >> 20,
                started.elapsed(),
                peak_rss_mib(),
                before
            );
        }
        _ => {
            eprintln!("usage: spool_replay fill DIR FLOWS | replay DIR URL DATABASE");
            std::process::exit(2);
        }
    }
}
