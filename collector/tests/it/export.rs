//! The exporter against an in-test `Ingest` server on a real TCP socket: batching
//! and acknowledgements, reconnection and resending after a server restart, the
//! bound while the server is down, and a server that never acknowledges.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netverdict_collector::export::{
    Backoff, ConnectionState, ExportCounters, ExportStats, Exporter, ExporterConfig,
};
use netverdict_proto::v1 as pb;
use netverdict_testing::free_addr;
use pb::ingest_server::{Ingest, IngestServer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// One batch as a server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    node_name: String,
    sequence: u64,
    ids: Vec<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[derive(Clone)]
struct TestIngest {
    log: Log,
    ack: bool,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Ingest for TestIngest {
    type PushStream = ReceiverStream<Result<pb::Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<pb::FlowBatch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(64);
        let (log, ack, mut stop) = (self.log.clone(), self.ack, self.stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = inbound.message() => {
                        let Ok(Some(batch)) = batch else { break };
                        log.lock().unwrap().push(Seen {
                            node_name: batch.node_name.clone(),
                            sequence: batch.sequence,
                            ids: batch.flows.iter().map(|f| f.id.clone()).collect(),
                        });
                        let reply = pb::Ack { sequence: batch.sequence };
                        if ack && acks.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running test server; [`Server::stop`] ends its streams and its listener.
struct Server {
    log: Log,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(addr: SocketAddr, ack: bool) -> Server {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let log = Log::default();
        let service = TestIngest {
            log: log.clone(),
            ack,
            stop: stop_rx.clone(),
        };
        let mut signal = stop_rx;
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(IngestServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = signal.changed().await;
                })
                .await
                .unwrap();
        });
        Server { log, stop, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    async fn stop(self) -> Vec<Seen> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
        self.log.lock().unwrap().clone()
    }
}

fn config(addr: SocketAddr, batch_size: usize, bound: usize) -> ExporterConfig {
    ExporterConfig {
        batch_size,
        batch_delay: Duration::from_millis(50),
        buffer_bound: bound,
        connect_timeout: Duration::from_secs(1),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            jitter: true,
        },
        ..ExporterConfig::new(format!("http://{addr}"), "node-a")
    }
}

fn flow(i: usize) -> pb::Flow {
    pb::Flow {
        id: format!("node-a/{i}"),
        ..Default::default()
    }
}

fn ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("node-a/{i}")).collect()
}

fn all_ids(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().flat_map(|s| s.ids.iter().cloned()).collect()
}

/// Starts an exporter; the returned sender plays the pipeline.
fn spawn_exporter(
    config: ExporterConfig,
) -> (mpsc::Sender<pb::Flow>, Arc<ExportCounters>, JoinHandle<()>) {
    let exporter = Exporter::new(config).unwrap();
    let counters = exporter.counters();
    // A small channel: the pipeline would block if the exporter stopped draining.
    let (tx, rx) = mpsc::channel(4);
    (tx, counters, tokio::spawn(exporter.run(rx)))
}

/// Sends flows as the pipeline does; each send must go through within 10 s.
async fn feed(tx: &mpsc::Sender<pb::Flow>, range: std::ops::Range<usize>) {
    for i in range {
        tokio::time::timeout(Duration::from_secs(10), tx.send(flow(i)))
            .await
            .expect("the exporter keeps draining the pipeline")
            .unwrap();
    }
}

