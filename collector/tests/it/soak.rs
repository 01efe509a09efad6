//! A short chaos soak of the agent without the kernel: for a few seconds,
//! bursts of hostile traffic (a pod asking for random DNS names, a port scan
//! whose attempts the kernel drops, garbage ring buffer records through the
//! real decoder, ring buffer losses) go through a channel into an agent with
//! small bounds, exporting over gRPC to an in-test ingest server, while
//! Observer clients read and follow the ring (one follower never reads) and
//! `/metrics` is scraped over HTTP. It shows: nothing panics or stalls, what
//! correlation and aggregation hold stays within their bounds at every scrape,
//! their evictions are counted, every kernel loss is counted by kind and
//! cause, and every record is acknowledged (or counted dropped) exactly once.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use netverdict_cluster::Source;
use netverdict_cluster::manifests::ManifestOptions;
use netverdict_collector::agent::{Agent, AgentConfig, EventSource};
use netverdict_collector::pipeline::PipelineConfig;
use netverdict_ebpf::{
    Decoder, DropReasons, Event, EventKind, FiveTuple, IpProtocol, LossCause, Meta, StreamError,
    StreamItem, TrafficDirection, abi, dns,
};
use netverdict_proto::v1 as pb;
use netverdict_testing::metrics::Scrape;
use netverdict_testing::{scrape, seed};
use pb::ingest_server::{Ingest, IngestServer};
use pb::observer_client::ObserverClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How long the traffic runs.
const SOAK: Duration = Duration::from_secs(3);
/// The bounds of correlation and aggregation in the soak.
const CORRELATION_MAX_BYTES: usize = 128 * 1024;
const AGGREGATION_MAX_BYTES: usize = 256 * 1024;

/// An ingest server that stores every flow and acknowledges every batch.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<pb::Flow>>>);

#[tonic::async_trait]
impl Ingest for Store {
    type PushStream = ReceiverStream<Result<pb::Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<pb::FlowBatch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(64);
        let store = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                store.lock().unwrap().extend(batch.flows);
                let ack = pb::Ack {
                    sequence: batch.sequence,
                    ..Default::default()
                };
                if acks.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn start_ingest() -> (SocketAddr, Store) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Store::default();
    let service = IngestServer::new(store.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, store)
}

fn sample(samples: &Scrape, series: &str) -> u64 {
    samples.value(series) as u64
}

