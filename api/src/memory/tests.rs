//! The memory store's own tests: dedup, eviction by count and by bytes, the
//! release of symbols with their rows, windows and limits, and a property
//! test that the indexed reports and the rendered rows equal the reference
//! scan (`report`'s functions over the flows) over random flows, filters and
//! windows, evictions included.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use netverdict_proto::filter::{Filter, FilterSet, LabelSelector};
use netverdict_proto::time::UnixNanos;
use proptest::prelude::*;
use prost_types::Timestamp;

use super::*;
use crate::report;

fn flow(id: &str, seconds: i64) -> pb::Flow {
    pb::Flow {
        id: id.into(),
        last_seen: Some(Timestamp { seconds, nanos: 0 }),
        count: 1,
        ..Default::default()
    }
}

fn store(max_flows: usize) -> MemoryStore {
    MemoryStore::new(MemoryConfig {
        max_flows,
        ..Default::default()
    })
    .unwrap()
}

fn ids(flows: &[pb::Flow]) -> Vec<&str> {
    flows.iter().map(|f| f.id.as_str()).collect()
}

#[test]
fn a_row_is_compact() {
    // 184 before the packets and bytes the source sent (16 bytes).
    assert!(size_of::<Row>() <= 200, "{} bytes", size_of::<Row>());
}

#[tokio::test]
async fn dedupes_by_id() {
    let s = store(10);
    let batch = vec![flow("a", 1), flow("b", 2), flow("n/1/2", 3)];
    assert_eq!(
        s.insert(batch.clone()).await.unwrap(),
        InsertOutcome {
            stored: 3,
            duplicates: 0,
            rejected: 0
        }
    );
    assert_eq!(
        s.insert(batch).await.unwrap(),
        InsertOutcome {
            stored: 0,
            duplicates: 3,
            rejected: 0
        }
    );
    // Ids that look alike are different flows.
    let alike = vec![flow("n/1/02", 4), flow("n/01/2", 5), flow("n/1/2/", 6)];
    assert_eq!(s.insert(alike).await.unwrap().stored, 3);
    assert_eq!(s.status().await.unwrap().flows_stored, 6);
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(ids(&all), ["a", "b", "n/1/2", "n/1/02", "n/01/2", "n/1/2/"]);
}

#[tokio::test]
async fn evicts_oldest_buckets_and_forgets_their_ids() {
    let s = store(4);
    s.insert(vec![flow("old1", 10), flow("old2", 20)])
        .await
        .unwrap();
    s.insert(vec![flow("mid", 70), flow("new1", 130), flow("new2", 140)])
        .await
        .unwrap();
    let st = s.status().await.unwrap();
    assert_eq!((st.flows_stored, st.flows_dropped), (3, 2));
    assert_eq!(st.oldest, Some(UNIX_EPOCH + Duration::from_secs(70)));
    assert_eq!(st.newest, Some(UNIX_EPOCH + Duration::from_secs(140)));
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(ids(&all), ["mid", "new1", "new2"]);
    // The evicted id is forgotten: sent again, it is stored (and the
    // oldest bucket goes again).
    let out = s.insert(vec![flow("old1", 10)]).await.unwrap();
    assert_eq!(out.stored, 1);
    assert_eq!(s.status().await.unwrap().flows_dropped, 2);
    s.insert(vec![flow("n3", 150), flow("n4", 151)])
        .await
        .unwrap();
    let st = s.status().await.unwrap();
    assert_eq!((st.flows_stored, st.flows_dropped), (4, 4));
}

#[tokio::test]
async fn one_bucket_over_the_bound_drops_its_oldest_records() {
    let s = store(2);
    s.insert(vec![flow("a", 1), flow("b", 2), flow("c", 3)])
        .await
        .unwrap();
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(ids(&all), ["b", "c"]);
    let st = s.status().await.unwrap();
    assert_eq!(st.flows_dropped, 1);
    assert_eq!(st.oldest, Some(UNIX_EPOCH + Duration::from_secs(2)));
}

