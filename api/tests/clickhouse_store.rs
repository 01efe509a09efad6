//! The ClickHouse store against the real shared server: migrations, exact
//! round trips, duplicates, hostile values, reports, retention and status.
//! Each test works in its own database, dropped by a guard.

mod clickhouse_support;

use std::time::{Duration, UNIX_EPOCH};

use clickhouse_support::*;
use netverdict_api::clickhouse::migration_versions;
use netverdict_api::store::{FlowQuery, ReportQuery, Store};
use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = TestDb::new(&require_shared_server());
    let first = db.connect().await;
    drop(first);
    let second = db.connect().await;
    let versions = db.sql(&format!(
        "SELECT version, count() FROM {}.schema_migrations GROUP BY version ORDER BY version",
        db.name
    ));
    let expected: String = migration_versions(&second.features().unwrap())
        .iter()
        .map(|v| format!("{v}\t1\n"))
        .collect();
    assert_eq!(versions, expected, "each migration recorded once");
    let tables = db.sql(&format!(
        "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
        db.name
    ));
    for t in [
        "denied_by_minute",
        "denied_by_minute_mv",
        "dns_by_minute",
        "dns_by_minute_mv",
        "dead_letters",
        "flows",
        "flows_by_minute",
        "flows_by_minute_mv",
        "schema_migrations",
    ] {
        assert!(
            tables.lines().any(|l| l == t),
            "table {t} missing: {tables}"
        );
    }
}

fn rich_flows(base: i64) -> Vec<pb::Flow> {
    let mut dns = simple_flow("node-a/1/1", base);
    dns.protocol = pb::Protocol::Udp as i32;
    dns.destination = Some(pod(
        "kube-system",
        "coredns-1",
        "coredns",
        "10.0.0.10",
        53,
        &[("k8s-app", "kube-dns")],
    ));
    dns.dns = Some(pb::Dns {
        id: 77,
        query: "API.Example.com.".into(),
        qtype: "A".into(),
        rcode: "NXDOMAIN".into(),
        answers: 0,
        egress_allows_cluster_dns: true,
    });
    dns.outcome = pb::Outcome::Answered as i32;

    let mut denied = simple_flow("node-a/1/2", base + 1);
    denied.verdict = pb::Verdict::Denied as i32;
    denied.outcome = pb::Outcome::Dropped as i32;
    denied.drop_reason = "NETFILTER_DROP".into();
    denied.drop_count = 3;
    denied.count = 5;
    denied.reason = "ingress of shop/api-7 denied".into();
    denied.denied_by = vec![pref("shop", "default-deny"), pref("shop", "api-ingress")];
    denied.ingress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::Denied as i32,
        isolated: true,
        selected_by: vec![pref("shop", "default-deny")],
        nearest_miss: Some(pb::RuleRef {
            policy: Some(pref("shop", "api-ingress")),
            rule: 0,
            peer: Some(1),
            port: None,
        }),
        failures: vec![pb::Failure {
            kind: "pod_label".into(),
            description: "needs app=web2".into(),
        }],
        ..Default::default()
    });
    denied.service = "shop/api".into();
    denied.traffic_direction = pb::TrafficDirection::Egress as i32;
    denied.mismatch = pb::Mismatch::None as i32;

    let mut v6 = simple_flow("node-b/9/3", base + 2);
    v6.node_name = "node-b".into();
    v6.source = Some(pb::Endpoint {
        ip: "fd00::5".into(),
        port: 1234,
        kind: pb::EndpointKind::World as i32,
        ..Default::default()
    });
    v6.destination = None;
    v6.allowed_by = vec![pref("shop", "allow-web")];
    v6.egress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::Allowed as i32,
        isolated: true,
        selected_by: vec![pref("shop", "allow-web")],
        allowed_by: vec![pb::RuleRef {
            policy: Some(pref("shop", "allow-web")),
            rule: 2,
            peer: None,
            port: Some(0),
        }],
        ..Default::default()
    });

    let mut hostile = simple_flow("node-a/1/4", base + 3);
    hostile.source.as_mut().unwrap().namespace = "x' OR 1=1 --".into();
    hostile.reason = "quote ' backslash \\ tab \t newline \n nul \0 unicode é".into();
    vec![dns, denied, v6, hostile]
}