/// Polls until `check` holds, for at most 10 s.
async fn eventually(
    what: &str,
    counters: &ExportCounters,
    mut check: impl FnMut(&ExportStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = counters.snapshot();
        if check(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn flows_are_batched_acknowledged_and_released() {
    let addr = free_addr();
    let server = Server::start(addr, true).await;
    let (tx, counters, run) = spawn_exporter(config(addr, 5, 1000));

    feed(&tx, 0..23).await;
    eventually("every flow acknowledged", &counters, |s| {
        s.flows_acked == 23 && s.buffered == 0
    })
    .await;

    let stats = counters.snapshot();
    assert_eq!(stats.flows_sent, 23);
    assert_eq!(stats.flows_dropped, 0);
    assert_eq!(stats.batches_resent, 0);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(stats.state, ConnectionState::Connected);

    let seen = server.seen();
    // Sequences start at 1 and increase by one per batch; batches hold at most 5.
    let sequences: Vec<u64> = seen.iter().map(|s| s.sequence).collect();
    assert_eq!(sequences, (1..=seen.len() as u64).collect::<Vec<_>>());
    assert!(seen.len() >= 5, "23 flows in batches of 5: {seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.ids.len() <= 5 && s.node_name == "node-a")
    );
    let received: Vec<String> = seen.iter().flat_map(|s| s.ids.clone()).collect();
    assert_eq!(received.len(), 23, "each flow once");
    assert_eq!(all_ids(&seen), ids(0..23));

    // The pipeline ends: the exporter returns once everything is acknowledged.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the exporter ends when its input closes")
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn reconnects_after_restart_and_resends_unacknowledged_batches() {
    let addr = free_addr();
    let (tx, counters, _run) = spawn_exporter(config(addr, 5, 1000));

    // First server: acknowledges everything.
    let first = Server::start(addr, true).await;
    feed(&tx, 0..10).await;
    eventually("the first 10 acknowledged", &counters, |s| {
        s.flows_acked == 10
    })
    .await;
    let first = first.stop().await;
    assert_eq!(all_ids(&first), ids(0..10));

    // While the server is down, the pipeline keeps flowing into the buffer.
    feed(&tx, 10..20).await;
    eventually("10 buffered while down", &counters, |s| {
        s.buffered == 10 && s.state != ConnectionState::Connected
    })
    .await;

    // Second server on the same port: stores but crashes before acknowledging.
    let second = Server::start(addr, false).await;
    let second_log = second.log.clone();
    eventually("the second server has the next 10", &counters, |_| {
        all_ids(&second_log.lock().unwrap()) == ids(10..20)
    })
    .await;
    let second = second.stop().await;
    assert_eq!(counters.snapshot().flows_acked, 10);

    // Third server: acknowledges; the unacknowledged batches come again.
    let third = Server::start(addr, true).await;
    eventually("all 20 acknowledged", &counters, |s| {
        s.flows_acked == 20 && s.buffered == 0
    })
    .await;
    let third = third.stop().await;

    let stats = counters.snapshot();
    assert!(stats.reconnects >= 2, "{stats:?}");
    assert_eq!(stats.flows_sent, 20);
    assert_eq!(stats.flows_dropped, 0);
    assert!(stats.batches_resent >= second.len() as u64, "{stats:?}");

    // Acknowledged flows are not sent again; the resent batches are the same
    // batches, same sequence and same ids, so the server can de-duplicate.
    assert!(
        third
            .iter()
            .all(|s| s.sequence > first.last().unwrap().sequence)
    );
    for batch in &second {
        assert!(
            third.contains(batch),
            "{batch:?} resent unchanged: {third:?}"
        );
    }
    assert_eq!(all_ids(&third), ids(10..20));
    let mut all = first.clone();
    all.extend(third);
    assert_eq!(all_ids(&all), ids(0..20), "every flow arrived");
}

#[tokio::test]
async fn past_the_bound_the_oldest_unsent_flows_are_dropped_and_counted() {
    let addr = free_addr();
    let (tx, counters, _run) = spawn_exporter(config(addr, 5, 10));

    // No server: 25 flows into a bound of 10.
    feed(&tx, 0..25).await;
    eventually("15 dropped, 10 held", &counters, |s| {
        s.flows_dropped == 15 && s.buffered == 10
    })
    .await;
    assert_ne!(counters.snapshot().state, ConnectionState::Connected);

    // The newest 10 were kept.
    let server = Server::start(addr, true).await;
    eventually("the kept 10 acknowledged", &counters, |s| {
        s.flows_acked == 10
    })
    .await;
    let seen = server.stop().await;
    assert_eq!(all_ids(&seen), ids(15..25));
    let stats = counters.snapshot();
    assert_eq!(stats.flows_dropped, 15);
    assert_eq!(stats.flows_sent, 10);
    assert_eq!(stats.buffered, 0);
}

#[tokio::test]
async fn a_server_that_never_acknowledges_keeps_the_buffer_bounded() {
    let addr = free_addr();
    let server = Server::start(addr, false).await;
    let (tx, counters, _run) = spawn_exporter(ExporterConfig {
        ack_timeout: Duration::from_millis(300),
        ..config(addr, 5, 20)
    });
    eventually("connected", &counters, |s| {
        s.state == ConnectionState::Connected
    })
    .await;

    for i in 0..100 {
        feed(&tx, i..i + 1).await;
        assert!(counters.snapshot().buffered <= 20);
    }
    // The first 20 fill the bound in sent batches; every later one is dropped.
    eventually("80 dropped, 20 held", &counters, |s| {
        s.flows_dropped == 80 && s.buffered == 20
    })
    .await;
    // Without acknowledgements the stream is given up and the batches resent.
    eventually("a resend after the ack timeout", &counters, |s| {
        s.batches_resent >= 4 && s.reconnects >= 1 && s.buffered == 20
    })
    .await;

    let stats = counters.snapshot();
    assert_eq!(stats.flows_acked, 0);
    assert_eq!(stats.flows_sent, 20);
    assert_eq!(stats.flows_dropped, 80);
    let seen = server.stop().await;
    assert_eq!(all_ids(&seen), ids(0..20));
    assert!(seen.iter().all(|s| (1..=4).contains(&s.sequence)));
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_is_given_up_and_retried() {
    // A TCP listener that accepts and then says nothing, not even HTTP/2 settings.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let (tx, counters, _run) = spawn_exporter(ExporterConfig {
        connect_timeout: Duration::from_millis(200),
        ..config(addr, 5, 10)
    });

    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .expect("the exporter gives up the silent connection and tries again")
            .unwrap();
    }
    // Meanwhile the pipeline is drained into the bound.
    feed(&tx, 0..30).await;
    eventually("20 dropped, 10 held", &counters, |s| {
        s.flows_dropped == 20 && s.buffered == 10
    })
    .await;
    assert_ne!(counters.snapshot().state, ConnectionState::Connected);
    silent.abort();
}
