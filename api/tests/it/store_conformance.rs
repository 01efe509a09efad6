//! The conformance suite of the `Store` interface (`api/src/store.rs`),
//! written once and run against every implementation: the memory store and
//! the ClickHouse store (a database of its own per test on the shared server).
//! Each check takes a fresh, empty store and asserts what the interface
//! promises: flows back exactly, oldest first; deduplication by id; filters,
//! windows, limits and `first`; the denied and DNS failure reports (a
//! connection seen at both ends counted once); status; whole-batch refusal of
//! a flow no store can take. A new store adds one line
//! at the bottom of this file.
//!
//! Store-specific behaviour stays with its store: migrations, rollups,
//! retention and the spool in `clickhouse_store` and `clickhouse_durability`,
//! the memory bound in `queries`; the exhaustive filter equivalence of SQL,
//! matcher and memory store in `clickhouse_filters`.

use std::time::{Duration, UNIX_EPOCH};

use netverdict_api::MemoryStore;
use netverdict_api::clickhouse::ClickHouseStore;
use netverdict_api::store::{FlowQuery, ReportQuery, Store};
use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow::{FlowBuilder, now_nanos, policy_ref};
use netverdict_testing::{flow, pod, world};

use crate::fixtures::{both_ends, payments_and_a_hostile_namespace};