#[tokio::test]
async fn flows_round_trip_exactly() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let base = now_ns() - 60_000_000_000;
    let flows = rich_flows(base);
    let out = store.insert(flows.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (4, 0));
    let got = store.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(got, flows, "every field back, oldest first");

    let last2 = store
        .flows(&FlowQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last2, flows[2..], "the newest two, oldest first");
    let first2 = store
        .flows(&FlowQuery {
            limit: 2,
            first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first2, flows[..2]);
    let window = store
        .flows(&FlowQuery {
            window: TimeWindow::new(
                Some(UnixNanos::from_nanos(base + 1)),
                Some(UnixNanos::from_nanos(base + 3)),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window,
        flows[1..3],
        "since inclusive, until exclusive, to the nanosecond"
    );
}

#[tokio::test]
async fn duplicates_are_stored_once() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let base = now_ns() - 10_000_000_000;
    let batch: Vec<pb::Flow> = (0..100)
        .map(|i| simple_flow(&format!("node-a/1/{i}"), base + i * 1_000_000))
        .collect();
    let out = store.insert(batch.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (100, 0));

    // The collector resends the batch (with a few new flows and a repeat inside).
    let mut resend = batch.clone();
    resend.push(simple_flow("node-a/1/100", base + 100_000_000));
    resend.push(simple_flow("node-a/1/100", base + 100_000_000));
    let out = store.insert(resend).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (1, 101));

    // Concurrent resends from two streams: still once.
    let (a, b) = tokio::join!(store.insert(batch.clone()), store.insert(batch.clone()));
    assert_eq!(a.unwrap().stored + b.unwrap().stored, 0);

    let counts = db.sql(&format!(
        "SELECT count(), uniqExact(id) FROM {}.flows",
        db.name
    ));
    assert_eq!(counts, "101\t101\n");
    let rollup = db.sql(&format!(
        "SELECT sum(flows) FROM {}.flows_by_minute",
        db.name
    ));
    assert_eq!(rollup, "101\n", "the rollup counts each flow once");
    let stats = store.stats();
    assert_eq!(
        stats
            .rows_inserted
            .load(std::sync::atomic::Ordering::Relaxed),
        101
    );
}

#[tokio::test]
async fn hostile_filter_values_are_just_values() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let flows = rich_flows(now_ns() - 60_000_000_000);
    store.insert(flows.clone()).await.unwrap();
    let hostile = "x' OR 1=1 --";
    let q = |f: pb::FlowFilter| FlowQuery {
        filters: FilterSet::compile(&[f], &[]).unwrap(),
        ..Default::default()
    };
    let by_ns = store
        .flows(&q(pb::FlowFilter {
            namespace: vec![hostile.into()],
            ..Default::default()
        }))
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
        let got = store.flows(&q(f.clone())).await.unwrap();
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
        // Rejected when compiled, before any store sees it.
        let err = FilterSet::compile(std::slice::from_ref(&f), &[]).unwrap_err();
        assert!(err.to_string().contains(hostile), "{f:?}: {err}");
    }
    let report = ReportQuery {
        namespaces: vec![hostile.into()],
        ..Default::default()
    };
    assert!(store.denied(&report).await.unwrap().is_empty());
    assert_eq!(
        db.sql(&format!("SELECT count() FROM {}.flows", db.name)),
        "4\n",
        "table intact"
    );
}

