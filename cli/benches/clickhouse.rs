//! The ClickHouse store end to end, against the server whose HTTP interface is
//! at `NETVERDICT_CLICKHOUSE_ADDR` (default 127.0.0.1:8123, native protocol on
//! `NETVERDICT_CLICKHOUSE_TCP_PORT`, default 9000; scripts/start-clickhouse.sh
//! starts one). Prints:
//!
//! 1. ingest: flows per second from the collector's `Exporter`, over gRPC on
//!    loopback, through the API server into ClickHouse, until every flow is
//!    acknowledged; then the same rows (read back from that table in the
//!    Native format) inserted by `clickhouse-client` into the `flows` table of
//!    a fresh database with the same schema and rollups; and the ratio of the
//!    two rates (the goal is at least 0.5). `NETVERDICT_BENCH_FLOWS` flows per
//!    round (default 200 000), `NETVERDICT_BENCH_ROUNDS` rounds (default 3),
//!    the order alternating. Each round also runs the pipeline over mutual
//!    TLS (the exporter with a collector certificate, the API server
//!    requiring it; certificates of `netverdict_tls::certs`) and prints the
//!    cost of TLS (the goal is under 10%); `NETVERDICT_BENCH_TLS=0` skips it.
//! 2. denied: the `denied` report over `NETVERDICT_BENCH_STORED` flows
//!    (default 10 000 000) spread over the last 24 hours, for 24 hours and for
//!    15 minutes, all namespaces and one; the median of 5 runs (the goal is
//!    under 1 s).
//!
//! `NETVERDICT_BENCH_ROUNDS=0` skips the ingest part; `NETVERDICT_BENCH_KEEP=1`
//! keeps the databases (to look at them with `clickhouse-client`; drop them
//! by hand afterwards).
//!
//! The databases are dropped at the end of the run, not between rounds: on
//! an ext4 without a journal (as on this project's test VM), creating a file
//! skips every inode deleted in the last minute (the last five while its
//! inode table block is dirty), one buffer lookup each, so a `DROP DATABASE`
//! of a round's thousands of part files made every INSERT of the next timed
//! run pay for the bench's own cleanup.
//!
//! Run with `cargo bench -p netverdict --bench clickhouse` (in the CLI crate, which
//! depends on both the collector and the API server). Every database
//! it creates is dropped at the end, also when it fails.

#[path = "../../api/benches/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::{ReportQuery, Store};
use netverdict_api::{ApiConfig, serve};
use netverdict_cluster::SharedState;
use netverdict_collector::export::{Exporter, ExporterConfig};
use netverdict_proto::v1 as pb;
use netverdict_tls::certs::{Pki, PkiOptions, write_pki};
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles};
use support::spread_flow;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The server under test, and the databases this run made (dropped on drop).
struct Server {
    http: String,
    tcp_port: String,
    spool: tempfile::TempDir,
    databases: Vec<String>,
}

impl Server {
    fn connect() -> Result<Server> {
        let server = Server {
            http: std::env::var("NETVERDICT_CLICKHOUSE_ADDR")
                .unwrap_or_else(|_| "127.0.0.1:8123".into()),
            tcp_port: std::env::var("NETVERDICT_CLICKHOUSE_TCP_PORT")
                .unwrap_or_else(|_| "9000".into()),
            spool: tempfile::tempdir()?,
            databases: Vec::new(),
        };
        server.sql("SELECT 1").with_context(|| {
            format!(
                "ClickHouse does not answer on {}: run scripts/start-clickhouse.sh",
                server.http
            )
        })?;
        Command::new("clickhouse-client")
            .arg("--version")
            .output()
            .context("clickhouse-client is missing: apt-get install clickhouse-client")?;
        Ok(server)
    }

    /// Runs SQL over HTTP; the body of the answer.
    fn sql(&self, sql: &str) -> Result<String> {
        let mut s = TcpStream::connect(&self.http)?;
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{sql}",
            self.http,
            sql.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        ensure!(head.contains(" 200 "), "{sql}: {body}");
        Ok(body.to_string())
    }

    /// A new database with the store's schema, and the store on it.
    async fn store(&mut self, name: &str) -> Result<ClickHouseStore> {
        let db = format!("nvbench_{name}_{}", std::process::id());
        self.sql(&format!("DROP DATABASE IF EXISTS {db}"))?;
        self.databases.push(db.clone());
        // The defaults a server runs with.
        let config = ClickHouseConfig::new(
            format!("http://{}", self.http),
            db,
            self.spool.path().join(name),
        );
        Ok(ClickHouseStore::connect(config).await?)
    }

    fn client(&self, query: &str) -> Command {
        let mut c = Command::new("clickhouse-client");
        let host = self.http.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        c.args(["--host", host, "--port", &self.tcp_port, "--query", query]);
        c
    }