#[tokio::test]
async fn limits_take_the_newest_or_the_first() {
    let s = store(100);
    let flows: Vec<_> = (0..10)
        .map(|i| flow(&format!("f{i}"), 500 - i * 30))
        .collect();
    s.insert(flows).await.unwrap();
    let q = |limit, first| FlowQuery {
        limit,
        first,
        ..Default::default()
    };
    assert_eq!(
        ids(&s.flows(&q(3, false)).await.unwrap()),
        ["f2", "f1", "f0"]
    );
    assert_eq!(ids(&s.flows(&q(2, true)).await.unwrap()), ["f9", "f8"]);
    let window = FlowQuery {
        window: TimeWindow::from_system(
            Some(UNIX_EPOCH + Duration::from_secs(380)),
            Some(UNIX_EPOCH + Duration::from_secs(440)),
        ),
        ..Default::default()
    };
    assert_eq!(ids(&s.flows(&window).await.unwrap()), ["f4", "f3"]);
}

#[tokio::test]
async fn extreme_and_empty_windows_never_panic() {
    let s = store(100);
    s.insert(vec![
        flow("a", 0),
        flow("b", 61),
        flow("c", i64::from(u32::MAX)),
    ])
    .await
    .unwrap();
    let at = |seconds, nanos| Some(UnixNanos::from_timestamp(&Timestamp { seconds, nanos }));
    let q = |since, until| FlowQuery {
        window: TimeWindow::new(since, until),
        ..Default::default()
    };
    let cases = [
        (
            at(i64::MIN, 0),
            at(i64::MAX, 999_999_999),
            vec!["a", "b", "c"],
        ),
        (at(i64::MIN, 0), None, vec!["a", "b", "c"]),
        (None, at(i64::MIN, 0), vec![]),
        (at(i64::MAX, 999_999_999), None, vec![]),
        (at(i64::MAX, 0), at(i64::MIN, 0), vec![]),
        (at(61, 0), at(61, 0), vec![]),
        (at(60, 0), at(61, 0), vec![]),
        (at(61, 0), at(61, 1), vec!["b"]),
        (at(1, 0), at(120, 0), vec!["b"]),
    ];
    for (since, until, expected) in cases {
        let got = s.flows(&q(since, until)).await.unwrap();
        assert_eq!(ids(&got), expected, "{since:?}..{until:?}");
        let report = ReportQuery {
            window: TimeWindow::new(since, until),
            ..Default::default()
        };
        s.denied(&report).await.unwrap();
        s.dns_failures(&report).await.unwrap();
    }
}

#[tokio::test]
async fn rejects_flows_without_last_seen_naming_them() {
    let s = store(10);
    let mut bad = flow("n/1/7", 0);
    bad.last_seen = None;
    let err = s.insert(vec![flow("ok", 1), bad]).await.unwrap_err();
    assert_eq!(err.to_string(), "flow n/1/7: last_seen: missing");
    assert_eq!(s.status().await.unwrap().flows_stored, 0);
    for config in [
        MemoryConfig {
            max_flows: 0,
            ..Default::default()
        },
        MemoryConfig {
            max_bytes: 0,
            ..Default::default()
        },
        MemoryConfig {
            bucket_width: Duration::from_millis(500),
            ..Default::default()
        },
    ] {
        assert!(MemoryStore::new(config).is_err());
    }
}

