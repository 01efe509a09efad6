//! Every filter dimension and time window in SQL gives exactly the answer of
//! the Rust matcher (`netverdict_proto::filter::FilterSet::matches` and
//! `netverdict_proto::time::TimeWindow`), and the memory store the same, over
//! a generated set of flows: an exhaustive table of single-dimension filters
//! (hostile and invalid values included), then random combinations (include,
//! exclude, several values, windows up to the extremes) with proptest. An
//! invalid value fails one compile, which names the field and the value,
//! before any backend sees it. The reports' namespace and label filters
//! select the same flows in SQL as in the memory store.

use netverdict_api::clickhouse::ClickHouseStore;
use netverdict_api::store::{FlowQuery, ReportQuery, Store};
use netverdict_api::{MemoryConfig, MemoryStore};
use netverdict_proto::filter::{FilterError, FilterSet, LabelSelector};
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow::{now_nanos, policy_ref, timestamp_nanos};
use netverdict_testing::pod;
use proptest::prelude::*;

const NAMESPACES: [&str; 4] = ["shop", "db", "", "x' OR 1=1 --"];
const PODS: [&str; 4] = ["web-1", "web-2", "api-7", ""];
const IPS: [&str; 6] = [
    "10.0.1.5",
    "10.0.2.7",
    "192.168.1.1",
    "fd00::5",
    "::ffff:10.0.1.9",
    "not-an-ip",
];
const NAMES: [&str; 5] = [
    "api.example.com",
    "API.Example.com.",
    "a.b.example.com",
    "example.com",
    "badexample.com",
];
const POLICIES: [&str; 3] = ["shop/default-deny", "shop/allow-web", "db/x"];
const DROP_REASONS: [&str; 4] = ["NETFILTER_DROP", "NO_SOCKET", "", "x' OR 1=1 --"];
const LABELS: [(&str, &str); 4] = [
    ("app", "web"),
    ("app", "api"),
    ("tier", "backend"),
    ("canary", ""),
];

/// A deterministic, varied set of flows: every dimension takes several values,
/// endpoints are sometimes absent, DNS sometimes present.
fn generated() -> Vec<pb::Flow> {
    let mut flows = Vec::new();
    let base = now_nanos() - 3_600_000_000_000;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for i in 0..240 {
        let endpoint = |next: &mut dyn FnMut(usize) -> usize| {
            if next(8) == 0 {
                return None;
            }
            let labels: Vec<(&str, &str)> =
                LABELS.iter().copied().filter(|_| next(2) == 0).collect();
            let ep = pod(NAMESPACES[next(4)], PODS[next(4)])
                .workload("w")
                .ip(IPS[next(6)])
                .port([53, 80, 8080, 65535][next(4)])
                .labels(&labels)
                .node("node-a");
            Some(pb::Endpoint {
                kind: next(5) as i32,
                ..ep.build()
            })
        };
        let source = endpoint(&mut next);
        let destination = endpoint(&mut next);
        let policies = |next: &mut dyn FnMut(usize) -> usize| {
            POLICIES
                .iter()
                .filter(|_| next(3) == 0)
                .map(|p| policy_ref(p))
                .collect::<Vec<_>>()
        };
        let allowed_by = policies(&mut next);
        let denied_by = policies(&mut next);
        flows.push(pb::Flow {
            id: format!("node-{}/1/{i}", next(3)),
            first_seen: Some(timestamp_nanos(base + i * 1_000_000_000)),
            last_seen: Some(timestamp_nanos(base + i * 1_000_000_000 + 5)),
            count: 1 + next(4) as u64,
            node_name: ["node-0", "node-1", "x' OR 1=1 --"][next(3)].into(),
            source,
            destination,
            protocol: next(5) as i32,
            verdict: next(3) as i32,
            outcome: next(7) as i32,
            mismatch: next(4) as i32,
            drop_reason: DROP_REASONS[next(4)].into(),
            allowed_by,
            denied_by,
            dns: (next(2) == 0).then(|| pb::Dns {
                query: NAMES[next(5)].into(),
                qtype: "A".into(),
                ..Default::default()
            }),
            destination_names: match next(4) {
                0 => vec![NAMES[next(5)].into()],
                1 => vec![NAMES[next(5)].into(), NAMES[next(5)].into()],
                _ => Vec::new(),
            },
            ..Default::default()
        });
    }
    flows
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: ClickHouseStore,
    memory: MemoryStore,
    flows: Vec<pb::Flow>,
    _db: TestDb,
}

