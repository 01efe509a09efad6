//! The query side over real gRPC: GetFlows filters (a hostile namespace is
//! just a name), follow streams (new flows, lagging followers), the Denied and
//! DnsReport views on the seed guide's cluster, the memory bound, and the
//! `/metrics` endpoint.

use std::time::{Duration, SystemTime};

use netverdict_api::ApiConfig;
use netverdict_api::store::Store;
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::api::{self, memory, url};
use netverdict_testing::flow::{EndpointBuilder, policy_ref, timestamp};
use netverdict_testing::grpc::{batch, get_flows, push_acked, push_stream};
use netverdict_testing::{flow, pod, scrape, seed, wait_until};
use pb::observer_client::ObserverClient;
use pb::query_client::QueryClient;

use crate::fixtures::payments_and_a_hostile_namespace;

const WAIT: Duration = Duration::from_secs(20);

fn at(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(timestamp(t))
}

fn ids(flows: &[pb::Flow]) -> Vec<&str> {
    flows.iter().map(|f| f.id.as_str()).collect()
}

fn filter(f: impl FnOnce(&mut pb::FlowFilter)) -> pb::FlowFilter {
    let mut filter = pb::FlowFilter::default();
    f(&mut filter);
    filter
}

#[tokio::test]
async fn get_flows_filters_and_a_hostile_namespace_is_just_a_name() {
    let store = memory(1000);
    let base = SystemTime::now() - Duration::from_secs(600);
    let flows = payments_and_a_hostile_namespace(base, Duration::from_secs(60));
    store.insert(flows).await.unwrap();
    let server = api::serve(store).await;
    let addr = url(&server);

    let denied = pb::GetFlowsRequest {
        include: vec![filter(|f| f.verdict = vec![pb::Verdict::Denied as i32])],
        ..Default::default()
    };
    assert_eq!(
        ids(&get_flows(&addr, denied).await.unwrap()),
        ["n/1/0", "n/1/2", "n/1/4"]
    );
    let port_and_policy = pb::GetFlowsRequest {
        include: vec![filter(|f| {
            f.destination_port = vec![5432];
            f.policy = vec!["payments/default-deny".into()];
        })],
        number: 2,
        ..Default::default()
    };
    assert_eq!(
        ids(&get_flows(&addr, port_and_policy).await.unwrap()),
        ["n/1/2", "n/1/4"]
    );
    let first = pb::GetFlowsRequest {
        number: 2,
        first: true,
        exclude: vec![filter(|f| f.namespace = vec!["x' OR 1=1 --".into()])],
        ..Default::default()
    };
    assert_eq!(
        ids(&get_flows(&addr, first).await.unwrap()),
        ["n/1/0", "n/1/1"]
    );
    let window = pb::GetFlowsRequest {
        since: at(base + Duration::from_secs(120)),
        until: at(base + Duration::from_secs(240)),
        ..Default::default()
    };
    assert_eq!(
        ids(&get_flows(&addr, window).await.unwrap()),
        ["n/1/2", "n/1/3"]
    );
    // The hostile namespace matches only the flow that really has it.
    let hostile = pb::GetFlowsRequest {
        include: vec![filter(|f| f.namespace = vec!["x' OR 1=1 --".into()])],
        ..Default::default()
    };
    assert_eq!(
        ids(&get_flows(&addr, hostile).await.unwrap()),
        ["n/1/hostile"]
    );
    let nothing = pb::GetFlowsRequest {
        include: vec![filter(|f| f.namespace = vec!["' OR ''='".into()])],
        ..Default::default()
    };
    assert!(get_flows(&addr, nothing).await.unwrap().is_empty());
    // A bad filter value is an error naming the field.
    let bad = pb::GetFlowsRequest {
        include: vec![filter(|f| f.source_ip = vec!["10.0.0.0/99".into()])],
        ..Default::default()
    };
    let status = get_flows(&addr, bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("source_ip"), "{status}");
    assert!(status.message().contains("\"10.0.0.0/99\""), "{status}");
    // In an exclude filter too, for every kind of field.
    for (f, value) in [
        (filter(|f| f.outcome = vec![42]), "\"42\""),
        (filter(|f| f.destination_port = vec![70000]), "\"70000\""),
        (
            filter(|f| f.labels = vec!["app=x' OR 1=1 --".into()]),
            "\"app=x' OR 1=1 --\"",
        ),
        (filter(|f| f.dns_query = vec!["a.*.b".into()]), "\"a.*.b\""),
    ] {
        let bad = pb::GetFlowsRequest {
            exclude: vec![f],
            ..Default::default()
        };
        let status = get_flows(&addr, bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(value), "{status}");
    }
    server.shutdown().await.unwrap();
}

