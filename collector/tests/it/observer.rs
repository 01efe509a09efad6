//! The Observer service over real gRPC on 127.0.0.1: a tonic server over a
//! ring's reader, the generated client, every filter dimension through the
//! wire.

use std::sync::Arc;
use std::time::Duration;

use netverdict_collector::observer::ObserverService;
use netverdict_collector::pipeline::FlowRing;
use netverdict_proto::v1 as pb;
use netverdict_testing::pod;
use pb::observer_client::ObserverClient;
use prost_types::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(10);

type Ring = Arc<Mutex<FlowRing>>;

/// A flow `n/<id>` from `shop/src-<id>` to `shop/dst-<id>` on port 80, first
/// seen at second `10 * id`, last seen 5 s later.
fn flow(id: u32) -> pb::Flow {
    let second = 1_000_000_000 * i64::from(id);
    netverdict_testing::flow(format!("n/{id}"))
        .seen_nanos(10 * second, 10 * second + 5_000_000_000)
        .from(pod("shop", &format!("src-{id}")).ip("10.0.1.1").port(40000))
        .to(pod("shop", &format!("dst-{id}")).ip("10.0.2.1").port(80))
        .build()
}

async fn start(ring: Ring) -> ObserverClient<Channel> {
    let reader = ring.lock().await.reader();
    start_service(ObserverService::new(reader)).await
}

async fn start_service(service: ObserverService) -> ObserverClient<Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn ring_with(capacity: usize, flows: impl IntoIterator<Item = pb::Flow>) -> Ring {
    let ring = Arc::new(Mutex::new(FlowRing::new(capacity)));
    push(&ring, flows).await;
    ring
}

async fn push(ring: &Ring, flows: impl IntoIterator<Item = pb::Flow>) {
    let mut ring = ring.lock().await;
    for f in flows {
        ring.push(f);
    }
    ring.publish();
}

/// The ids of the flows a (non-follow) request returns.
async fn ids(client: &mut ObserverClient<Channel>, req: pb::GetFlowsRequest) -> Vec<String> {
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("stream ends in time")
    {
        out.push(item.unwrap().flow.unwrap().id);
    }
    out
}

fn names(range: impl IntoIterator<Item = u32>) -> Vec<String> {
    range.into_iter().map(|i| format!("n/{i}")).collect()
}

fn all(number: u64) -> pb::GetFlowsRequest {
    pb::GetFlowsRequest {
        number,
        ..Default::default()
    }
}

#[tokio::test]
async fn last_n_first_n_and_default() {
    let mut client = start(ring_with(100, (1..=30).map(flow)).await).await;
    assert_eq!(
        ids(&mut client, all(0)).await,
        names(11..=30),
        "default last 20"
    );
    assert_eq!(ids(&mut client, all(5)).await, names(26..=30));
    let first = pb::GetFlowsRequest {
        number: 5,
        first: true,
        ..Default::default()
    };
    assert_eq!(ids(&mut client, first).await, names(1..=5));
    assert_eq!(ids(&mut client, all(1000)).await, names(1..=30));
}