#[tokio::test]
async fn denied_and_dns_reports_group_in_sql() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let base = now_ns() - 120_000_000_000;
    let mut flows = Vec::new();
    // web -> api:8080 denied by two policies, three records (two pods of web).
    for (i, src_pod) in ["web-1", "web-2", "web-1"].iter().enumerate() {
        let mut f = simple_flow(&format!("node-a/1/{i}"), base + i as i64 * 1_000_000_000);
        f.source.as_mut().unwrap().pod_name = src_pod.to_string();
        f.verdict = pb::Verdict::Denied as i32;
        f.outcome = if i == 2 {
            pb::Outcome::Dropped
        } else {
            pb::Outcome::NoAnswer
        } as i32;
        f.count = 2;
        f.reason = format!("reason {i}");
        f.denied_by = vec![pref("shop", "default-deny"), pref("shop", "api-ingress")];
        f.ingress = Some(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            isolated: true,
            ..Default::default()
        });
        flows.push(f);
    }
    // A denied egress to the world, in namespace "other".
    let mut world = simple_flow("node-a/1/10", base + 5_000_000_000);
    world.source = Some(pod("other", "batch-x", "", "10.0.3.3", 5555, &[]));
    world.destination = Some(pb::Endpoint {
        ip: "203.0.113.9".into(),
        port: 443,
        kind: pb::EndpointKind::World as i32,
        ..Default::default()
    });
    world.verdict = pb::Verdict::Denied as i32;
    world.outcome = pb::Outcome::Dropped as i32;
    world.count = 1;
    world.denied_by = vec![pref("other", "egress-lockdown")];
    world.egress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::Denied as i32,
        isolated: true,
        ..Default::default()
    });
    flows.push(world);
    // DNS: two dropped queries of one name (denied), one NXDOMAIN, one fine.
    for (i, (rcode, outcome, verdict)) in [
        ("", pb::Outcome::Dropped, pb::Verdict::Denied),
        ("", pb::Outcome::Dropped, pb::Verdict::Denied),
        ("NXDOMAIN", pb::Outcome::Answered, pb::Verdict::Allowed),
        ("NOERROR", pb::Outcome::Answered, pb::Verdict::Allowed),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = simple_flow(&format!("node-a/2/{i}"), base + 10_000_000_000 + i as i64);
        f.protocol = pb::Protocol::Udp as i32;
        f.destination = Some(pod(
            "kube-system",
            "coredns-1",
            "coredns",
            "10.0.0.10",
            53,
            &[],
        ));
        f.outcome = outcome as i32;
        f.verdict = verdict as i32;
        f.count = 1;
        if verdict == pb::Verdict::Denied {
            f.denied_by = vec![pref("shop", "default-deny")];
            f.reason = "egress of shop/web-1 denied".into();
        }
        f.dns = Some(pb::Dns {
            query: if i == 2 {
                "nope.example.com"
            } else {
                "api.example.com"
            }
            .into(),
            qtype: "A".into(),
            rcode: rcode.into(),
            egress_allows_cluster_dns: false,
            ..Default::default()
        });
        flows.push(f);
    }
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
        [pref("shop", "api-ingress"), pref("shop", "default-deny")]
    );
    assert_eq!((g.count, g.flows), (6, 3));
    assert!(g.ingress_denied && !g.egress_denied);
    assert_eq!(g.reason, "reason 2");
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

    let only_other = store
        .denied(&ReportQuery {
            namespaces: vec!["other".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_other.len(), 1);
    let limited = store
        .denied(&ReportQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, denied[..1]);
    let recent = store
        .denied(&ReportQuery {
            window: TimeWindow::new(Some(UnixNanos::from_nanos(base + 4_000_000_000)), None),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        recent.len(),
        2,
        "only the world egress and DNS: {recent:#?}"
    );

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
            denied_by: vec![pref("shop", "default-deny")],
            egress_allows_cluster_dns: false,
            reason: "egress of shop/web-1 denied".into(),
        }
    );
    assert_eq!(
        (dns[1].query.as_str(), dns[1].rcode.as_str(), dns[1].count),
        ("nope.example.com", "NXDOMAIN", 1)
    );
    assert!(dns[1].denied_by.is_empty() && dns[1].reason.is_empty());
    // The SQL groups exactly as the reference functions do.
    assert_eq!(
        denied,
        netverdict_api::report::denied_groups(&flows, &ReportQuery::default())
    );
    assert_eq!(
        dns,
        netverdict_api::report::dns_failures(&flows, &ReportQuery::default())
    );
}

