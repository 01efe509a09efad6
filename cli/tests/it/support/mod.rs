//! Shared by the CLI's tests: running the `netverdict` binary, and the
//! collector's exporter feeding an API server.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use netverdict_collector::export::{Backoff, ExportCounters, Exporter, ExporterConfig};
use netverdict_proto::v1 as pb;
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
