//! The agent end to end without the kernel: decoded events replayed through a
//! channel, the seed guide's cluster from manifests, export to the API server
//! over a memory store, the Observer over a real TCP socket and `/metrics`
//! scraped over HTTP and parsed. `flush` makes every step deterministic (no
//! sleeps).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use netverdict_cluster::Source;
use netverdict_cluster::manifests::ManifestOptions;
use netverdict_collector::agent::{Agent, AgentConfig, EventSource};
use netverdict_collector::aggregate::Windows;
use netverdict_collector::pipeline::PipelineConfig;
use netverdict_ebpf::{
    Event, EventKind, FiveTuple, IpProtocol, LossCause, Meta, StreamError, StreamItem, TcpOutcome,
    TrafficDirection,
};
use netverdict_proto::v1 as pb;
use netverdict_testing::grpc::get_flows;
use netverdict_testing::{api, free_addr, http, scrape, seed};
use tokio::sync::mpsc;

fn at(ms: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(60) + Duration::from_millis(ms)
}

fn meta(ms: u64, direction: TrafficDirection) -> Meta {
    Meta {
        time: at(ms),
        mono_ns: ms * 1_000_000,
        netns: 4026532000,
        ifindex: None,
        direction,
    }
}

fn sa(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

/// One TCP attempt and its outcome, with `drops` NETFILTER drops after DNAT.
fn attempt(
    ms: u64,
    sock_id: u64,
    src: SocketAddr,
    dst: SocketAddr,
    backend: SocketAddr,
    outcome: TcpOutcome,
    drops: u64,
) -> Vec<Event> {
    let tuple = FiveTuple {
        protocol: IpProtocol::Tcp,
        src,
        dst,
    };
    let mut out = vec![Event::TcpAttempt {
        meta: meta(ms, TrafficDirection::Egress),
        tuple,
        sock_id,
    }];
    for i in 0..drops {
        out.push(Event::Drop {
            meta: meta(ms + 1 + i, TrafficDirection::Unknown),
            tuple: FiveTuple {
                protocol: IpProtocol::Tcp,
                src,
                dst: backend,
            },
            reason: Some("NETFILTER_DROP".into()),
            reason_code: 12,
            len: 60,
            location: 0,
            location_symbol: None,
            tcp_flags: 2,
            dns: None,
            icmp: None,
        });
    }
    out.push(Event::TcpOutcome {
        meta: meta(ms + 10, TrafficDirection::Egress),
        tuple,
        sock_id,
        outcome,
        errno: 0,
        retransmits: 0,
        old_state: 2,
        new_state: 7,
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_replays_events_into_ring_observer_export_and_metrics() {
    let store = api::memory(10_000);
    let ingest = api::serve(store.clone()).await;
    let (events, events_rx) = mpsc::channel::<Result<StreamItem, StreamError>>(1024);
    let files = seed::paths(&["api-from-web"]);
    let mut config = AgentConfig::new("node-a", Source::Manifests(ManifestOptions::new(files)));
    config.events = EventSource::Channel(events_rx);
    config.observer_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.export_to(api::url(&ingest));
    config.pipeline = PipelineConfig {
        // Long windows: only `flush` closes them.
        windows: Windows {
            allowed: Duration::from_secs(3600),
            denied: Duration::from_secs(3600),
        },
        ..PipelineConfig::default()
    };
    let agent = Agent::start(config).await.expect("agent starts");

    // shop/np-client -> api Service, three denied attempts dropped by the
    // kernel; default/np-client (team=web) -> api once, allowed and established.
    let shop = [10, 244, 2, 20];
    let web = [10, 244, 1, 20];
    let service = sa([10, 96, 1, 10], 8080);
    let backend = sa([10, 244, 1, 10], 8080);
    let mut replay = Vec::new();
    for i in 0..3u16 {
        replay.extend(attempt(
            u64::from(i) * 100,
            u64::from(i) + 1,
            sa(shop, 40000 + i),
            service,
            backend,
            TcpOutcome::NoAnswer,
            2,
        ));
    }
    replay.extend(attempt(
        500,
        9,
        sa(web, 41000),
        service,
        backend,
        TcpOutcome::Established,
        0,
    ));
    for event in replay {
        events.send(Ok(StreamItem::Event(event))).await.unwrap();
    }
    events
        .send(Ok(StreamItem::Lost {
            kind: EventKind::Dns,
            count: 4,
            cause: LossCause::RingBufferFull,
        }))
        .await
        .unwrap();

    let report = agent.flush().await.expect("flush");
    assert_eq!(report.records, 2, "{report:?}");
    let export = report.export.expect("exporting");
    assert_eq!(export.flows_acked, 2, "{export:?}");
    assert_eq!(api::stored_ids(&*store).await.len(), 2);

    // The ring over the Observer API, on a real socket.
    let observer = agent.observer_addr().expect("observer served");
    let request = pb::GetFlowsRequest {
        number: 10,
        ..Default::default()
    };
    let flows = get_flows(&format!("http://{observer}"), request)
        .await
        .unwrap();
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let denied = flows
        .iter()
        .find(|f| f.verdict() == pb::Verdict::Denied)
        .expect("the denied record");
    assert_eq!(denied.count, 3);
    assert_eq!(denied.drop_count, 6);
    assert_eq!(denied.outcome(), pb::Outcome::Dropped);
    assert_eq!(denied.node_name, "node-a");
    let src = denied.source.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str()),
        ("shop", "np-client")
    );
    let allowed = flows
        .iter()
        .find(|f| f.verdict() == pb::Verdict::Allowed)
        .expect("the allowed record");
    assert_eq!(allowed.outcome(), pb::Outcome::Established);

    // The same story in /metrics; /healthz (liveness) just answers.
    let metrics_addr = agent.metrics_addr().expect("metrics served");
    let health = http::get(metrics_addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(http::get(metrics_addr, "/nope").await.status, 404);
    let m = scrape(metrics_addr).await;
    assert!(
        m.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        m.content_type
    );
    for series in m.samples().keys() {
        assert!(
            series.starts_with("netverdict_collector_"),
            "metric outside the collector's namespace: {series}"
        );
    }
    let s = |series: &str| m.value(series);
    assert_eq!(
        s(r#"netverdict_collector_flows_total{verdict="denied",outcome="dropped"}"#),
        1.0
    );
    assert_eq!(
        s(r#"netverdict_collector_flows_total{verdict="allowed",outcome="established"}"#),
        1.0
    );
    assert_eq!(
        s(r#"netverdict_collector_kernel_drops_total{reason="NETFILTER_DROP"}"#),
        6.0
    );
    // Per policy: api-from-web isolated the API and denied shop's three
    // attempts; its rule allowed the web client's one.
    let policy = |verdict: &str| {
        s(&format!(
            r#"netverdict_collector_policy_verdicts_total{{namespace="default",policy="api-from-web",kind="network-policy",direction="ingress",verdict="{verdict}"}}"#
        ))
    };
    assert_eq!((policy("denied"), policy("allowed")), (3.0, 1.0));
    assert_eq!(
        s(
            r#"netverdict_collector_policy_verdicts_total{namespace="",policy="_other",kind="",direction="ingress",verdict="denied"}"#
        ),
        0.0
    );
    assert_eq!(
        s(r#"netverdict_collector_mismatches_total{kind="allowed-though-denied"}"#),
        0.0
    );
    assert_eq!(
        s(r#"netverdict_collector_kernel_events_lost_total{kind="dns",cause="ring_buffer_full"}"#),
        4.0
    );
    assert_eq!(s("netverdict_collector_kernel_events_total"), 14.0);
    assert_eq!(s("netverdict_collector_export_flows_acked_total"), 2.0);
    assert_eq!(s("netverdict_collector_export_flows_dropped_total"), 0.0);
    assert_eq!(s("netverdict_collector_export_queue_depth"), 0.0);
    assert_eq!(s("netverdict_collector_export_connected"), 1.0);
    assert_eq!(s("netverdict_collector_export_reconnects_total"), 0.0);
    assert_eq!(
        s(r#"netverdict_collector_cluster_objects{kind="Pod"}"#),
        4.0
    );
    assert_eq!(
        s(r#"netverdict_collector_cluster_objects{kind="NetworkPolicy"}"#),
        1.0
    );
    assert_eq!(
        s(r#"netverdict_collector_cluster_lists_total{source="manifests",kind="Pod"}"#),
        1.0
    );
    assert_eq!(
        s(r#"netverdict_collector_cluster_relists_total{source="manifests",kind="Pod"}"#),
        0.0
    );
    assert_eq!(
        s(r#"netverdict_collector_cluster_objects_applied_total{source="manifests",kind="Pod"}"#),
        4.0
    );
    assert_eq!(
        s(
            r#"netverdict_collector_cluster_invalid_objects{source="manifests",kind="NetworkPolicy"}"#
        ),
        0.0
    );
    // Every kind has its series, the workloads' controllers too.
    assert_eq!(
        s(r#"netverdict_collector_cluster_invalid_objects{source="manifests",kind="Job"}"#),
        0.0
    );
    assert_eq!(
        s(r#"netverdict_collector_cluster_forbidden{source="manifests",kind="ReplicaSet"}"#),
        0.0
    );
    assert_eq!(s("netverdict_collector_ring_flows"), 2.0);
    assert_eq!(s("netverdict_collector_ring_evictions_total"), 0.0);
    assert_eq!(s("netverdict_collector_observer_lagged_total"), 0.0);

    // A later attempt is a new record after the next flush; shutdown flushes
    // what is still open and waits for the acknowledgement.
    for event in attempt(
        900,
        20,
        sa(web, 41001),
        service,
        backend,
        TcpOutcome::Established,
        0,
    ) {
        events.send(Ok(StreamItem::Event(event))).await.unwrap();
    }
    let stats = agent
        .shutdown()
        .await
        .expect("clean shutdown")
        .expect("exporting");
    assert_eq!(stats.flows_acked, 3, "{stats:?}");
    assert_eq!(api::stored_ids(&*store).await.len(), 3);
}

#[tokio::test]
async fn a_flush_times_out_when_the_server_is_gone_and_says_what_is_pending() {
    let (events, events_rx) = mpsc::channel(16);
    let state = netverdict_cluster::SharedState::new(seed::cluster(&[]));
    // Nothing listens on this port.
    let nobody = free_addr();
    let mut config = AgentConfig::new("node-b", Source::Shared(state));
    config.events = EventSource::Channel(events_rx);
    config.observer_listen = None;
    config.metrics_listen = None;
    config.flush_timeout = Duration::from_millis(300);
    config.export_to(format!("http://{nobody}"));
    let agent = Agent::start(config).await.unwrap();
    for event in attempt(
        0,
        1,
        sa([10, 244, 0, 10], 40000),
        sa([10, 244, 1, 10], 8080),
        sa([10, 244, 1, 10], 8080),
        TcpOutcome::Established,
        0,
    ) {
        events.send(Ok(StreamItem::Event(event))).await.unwrap();
    }
    let err = agent.flush().await.expect_err("no server to acknowledge");
    let text = err.to_string();
    assert!(text.contains("1 of 1 flows"), "{text}");
    // The ring has it regardless.
    assert_eq!(agent.pipeline().lock().await.ring().len(), 1);
    assert!(agent.shutdown().await.is_err());
}

#[tokio::test]
async fn the_metrics_server_closes_connections_whose_headers_never_end() {
    let (_events, rx) = mpsc::channel(1);
    let mut config = AgentConfig::new(
        "node-a",
        Source::Manifests(ManifestOptions::new(seed::paths(&[]))),
    );
    config.events = EventSource::Channel(rx);
    config.observer_listen = None;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.http_header_timeout = Duration::from_millis(300);
    let agent = Agent::start(config).await.expect("agent starts");
    let addr = agent.metrics_addr().unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "a connection whose headers never end is still open after 10 s"
    );
    // Others are still served.
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    agent.shutdown().await.unwrap();
}