#[tokio::test]
async fn since_and_until() {
    let mut client = start(ring_with(100, (1..=10).map(flow)).await).await;
    // Flow i is seen from 10i to 10i+5.
    let req = pb::GetFlowsRequest {
        number: 100,
        since: Some(Timestamp {
            seconds: 35,
            nanos: 0,
        }),
        until: Some(Timestamp {
            seconds: 70,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(ids(&mut client, req).await, names(3..=6));
}

fn filter_flows() -> Vec<pb::Flow> {
    let mut flows: Vec<pb::Flow> = (1..=6).map(flow).collect();
    // 2: denied, dropped, mismatch, in namespace db, policy db/deny-all.
    let f = &mut flows[1];
    f.verdict = pb::Verdict::Denied as i32;
    f.outcome = pb::Outcome::Dropped as i32;
    f.mismatch = pb::Mismatch::AllowedThoughDenied as i32;
    f.destination.as_mut().unwrap().namespace = "db".into();
    f.denied_by.push(pb::PolicyRef {
        namespace: "db".into(),
        name: "deny-all".into(),
        ..Default::default()
    });
    // 3: UDP DNS to kube-dns on 53, from node-b.
    let f = &mut flows[2];
    f.protocol = pb::Protocol::Udp as i32;
    f.destination.as_mut().unwrap().port = 53;
    f.node_name = "node-b".into();
    f.dns = Some(pb::Dns {
        query: "api.example.com.".into(),
        ..Default::default()
    });
    // 4: labelled endpoints, allowed by shop/allow-web.
    let f = &mut flows[3];
    f.source.as_mut().unwrap().labels = [("app".to_string(), "web".to_string())].into();
    f.destination.as_mut().unwrap().labels = [
        ("app".to_string(), "api".to_string()),
        ("tier".to_string(), "backend".to_string()),
    ]
    .into();
    f.allowed_by.push(pb::PolicyRef {
        namespace: "shop".into(),
        name: "allow-web".into(),
        ..Default::default()
    });
    // 5: other addresses, from namespace web.
    let f = &mut flows[4];
    f.source.as_mut().unwrap().ip = "192.168.7.7".into();
    f.source.as_mut().unwrap().namespace = "web".into();
    f.destination.as_mut().unwrap().ip = "fd00::9".into();
    // 2 was dropped by nftables.
    flows[1].drop_reason = "NETFILTER_DROP".into();
    flows
}

fn include(filter: pb::FlowFilter) -> pb::GetFlowsRequest {
    pb::GetFlowsRequest {
        number: 100,
        include: vec![filter],
        ..Default::default()
    }
}

#[tokio::test]
async fn every_filter_dimension_through_the_wire() {
    let mut client = start(ring_with(100, filter_flows()).await).await;
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<(&str, pb::FlowFilter, Vec<u32>)> = vec![
        (
            "verdict",
            pb::FlowFilter {
                verdict: vec![pb::Verdict::Denied as i32],
                ..Default::default()
            },
            vec![2],
        ),
        (
            "outcome",
            pb::FlowFilter {
                outcome: vec![pb::Outcome::Dropped as i32],
                ..Default::default()
            },
            vec![2],
        ),
        (
            "namespace",
            pb::FlowFilter {
                namespace: s(&["db"]),
                ..Default::default()
            },
            vec![2],
        ),
        (
            "namespace hostile",
            pb::FlowFilter {
                namespace: s(&["x' OR 1=1 --"]),
                ..Default::default()
            },
            vec![],
        ),
        (
            "source_pod",
            pb::FlowFilter {
                source_pod: s(&["shop/src-1", "shop/src-6"]),
                ..Default::default()
            },
            vec![1, 6],
        ),
        (
            "destination_pod prefix",
            pb::FlowFilter {
                destination_pod: s(&["db/dst*"]),
                ..Default::default()
            },
            vec![2],
        ),
        (
            "labels",
            pb::FlowFilter {
                labels: s(&["app=api,tier in (backend)"]),
                ..Default::default()
            },
            vec![4],
        ),
        (
            "policy",
            pb::FlowFilter {
                policy: s(&["shop/allow-web", "db/deny-all"]),
                ..Default::default()
            },
            vec![2, 4],
        ),
        (
            "destination_port",
            pb::FlowFilter {
                destination_port: vec![53],
                ..Default::default()
            },
            vec![3],
        ),
        (
            "protocol",
            pb::FlowFilter {
                protocol: vec![pb::Protocol::Udp as i32],
                ..Default::default()
            },
            vec![3],
        ),
        (
            "dns_query",
            pb::FlowFilter {
                dns_query: s(&["*.example.com"]),
                ..Default::default()
            },
            vec![3],
        ),
        (
            "mismatch",
            pb::FlowFilter {
                mismatch: vec![pb::Mismatch::AllowedThoughDenied as i32],
                ..Default::default()
            },
            vec![2],
        ),
        (
            "node_name",
            pb::FlowFilter {
                node_name: s(&["node-b"]),
                ..Default::default()
            },
            vec![3],
        ),
        (
            "source_ip",
            pb::FlowFilter {
                source_ip: s(&["192.168.0.0/16"]),
                ..Default::default()
            },
            vec![5],
        ),
        (
            "destination_ip",
            pb::FlowFilter {
                destination_ip: s(&["fd00::9"]),
                ..Default::default()
            },
            vec![5],
        ),
        (
            "source_namespace",
            pb::FlowFilter {
                source_namespace: s(&["web"]),
                ..Default::default()
            },
            vec![5],
        ),
        (
            "source_namespace is not the destination's",
            pb::FlowFilter {
                source_namespace: s(&["db"]),
                ..Default::default()
            },
            vec![],
        ),
        (
            "destination_namespace",
            pb::FlowFilter {
                destination_namespace: s(&["db", "nope"]),
                ..Default::default()
            },
            vec![2],
        ),
        (
            "source_labels",
            pb::FlowFilter {
                source_labels: s(&["app=web"]),
                ..Default::default()
            },
            vec![4],
        ),
        (
            "destination_labels",
            pb::FlowFilter {
                destination_labels: s(&["app=web", "tier in (backend)"]),
                ..Default::default()
            },
            vec![4],
        ),
        (
            "destination_labels is not the source's",
            pb::FlowFilter {
                destination_labels: s(&["app=web"]),
                ..Default::default()
            },
            vec![],
        ),
        (
            "drop_reason",
            pb::FlowFilter {
                drop_reason: s(&["netfilter-drop"]),
                ..Default::default()
            },
            vec![2],
        ),
        (
            "flow_type dns or denied",
            pb::FlowFilter {
                flow_type: vec![pb::FlowType::Dns as i32, pb::FlowType::Denied as i32],
                ..Default::default()
            },
            vec![2, 3],
        ),
        (
            "flow_type allowed",
            pb::FlowFilter {
                flow_type: vec![pb::FlowType::Allowed as i32],
                ..Default::default()
            },
            vec![1, 3, 4, 5, 6],
        ),
        (
            "flow_type dropped",
            pb::FlowFilter {
                flow_type: vec![pb::FlowType::Dropped as i32],
                ..Default::default()
            },
            vec![2],
        ),
        (
            "flow_type mismatch",
            pb::FlowFilter {
                flow_type: vec![pb::FlowType::Mismatch as i32],
                ..Default::default()
            },
            vec![2],
        ),
        (
            "and within a filter",
            pb::FlowFilter {
                namespace: s(&["shop"]),
                protocol: vec![pb::Protocol::Udp as i32],
                ..Default::default()
            },
            vec![3],
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(
            ids(&mut client, include(filter)).await,
            names(want),
            "{name}"
        );
    }
}

#[tokio::test]
async fn include_or_and_exclude() {
    let mut client = start(ring_with(100, filter_flows()).await).await;
    let req = pb::GetFlowsRequest {
        number: 100,
        include: vec![
            pb::FlowFilter {
                protocol: vec![pb::Protocol::Udp as i32],
                ..Default::default()
            },
            pb::FlowFilter {
                namespace: vec!["db".into()],
                ..Default::default()
            },
            pb::FlowFilter {
                source_ip: vec!["192.168.0.0/16".into()],
                ..Default::default()
            },
        ],
        exclude: vec![pb::FlowFilter {
            node_name: vec!["node-b".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(ids(&mut client, req).await, names([2, 5]));
    let only_exclude = pb::GetFlowsRequest {
        number: 100,
        exclude: vec![pb::FlowFilter {
            verdict: vec![pb::Verdict::Allowed as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(ids(&mut client, only_exclude).await, names([2]));
    // `observe --ip 10.0.1.1 --not --type dns`: the address on either side
    // (one include filter per side), minus DNS flows.
    let either_side_minus_dns = pb::GetFlowsRequest {
        number: 100,
        include: vec![
            pb::FlowFilter {
                source_ip: vec!["10.0.1.1".into()],
                ..Default::default()
            },
            pb::FlowFilter {
                destination_ip: vec!["10.0.1.1".into()],
                ..Default::default()
            },
        ],
        exclude: vec![pb::FlowFilter {
            flow_type: vec![pb::FlowType::Dns as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        ids(&mut client, either_side_minus_dns).await,
        names([1, 2, 4, 6])
    );
}

#[tokio::test]
async fn invalid_filters_are_invalid_arguments_naming_the_field() {
    let mut client = start(ring_with(100, filter_flows()).await).await;
    for (filter, field, value) in [
        (
            pb::FlowFilter {
                labels: vec!["app in (a".into()],
                ..Default::default()
            },
            "labels",
            "\"app in (a\"",
        ),
        (
            pb::FlowFilter {
                destination_ip: vec!["10.0.0.0/40".into()],
                ..Default::default()
            },
            "destination_ip",
            "\"10.0.0.0/40\"",
        ),
        (
            pb::FlowFilter {
                verdict: vec![9],
                ..Default::default()
            },
            "verdict",
            "\"9\"",
        ),
        (
            pb::FlowFilter {
                source_pod: vec!["x' OR 1=1 --".into()],
                ..Default::default()
            },
            "source_pod",
            "\"x' OR 1=1 --\"",
        ),
        (
            pb::FlowFilter {
                flow_type: vec![pb::FlowType::Unspecified as i32],
                ..Default::default()
            },
            "flow_type",
            "\"0\"",
        ),
        (
            pb::FlowFilter {
                drop_reason: vec!["x' OR 1=1 --".into()],
                ..Default::default()
            },
            "drop_reason",
            "\"x' OR 1=1 --\"",
        ),
        (
            pb::FlowFilter {
                source_labels: vec!["app in (a".into()],
                ..Default::default()
            },
            "source_labels",
            "\"app in (a\"",
        ),
    ] {
        let status = client.get_flows(include(filter)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
        assert!(status.message().contains(value), "{}", status.message());
    }
    let bad_until = pb::GetFlowsRequest {
        until: Some(Timestamp {
            seconds: 5,
            nanos: 1_000_000_000,
        }),
        ..Default::default()
    };
    let status = client.get_flows(bad_until).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("until") && status.message().contains("1000000000"),
        "{}",
        status.message()
    );
    let both = pb::GetFlowsRequest {
        first: true,
        follow: true,
        ..Default::default()
    };
    let status = client.get_flows(both).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

async fn next_id(stream: &mut tonic::Streaming<pb::GetFlowsResponse>) -> String {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("a flow in time")
        .expect("stream open")
        .unwrap()
        .flow
        .unwrap()
        .id
}

#[tokio::test]
async fn follow_sends_history_then_new_matching_flows_once() {
    let ring = ring_with(100, [flow(1), flow(2)]).await;
    let mut client = start(ring.clone()).await;
    let req = pb::GetFlowsRequest {
        number: 1,
        follow: true,
        exclude: vec![pb::FlowFilter {
            source_pod: vec!["shop/src-4".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    // The history arrives first: the server has subscribed by then.
    assert_eq!(next_id(&mut stream).await, "n/2");
    push(&ring, [flow(3), flow(4), flow(5)]).await;
    assert_eq!(next_id(&mut stream).await, "n/3", "not n/1 nor n/2 again");
    assert_eq!(next_id(&mut stream).await, "n/5", "n/4 is excluded");
}

#[tokio::test]
async fn a_lagging_follower_is_told() {
    // The broadcast holds 16 flows; the single-threaded runtime cannot forward
    // while this test publishes 100 at once.
    let ring = ring_with(16, [flow(1)]).await;
    let service = ObserverService::new(ring.lock().await.reader());
    let mut client = start_service(service.clone()).await;
    let req = pb::GetFlowsRequest {
        number: 1,
        follow: true,
        ..Default::default()
    };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    assert_eq!(next_id(&mut stream).await, "n/1");
    push(&ring, (2..=101).map(flow)).await;
    let status = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("an answer in time")
        .expect("stream open")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("missed"), "{}", status.message());
    assert_eq!(service.lagged(), 1);
}

#[tokio::test]
async fn server_status_counts_held_and_evicted() {
    let ring = ring_with(3, []).await;
    let mut client = start(ring.clone()).await;
    let empty = client
        .server_status(pb::ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((empty.flows_stored, empty.flows_dropped), (0, 0));
    assert_eq!((empty.oldest, empty.newest), (None, None));
    push(&ring, (1..=5).map(flow)).await;
    let status = client
        .server_status(pb::ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.flows_stored, 3);
    assert_eq!(status.flows_dropped, 2);
    assert_eq!(status.oldest.unwrap().seconds, 30);
    assert_eq!(status.newest.unwrap().seconds, 55);
}