#[tokio::test]
async fn migration_4_gives_rows_stored_before_it_their_group_kind() {
    let db = TestDb::new(&require_shared_server());
    let base = now_ns() - 60_000_000_000;
    let mut flows = Vec::new();
    for (i, kind) in [
        pb::EndpointKind::Pod,
        pb::EndpointKind::HostNetworkPod,
        pb::EndpointKind::Node,
        pb::EndpointKind::World,
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = simple_flow(&format!("node-a/1/{i}"), base + i as i64);
        f.verdict = pb::Verdict::Denied as i32;
        f.destination.as_mut().unwrap().kind = kind as i32;
        f.destination.as_mut().unwrap().node_name = "node-b".into();
        flows.push(f);
    }
    let mut no_destination = simple_flow("node-a/1/9", base + 9);
    no_destination.verdict = pb::Verdict::Denied as i32;
    no_destination.destination = None;
    flows.push(no_destination);
    {
        let store = db.connect().await;
        store.insert(flows.clone()).await.unwrap();
    }
    // The database as it was before migration 4: no group kind columns, and
    // version 4 not recorded (the table is recreated, the other migrations
    // are idempotent).
    for sql in [
        format!("ALTER TABLE {}.flows DROP COLUMN src_group_kind", db.name),
        format!("ALTER TABLE {}.flows DROP COLUMN dst_group_kind", db.name),
        format!("DROP TABLE {}.schema_migrations", db.name),
    ] {
        db.sql(&sql);
    }
    let store = db.connect().await;
    let kinds = db.sql(&format!(
        "SELECT count() FROM {}.flows WHERE src_group_kind = src_kind AND dst_group_kind = dst_kind",
        db.name
    ));
    assert_eq!(kinds, "5\n", "old rows read {{p}}_kind");
    let reference = netverdict_api::report::denied_groups(&flows, &ReportQuery::default());
    assert_eq!(reference.len(), 5);
    assert_eq!(
        store.denied(&ReportQuery::default()).await.unwrap(),
        reference
    );
    // New rows store the key's kind.
    let mut new = simple_flow("node-a/2/1", base + 20);
    new.verdict = pb::Verdict::Denied as i32;
    store.insert(vec![new]).await.unwrap();
    let stored = db.sql(&format!(
        "SELECT toString(dst_group_kind) FROM {}.flows WHERE id = 'node-a/2/1'",
        db.name
    ));
    assert_eq!(stored, "ENDPOINT_KIND_POD\n");
}

#[tokio::test]
async fn migration_6_gives_rows_stored_before_it_their_tier() {
    let db = TestDb::new(&require_shared_server());
    let base = now_ns() - 60_000_000_000;
    let mut denied = simple_flow("node-a/1/1", base);
    denied.verdict = pb::Verdict::Denied as i32;
    denied.ingress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::Denied as i32,
        tier: pb::PolicyTier::NetworkPolicy as i32,
        ..Default::default()
    });
    denied.egress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::NotIsolated as i32,
        ..Default::default()
    });
    {
        let store = db.connect().await;
        store.insert(vec![denied]).await.unwrap();
    }
    // The database as it was before migration 6.
    for sql in [
        format!("ALTER TABLE {}.flows DROP COLUMN egress_tier", db.name),
        format!("ALTER TABLE {}.flows DROP COLUMN ingress_tier", db.name),
        format!("DROP TABLE {}.schema_migrations", db.name),
    ] {
        db.sql(&sql);
    }
    let store = db.connect().await;
    let tiers = db.sql(&format!(
        "SELECT toString(egress_tier), toString(ingress_tier) FROM {}.flows",
        db.name
    ));
    assert_eq!(
        tiers,
        "POLICY_TIER_UNSPECIFIED\tPOLICY_TIER_NETWORK_POLICY\n"
    );
    // New rows store the tier, an admin one included, and its policy as Kind/name.
    let mut admin = simple_flow("node-a/2/1", base + 20);
    admin.verdict = pb::Verdict::Denied as i32;
    admin.egress = Some(pb::DirectionVerdict {
        status: pb::PolicyStatus::Denied as i32,
        tier: pb::PolicyTier::Admin as i32,
        ..Default::default()
    });
    admin.denied_by = vec![pb::PolicyRef {
        name: "deny-tenant".into(),
        kind: pb::PolicyKind::AdminNetworkPolicy as i32,
        tier: pb::PolicyTier::Admin as i32,
        ..Default::default()
    }];
    store.insert(vec![admin]).await.unwrap();
    let stored = db.sql(&format!(
        "SELECT toString(egress_tier), denied_by FROM {}.flows WHERE id = 'node-a/2/1'",
        db.name
    ));
    assert_eq!(
        stored,
        "POLICY_TIER_ADMIN\t['AdminNetworkPolicy/deny-tenant']\n"
    );
    // The policy filter finds it by that name.
    let filter = pb::FlowFilter {
        policy: vec!["AdminNetworkPolicy/deny-tenant".into()],
        ..Default::default()
    };
    let found = store
        .flows(&FlowQuery {
            filters: FilterSet::compile(&[filter], &[]).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "node-a/2/1");
}