/// A denied flow from a pod of `ns` to `api-<pod>`, labelled and with
/// verdicts, last seen at `seconds` (plus `i` ns).
fn pod_flow(i: u64, seconds: i64, pod: &str) -> pb::Flow {
    let endpoint = |ns: &str, name: &str, port| pb::Endpoint {
        kind: pb::EndpointKind::Pod as i32,
        namespace: ns.into(),
        pod_name: name.into(),
        workload: name.split('-').next().unwrap_or_default().into(),
        labels: [("app".to_string(), name.to_string())].into(),
        // One address per pod.
        ip: format!("10.0.0.{}", name.bytes().map(u32::from).sum::<u32>() % 250),
        port,
        ..Default::default()
    };
    pb::Flow {
        id: format!("node-1/1/{i}"),
        first_seen: Some(Timestamp { seconds, nanos: 0 }),
        last_seen: Some(Timestamp {
            seconds,
            nanos: (i % 1000) as i32,
        }),
        count: 1,
        source: Some(endpoint("shop", &format!("client-{pod}"), 40000)),
        destination: Some(endpoint("default", &format!("api-{pod}"), 8080)),
        protocol: pb::Protocol::Tcp as i32,
        verdict: pb::Verdict::Denied as i32,
        reason: format!("denied by default/deny-{pod}"),
        denied_by: vec![pb::PolicyRef {
            namespace: "default".into(),
            name: format!("deny-{pod}"),
            ..Default::default()
        }],
        ingress: Some(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_byte_bound_holds_and_the_oldest_go_first() {
    let max_bytes = 400_000;
    let s = MemoryStore::new(MemoryConfig {
        max_flows: usize::MAX,
        max_bytes,
        ..Default::default()
    })
    .unwrap();
    let mut inserted = 0u64;
    for batch in 0..40i64 {
        // Ten seconds a batch: a bucket holds six batches.
        let flows: Vec<_> = (0..100u64)
            .map(|j| {
                let i = batch as u64 * 100 + j;
                pod_flow(i, 1_020 + batch * 10, &format!("p{}", i % 30))
            })
            .collect();
        inserted += flows.len() as u64;
        s.insert(flows).await.unwrap();
        let bytes = s.bytes();
        assert!(bytes <= max_bytes, "{bytes} bytes after batch {batch}");
        let st = s.status().await.unwrap();
        assert_eq!(st.flows_stored + st.flows_dropped, inserted);
    }
    let st = s.status().await.unwrap();
    assert!(st.flows_dropped > 0, "the bound was reached: {st:?}");
    // What is left is the newest: a suffix of the inserted sequence, in
    // whole buckets.
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    let first: u64 = all[0].id.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(first + all.len() as u64, inserted, "{first}");
    assert_eq!(first, st.flows_dropped);
    assert_eq!(first % 600, 0, "whole buckets go: {first}");
    // The estimate is honest about what the rows take at the least.
    assert!(s.bytes() >= all.len() * size_of::<Row>());
}

#[tokio::test]
async fn one_bucket_over_the_byte_bound_drops_its_oldest_records() {
    let s = MemoryStore::new(MemoryConfig {
        max_flows: usize::MAX,
        max_bytes: 60_000,
        ..Default::default()
    })
    .unwrap();
    let flows: Vec<_> = (0..400).map(|i| pod_flow(i, 1_000, "a")).collect();
    s.insert(flows.clone()).await.unwrap();
    assert!(s.bytes() <= 60_000, "{}", s.bytes());
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    let st = s.status().await.unwrap();
    assert!(st.flows_dropped > 0 && !all.is_empty(), "{st:?}");
    // The oldest inserted went first; the bucket lost its tallies and its
    // reports read its rows.
    assert_eq!(all[0], flows[st.flows_dropped as usize]);
    assert!(s.read().buckets.values().all(|b| b.index.is_none()));
    let q = ReportQuery::default();
    assert_eq!(s.denied(&q).await.unwrap(), report::denied_groups(&all, &q));
}

#[tokio::test]
async fn symbols_are_released_with_their_rows() {
    // Every minute new pods (churning names): the tables hold only the
    // values of the stored minutes.
    let s = store(2_000);
    for minute in 0..50i64 {
        let flows: Vec<_> = (0..500u64)
            .map(|j| {
                let i = minute as u64 * 500 + j;
                pod_flow(i, minute * 60, &format!("m{minute}-{}", j % 20))
            })
            .collect();
        s.insert(flows).await.unwrap();
    }
    // Each value is referenced once per row holding it.
    let all = s.flows(&FlowQuery::default()).await.unwrap();
    let inner = s.read();
    assert_eq!(inner.len, 2_000);
    assert_eq!(inner.buckets.len(), 4);
    // Per minute: 20 pods on each side, 20 policy lists, 20 reasons; one
    // node name, one verdict (plus ip texts: none, all canonical).
    assert_eq!(inner.tables.values(), 4 * (20 * 2 + 20 + 20) + 2);
    let t = &inner.tables;
    let row = &inner.buckets.values().next().unwrap().rows[0];
    let source = row.source.identity.unwrap();
    let same_source = all
        .iter()
        .filter(|f| f.source.as_ref().unwrap().pod_name == t.identity(source).pod_name)
        .count();
    assert_eq!(
        t.identity_refs(row.source.identity.unwrap()),
        same_source as u32
    );
}

#[tokio::test]
async fn metrics_show_the_estimate_and_its_bound() {
    let s = store(10);
    s.insert(vec![flow("a", 1)]).await.unwrap();
    let mut registry = prometheus_client::registry::Registry::with_prefix("netverdict_api");
    s.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let bytes = s.bytes();
    assert!(bytes > 0);
    assert!(
        text.contains(&format!("netverdict_api_memory_bytes {bytes}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "netverdict_api_memory_max_bytes {}\n",
            MemoryConfig::DEFAULT_MAX_BYTES
        )),
        "{text}"
    );
}

#[test]
fn report_filters_read_only_endpoint_identities() {
    // The index decides a report's filter per pair of endpoint identities:
    // ReportQuery's filter must read nothing else.
    let q = ReportQuery {
        window: TimeWindow::from_system(Some(UNIX_EPOCH), Some(UNIX_EPOCH)),
        namespaces: vec!["shop".into()],
        labels: vec![LabelSelector::parse("labels", "app=a").unwrap()],
        limit: 3,
    };
    assert_eq!(
        q.flow_filter(),
        Filter {
            namespace: q.namespaces.clone(),
            labels: q.labels.clone(),
            ..Filter::default()
        }
    );
}

// ------------------------------------------------------------ property test

const BASE: i64 = 1_700_000_000 - 1_700_000_000 % 60;

fn pick<T: Clone + std::fmt::Debug + 'static>(
    values: &[T],
) -> impl Strategy<Value = T> + Clone + use<T> {
    proptest::sample::select(values.to_vec())
}

fn arb_any_endpoint() -> impl Strategy<Value = Option<pb::Endpoint>> {
    let labels =
        proptest::sample::subsequence(vec![("app", "a"), ("app", "b"), ("tier", "x")], 0..=2);
    proptest::option::weighted(
        0.9,
        (
            pick(&[0, 1, 1, 1, 2, 3, 4, 42]),
            pick(&["", "shop", "default"]),
            pick(&["", "a-1", "a-2", "b-1"]),
            pick(&["", "a", "b"]),
            pick(&["", "node-1"]),
            labels,
            pick(&[
                "",
                "10.0.0.1",
                "10.0.0.2",
                "::1",
                "fe80::1",
                "::ffff:1.2.3.4",
                "010.0.0.1",
                "not an address",
            ]),
            pick(&[0u32, 53, 8080]),
        )
            .prop_map(
                |(kind, ns, pod, workload, node, labels, ip, port)| pb::Endpoint {
                    ip: ip.into(),
                    port,
                    kind,
                    namespace: ns.into(),
                    pod_name: pod.into(),
                    labels: labels
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    workload: workload.into(),
                    node_name: node.into(),
                },
            ),
    )
}

/// Mostly one of a few endpoints (so that groups merge records), else any.
fn arb_endpoint() -> impl Strategy<Value = Option<pb::Endpoint>> {
    let pod = |ns: &str, name: &str, ip: &str| pb::Endpoint {
        ip: ip.into(),
        port: 8080,
        kind: pb::EndpointKind::Pod as i32,
        namespace: ns.into(),
        pod_name: name.into(),
        labels: [("app".to_string(), "a".to_string())].into(),
        workload: "a".into(),
        node_name: "node-1".into(),
    };
    let world = pb::Endpoint {
        ip: "1.1.1.1".into(),
        port: 443,
        kind: pb::EndpointKind::World as i32,
        ..Default::default()
    };
    prop_oneof![
        3 => pick(&[
            Some(pod("shop", "a-1", "10.0.0.1")),
            Some(pod("shop", "a-2", "10.0.0.2")),
            Some(pod("default", "a-1", "10.0.1.1")),
            Some(world),
        ]),
        1 => arb_any_endpoint(),
    ]
}

fn policy(name: &str) -> pb::PolicyRef {
    match name {
        "anp" => pb::PolicyRef {
            name: "anp".into(),
            kind: pb::PolicyKind::AdminNetworkPolicy as i32,
            tier: pb::PolicyTier::Admin as i32,
            ..Default::default()
        },
        _ => pb::PolicyRef {
            namespace: "default".into(),
            name: name.into(),
            kind: pb::PolicyKind::NetworkPolicy as i32,
            tier: pb::PolicyTier::NetworkPolicy as i32,
        },
    }
}

fn arb_policies() -> impl Strategy<Value = Vec<pb::PolicyRef>> {
    pick(&[
        &[][..],
        &["deny"],
        &["other"],
        &["deny", "anp"],
        &["anp", "deny", "deny"],
    ])
    .prop_map(|names| names.iter().map(|n| policy(n)).collect())
}

fn arb_verdict() -> impl Strategy<Value = Option<pb::DirectionVerdict>> {
    proptest::option::of(pick(&[0, 6, 7]).prop_map(|status| pb::DirectionVerdict {
        status,
        ..Default::default()
    }))
}

fn arb_dns() -> impl Strategy<Value = Option<pb::Dns>> {
    proptest::option::weighted(
        0.6,
        (
            0u32..3,
            pick(&["a.example", "b.example"]),
            pick(&["A", "A", "AAAA"]),
            pick(&["", "NOERROR", "NXDOMAIN", "NXDOMAIN"]),
            proptest::bool::weighted(0.8),
        )
            .prop_map(|(id, query, qtype, rcode, allows)| pb::Dns {
                id,
                query: query.into(),
                qtype: qtype.into(),
                rcode: rcode.into(),
                answers: u32::from(rcode == "NOERROR"),
                egress_allows_cluster_dns: allows,
            }),
    )
}

/// A flow whose content is a function of its number `i` and the drawn
/// parts; its id says its number.
fn arb_flow() -> impl Strategy<Value = (pb::Flow, u32)> {
    let times = (
        0i64..300,
        pick(&[0, 1, 500_000_000, 999_999_999]),
        proptest::option::of(0i64..5),
        pick(&[0u64, 1, 3, u64::MAX]),
    );
    let ends = (arb_endpoint(), arb_endpoint());
    let verdicts = (
        pick(&[0, 1, 2, 2, 2]),
        pick(&[0, 1, 2, 4, 4, 5, 5, 6, 6, 42]),
        pick(&[0, 1, 2, 99]),
        pick(&["", "why", "because"]),
        arb_policies(),
        arb_verdict(),
        arb_verdict(),
    );
    let rest = (
        arb_dns(),
        any::<bool>(),
        arb_policies(),
        pick(&["", "n1", "n2"]),
    );
    (times, ends, verdicts, rest, any::<u32>()).prop_map(
        |(
            (seconds, nanos, first_back, count),
            (source, destination),
            (verdict, outcome, protocol, reason, denied_by, egress, ingress),
            (dns, counted_elsewhere, allowed_by, node),
            salt,
        )| {
            let last = Timestamp {
                seconds: BASE + seconds,
                nanos,
            };
            let flow = pb::Flow {
                id: String::new(),
                first_seen: first_back.map(|b| Timestamp {
                    seconds: BASE + seconds - b,
                    nanos: 0,
                }),
                last_seen: Some(last),
                count,
                node_name: node.into(),
                source,
                destination,
                protocol,
                service: if salt % 5 == 0 {
                    "shop/api".into()
                } else {
                    String::new()
                },
                traffic_direction: (salt % 3) as i32,
                verdict,
                reason: reason.into(),
                egress,
                ingress,
                allowed_by,
                denied_by,
                outcome,
                drop_reason: if outcome == 5 {
                    "NETFILTER_DROP".into()
                } else {
                    String::new()
                },
                drop_count: u64::from(salt % 4),
                mismatch: (salt % 4) as i32,
                dns,
                observation_point: (salt % 5) as i32,
                counted_elsewhere,
                destination_names: match salt % 6 {
                    0 => vec!["api.example.com".into()],
                    1 => vec!["a.cdn.test".into(), "b.cdn.test".into()],
                    _ => Vec::new(),
                },
                packets: u64::from(salt % 7),
                bytes: u64::from(salt).wrapping_mul(1_000_003),
            };
            (flow, salt)
        },
    )
}

/// The id of flow `i`: mostly `node/run/sequence`, some other shapes.
fn id_of(i: usize, node: &str, salt: u32) -> String {
    match salt % 7 {
        0 => format!("{i}"),
        1 => format!("{node}/01/{i}"),
        2 => format!("/1/{i}"),
        _ => format!("{node}/{}/{i}", salt % 3),
    }
}

fn arb_bound() -> impl Strategy<Value = Option<(i64, i32)>> {
    proptest::option::of((0i64..320, pick(&[0, 1, 999_999_999])))
}

fn arb_report() -> impl Strategy<Value = ReportQuery> {
    (
        arb_bound(),
        arb_bound(),
        proptest::sample::subsequence(vec!["shop", "default", "nope"], 0..=2),
        pick(&["", "app=a", "!app", "tier"]),
        0usize..4,
    )
        .prop_map(|(since, until, namespaces, labels, limit)| {
            let at = |b: Option<(i64, i32)>| {
                b.map(|(s, n)| {
                    UnixNanos::from_timestamp(&Timestamp {
                        seconds: BASE + s,
                        nanos: n,
                    })
                })
            };
            ReportQuery {
                window: TimeWindow::new(at(since), at(until)),
                namespaces: namespaces.into_iter().map(String::from).collect(),
                labels: if labels.is_empty() {
                    Vec::new()
                } else {
                    vec![LabelSelector::parse("labels", labels).unwrap()]
                },
                limit,
            }
        })
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    (
        pick(&[vec![], vec![2]]),
        pick(&[vec![], vec!["shop".to_string()]]),
        pick(&[vec![], vec!["10.0.0.0/8".to_string()]]),
        pick(&[vec![], vec![8080u32]]),
    )
        .prop_map(|(verdict, namespace, source_ip, destination_port)| {
            Filter::compile(&pb::FlowFilter {
                verdict,
                namespace,
                source_ip,
                destination_port,
                ..Default::default()
            })
            .unwrap()
        })
}

fn arb_filters() -> impl Strategy<Value = FilterSet> {
    (
        proptest::collection::vec(arb_filter(), 0..2),
        proptest::collection::vec(arb_filter(), 0..2),
    )
        .prop_map(|(include, exclude)| FilterSet { include, exclude })
}

/// What `flows` must answer, from the flows a store holds (oldest first).
fn reference_flows(all: &[pb::Flow], q: &FlowQuery) -> Vec<pb::Flow> {
    let matched: Vec<pb::Flow> = all
        .iter()
        .filter(|f| q.window.contains_flow(f) && q.filters.matches(f))
        .cloned()
        .collect();
    if q.limit == 0 || matched.len() <= q.limit {
        matched
    } else if q.first {
        matched[..q.limit].to_vec()
    } else {
        matched[matched.len() - q.limit..].to_vec()
    }
}

fn sorted(mut flows: Vec<pb::Flow>) -> Vec<pb::Flow> {
    flows.sort_by(|a, b| {
        (
            UnixNanos::from_timestamp(a.last_seen.as_ref().unwrap()),
            &a.id,
        )
            .cmp(&(
                UnixNanos::from_timestamp(b.last_seen.as_ref().unwrap()),
                &b.id,
            ))
    });
    flows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn indexed_reports_equal_the_scan(
        batches in proptest::collection::vec(proptest::collection::vec(arb_flow(), 0..50), 1..6),
        resend in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        max_flows in 20usize..150,
        reports in proptest::collection::vec(arb_report(), 4),
        flow_queries in proptest::collection::vec((arb_filters(), arb_report(), any::<bool>()), 3),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let store = store(max_flows);
        let mut by_id: HashMap<String, pb::Flow> = HashMap::new();
        let mut sent: Vec<Vec<pb::Flow>> = Vec::new();
        let mut n = 0;
        for batch in batches {
            let batch: Vec<pb::Flow> = batch
                .into_iter()
                .map(|(mut f, salt)| {
                    n += 1;
                    f.id = id_of(n, &f.node_name, salt);
                    by_id.insert(f.id.clone(), f.clone());
                    f
                })
                .collect();
            rt.block_on(store.insert(batch.clone())).unwrap();
            sent.push(batch);
        }
        // Batches sent again (some of their flows evicted since).
        for i in resend {
            let batch = i.get(&sent).clone();
            rt.block_on(store.insert(batch)).unwrap();
        }
        let all = rt.block_on(store.flows(&FlowQuery::default())).unwrap();
        // Rows render back to the flows inserted, oldest first.
        for f in &all {
            prop_assert_eq!(Some(f), by_id.get(&f.id));
        }
        prop_assert_eq!(&sorted(all.clone()), &all);
        {
            // The probe renders each row as render does, warm or cold.
            let inner = store.read();
            let mut probe = inner.tables.probe();
            for _ in 0..2 {
                for row in inner.buckets.values().flat_map(|b| &b.rows) {
                    let rendered = inner.tables.render(row);
                    prop_assert!(probe.check(row, None, |f| *f == rendered), "{:?}", rendered);
                }
            }
        }
        let st = rt.block_on(store.status()).unwrap();
        prop_assert_eq!(st.flows_stored as usize, all.len());
        prop_assert!(all.len() <= max_flows);
        for q in &reports {
            let reference = report::denied_groups(&all, q);
            prop_assert_eq!(rt.block_on(store.denied(q)).unwrap(), reference, "{:?}", q);
            let reference = report::dns_failures(&all, q);
            prop_assert_eq!(rt.block_on(store.dns_failures(q)).unwrap(), reference, "{:?}", q);
        }
        for (filters, r, first) in flow_queries {
            let q = FlowQuery { filters, window: r.window, limit: r.limit, first };
            let got = rt.block_on(store.flows(&q)).unwrap();
            prop_assert_eq!(got, reference_flows(&all, &q), "{:?}", q);
        }
    }
}