impl Fixture {
    /// The generated flows in a database of their own (dropped with the
    /// fixture), and in a memory store.
    fn new() -> Fixture {
        let db = TestDb::shared();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let flows = generated();
        let memory = MemoryStore::new(MemoryConfig::default()).unwrap();
        let store = rt.block_on(async {
            let store = db.connect().await;
            store.insert(flows.clone()).await.unwrap();
            memory.insert(flows.clone()).await.unwrap();
            store
        });
        Fixture {
            rt,
            store,
            memory,
            flows,
            _db: db,
        }
    }

    /// Asserts SQL, the memory store and the matcher agree on
    /// `include`/`exclude` in `window`; an invalid value is an error naming
    /// its field and the value.
    fn agree(
        &self,
        include: Vec<pb::FlowFilter>,
        exclude: Vec<pb::FlowFilter>,
        window: TimeWindow,
    ) -> Result<(), TestCaseError> {
        let filters = match FilterSet::compile(&include, &exclude) {
            Ok(filters) => filters,
            Err(e) => {
                let FilterError::InvalidValue { field, value, .. } = &e;
                let text = e.to_string();
                prop_assert!(
                    text.contains(field) && text.contains(&format!("{value:?}")),
                    "{}",
                    text
                );
                return Ok(());
            }
        };
        let expected: Vec<&str> = self
            .flows
            .iter()
            .filter(|fl| window.contains_flow(fl) && filters.matches(fl))
            .map(|fl| fl.id.as_str())
            .collect();
        let query = FlowQuery {
            filters,
            window,
            ..Default::default()
        };
        for (backend, got) in [
            ("clickhouse", self.rt.block_on(self.store.flows(&query))),
            ("memory", self.rt.block_on(self.memory.flows(&query))),
        ] {
            let got = got.unwrap();
            let got: Vec<&str> = got.iter().map(|fl| fl.id.as_str()).collect();
            prop_assert_eq!(
                got,
                expected.clone(),
                "{}: include {:?} exclude {:?} window {:?}",
                backend,
                include,
                exclude,
                window
            );
        }
        Ok(())
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// One filter per dimension and value kind (including invalid values).
fn table() -> Vec<pb::FlowFilter> {
    let d = pb::FlowFilter::default;
    let mut t = Vec::new();
    for v in 0..3 {
        t.push(pb::FlowFilter {
            verdict: vec![v],
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        verdict: vec![1, 2],
        ..d()
    });
    t.push(pb::FlowFilter {
        verdict: vec![9],
        ..d()
    });
    for v in 0..7 {
        t.push(pb::FlowFilter {
            outcome: vec![v],
            ..d()
        });
    }
    // ICMP (4) included.
    for v in 0..5 {
        t.push(pb::FlowFilter {
            protocol: vec![v],
            ..d()
        });
    }
    for v in 0..4 {
        t.push(pb::FlowFilter {
            mismatch: vec![v],
            ..d()
        });
    }
    for ns in NAMESPACES {
        t.push(pb::FlowFilter {
            namespace: strs(&[ns]),
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        namespace: strs(&["db", "shop"]),
        ..d()
    });
    for p in [
        "shop/web-1",
        "shop/web*",
        "shop/*",
        "db/api-7",
        "x' OR 1=1 --/web-1",
        "shop/x' OR '1'='1*",
        "shop/web\\*",
        "bad",
        "shop/",
    ] {
        t.push(pb::FlowFilter {
            source_pod: strs(&[p]),
            ..d()
        });
        t.push(pb::FlowFilter {
            destination_pod: strs(&[p]),
            ..d()
        });
    }
    for l in [
        "app=web",
        "app==api",
        "app!=web",
        "app in (web, api)",
        "app notin (web)",
        "tier",
        "!tier",
        "app=web,tier=backend",
        "canary=",
        "!app,!tier",
        "app=",
        "bad selector (",
        "app=x' OR 1=1 --",
        "app in (web', 'api)",
    ] {
        t.push(pb::FlowFilter {
            labels: strs(&[l]),
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        labels: strs(&["app=api", "tier"]),
        ..d()
    });
    for p in POLICIES
        .iter()
        .chain(&["nope/none", "x' OR 1=1 --/p", "bad"])
    {
        t.push(pb::FlowFilter {
            policy: strs(&[p]),
            ..d()
        });
    }
    for p in [53, 80, 8080, 65535, 9999, 0, 70000] {
        t.push(pb::FlowFilter {
            destination_port: vec![p],
            ..d()
        });
    }
    for n in [
        "api.example.com",
        "API.EXAMPLE.COM.",
        "*.example.com",
        "example.com",
        "*.com",
        "x' OR 1=1 --",
        "*.x') OR ('1'='1",
        "a.*.com",
        "",
    ] {
        t.push(pb::FlowFilter {
            dns_query: strs(&[n]),
            ..d()
        });
        t.push(pb::FlowFilter {
            destination_fqdn: strs(&[n]),
            ..d()
        });
    }
    for n in ["node-0", "node-1", "x' OR 1=1 --", ""] {
        t.push(pb::FlowFilter {
            node_name: strs(&[n]),
            ..d()
        });
    }
    for ip in [
        "10.0.1.5",
        "10.0.0.0/8",
        "10.0.0.0/33",
        "10.0.0.1' OR 1=1 --",
        "10.0.1.0/24",
        "10.0.1.5/24",
        "0.0.0.0/0",
        "fd00::/8",
        "fd00::5",
        "::/0",
        "::ffff:0:0/96",
        "192.168.1.1/32",
        "nope",
    ] {
        t.push(pb::FlowFilter {
            source_ip: strs(&[ip]),
            ..d()
        });
        t.push(pb::FlowFilter {
            destination_ip: strs(&[ip]),
            ..d()
        });
    }
    for ns in NAMESPACES {
        t.push(pb::FlowFilter {
            source_namespace: strs(&[ns]),
            ..d()
        });
        t.push(pb::FlowFilter {
            destination_namespace: strs(&[ns]),
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        destination_namespace: strs(&["db", "shop"]),
        ..d()
    });
    for l in [
        "app=web",
        "app in (web, api)",
        "app notin (web)",
        "!tier",
        "canary=",
        "app=web,tier=backend",
        "bad selector (",
        "app=x' OR 1=1 --",
    ] {
        t.push(pb::FlowFilter {
            source_labels: strs(&[l]),
            ..d()
        });
        t.push(pb::FlowFilter {
            destination_labels: strs(&[l]),
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        source_labels: strs(&["app=api", "tier"]),
        ..d()
    });
    for r in [
        "NETFILTER_DROP",
        "netfilter-drop",
        "SKB_DROP_REASON_NO_SOCKET",
        "UNKNOWN",
        "x' OR 1=1 --",
        "",
    ] {
        t.push(pb::FlowFilter {
            drop_reason: strs(&[r]),
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        drop_reason: strs(&["no_socket", "NETFILTER_DROP"]),
        ..d()
    });
    for k in 0..7 {
        t.push(pb::FlowFilter {
            flow_type: vec![k],
            ..d()
        });
    }
    t.push(pb::FlowFilter {
        flow_type: vec![pb::FlowType::Dns as i32, pb::FlowType::Mismatch as i32],
        ..d()
    });
    t.push(d());
    t
}

#[test]
fn every_dimension_matches_the_predicate() {
    let f = Fixture::new();
    let table = table();
    let mut selective = std::collections::BTreeSet::new();
    for filter in &table {
        f.agree(vec![filter.clone()], vec![], TimeWindow::ALL)
            .unwrap();
        f.agree(vec![], vec![filter.clone()], TimeWindow::ALL)
            .unwrap();
        if let Ok(p) = FilterSet::compile(std::slice::from_ref(filter), &[]) {
            let n = f.flows.iter().filter(|fl| p.matches(fl)).count();
            if n > 0 && n < f.flows.len() {
                selective.insert(dimension(filter).to_string());
            }
        }
    }
    // The generated flows exercise every dimension: some filter of each
    // matches some flows and not others.
    for dim in [
        "verdict",
        "outcome",
        "namespace",
        "source_pod",
        "destination_pod",
        "labels",
        "policy",
        "destination_port",
        "protocol",
        "dns_query",
        "mismatch",
        "node_name",
        "source_ip",
        "destination_ip",
        "source_namespace",
        "destination_namespace",
        "source_labels",
        "destination_labels",
        "drop_reason",
        "flow_type",
        "destination_fqdn",
    ] {
        assert!(selective.contains(dim), "no selective filter on {dim}");
    }
}

/// The one dimension a table filter sets. Destructured without `..`: a new
/// filter field does not compile until this test covers it.
fn dimension(f: &pb::FlowFilter) -> &'static str {
    let pb::FlowFilter {
        verdict,
        outcome,
        namespace,
        source_pod,
        destination_pod,
        labels,
        policy,
        destination_port,
        protocol,
        dns_query,
        mismatch,
        node_name,
        source_ip,
        destination_ip,
        source_namespace,
        destination_namespace,
        source_labels,
        destination_labels,
        drop_reason,
        flow_type,
        destination_fqdn,
    } = f;
    [
        ("verdict", !verdict.is_empty()),
        ("outcome", !outcome.is_empty()),
        ("namespace", !namespace.is_empty()),
        ("source_pod", !source_pod.is_empty()),
        ("destination_pod", !destination_pod.is_empty()),
        ("labels", !labels.is_empty()),
        ("policy", !policy.is_empty()),
        ("destination_port", !destination_port.is_empty()),
        ("protocol", !protocol.is_empty()),
        ("dns_query", !dns_query.is_empty()),
        ("mismatch", !mismatch.is_empty()),
        ("node_name", !node_name.is_empty()),
        ("source_ip", !source_ip.is_empty()),
        ("destination_ip", !destination_ip.is_empty()),
        ("source_namespace", !source_namespace.is_empty()),
        ("destination_namespace", !destination_namespace.is_empty()),
        ("source_labels", !source_labels.is_empty()),
        ("destination_labels", !destination_labels.is_empty()),
        ("drop_reason", !drop_reason.is_empty()),
        ("flow_type", !flow_type.is_empty()),
        ("destination_fqdn", !destination_fqdn.is_empty()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map_or("none", |(d, _)| d)
}

fn arb_filter() -> impl Strategy<Value = pb::FlowFilter> {
    let table = table();
    // Merge 1 to 3 table entries into one filter (AND across their dimensions,
    // several values within one).
    proptest::collection::vec(0..table.len(), 1..4).prop_map(move |picks| {
        let mut f = pb::FlowFilter::default();
        for i in picks {
            let pb::FlowFilter {
                verdict,
                outcome,
                namespace,
                source_pod,
                destination_pod,
                labels,
                policy,
                destination_port,
                protocol,
                dns_query,
                mismatch,
                node_name,
                source_ip,
                destination_ip,
                source_namespace,
                destination_namespace,
                source_labels,
                destination_labels,
                drop_reason,
                flow_type,
                destination_fqdn,
            } = table[i].clone();
            f.verdict.extend(verdict);
            f.outcome.extend(outcome);
            f.namespace.extend(namespace);
            f.source_pod.extend(source_pod);
            f.destination_pod.extend(destination_pod);
            f.labels.extend(labels);
            f.policy.extend(policy);
            f.destination_port.extend(destination_port);
            f.protocol.extend(protocol);
            f.dns_query.extend(dns_query);
            f.mismatch.extend(mismatch);
            f.node_name.extend(node_name);
            f.source_ip.extend(source_ip);
            f.destination_ip.extend(destination_ip);
            f.source_namespace.extend(source_namespace);
            f.destination_namespace.extend(destination_namespace);
            f.source_labels.extend(source_labels);
            f.destination_labels.extend(destination_labels);
            f.drop_reason.extend(drop_reason);
            f.flow_type.extend(flow_type);
            f.destination_fqdn.extend(destination_fqdn);
        }
        f
    })
}

/// A window bound: near the generated flows' `last_seen` (one second apart,
/// at `base + i s + 5 ns`: on, just before and just after), or an extreme.
fn arb_bound(base: i64) -> impl Strategy<Value = Option<UnixNanos>> {
    let extreme =
        |seconds, nanos| UnixNanos::from_timestamp(&prost_types::Timestamp { seconds, nanos });
    proptest::option::weighted(
        0.7,
        prop_oneof![
            8 => (-3i64..245, prop_oneof![Just(0i64), Just(5), Just(6)])
                .prop_map(move |(i, ns)| UnixNanos::from_nanos(base + i * 1_000_000_000 + ns)),
            1 => Just(extreme(i64::MIN, 0)),
            1 => Just(extreme(i64::MAX, 999_999_999)),
            1 => Just(extreme(0, 0)),
            1 => Just(extreme(i64::from(u32::MAX) + 1, 0)),
        ],
    )
}

/// A window whose bounds are drawn by [`arb_bound`] around the generated flows.
fn arb_window(flows: &[pb::Flow]) -> impl Strategy<Value = TimeWindow> + use<> {
    // generated(): flow i was last seen at base + i s + 5 ns.
    let base = flows[0]
        .last_seen
        .as_ref()
        .map(UnixNanos::from_timestamp)
        .unwrap()
        .nanos_saturating()
        - 5;
    (arb_bound(base), arb_bound(base)).prop_map(|(since, until)| TimeWindow::new(since, until))
}

#[test]
fn combined_filters_match_the_predicate() {
    let f = Fixture::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(arb_filter(), 0..3),
        proptest::collection::vec(arb_filter(), 0..2),
        arb_window(&f.flows),
    );
    runner
        .run(&strategy, |(include, exclude, window)| {
            f.agree(include, exclude, window)
        })
        .unwrap();
}

#[test]
fn windows_match_the_matcher() {
    let f = Fixture::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 100,
        ..ProptestConfig::default()
    });
    runner
        .run(&arb_window(&f.flows), |window| {
            f.agree(vec![], vec![], window)
        })
        .unwrap();
}

/// A report's groups in a fixed order, to compare as sets.
fn sorted<T: std::fmt::Debug>(groups: Vec<T>) -> Vec<String> {
    let mut out: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
    out.sort();
    out
}

#[test]
fn report_filters_match_the_memory_store() {
    let f = Fixture::new();
    let selector = |text: &str| LabelSelector::parse("labels", text).unwrap();
    let mut cases = vec![ReportQuery::default()];
    for ns in NAMESPACES {
        cases.push(ReportQuery {
            namespaces: strs(&[ns]),
            ..Default::default()
        });
    }
    for l in ["app=web", "!tier", "app in (web, api),tier", "app=x"] {
        cases.push(ReportQuery {
            labels: vec![selector(l)],
            ..Default::default()
        });
        cases.push(ReportQuery {
            namespaces: strs(&["shop", "db"]),
            labels: vec![selector(l)],
            ..Default::default()
        });
    }
    cases.push(ReportQuery {
        labels: vec![selector("app=api"), selector("canary")],
        ..Default::default()
    });
    let mut selective = 0;
    for q in &cases {
        let denied = f.rt.block_on(f.store.denied(q)).unwrap();
        let reference = f.rt.block_on(f.memory.denied(q)).unwrap();
        // The groups hold exactly the denied flows the query's filter matches.
        let filter = q.flow_filter();
        let expected = f
            .flows
            .iter()
            .filter(|fl| fl.verdict == pb::Verdict::Denied as i32 && filter.matches(fl))
            .count() as u64;
        assert_eq!(
            denied.iter().map(|g| g.flows).sum::<u64>(),
            expected,
            "{q:?}"
        );
        if expected > 0 && denied.len() < f.rt.block_on(f.store.denied(&cases[0])).unwrap().len() {
            selective += 1;
        }
        assert_eq!(sorted(denied), sorted(reference), "denied {q:?}");
        let dns = f.rt.block_on(f.store.dns_failures(q)).unwrap();
        let reference = f.rt.block_on(f.memory.dns_failures(q)).unwrap();
        assert_eq!(sorted(dns), sorted(reference), "dns {q:?}");
    }
    assert!(
        selective >= 4,
        "too few queries select some groups: {selective}"
    );
}