/// One test per check for one store: `$fresh()` gives a fresh, empty store and
/// what must live as long as it (a database guard).
macro_rules! conformance_tests {
    ($store:ident, $fresh:ident, [$($check:ident),* $(,)?]) => {
        mod $store {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _guard) = super::$fresh().await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

/// Every check of the suite, for one store.
macro_rules! store_conformance {
    ($store:ident, $fresh:ident) => {
        conformance_tests!(
            $store,
            $fresh,
            [
                flows_round_trip_exactly,
                limits_take_the_newest_or_the_first,
                windows_are_since_inclusive_until_exclusive,
                a_flow_stored_twice_is_stored_once,
                filters_windows_limits_and_first_combine,
                hostile_filter_values_are_just_values,
                denied_flows_group_by_workloads_port_and_policies,
                dns_failures_group_by_pod_and_name,
                reports_take_namespaces_a_window_and_a_limit,
                a_connection_seen_at_both_ends_counts_once_in_reports,
                status_counts_flows_and_their_time_bounds,
                a_batch_with_an_invalid_flow_is_refused_whole,
            ]
        );
    };
}

/// A fresh memory store (the default bound).
async fn fresh_memory() -> (MemoryStore, ()) {
    let store = MemoryStore::new(Default::default()).expect("the default memory store");
    (store, ())
}

/// A fresh ClickHouse store on a database of its own, dropped with the guard.
async fn fresh_clickhouse() -> (ClickHouseStore, TestDb) {
    let db = TestDb::shared();
    (db.connect().await, db)
}

store_conformance!(memory, fresh_memory);
store_conformance!(clickhouse, fresh_clickhouse);

// ---------------------------------------------------------------- fixtures

const SECOND: i64 = 1_000_000_000;

/// A plain flow lasting 1 ms up to `last_seen` (nanoseconds since the epoch).
fn at(id: impl Into<String>, last_seen: i64) -> FlowBuilder {
    flow(id).seen_nanos(last_seen - 1_000_000, last_seen)
}

/// Four flows, 1 ns apart from `base`, that set every field between them: a
/// DNS answer with its packets and bytes, a denied flow with both kinds of
/// rule references and its failures, an ICMPv6 world source without a
/// destination (counts at their extreme), and hostile strings.
fn rich_flows(base: i64) -> Vec<pb::Flow> {
    let dns = at("node-a/1/1", base)
        .udp()
        .to(pod("kube-system", "coredns-1")
            .workload("coredns")
            .ip("10.0.0.10")
            .port(53)
            .labels(&[("k8s-app", "kube-dns")])
            .node("node-a"))
        .outcome(pb::Outcome::Answered)
        .dns_record(pb::Dns {
            id: 77,
            query: "API.Example.com.".into(),
            qtype: "A".into(),
            rcode: "NXDOMAIN".into(),
            answers: 0,
            egress_allows_cluster_dns: true,
        })
        .with(|f| {
            f.packets = 2;
            f.bytes = 140;
        });
    let denied = at("node-a/1/2", base + 1)
        .denied()
        .outcome(pb::Outcome::Dropped)
        .drop_reason("NETFILTER_DROP")
        .drop_count(3)
        .count(5)
        .reason("ingress of shop/api-1 denied")
        .denied_by(["shop/default-deny", "shop/api-ingress"])
        .ingress(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            isolated: true,
            selected_by: vec![policy_ref("shop/default-deny")],
            nearest_miss: Some(pb::RuleRef {
                policy: Some(policy_ref("shop/api-ingress")),
                rule: 0,
                peer: Some(1),
                port: None,
            }),
            failures: vec![pb::Failure {
                kind: "pod_label".into(),
                description: "needs app=web2".into(),
            }],
            ..Default::default()
        })
        .service("shop/api")
        .traffic_direction(pb::TrafficDirection::Egress)
        .mismatch(pb::Mismatch::None);
    let v6 = at("node-b/9/3", base + 2)
        .node("node-b")
        .from(world("fd00::5"))
        .no_destination()
        .protocol(pb::Protocol::Icmp)
        .with(|f| {
            f.packets = u64::MAX;
            f.bytes = u64::MAX;
        })
        .allowed_by(["shop/allow-web"])
        .egress(pb::DirectionVerdict {
            status: pb::PolicyStatus::Allowed as i32,
            isolated: true,
            selected_by: vec![policy_ref("shop/allow-web")],
            allowed_by: vec![pb::RuleRef {
                policy: Some(policy_ref("shop/allow-web")),
                rule: 2,
                peer: None,
                port: Some(0),
            }],
            ..Default::default()
        });
    let hostile = at("node-a/1/4", base + 3)
        .from(pod("x' OR 1=1 --", "web-1").workload("web").port(40000))
        .reason("quote ' backslash \\ tab \t newline \n nul \0 unicode é");
    [dns, denied, v6, hostile].map(FlowBuilder::build).into()
}

/// The flows of the report checks, from `base` on: web -> api:8080 denied by
/// two policies (three records, two pods of web), a denied egress of
/// other/batch-x to the world, and four DNS queries of shop/web-1 (two
/// dropped by policy, an NXDOMAIN, a good answer).
fn report_flows(base: i64) -> Vec<pb::Flow> {
    let mut flows = Vec::new();
    for (i, src_pod) in ["web-1", "web-2", "web-1"].into_iter().enumerate() {
        let outcome = if i == 2 {
            pb::Outcome::Dropped
        } else {
            pb::Outcome::NoAnswer
        };
        let f = at(format!("node-a/1/{i}"), base + i as i64 * SECOND)
            .from(pod("shop", src_pod).workload("web").port(40000))
            .denied()
            .outcome(outcome)
            .count(2)
            .reason(format!("reason {i}"))
            .denied_by(["shop/default-deny", "shop/api-ingress"])
            .ingress(pb::DirectionVerdict {
                status: pb::PolicyStatus::Denied as i32,
                isolated: true,
                ..Default::default()
            });
        flows.push(f.build());
    }
    let world_egress = at("node-a/1/10", base + 5 * SECOND)
        .from(pod("other", "batch-x").ip("10.0.3.3").port(5555))
        .to(world("203.0.113.9").port(443))
        .denied()
        .outcome(pb::Outcome::Dropped)
        .denied_by(["other/egress-lockdown"])
        .egress(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            isolated: true,
            ..Default::default()
        });
    flows.push(world_egress.build());
    for (i, (query, rcode, outcome, verdict)) in [
        (
            "api.example.com",
            "",
            pb::Outcome::Dropped,
            pb::Verdict::Denied,
        ),
        (
            "api.example.com",
            "",
            pb::Outcome::Dropped,
            pb::Verdict::Denied,
        ),
        (
            "nope.example.com",
            "NXDOMAIN",
            pb::Outcome::Answered,
            pb::Verdict::Allowed,
        ),
        (
            "api.example.com",
            "NOERROR",
            pb::Outcome::Answered,
            pb::Verdict::Allowed,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = at(format!("node-a/2/{i}"), base + 10 * SECOND + i as i64)
            .udp()
            .to(pod("kube-system", "coredns-1")
                .workload("coredns")
                .ip("10.0.0.10")
                .port(53))
            .outcome(outcome)
            .verdict(verdict)
            .dns_answer(query, "A", rcode);
        if verdict == pb::Verdict::Denied {
            f = f
                .denied_by(["shop/default-deny"])
                .reason("egress of shop/web-1 denied");
        }
        flows.push(f.build());
    }
    flows
}

/// A flow query with these filters.
fn filtered(include: &[pb::FlowFilter], exclude: &[pb::FlowFilter]) -> FlowQuery {
    FlowQuery {
        filters: FilterSet::compile(include, exclude).expect("valid filters"),
        ..Default::default()
    }
}

fn ids(flows: &[pb::Flow]) -> Vec<&str> {
    flows.iter().map(|f| f.id.as_str()).collect()
}

fn window(since: Option<i64>, until: Option<i64>) -> TimeWindow {
    TimeWindow::new(
        since.map(UnixNanos::from_nanos),
        until.map(UnixNanos::from_nanos),
    )
}

// ---------------------------------------------------------------- checks

async fn flows_round_trip_exactly<S: Store>(store: &S) {
    let flows = rich_flows(now_nanos() - 60 * SECOND);
    let out = store.insert(flows.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (4, 0));
    let got = store.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(got, flows, "every field back, oldest first");
    let icmp = pb::FlowFilter {
        protocol: vec![pb::Protocol::Icmp as i32],
        ..Default::default()
    };
    let got = store.flows(&filtered(&[icmp], &[])).await.unwrap();
    assert_eq!(ids(&got), ["node-b/9/3"], "--protocol icmp");
}

async fn limits_take_the_newest_or_the_first<S: Store>(store: &S) {
    let flows = rich_flows(now_nanos() - 60 * SECOND);
    store.insert(flows.clone()).await.unwrap();
    let limited = |limit, first| FlowQuery {
        limit,
        first,
        ..Default::default()
    };
    let newest = store.flows(&limited(2, false)).await.unwrap();
    assert_eq!(newest, flows[2..], "the newest two, oldest first");
    let first = store.flows(&limited(2, true)).await.unwrap();
    assert_eq!(first, flows[..2], "the oldest two");
    let all = store.flows(&limited(0, true)).await.unwrap();
    assert_eq!(all, flows, "0 is no limit");
    let more = store.flows(&limited(10, false)).await.unwrap();
    assert_eq!(more, flows, "a limit above the count");
}

async fn windows_are_since_inclusive_until_exclusive<S: Store>(store: &S) {
    let base = now_nanos() - 60 * SECOND;
    let flows = rich_flows(base);
    store.insert(flows.clone()).await.unwrap();
    let within = async |since, until| {
        let query = FlowQuery {
            window: window(since, until),
            ..Default::default()
        };
        store.flows(&query).await.unwrap()
    };
    assert_eq!(
        within(Some(base + 1), Some(base + 3)).await,
        flows[1..3],
        "since inclusive, until exclusive, to the nanosecond"
    );
    assert_eq!(within(Some(base + 2), None).await, flows[2..]);
    assert_eq!(within(None, Some(base + 1)).await, flows[..1]);
    assert_eq!(within(Some(base + 1), Some(base + 1)).await, []);
    assert_eq!(within(Some(i64::MIN), Some(i64::MAX)).await, flows);
    assert_eq!(within(Some(i64::MAX), None).await, []);
}

async fn a_flow_stored_twice_is_stored_once<S: Store>(store: &S) {
    let base = now_nanos() - 10 * SECOND;
    let batch: Vec<pb::Flow> = (0..100)
        .map(|i| at(format!("node-a/1/{i}"), base + i * 1_000_000).build())
        .collect();
    let out = store.insert(batch.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (100, 0));

    // The collector resends the batch (with a new flow, repeated inside).
    let mut resend = batch.clone();
    let new = at("node-a/1/100", base + 100_000_000).build();
    resend.push(new.clone());
    resend.push(new);
    let out = store.insert(resend).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (1, 101));

    // Concurrent resends from two streams: still once.
    let (a, b) = tokio::join!(store.insert(batch.clone()), store.insert(batch.clone()));
    assert_eq!(a.unwrap().stored + b.unwrap().stored, 0);

    let stored = store.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 101);
    assert_eq!(stored[..100], batch, "the first copy of each");
    assert_eq!(store.status().await.unwrap().flows_stored, 101);
}

