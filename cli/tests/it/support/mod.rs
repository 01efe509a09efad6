//! Shared by the CLI's tests: running the `netverdict` binary (and
//! `netverdict api` over ClickHouse as a process), and the collector's
//! exporter feeding an API server.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use netverdict_collector::export::{Backoff, ExportCounters, Exporter, ExporterConfig};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use tokio::sync::mpsc;

/// Runs `netverdict` with `args`, no stdin, and waits for it.
pub fn netverdict(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("netverdict runs")
}

/// [`netverdict`] off the async runtime's threads.
pub async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netverdict(&args)
    })
    .await
    .unwrap()
}

/// The standard output of a run that must have succeeded (else its status
/// and stderr fail the test).
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A running collector exporter to the API server at `endpoint`
/// (`http://host:port`), sending batches of up to `batch_size` flows, quick
/// to retry: the returned sender plays the collector's pipeline.
pub fn spawn_exporter(
    endpoint: String,
    batch_size: usize,
) -> (mpsc::Sender<pb::Flow>, Arc<ExportCounters>) {
    let mut config = ExporterConfig::new(endpoint, "node-a");
    config.batch_size = batch_size;
    config.batch_delay = Duration::from_millis(20);
    config.ack_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(2);
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(500),
        jitter: false,
    };
    let exporter = Exporter::new(config).expect("a valid exporter configuration");
    let counters = exporter.counters();
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(exporter.run(rx));
    (tx, counters)
}

/// A `netverdict api` process, SIGKILLed by the guard (also on panic).
pub struct ApiProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

impl ApiProcess {
    /// Starts the server on `listen` and waits (up to 60 s) until it says
    /// where it serves.
    pub fn start(db: &TestDb, listen: SocketAddr) -> ApiProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
            .args(["api", "--listen", &listen.to_string()])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--store-check-interval", "100ms"])
            .args(["--clickhouse", &format!("http://{}", db.addr)])
            .args(["--clickhouse-database", &db.name])
            .arg("--spool-dir")
            .arg(db.spool.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netverdict api starts");
        // Stderr is read on a thread until the process ends, so that the
        // server never blocks on a full pipe; the first lines come back here.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std_mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let (grpc, metrics) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("netverdict api: gRPC on ") {
                        let (grpc, metrics) = rest.split_once(", metrics on http://").unwrap();
                        let metrics = metrics.trim_end_matches("/metrics");
                        break (grpc.parse().unwrap(), metrics.parse().unwrap());
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "netverdict api did not start within 60 s; it printed:\n{}",
                        seen.join("\n")
                    );
                }
            }
        };
        ApiProcess {
            child,
            grpc,
            metrics,
        }
    }

    /// SIGKILL: no shutdown, no flushing, whatever was in flight is cut.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