    fn count(&self, db: &str) -> Result<u64> {
        Ok(self
            .sql(&format!("SELECT count() FROM {db}.flows"))?
            .trim()
            .parse()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if env_u64("NETVERDICT_BENCH_KEEP", 0) != 0 {
            eprintln!("kept databases: {}", self.databases.join(", "));
            return;
        }
        for db in &self.databases {
            let _ = self.sql(&format!("DROP DATABASE IF EXISTS {db}"));
        }
    }
}

/// Flows per second from an exporter through the API server into `store`,
/// over mutual TLS with `pki`'s certificates, else in plaintext.
async fn through_the_pipeline(
    store: ClickHouseStore,
    flows: Vec<pb::Flow>,
    pki: Option<&Pki>,
) -> Result<f64> {
    let n = flows.len() as u64;
    let api = serve(
        ApiConfig {
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: None,
            tls: pki.map(|pki| ServerTlsFiles {
                cert: pki.api.cert.clone(),
                key: pki.api.key.clone(),
                client_ca: Some(pki.api.ca.clone()),
            }),
            ..Default::default()
        },
        store,
        SharedState::default(),
    )
    .await?;
    // A node agent's settings, with room for the whole run.
    let mut config = ExporterConfig::new(api.grpc_addr().to_string(), "bench-node");
    config.buffer_bound = config.buffer_bound.max(flows.len());
    config.tls = pki.map(|pki| {
        let node = &pki.collectors[0].1;
        ClientTlsFiles {
            ca: node.ca.clone(),
            cert: Some(node.cert.clone()),
            key: Some(node.key.clone()),
            server_name: None,
        }
    });
    let exporter = Exporter::new(config)?;
    let counters = exporter.counters();
    let (tx, rx) = tokio::sync::mpsc::channel(8192);
    let started = Instant::now();
    let run = tokio::spawn(exporter.run(rx));
    tokio::spawn(async move {
        for f in flows {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    let deadline = started + Duration::from_secs(600);
    while counters.snapshot().flows_acked < n {
        ensure!(
            Instant::now() < deadline,
            "not every flow acknowledged in 10 minutes: {:?}",
            counters.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let stats = counters.snapshot();
    ensure!(
        stats.flows_dropped == 0,
        "the exporter dropped flows: {stats:?}"
    );
    run.abort();
    api.shutdown().await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Flows per second of `clickhouse-client` inserting `native` into `db.flows`.
fn through_the_client(server: &Server, db: &str, native: &[u8], n: u64) -> Result<f64> {
    let started = Instant::now();
    let mut child = server
        .client(&format!("INSERT INTO {db}.flows FORMAT Native"))
        .stdin(Stdio::piped())
        .spawn()
        .context("running clickhouse-client")?;
    child.stdin.take().unwrap().write_all(native)?;
    let status = child.wait()?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "clickhouse-client INSERT: {status}");
    ensure!(
        server.count(db)? == n,
        "clickhouse-client stored another count"
    );
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn ingest(server: &mut Server) -> Result<()> {
    let n = env_u64("NETVERDICT_BENCH_FLOWS", 200_000);
    let rounds = env_u64("NETVERDICT_BENCH_ROUNDS", 3);
    let certs = tempfile::tempdir()?;
    let pki = if env_u64("NETVERDICT_BENCH_TLS", 1) == 0 {
        None
    } else {
        Some(write_pki(
            certs.path(),
            &PkiOptions {
                nodes: vec!["bench-node".into()],
                ..Default::default()
            },
        )?)
    };
    if rounds == 0 {
        println!("ingest: skipped (NETVERDICT_BENCH_ROUNDS=0)");
        return Ok(());
    }
    let mut ratios = Vec::new();
    let mut tls_costs = Vec::new();
    for round in 0..rounds {
        let now = SystemTime::now();
        // Unique ids per round: node-*/<round>/<i>.
        let flows: Vec<pb::Flow> = (0..n)
            .map(|i| {
                let mut f = spread_flow(i, n, now, Duration::from_secs(60));
                f.id = format!("bench-node/{round}/{i}");
                f.node_name = "bench-node".into();
                f
            })
            .collect();
        let piped = server.store(&format!("piped{round}")).await?;
        let piped_db = piped.database().to_string();
        let piped_stats = piped.stats();
        let direct = server.store(&format!("direct{round}")).await?;
        let direct_db = direct.database().to_string();
        drop(direct);
        // The store alone (Store::insert of the whole run, no gRPC) makes the
        // rows the client inserts.
        let alone = server.store(&format!("alone{round}")).await?;
        let alone_db = alone.database().to_string();
        let t = Instant::now();
        alone.insert(flows.clone()).await?;
        let alone_rate = n as f64 / t.elapsed().as_secs_f64();
        drop(alone);
        let native = native_rows(server, &alone_db)?;
        let tls_store = match &pki {
            Some(_) => Some(server.store(&format!("tls{round}")).await?),
            None => None,
        };
        let tls_db = tls_store.as_ref().map(|s| s.database().to_string());
        // The TLS run goes first in odd rounds, last in even ones.
        let mut tls_rate = None;
        if round % 2 == 1
            && let Some(store) = tls_store.clone()
        {
            tls_rate = Some(through_the_pipeline(store, flows.clone(), pki.as_ref()).await?);
        }
        let (pipeline_rate, client_rate) = if round % 2 == 0 {
            let pipeline_rate = through_the_pipeline(piped, flows.clone(), None).await?;
            let client_rate = through_the_client(server, &direct_db, &native, n)?;
            (pipeline_rate, client_rate)
        } else {
            let client_rate = through_the_client(server, &direct_db, &native, n)?;
            let pipeline_rate = through_the_pipeline(piped, flows.clone(), None).await?;
            (pipeline_rate, client_rate)
        };
        if round % 2 == 0
            && let Some(store) = tls_store
        {
            tls_rate = Some(through_the_pipeline(store, flows, pki.as_ref()).await?);
        }
        if let (Some(rate), Some(db)) = (tls_rate, &tls_db) {
            ensure!(
                server.count(db)? == n,
                "the pipeline over TLS stored another count"
            );
            let cost = 1.0 - rate / pipeline_rate;
            println!(
                "ingest round {}: over mutual TLS {rate:.0} flows/s, plaintext {pipeline_rate:.0} flows/s: TLS costs {:.1}%",
                round + 1,
                cost * 100.0
            );
            tls_costs.push(cost);
        }
        ensure!(
            server.count(&piped_db)? == n,
            "the pipeline stored another count"
        );
        let ratio = pipeline_rate / client_rate;
        let inserts = piped_stats
            .batches_inserted
            .load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "ingest round {}: {n} flows: collector -> gRPC -> API server -> ClickHouse {:.0} flows/s \
             in {inserts} INSERTs; clickhouse-client (Native) {:.0} flows/s; ratio {ratio:.2} \
             (Store::insert alone {:.0} flows/s)",
            round + 1,
            pipeline_rate,
            client_rate,
            alone_rate
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ingest: median ratio {:.2} over {rounds} rounds (goal >= 0.5)",
        ratios[ratios.len() / 2]
    );
    if !tls_costs.is_empty() {
        tls_costs.sort_by(f64::total_cmp);
        println!(
            "ingest: median cost of mutual TLS {:.1}% over {rounds} rounds (goal < 10%)",
            tls_costs[tls_costs.len() / 2] * 100.0
        );
    }
    Ok(())
}

fn native_rows(server: &Server, db: &str) -> Result<Vec<u8>> {
    let out = server
        .client(&format!("SELECT * FROM {db}.flows FORMAT Native"))
        .output()?;
    ensure!(
        out.status.success(),
        "clickhouse-client SELECT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

async fn denied(server: &mut Server) -> Result<()> {
    let stored = env_u64("NETVERDICT_BENCH_STORED", 10_000_000);
    let seed = stored.min(100_000);
    let store = server.store("denied").await?;
    let db = store.database().to_string();
    let started = Instant::now();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let flows: Vec<pb::Flow> = (0..seed).map(|i| spread_flow(i, seed, now, day)).collect();
    for chunk in flows.chunks(50_000) {
        store.insert(chunk.to_vec()).await?;
    }
    // Copies with new ids (same times, so still spread over the day) until
    // `stored`: INSERT ... SELECT, which the rollups see like any insert.
    let columns: Vec<String> = server
        .sql(&format!("DESCRIBE TABLE {db}.flows FORMAT TSV"))?
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    let mut have = seed;
    let mut step = 0;
    while have < stored {
        step += 1;
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if c == "id" {
                    format!("concat(id, '+{step}') AS id")
                } else {
                    c.clone()
                }
            })
            .collect();
        server.sql(&format!(
            "INSERT INTO {db}.flows SELECT {} FROM {db}.flows LIMIT {}",
            select.join(", "),
            (stored - have).min(have)
        ))?;
        have = server.count(&db)?;
    }
    if have != stored {
        bail!("stored {have} flows, wanted {stored}");
    }
    println!(
        "denied: {stored} flows over 24 h stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let queries = [
        ("24 h, all namespaces", day, vec![]),
        ("24 h, -n web", day, vec!["web".to_string()]),
        ("15 min, all namespaces", Duration::from_secs(900), vec![]),
        (
            "15 min, -n web",
            Duration::from_secs(900),
            vec!["web".to_string()],
        ),
    ];
    for (what, window, namespaces) in queries {
        let q = ReportQuery {
            window: netverdict_proto::time::TimeWindow::from_system(
                Some(SystemTime::now() - window),
                None,
            ),
            namespaces,
            labels: Vec::new(),
            limit: 50,
        };
        let mut times = Vec::new();
        let mut groups = 0;
        for _ in 0..5 {
            let t = Instant::now();
            groups = store.denied(&q).await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "denied over {stored} flows, {what}: median {:.1} ms (min {:.1}, max {:.1}), {groups} groups (goal < 1 s)",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either: this benchmark runs only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the ClickHouse benchmark runs under `cargo bench` only");
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let mut server = Server::connect()?;
    rt.block_on(async {
        ingest(&mut server).await?;
        denied(&mut server).await
    })
}