async fn filters_windows_limits_and_first_combine<S: Store>(store: &S) {
    let base = now_nanos() - 600 * SECOND;
    let base_time = UNIX_EPOCH + Duration::from_nanos(base as u64);
    let flows = payments_and_a_hostile_namespace(base_time, Duration::from_secs(1));
    store.insert(flows).await.unwrap();
    let query = async |q: FlowQuery| ids(&store.flows(&q).await.unwrap()).join(" ");

    let denied = pb::FlowFilter {
        verdict: vec![pb::Verdict::Denied as i32],
        ..Default::default()
    };
    let payments = pb::FlowFilter {
        namespace: vec!["payments".into()],
        ..Default::default()
    };
    let hostile = pb::FlowFilter {
        namespace: vec!["x' OR 1=1 --".into()],
        ..Default::default()
    };
    assert_eq!(
        query(filtered(std::slice::from_ref(&denied), &[])).await,
        "n/1/0 n/1/2 n/1/4"
    );
    // Fields of one filter AND, filters OR, exclusions win.
    let port_and_policy = pb::FlowFilter {
        destination_port: vec![5432],
        policy: vec!["payments/default-deny".into()],
        ..Default::default()
    };
    assert_eq!(
        query(filtered(&[port_and_policy], &[])).await,
        "n/1/0 n/1/2 n/1/4"
    );
    assert_eq!(
        query(filtered(&[payments.clone(), hostile.clone()], &[])).await,
        "n/1/0 n/1/2 n/1/4 n/1/hostile"
    );
    assert_eq!(
        query(filtered(&[], &[payments.clone(), hostile])).await,
        "n/1/1 n/1/3 n/1/5"
    );
    // With a limit: the newest matches, or the first.
    let limited = |first| FlowQuery {
        limit: 2,
        first,
        ..filtered(std::slice::from_ref(&denied), &[])
    };
    assert_eq!(query(limited(false)).await, "n/1/2 n/1/4");
    assert_eq!(query(limited(true)).await, "n/1/0 n/1/2");
    // With a window: [2 s, 5 s) holds n/1/2 to n/1/4, of which two are denied.
    let windowed = FlowQuery {
        window: window(Some(base + 2 * SECOND), Some(base + 5 * SECOND)),
        ..filtered(&[denied], &[])
    };
    assert_eq!(query(windowed).await, "n/1/2 n/1/4");
}