#[tokio::test]
async fn retention_drops_old_days_from_flows_and_rollups() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let day = 86_400_000_000_000i64;
    let old: Vec<pb::Flow> = (0..3)
        .map(|i| simple_flow(&format!("node-a/old/{i}"), now_ns() - 9 * day + i))
        .collect();
    let new = simple_flow("node-a/new/0", now_ns() - 60_000_000_000);
    store.insert(old).await.unwrap();
    store.insert(vec![new.clone()]).await.unwrap();
    assert_eq!(store.status().await.unwrap().flows_stored, 4);
    let dropped = store.enforce_retention().await.unwrap();
    assert_eq!(dropped, 3);
    let status = store.status().await.unwrap();
    assert_eq!((status.flows_stored, status.flows_dropped), (1, 3));
    assert_eq!(store.flows(&FlowQuery::default()).await.unwrap(), [new]);
    let rollup = db.sql(&format!(
        "SELECT sum(flows) FROM {}.flows_by_minute",
        db.name
    ));
    assert_eq!(rollup, "1\n", "rollup partitions expire too");
}

#[tokio::test]
async fn status_and_invalid_flows() {
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let empty = store.status().await.unwrap();
    assert_eq!(
        (empty.flows_stored, empty.oldest, empty.newest),
        (0, None, None)
    );
    let mut bad = simple_flow("", now_ns());
    let err = store
        .insert(vec![simple_flow("ok/1/1", now_ns()), bad.clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");
    bad.id = "node-a/1/2".into();
    bad.destination.as_mut().unwrap().port = 70000;
    let err = store.insert(vec![bad]).await.unwrap_err();
    assert!(
        err.to_string().contains("destination.port") && err.to_string().contains("node-a/1/2"),
        "{err}"
    );
    assert_eq!(
        store.status().await.unwrap().flows_stored,
        0,
        "nothing of a rejected call stored"
    );
    let base = now_ns() - 5_000_000_000;
    store
        .insert(vec![
            simple_flow("a/1/1", base),
            simple_flow("a/1/2", base + 7),
        ])
        .await
        .unwrap();
    let s = store.status().await.unwrap();
    assert_eq!(s.flows_stored, 2);
    assert_eq!(
        s.oldest,
        Some(UNIX_EPOCH + Duration::from_nanos(base as u64))
    );
    assert_eq!(
        s.newest,
        Some(UNIX_EPOCH + Duration::from_nanos(base as u64 + 7))
    );
    let metrics = netverdict_api::metrics::ApiMetrics::for_store(&store);
    metrics.record_status(Some(&s));
    let metrics = metrics.encode();
    assert!(
        metrics.contains("netverdict_api_clickhouse_rows_inserted_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("netverdict_api_store_flows 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn queries_run_under_clickhouses_result_and_time_limits() {
    let db = TestDb::new(&require_shared_server());
    let store = netverdict_api::clickhouse::ClickHouseStore::connect(
        netverdict_api::clickhouse::ClickHouseConfig {
            query_max_rows: 5,
            ..db.config()
        },
    )
    .await
    .unwrap();
    let base = now_ns() - 60_000_000_000;
    store
        .insert(
            (0..10)
                .map(|i| simple_flow(&format!("node-a/1/{i}"), base + i * 1_000_000))
                .collect(),
        )
        .await
        .unwrap();
    let err = store
        .flows(&netverdict_api::store::FlowQuery::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Limit for result exceeded"),
        "ClickHouse refuses more than query_max_rows: {err}"
    );
    let five = store
        .flows(&netverdict_api::store::FlowQuery {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(five.len(), 5);
}

/// `n` connections between two pods on two nodes, each seen by both nodes'
/// collectors: the source's record of account (no answer, denied) and the
/// destination's second observation (its drops).
fn both_ends(n: usize, base: i64) -> Vec<pb::Flow> {
    let mut flows = Vec::new();
    for i in 0..n {
        let at = base + i as i64 * 1_000_000_000;
        let mut source = simple_flow(&format!("node-0/1/{i}"), at);
        source.node_name = "node-0".into();
        source.verdict = pb::Verdict::Denied as i32;
        source.outcome = pb::Outcome::NoAnswer as i32;
        source.denied_by = vec![pref("shop", "api-ingress")];
        source.ingress = Some(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            isolated: true,
            ..Default::default()
        });
        source.observation_point = pb::ObservationPoint::Source as i32;
        let mut destination = source.clone();
        destination.id = format!("node-1/1/{i}");
        destination.node_name = "node-1".into();
        destination.outcome = pb::Outcome::Dropped as i32;
        destination.drop_reason = "TC_EGRESS".into();
        destination.drop_count = 2;
        destination.observation_point = pb::ObservationPoint::Destination as i32;
        destination.counted_elsewhere = true;
        // DNS queries seen at both ends, unanswered.
        let mut query = source.clone();
        query.id = format!("node-0/2/{i}");
        query.protocol = pb::Protocol::Udp as i32;
        query.dns = Some(pb::Dns {
            query: "api.shop.svc.cluster.local".into(),
            qtype: "A".into(),
            ..Default::default()
        });
        let mut seen_there = query.clone();
        seen_there.id = format!("node-1/2/{i}");
        seen_there.counted_elsewhere = true;
        seen_there.observation_point = pb::ObservationPoint::Destination as i32;
        flows.extend([source, destination, query, seen_there]);
    }
    flows
}

#[tokio::test]
async fn a_connection_seen_at_both_ends_counts_once_in_reports_and_rollups() {
    const N: usize = 7;
    let db = TestDb::new(&require_shared_server());
    let store = db.connect().await;
    let memory = netverdict_api::MemoryStore::new(Default::default()).unwrap();
    let flows = both_ends(N, now_ns() - 60_000_000_000);
    store.insert(flows.clone()).await.unwrap();
    memory.insert(flows.clone()).await.unwrap();
    for (name, denied, dns) in [
        (
            "clickhouse",
            store.denied(&ReportQuery::default()).await.unwrap(),
            store.dns_failures(&ReportQuery::default()).await.unwrap(),
        ),
        (
            "memory",
            memory.denied(&ReportQuery::default()).await.unwrap(),
            memory.dns_failures(&ReportQuery::default()).await.unwrap(),
        ),
    ] {
        let attempts: u64 = denied.iter().map(|g| g.count).sum();
        assert_eq!(attempts, 2 * N as u64, "{name}: {denied:#?}");
        let records: u64 = denied.iter().map(|g| g.flows).sum();
        assert_eq!(records, 2 * N as u64, "{name}: {denied:#?}");
        assert_eq!(dns.iter().map(|f| f.count).sum::<u64>(), N as u64, "{name}");
        assert!(
            denied
                .iter()
                .all(|g| g.outcome == pb::Outcome::NoAnswer as i32),
            "{name}: the source's records: {denied:#?}"
        );
    }
    // Every record is stored (both ends are there to look at)...
    let stored = store.flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 4 * N);
    // ... and the rollups count each connection once, and every drop.
    let sql = format!(
        "SELECT (SELECT sum(flows) FROM {d}.flows_by_minute), \
         (SELECT sum(drops) FROM {d}.flows_by_minute), \
         (SELECT sum(flows) FROM {d}.denied_by_minute), \
         (SELECT sum(flows) FROM {d}.dns_by_minute)",
        d = db.name
    );
    let want = format!("{}\t{}\t{}\t{}\n", 2 * N, 2 * N, 2 * N, N);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = db.sql(&sql);
        if got == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollups hold {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn migration_5_brings_a_database_of_migrations_1_to_4_up_to_date() {
    let db = TestDb::new(&require_shared_server());
    drop(db.connect().await);
    let d = &db.name;
    // Back to what migrations 1 to 4 made: no observation columns, three
    // mismatches, views counting every record.
    for table in ["flows_by_minute", "denied_by_minute", "dns_by_minute"] {
        db.sql(&format!("DROP TABLE {d}.{table}_mv"));
    }
    db.sql(&format!(
        "ALTER TABLE {d}.flows DROP COLUMN observation_point"
    ));
    db.sql(&format!(
        "ALTER TABLE {d}.flows DROP COLUMN counted_elsewhere"
    ));
    let old = "Enum8('MISMATCH_NONE' = 0, 'MISMATCH_DROPPED_THOUGH_ALLOWED' = 1, \
               'MISMATCH_ALLOWED_THOUGH_DENIED' = 2)";
    for table in ["flows", "flows_by_minute"] {
        db.sql(&format!(
            "ALTER TABLE {d}.{table} MODIFY COLUMN mismatch {old}"
        ));
    }
    db.sql(&format!(
        "CREATE MATERIALIZED VIEW {d}.flows_by_minute_mv TO {d}.flows_by_minute AS \
         SELECT toStartOfMinute(last_seen) AS minute, node, verdict, outcome, mismatch, \
         drop_reason, protocol, src_group_namespace AS src_namespace, \
         src_group_workload AS src_workload, dst_group_namespace AS dst_namespace, \
         dst_group_workload AS dst_workload, dst_port, toUInt64(1) AS flows, \
         count AS attempts, drop_count AS drops FROM {d}.flows"
    ));
    db.sql(&format!(
        "ALTER TABLE {d}.schema_migrations DELETE WHERE version = 5"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.sql(&format!(
        "SELECT count() FROM {d}.schema_migrations WHERE version = 5"
    )) != "0\n"
    {
        assert!(std::time::Instant::now() < deadline, "mutation not done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = db.connect().await;
    let columns = db.sql(&format!(
        "SELECT name, type FROM system.columns WHERE database = '{d}' AND table = 'flows' \
         AND name IN ('observation_point', 'counted_elsewhere', 'mismatch') ORDER BY name"
    ));
    assert!(columns.contains("counted_elsewhere\tUInt8"), "{columns}");
    assert!(
        columns.contains("OBSERVATION_POINT_DESTINATION\\' = 2"),
        "{columns}"
    );
    assert!(
        columns.contains("MISMATCH_NO_ANSWER_THOUGH_ALLOWED\\' = 3"),
        "{columns}"
    );
    let mut weak = simple_flow("node-0/9/1", now_ns() - 30_000_000_000);
    weak.mismatch = pb::Mismatch::NoAnswerThoughAllowed as i32;
    let mut second = simple_flow("node-1/9/1", now_ns() - 30_000_000_000);
    second.counted_elsewhere = true;
    store.insert(vec![weak, second]).await.unwrap();
    let want = "MISMATCH_NO_ANSWER_THOUGH_ALLOWED\t1\n";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = db.sql(&format!(
            "SELECT mismatch, sum(flows) FROM {d}.flows_by_minute \
             WHERE mismatch != 'MISMATCH_NONE' GROUP BY mismatch"
        ));
        let all = db.sql(&format!("SELECT sum(flows) FROM {d}.flows_by_minute"));
        if got == want && all == "1\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{got:?} {all:?}: the recreated view counts records of account"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