/// Opens a follow stream and waits until it is subscribed to new flows.
async fn follow(
    server: &netverdict_api::ApiServer,
    request: pb::GetFlowsRequest,
) -> tonic::Streaming<pb::GetFlowsResponse> {
    let mut observer = ObserverClient::connect(url(server)).await.unwrap();
    let stream = observer.get_flows(request).await.unwrap().into_inner();
    wait_until("the follower to subscribe", WAIT, async || {
        server.metrics().follow_subscribers.get() == 1
    })
    .await;
    stream
}

/// Pushes batches of flows and waits for each acknowledgement.
async fn ingest(server: &netverdict_api::ApiServer, batches: Vec<Vec<pb::Flow>>) {
    let (tx, mut acks) = push_stream(&url(server)).await;
    for (i, flows) in batches.into_iter().enumerate() {
        push_acked(&tx, &mut acks, batch("n", i as u64 + 1, flows)).await;
    }
}

async fn next_id(stream: &mut tonic::Streaming<pb::GetFlowsResponse>) -> String {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a flow within 10 s")
        .unwrap()
        .unwrap()
        .flow
        .unwrap()
        .id
}

#[tokio::test]
async fn follow_starts_from_now_unless_history_is_asked_for() {
    let store = memory(1000);
    store
        .insert((0..500).map(|i| flow(format!("old/{i}")).build()).collect())
        .await
        .unwrap();
    let server = api::serve(store).await;
    // `netverdict observe -f`: no number, no since: nothing stored is read.
    let mut stream = follow(
        &server,
        pb::GetFlowsRequest {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    ingest(&server, vec![vec![flow("new/1").build()]]).await;
    assert_eq!(next_id(&mut stream).await, "new/1", "no stored flow first");
    drop(stream);
    wait_until("the follower to be gone", WAIT, async || {
        server.metrics().follow_subscribers.get() == 0
    })
    .await;
    // With a number: the last N stored, then new ones.
    let mut stream = follow(
        &server,
        pb::GetFlowsRequest {
            follow: true,
            number: 2,
            ..Default::default()
        },
    )
    .await;
    let last_two = [next_id(&mut stream).await, next_id(&mut stream).await];
    assert!(last_two.contains(&"new/1".to_string()), "{last_two:?}");
    assert!(
        last_two.iter().any(|id| id.starts_with("old/")),
        "{last_two:?}"
    );
    ingest(&server, vec![vec![flow("new/2").build()]]).await;
    assert_eq!(next_id(&mut stream).await, "new/2");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn follow_since_sends_the_window_then_new_matching_flows() {
    let store = memory(1000);
    store.insert(vec![flow("old/1").build()]).await.unwrap();
    let server = api::serve(store).await;
    let since =
        netverdict_proto::time::timestamp(std::time::SystemTime::now() - Duration::from_secs(3600));
    let mut stream = follow(
        &server,
        pb::GetFlowsRequest {
            follow: true,
            since: Some(since),
            include: vec![filter(|f| f.namespace = vec!["shop".into()])],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(next_id(&mut stream).await, "old/1");
    let other = flow("new/other")
        .from(pod("elsewhere", "a").workload("a").port(1))
        .to(pod("elsewhere", "b").workload("b").port(2))
        .build();
    ingest(
        &server,
        vec![
            vec![other, flow("new/1").build(), flow("old/1").build()],
            vec![flow("new/2").build()],
        ],
    )
    .await;
    // The other namespace's flow is filtered out; old/1 was already sent.
    assert_eq!(next_id(&mut stream).await, "new/1");
    assert_eq!(next_id(&mut stream).await, "new/2");
    drop(stream);
    wait_until("the follower to be gone", WAIT, async || {
        server.metrics().follow_subscribers.get() == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn queries_are_capped_with_a_clear_error() {
    let store = memory(1000);
    store
        .insert((0..30).map(|i| flow(format!("old/{i}")).build()).collect())
        .await
        .unwrap();
    let config = ApiConfig {
        max_query_flows: 20,
        max_report_groups: 5,
        ..api::config()
    };
    let server = api::serve_with(config, store, SharedState::default()).await;
    let addr = url(&server);
    let status = get_flows(
        &addr,
        pb::GetFlowsRequest {
            number: 21,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("number: 21 is above this server's cap of 20"),
        "{status}"
    );
    assert_eq!(
        get_flows(
            &addr,
            pb::GetFlowsRequest {
                number: 20,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .len(),
        20
    );
    // A follow from `since` whose window holds more than the cap.
    let mut observer = ObserverClient::connect(addr.clone()).await.unwrap();
    let status = observer
        .get_flows(pb::GetFlowsRequest {
            follow: true,
            since: Some(prost_types::Timestamp::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("more than 20 stored flows match"),
        "{status}"
    );
    let mut query = QueryClient::connect(addr).await.unwrap();
    let status = query
        .denied(pb::ReportRequest {
            limit: 6,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("limit: 6 is above this server's cap of 5 groups"),
        "{status}"
    );
    assert!(
        query
            .denied(pb::ReportRequest {
                limit: 5,
                ..Default::default()
            })
            .await
            .is_ok()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lagging_follower_is_told_and_counted_and_ingest_goes_on() {
    let store = memory(1_000_000);
    let mut cfg = api::config();
    cfg.follow_buffer = 8;
    let server = api::serve_with(cfg, store.clone(), SharedState::default()).await;
    let addr = url(&server);
    let mut observer = ObserverClient::connect(addr.clone()).await.unwrap();
    let mut stream = observer
        .get_flows(pb::GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_until("the follower to subscribe", WAIT, async || {
        server.metrics().follow_subscribers.get() == 1
    })
    .await;
    // The follower reads nothing while far more flows than every buffer on
    // the way (broadcast, channel, HTTP/2 windows) holds are ingested.
    let (tx, mut acks) = push_stream(&addr).await;
    let padding = "x".repeat(500);
    for b in 0..40u64 {
        let flows = (0..500)
            .map(|i| flow(format!("n/{b}/{i}")).reason(&padding).build())
            .collect();
        push_acked(&tx, &mut acks, batch("n", b + 1, flows)).await;
    }
    assert_eq!(store.status().await.unwrap().flows_stored, 20_000);
    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("stream ended without an error after {received} flows"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("fell behind"), "{status}");
    assert!(received < 20_000);
    assert_eq!(server.metrics().follow_lagged.get(), 1);
    server.shutdown().await.unwrap();
}

/// The seed's flows after default-deny and api-from-web: what the demo shows.
fn seed_flows(base: SystemTime) -> Vec<pb::Flow> {
    let t = |s: u64| base + Duration::from_secs(s);
    let np_default = || {
        pod("default", "np-client")
            .workload("np-client")
            .port(41000)
    };
    let np_shop = || pod("shop", "np-client").workload("np-client").port(42000);
    let api = |port| pod("default", "api").workload("api").port(port);
    let coredns = || pod("kube-system", "coredns").workload("coredns").port(53);
    let deny_both = ["default/default-deny", "default/api-from-web"];
    // Denied and dropped by netfilter from `last - 2` to `last`, `count` times.
    let denied = |id: &str, src: EndpointBuilder, dst: EndpointBuilder, protocol, last, count| {
        flow(id)
            .node("lab-node")
            .seen(t(last - 2), t(last))
            .count(count)
            .from(src)
            .to(dst)
            .protocol(protocol)
            .denied()
            .outcome(pb::Outcome::Dropped)
            .drop_reason("NETFILTER_DROP")
    };
    let f1 = denied("lab/1/1", np_default(), api(5432), pb::Protocol::Tcp, 10, 1)
        .egress_status(pb::PolicyStatus::Denied)
        .ingress_status(pb::PolicyStatus::Denied)
        .denied_by(deny_both)
        .reason("first reason");
    let f2 = f1
        .clone()
        .id("lab/1/2")
        .seen(t(15), t(20))
        .reason("egress and ingress deny 5432");
    let f3 = denied("lab/1/3", np_shop(), api(8080), pb::Protocol::Tcp, 30, 3)
        .ingress_status(pb::PolicyStatus::Denied)
        .egress_status(pb::PolicyStatus::NotIsolated)
        .denied_by(deny_both)
        .reason("needs source namespace label team=web");
    let f4 = denied("lab/1/4", np_default(), coredns(), pb::Protocol::Udp, 40, 2)
        .egress_status(pb::PolicyStatus::Denied)
        .denied_by(["default/default-deny"])
        .reason("egress of default/np-client is isolated by default/default-deny")
        .dns_record(pb::Dns {
            id: 7,
            query: "kubernetes.default.svc.cluster.local".into(),
            qtype: "A".into(),
            ..Default::default()
        });
    let allowed = denied("lab/1/5", np_default(), api(8080), pb::Protocol::Tcp, 50, 4)
        .verdict(pb::Verdict::Allowed)
        .outcome(pb::Outcome::Established);
    let nx = denied("lab/1/6", np_shop(), coredns(), pb::Protocol::Udp, 60, 1)
        .verdict(pb::Verdict::Allowed)
        .outcome(pb::Outcome::Answered)
        .dns_record(pb::Dns {
            id: 8,
            query: "nope.example".into(),
            qtype: "AAAA".into(),
            rcode: "NXDOMAIN".into(),
            egress_allows_cluster_dns: true,
            ..Default::default()
        });
    [f1, f2, f3, f4, allowed, nx].map(|f| f.build()).into()
}

fn workload(kind: pb::EndpointKind, ns: &str, name: &str) -> Option<pb::WorkloadRef> {
    Some(pb::WorkloadRef {
        kind: kind as i32,
        namespace: ns.into(),
        workload: name.into(),
        ip: String::new(),
    })
}

#[tokio::test]
async fn denied_and_dns_reports_on_the_seed_cluster() {
    let store = memory(1000);
    let base = SystemTime::now() - Duration::from_secs(3600);
    store.insert(seed_flows(base)).await.unwrap();
    let cluster = SharedState::new(seed::cluster(&["default-deny", "api-from-web"]));
    let server = api::serve_with(api::config(), store, cluster.clone()).await;
    let mut query = QueryClient::connect(url(&server)).await.unwrap();
    let t = |s: u64| at(base + Duration::from_secs(s));
    let pod_kind = pb::EndpointKind::Pod;

    let groups = query
        .denied(pb::ReportRequest::default())
        .await
        .unwrap()
        .into_inner()
        .groups;
    let expected = vec![
        pb::DeniedGroup {
            source: workload(pod_kind, "shop", "np-client"),
            destination: workload(pod_kind, "default", "api"),
            protocol: pb::Protocol::Tcp as i32,
            destination_port: 8080,
            denied_by: vec![
                policy_ref("default/api-from-web"),
                policy_ref("default/default-deny"),
            ],
            egress_denied: false,
            ingress_denied: true,
            count: 3,
            flows: 1,
            first_seen: t(28),
            last_seen: t(30),
            reason: "needs source namespace label team=web".into(),
            outcome: pb::Outcome::Dropped as i32,
            destination_names: Vec::new(),
        },
        pb::DeniedGroup {
            source: workload(pod_kind, "default", "np-client"),
            destination: workload(pod_kind, "kube-system", "coredns"),
            protocol: pb::Protocol::Udp as i32,
            destination_port: 53,
            denied_by: vec![policy_ref("default/default-deny")],
            egress_denied: true,
            ingress_denied: false,
            count: 2,
            flows: 1,
            first_seen: t(38),
            last_seen: t(40),
            reason: "egress of default/np-client is isolated by default/default-deny".into(),
            outcome: pb::Outcome::Dropped as i32,
            destination_names: Vec::new(),
        },
        pb::DeniedGroup {
            source: workload(pod_kind, "default", "np-client"),
            destination: workload(pod_kind, "default", "api"),
            protocol: pb::Protocol::Tcp as i32,
            destination_port: 5432,
            denied_by: vec![
                policy_ref("default/api-from-web"),
                policy_ref("default/default-deny"),
            ],
            egress_denied: true,
            ingress_denied: true,
            count: 2,
            flows: 2,
            first_seen: t(8),
            last_seen: t(20),
            reason: "egress and ingress deny 5432".into(),
            outcome: pb::Outcome::Dropped as i32,
            destination_names: Vec::new(),
        },
    ];
    assert_eq!(groups, expected);

    // Namespace and time window.
    let shop_only = query
        .denied(pb::ReportRequest {
            namespace: vec!["shop".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(shop_only, expected[..1]);
    let recent = query
        .denied(pb::ReportRequest {
            since: t(25),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(recent, expected[..1]);
    let hostile = query
        .denied(pb::ReportRequest {
            namespace: vec!["x' OR 1=1 --".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert!(hostile.is_empty());

    let report = query
        .dns_report(pb::ReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    let gap = |pod: &str| pb::DnsPolicyGap {
        namespace: "default".into(),
        pod: pod.into(),
        denied_protocols: vec![pb::Protocol::Udp as i32, pb::Protocol::Tcp as i32],
        egress_policies: vec![policy_ref("default/default-deny")],
    };
    assert_eq!(report.policy_gaps, [gap("api"), gap("np-client")]);
    assert_eq!(
        report.failures,
        [
            pb::DnsFailure {
                namespace: "default".into(),
                pod: "np-client".into(),
                query: "kubernetes.default.svc.cluster.local".into(),
                qtype: "A".into(),
                outcome: pb::Outcome::Dropped as i32,
                rcode: String::new(),
                count: 2,
                last_seen: t(40),
                denied_by: vec![policy_ref("default/default-deny")],
                egress_allows_cluster_dns: false,
                reason: "egress of default/np-client is isolated by default/default-deny".into(),
            },
            pb::DnsFailure {
                namespace: "shop".into(),
                pod: "np-client".into(),
                query: "nope.example".into(),
                qtype: "AAAA".into(),
                outcome: pb::Outcome::Answered as i32,
                rcode: "NXDOMAIN".into(),
                count: 1,
                last_seen: t(60),
                denied_by: vec![],
                egress_allows_cluster_dns: true,
                reason: String::new(),
            },
        ]
    );
    // allow-dns-egress closes the gaps at once (the report reads the current
    // state); the failures in the store stay as they were.
    cluster.update(|s| {
        *s = seed::cluster(&["default-deny", "api-from-web", "allow-dns-egress"]);
    });
    let report = query
        .dns_report(pb::ReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.policy_gaps.is_empty(), "{:?}", report.policy_gaps);
    assert_eq!(report.failures.len(), 2);
    let shop = query
        .dns_report(pb::ReportRequest {
            namespace: vec!["shop".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shop.failures.len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_memory_bound_evicts_oldest_buckets_and_metrics_tell() {
    let store = memory(100);
    let server = api::serve(store).await;
    let base = SystemTime::now() - Duration::from_secs(3600);
    let (tx, mut acks) = push_stream(&url(&server)).await;
    // Three minutes of 40 flows each: the oldest minute goes.
    for minute in 0..3u64 {
        let seen = base + Duration::from_secs(minute * 60);
        let flows = (0..40)
            .map(|i| flow(format!("n/{minute}/{i}")).at(seen).build())
            .collect();
        push_acked(&tx, &mut acks, batch("n", minute + 1, flows)).await;
    }
    let mut observer = ObserverClient::connect(url(&server)).await.unwrap();
    let status = observer
        .server_status(pb::ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.flows_stored, status.flows_dropped), (80, 40));
    assert_eq!(status.oldest, at(base + Duration::from_secs(60)));
    let all = get_flows(
        &url(&server),
        pb::GetFlowsRequest {
            number: 1000,
            first: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 80);
    assert!(all.iter().all(|f| !f.id.starts_with("n/0/")));

    // The store gauges come from the background status check: wait for the
    // first one after the last insert.
    let metrics_addr = server.metrics_addr().unwrap();
    wait_until("the store gauges to show 80 flows", WAIT, async || {
        scrape(metrics_addr).await.get("netverdict_api_store_flows") == Some(80.0)
    })
    .await;
    let metrics = scrape(metrics_addr).await;
    assert!(
        metrics
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        metrics.content_type
    );
    assert!(
        metrics.text.trim_end().ends_with("# EOF"),
        "{}",
        metrics.text
    );
    let get = |series: &str| metrics.value(series);
    assert_eq!(get("netverdict_api_ingest_batches_total"), 3.0);
    assert_eq!(get("netverdict_api_ingest_flows_total"), 120.0);
    assert_eq!(get("netverdict_api_ingest_duplicates_total"), 0.0);
    assert_eq!(get("netverdict_api_store_flows"), 80.0);
    assert_eq!(get("netverdict_api_store_flows_dropped"), 40.0);
    assert_eq!(get("netverdict_api_store_insert_errors_total"), 0.0);
    assert_eq!(
        get("netverdict_api_store_insert_duration_seconds_count"),
        3.0
    );
    assert_eq!(get("netverdict_api_ingest_streams"), 1.0);
    assert_eq!(get("netverdict_api_follow_subscribers"), 0.0);
    assert_eq!(get("netverdict_api_follow_lagged_total"), 0.0);
    assert_eq!(
        get("netverdict_api_store_oldest_timestamp_seconds"),
        (base + Duration::from_secs(60))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64
    );
    drop(tx);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let server = api::serve(memory(10)).await;
    let mut observer = ObserverClient::connect(url(&server)).await.unwrap();
    let status = observer
        .get_flows(pb::GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut query = QueryClient::connect(url(&server)).await.unwrap();
    let status = query
        .denied(pb::ReportRequest {
            since: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("since"), "{status}");
    for bad in ["app in (", "x' OR 1=1 --"] {
        let status = query
            .dns_report(pb::ReportRequest {
                labels: vec!["app=api".into(), bad.into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("labels") && status.message().contains(&format!("{bad:?}")),
            "{status}"
        );
    }
    assert!(matches!(
        netverdict_api::serve(
            ApiConfig {
                listen: server.grpc_addr(),
                ..api::config()
            },
            netverdict_api::MemoryStore::new(Default::default()).unwrap(),
            SharedState::default(),
        )
        .await,
        Err(netverdict_api::ServeError::Bind { what: "grpc", .. })
    ));
    server.shutdown().await.unwrap();
}

/// The DNS policy gaps read only `CLUSTER_KINDS` (what `netverdict api`
/// watches and its role grants): without EndpointSlices they are the same;
/// without Nodes they change (a host-network DNS pod on the querying pod's
/// own node is always reachable), which is why Nodes are read.
#[test]
fn dns_policy_gaps_need_exactly_the_cluster_kinds() {
    use netverdict_api::CLUSTER_KINDS;
    use netverdict_api::report::dns_policy_gaps;
    use netverdict_cluster::{KINDS, kind_name};
    use netverdict_policy::{ClusterState, Manifests, ObjectKind};
    use std::path::Path;

    let cluster = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Namespace, metadata: {name: kube-system}}
- apiVersion: v1
  kind: Node
  metadata: {name: node-a}
  status: {addresses: [{type: InternalIP, address: 192.168.1.10}]}
- apiVersion: v1
  kind: Node
  metadata: {name: node-b}
  status: {addresses: [{type: InternalIP, address: 192.168.1.11}]}
- apiVersion: v1
  kind: Pod
  metadata: {namespace: kube-system, name: coredns-a, labels: {k8s-app: kube-dns}}
  spec: {nodeName: node-a, hostNetwork: true, containers: [{name: dns, image: dns}]}
  status: {podIP: 192.168.1.10, podIPs: [{ip: 192.168.1.10}]}
- apiVersion: v1
  kind: Service
  metadata: {namespace: kube-system, name: kube-dns}
  spec:
    selector: {k8s-app: kube-dns}
    clusterIP: 10.96.0.10
    ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {namespace: kube-system, name: kube-dns-1, labels: {kubernetes.io/service-name: kube-dns}}
  addressType: IPv4
  endpoints: [{addresses: [192.168.1.10], targetRef: {kind: Pod, namespace: kube-system, name: coredns-a}}]
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
- apiVersion: v1
  kind: Pod
  metadata: {namespace: default, name: on-a, labels: {app: web}}
  spec: {nodeName: node-a, containers: [{name: app, image: app}]}
  status: {podIP: 10.244.0.5, podIPs: [{ip: 10.244.0.5}]}
- apiVersion: v1
  kind: Pod
  metadata: {namespace: default, name: on-b, labels: {app: web}}
  spec: {nodeName: node-b, containers: [{name: app, image: app}]}
  status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {namespace: default, name: default-deny}
  spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("cluster.yaml"), cluster);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let state_of = |kinds: &[ObjectKind]| {
        let names: Vec<&str> = kinds.iter().map(|k| kind_name(*k)).collect();
        let mut state = ClusterState::new();
        for o in &manifests.objects {
            if names.contains(&o.object.kind()) {
                state.apply(&o.object).unwrap();
            }
        }
        state
    };
    let pods = |kinds: &[ObjectKind]| -> Vec<String> {
        dns_policy_gaps(&state_of(kinds), &Default::default())
            .into_iter()
            .map(|g| format!("{}/{}", g.namespace, g.pod))
            .collect()
    };
    let every_kind = pods(&KINDS);
    assert_eq!(
        every_kind,
        ["default/on-b"],
        "on-a reaches the DNS pod on its own node"
    );
    assert_eq!(pods(&CLUSTER_KINDS), every_kind);
    let without = |gone: ObjectKind| -> Vec<ObjectKind> {
        CLUSTER_KINDS.into_iter().filter(|k| *k != gone).collect()
    };
    assert_eq!(
        pods(&without(ObjectKind::Node)),
        ["default/on-a", "default/on-b"],
        "without Nodes the node-local exception is lost"
    );
    assert!(!CLUSTER_KINDS.contains(&ObjectKind::EndpointSlice));
}