async fn hostile_filter_values_are_just_values<S: Store>(store: &S) {
    let flows = rich_flows(now_nanos() - 60 * SECOND);
    store.insert(flows.clone()).await.unwrap();
    let hostile = "x' OR 1=1 --";
    let by_ns = store
        .flows(&filtered(
            &[pb::FlowFilter {
                namespace: vec![hostile.into()],
                ..Default::default()
            }],
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(by_ns, flows[3..], "only the flow in the namespace named so");
    for f in [
        pb::FlowFilter {
            namespace: vec!["x\\' OR 1=1 --".into(), "'); DROP TABLE flows; --".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            source_pod: vec![format!("{hostile}/x' OR '1'='1*")],
            ..Default::default()
        },
        pb::FlowFilter {
            policy: vec!["shop/x' OR 1=1 --".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            dns_query: vec!["*.x' OR 1=1 --".into(), "a`b\\c?d".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            node_name: vec![hostile.into(), "?".into()],
            ..Default::default()
        },
    ] {
        let got = store
            .flows(&filtered(std::slice::from_ref(&f), &[]))
            .await
            .unwrap();
        assert!(got.is_empty(), "{f:?} matched {got:?}");
    }
    for f in [
        pb::FlowFilter {
            labels: vec![format!("app={hostile}")],
            ..Default::default()
        },
        pb::FlowFilter {
            source_ip: vec![hostile.into()],
            ..Default::default()
        },
    ] {
        // Refused when compiled, before any store sees it.
        let err = FilterSet::compile(std::slice::from_ref(&f), &[]).unwrap_err();
        assert!(err.to_string().contains(hostile), "{f:?}: {err}");
    }
    let report = ReportQuery {
        namespaces: vec![hostile.into()],
        ..Default::default()
    };
    assert!(store.denied(&report).await.unwrap().is_empty());
    assert_eq!(
        store.flows(&FlowQuery::default()).await.unwrap(),
        flows,
        "every flow still there"
    );
}

async fn denied_flows_group_by_workloads_port_and_policies<S: Store>(store: &S) {
    let base = now_nanos() - 120 * SECOND;
    let flows = report_flows(base);
    store.insert(flows.clone()).await.unwrap();
    let denied = store.denied(&ReportQuery::default()).await.unwrap();
    assert_eq!(denied.len(), 3, "{denied:#?}");
    let g = &denied[0];
    assert_eq!(
        g.source,
        Some(pb::WorkloadRef {
            kind: pb::EndpointKind::Pod as i32,
            namespace: "shop".into(),
            workload: "web".into(),
            ip: String::new(),
        })
    );
    assert_eq!(g.destination.as_ref().unwrap().workload, "api");
    assert_eq!(
        (g.protocol, g.destination_port),
        (pb::Protocol::Tcp as i32, 8080)
    );
    assert_eq!(
        g.denied_by,
        [
            policy_ref("shop/api-ingress"),
            policy_ref("shop/default-deny")
        ],
        "sorted"
    );
    assert_eq!((g.count, g.flows), (6, 3));
    assert!(g.ingress_denied && !g.egress_denied);
    assert_eq!(g.reason, "reason 2", "the latest reason");
    assert_eq!(g.outcome, pb::Outcome::Dropped as i32);
    assert_eq!(g.first_seen, flows[0].first_seen);
    assert_eq!(g.last_seen, flows[2].last_seen);
    // The DNS denials (2 records) and the world egress (1).
    assert_eq!(denied[1].count, 2);
    assert_eq!(denied[1].destination.as_ref().unwrap().workload, "coredns");
    let w = &denied[2];
    assert_eq!(
        w.destination,
        Some(pb::WorkloadRef {
            kind: pb::EndpointKind::World as i32,
            namespace: String::new(),
            workload: String::new(),
            ip: "203.0.113.9".into(),
        })
    );
    assert_eq!(
        w.source.as_ref().unwrap().workload,
        "batch-x",
        "the pod name without a workload"
    );
    assert!(w.egress_denied && !w.ingress_denied);
    // Exactly as the reference functions group.
    assert_eq!(
        denied,
        netverdict_api::report::denied_groups(&flows, &ReportQuery::default())
    );
}

async fn dns_failures_group_by_pod_and_name<S: Store>(store: &S) {
    let base = now_nanos() - 120 * SECOND;
    let flows = report_flows(base);
    store.insert(flows.clone()).await.unwrap();
    let dns = store.dns_failures(&ReportQuery::default()).await.unwrap();
    assert_eq!(dns.len(), 2, "{dns:#?}");
    assert_eq!(
        dns[0],
        pb::DnsFailure {
            namespace: "shop".into(),
            pod: "web-1".into(),
            query: "api.example.com".into(),
            qtype: "A".into(),
            outcome: pb::Outcome::Dropped as i32,
            rcode: String::new(),
            count: 2,
            last_seen: flows[5].last_seen,
            denied_by: vec![policy_ref("shop/default-deny")],
            egress_allows_cluster_dns: false,
            reason: "egress of shop/web-1 denied".into(),
        }
    );
    assert_eq!(
        (dns[1].query.as_str(), dns[1].rcode.as_str(), dns[1].count),
        ("nope.example.com", "NXDOMAIN", 1)
    );
    assert!(dns[1].denied_by.is_empty() && dns[1].reason.is_empty());
    assert_eq!(
        dns,
        netverdict_api::report::dns_failures(&flows, &ReportQuery::default())
    );
}

async fn reports_take_namespaces_a_window_and_a_limit<S: Store>(store: &S) {
    let base = now_nanos() - 120 * SECOND;
    store.insert(report_flows(base)).await.unwrap();
    let all = store.denied(&ReportQuery::default()).await.unwrap();
    let denied = async |query: ReportQuery| store.denied(&query).await.unwrap();
    let only_other = denied(ReportQuery {
        namespaces: vec!["other".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(only_other, all[2..], "the world egress of other/batch-x");
    let limited = denied(ReportQuery {
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(limited, all[..1]);
    let recent = denied(ReportQuery {
        window: window(Some(base + 4 * SECOND), None),
        ..Default::default()
    })
    .await;
    assert_eq!(
        recent,
        all[1..],
        "only the DNS denials and the world egress"
    );
    let dns_elsewhere = store
        .dns_failures(&ReportQuery {
            namespaces: vec!["other".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(dns_elsewhere.is_empty(), "{dns_elsewhere:#?}");
}

async fn a_connection_seen_at_both_ends_counts_once_in_reports<S: Store>(store: &S) {
    const N: usize = 7;
    let flows = both_ends(N, now_nanos() - 60 * SECOND);
    store.insert(flows).await.unwrap();
    let denied = store.denied(&ReportQuery::default()).await.unwrap();
    let attempts: u64 = denied.iter().map(|g| g.count).sum();
    assert_eq!(attempts, 2 * N as u64, "{denied:#?}");
    let records: u64 = denied.iter().map(|g| g.flows).sum();
    assert_eq!(records, 2 * N as u64, "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|g| g.outcome == pb::Outcome::NoAnswer as i32),
        "the source's records: {denied:#?}"
    );
    let dns = store.dns_failures(&ReportQuery::default()).await.unwrap();
    assert_eq!(
        dns.iter().map(|f| f.count).sum::<u64>(),
        N as u64,
        "{dns:#?}"
    );
    // Every record is stored: both ends are there to look at.
    assert_eq!(
        store.flows(&FlowQuery::default()).await.unwrap().len(),
        4 * N
    );
}

async fn status_counts_flows_and_their_time_bounds<S: Store>(store: &S) {
    let empty = store.status().await.unwrap();
    assert_eq!(
        (empty.flows_stored, empty.oldest, empty.newest),
        (0, None, None)
    );
    let base = now_nanos() - 5 * SECOND;
    let flows = vec![at("a/1/1", base).build(), at("a/1/2", base + 7).build()];
    store.insert(flows).await.unwrap();
    let s = store.status().await.unwrap();
    assert_eq!((s.flows_stored, s.flows_dropped), (2, 0));
    let time = |ns: i64| Some(UNIX_EPOCH + Duration::from_nanos(ns as u64));
    assert_eq!(s.oldest, time(base), "the oldest last_seen");
    assert_eq!(s.newest, time(base + 7), "the newest last_seen");
}

async fn a_batch_with_an_invalid_flow_is_refused_whole<S: Store>(store: &S) {
    let now = now_nanos();
    let err = store
        .insert(vec![at("ok/1/1", now).build(), at("", now).build()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");
    let out_of_range = at("node-a/1/2", now).to(pod("shop", "api-1").port(70000));
    let err = store.insert(vec![out_of_range.build()]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("destination.port") && text.contains("node-a/1/2"),
        "names the flow and the field: {text}"
    );
    assert_eq!(
        store.status().await.unwrap().flows_stored,
        0,
        "nothing of a refused batch stored"
    );
    assert!(store.flows(&FlowQuery::default()).await.unwrap().is_empty());
    // The store goes on taking valid flows.
    let out = store.insert(vec![at("ok/1/1", now).build()]).await.unwrap();
    assert_eq!(out.stored, 1);
}