/// The sum of a family's samples whose labels contain `label`.
fn sum(samples: &Scrape, family: &str, label: &str) -> u64 {
    samples
        .samples()
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{family}{{")) && series.contains(label))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn meta(direction: TrafficDirection) -> Meta {
    Meta {
        time: SystemTime::now(),
        mono_ns: 1,
        netns: 4026532000,
        ifindex: None,
        direction,
    }
}

fn sa(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

/// What the generator sent, to check the counters against.
#[derive(Debug, Default)]
struct Sent {
    events: u64,
    lost_ring_buffer: u64,
    lost_decode: u64,
}

/// One burst: random-name DNS queries from shop/np-client, a scan of its
/// dropped attempts, garbage records and a ring buffer loss.
fn burst(rng: &mut Rng, decoder: &Decoder, n: usize, sent: &mut Sent) -> Vec<StreamItem> {
    let client = [10, 244, 2, 20];
    let dns_server = sa([10, 96, 0, 10], 53);
    let mut out = Vec::with_capacity(n * 3);
    for _ in 0..n {
        let r = rng.next();
        let port = 1024 + (r % 60_000) as u16;
        let name = format!("{:016x}.random.example.com", rng.next());
        let query = dns::build_query(r as u16, &name, 1);
        out.push(StreamItem::Event(Event::Dns {
            meta: meta(TrafficDirection::Egress),
            tuple: FiveTuple {
                protocol: IpProtocol::Udp,
                src: sa(client, port),
                dst: dns_server,
            },
            message: dns::parse(&query).unwrap(),
        }));
        let tuple = FiveTuple {
            protocol: IpProtocol::Tcp,
            src: sa(client, 30_000 + (r >> 16) as u16 % 30_000),
            dst: sa([10, 244, 1, 10], port),
        };
        out.push(StreamItem::Event(Event::TcpAttempt {
            meta: meta(TrafficDirection::Egress),
            tuple,
            sock_id: rng.next(),
        }));
        out.push(StreamItem::Event(Event::Drop {
            meta: meta(TrafficDirection::Unknown),
            tuple,
            reason: Some("NETFILTER_DROP".into()),
            reason_code: 12,
            len: 60,
            location: 0,
            location_symbol: None,
            tcp_flags: 2,
            dns: None,
            icmp: None,
        }));
        sent.events += 3;
        // Garbage: a record of random bytes with a plausible kind and family,
        // through the real decoder.
        let mut record: Vec<u8> = (0..96 + rng.next() % 64)
            .map(|_| rng.next() as u8)
            .collect();
        record[16..18].copy_from_slice(&(rng.next() % 7).to_ne_bytes()[..2]);
        record[19] = [2, 10, 0][(rng.next() % 3) as usize];
        match decoder.decode(&record) {
            Ok((first, second)) => {
                for event in std::iter::once(first).chain(second) {
                    sent.events += 1;
                    out.push(StreamItem::Event(event));
                }
            }
            Err(_) => {
                sent.lost_decode += 1;
                out.push(StreamItem::Lost {
                    kind: EventKind::from_abi(abi::kind_of(&record)),
                    count: 1,
                    cause: LossCause::DecodeError,
                });
            }
        }
    }
    let lost = rng.next() % 1000;
    sent.lost_ring_buffer += lost;
    out.push(StreamItem::Lost {
        kind: EventKind::Dns,
        count: lost,
        cause: LossCause::RingBufferFull,
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_soak_stays_bounded_and_counts_every_loss() {
    let (ingest, store) = start_ingest().await;
    let (events, events_rx) = mpsc::channel::<Result<StreamItem, StreamError>>(8192);
    let files = seed::paths(&["api-from-web"]);
    let mut config = AgentConfig::new("node-a", Source::Manifests(ManifestOptions::new(files)));
    config.events = EventSource::Channel(events_rx);
    config.observer_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.export_to(format!("http://{ingest}"));
    config.ring_size = 2_000;
    config.pipeline = PipelineConfig {
        correlation_max_bytes: CORRELATION_MAX_BYTES,
        aggregation_max_bytes: AGGREGATION_MAX_BYTES,
        tick: Duration::from_millis(100),
        ..PipelineConfig::default()
    };
    let agent = Agent::start(config).await.expect("agent starts");
    let metrics = agent.metrics_addr().expect("metrics served");
    let observer = format!("http://{}", agent.observer_addr().expect("observer served"));

    // A follower that never reads: it must not hold up the pipeline.
    let mut stalled = ObserverClient::connect(observer.clone()).await.unwrap();
    let _stalled = stalled
        .get_flows(pb::GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Readers: GetFlows and scrapes in a loop until the traffic ends; the
    // slowest answer of each, and the most held at any scrape.
    let done = Arc::new(tokio::sync::Notify::new());
    let readers = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut client = ObserverClient::connect(observer).await.unwrap();
            let (mut slowest_get, mut slowest_scrape) = (Duration::ZERO, Duration::ZERO);
            let (mut most_correlation, mut most_aggregation) = (0, 0);
            let mut rounds = 0u64;
            loop {
                let started = Instant::now();
                let mut stream = client
                    .get_flows(pb::GetFlowsRequest {
                        number: 500,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                while stream.message().await.unwrap().is_some() {}
                slowest_get = slowest_get.max(started.elapsed());
                let started = Instant::now();
                let samples = scrape(metrics).await;
                slowest_scrape = slowest_scrape.max(started.elapsed());
                let held = "netverdict_collector_held_bytes";
                most_correlation = most_correlation.max(sample(
                    &samples,
                    &format!("{held}{{stage=\"correlation\"}}"),
                ));
                most_aggregation = most_aggregation.max(sample(
                    &samples,
                    &format!("{held}{{stage=\"aggregation\"}}"),
                ));
                rounds += 1;
                tokio::select! {
                    () = done.notified() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            (
                rounds,
                slowest_get,
                slowest_scrape,
                most_correlation,
                most_aggregation,
            )
        })
    };

    // The traffic: bursts of 500 rounds (about 2,000 items) as fast as the
    // channel takes them, for SOAK.
    let decoder = Decoder::new(Arc::new(DropReasons::from_pairs([(12, "NETFILTER_DROP")])));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = Sent::default();
    let started = Instant::now();
    let mut bursts = 0;
    while started.elapsed() < SOAK {
        for item in burst(&mut rng, &decoder, 500, &mut sent) {
            events.send(Ok(item)).await.expect("the pipeline runs");
        }
        bursts += 1;
        // A pause between bursts, so that ticks and readers interleave.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let traffic = started.elapsed();
    let report = tokio::time::timeout(Duration::from_secs(60), agent.flush())
        .await
        .expect("the flush ends within 60 s")
        .expect("flush");
    done.notify_one();
    let (rounds, slowest_get, slowest_scrape, most_correlation, most_aggregation) =
        tokio::time::timeout(Duration::from_secs(30), readers)
            .await
            .expect("the readers end")
            .expect("the readers do not panic");
    let samples = scrape(metrics).await;
    let export = report.export.expect("exporting");
    eprintln!(
        "soak: {bursts} bursts, {} events ({:.0}/s) and {} + {} lost in {traffic:.2?}; \
         {} records acknowledged; {rounds} reader rounds, slowest GetFlows {slowest_get:.2?}, \
         slowest scrape {slowest_scrape:.2?}; held at most {most_correlation} B (correlation), \
         {most_aggregation} B (aggregation); evicted {} (correlation), {} (aggregation)",
        sent.events,
        sent.events as f64 / traffic.as_secs_f64(),
        sent.lost_ring_buffer,
        sent.lost_decode,
        export.flows_acked,
        sample(
            &samples,
            "netverdict_collector_held_evictions_total{stage=\"correlation\"}"
        ),
        sample(
            &samples,
            "netverdict_collector_held_evictions_total{stage=\"aggregation\"}"
        ),
    );

    // Nothing stalled: the readers went round while the traffic ran.
    assert!(rounds >= 3, "{rounds} reader rounds");
    // Within the bounds at every scrape, and the bounds were reached.
    assert!(most_correlation <= CORRELATION_MAX_BYTES as u64);
    assert!(most_aggregation <= AGGREGATION_MAX_BYTES as u64);
    for stage in ["correlation", "aggregation"] {
        let evicted = sample(
            &samples,
            &format!("netverdict_collector_held_evictions_total{{stage=\"{stage}\"}}"),
        );
        assert!(evicted > 0, "{stage}: no eviction");
    }
    // Every event taken, every loss counted by cause.
    assert_eq!(
        sample(&samples, "netverdict_collector_kernel_events_total"),
        sent.events
    );
    let lost = "netverdict_collector_kernel_events_lost_total";
    assert_eq!(
        sum(&samples, lost, "cause=\"ring_buffer_full\""),
        sent.lost_ring_buffer
    );
    assert_eq!(
        sum(&samples, lost, "cause=\"decode_error\""),
        sent.lost_decode
    );
    assert!(sent.lost_decode > 0, "the garbage was all decodable");
    // Every record acknowledged or counted dropped, each once.
    let flows = "netverdict_collector_flows_total";
    let records = sum(&samples, flows, "verdict=")
        + sample(
            &samples,
            "netverdict_collector_flows_counted_elsewhere_total",
        );
    assert_eq!(records, agent.pipeline().lock().await.counters().records);
    assert_eq!(export.flows_acked + export.flows_dropped, records);
    {
        let stored = store.0.lock().unwrap();
        assert_eq!(stored.len() as u64, export.flows_acked);
        let ids: BTreeSet<&str> = stored.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids.len(), stored.len(), "a record stored twice");
    }
    agent.shutdown().await.expect("a clean shutdown");
}
