//! What only the ClickHouse store does, against the real shared server:
//! migrations, duplicates kept out of the table and its rollups, a migration
//! of rows stored before it, retention, and its metrics. What every store does
//! (round trips, filters, reports, status, refused flows) is in
//! `store_conformance`. Each test works in its own database, dropped by a
//! guard.

use std::time::Duration;

use netverdict_api::clickhouse::migration_versions;
use netverdict_api::store::{FlowQuery, ReportQuery, Store};
use netverdict_proto::filter::FilterSet;
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow::{direction, now_nanos};
use netverdict_testing::{flow, wait_until};

use crate::fixtures::both_ends;

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = TestDb::shared();
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

#[tokio::test]
async fn duplicates_are_stored_once() {
    let db = TestDb::shared();
    let store = db.connect().await;
    let base = now_nanos() - 10_000_000_000;
    let batch: Vec<pb::Flow> = (0..100)
        .map(|i| {
            flow(format!("node-a/1/{i}"))
                .at_nanos(base + i * 1_000_000)
                .build()
        })
        .collect();
    let out = store.insert(batch.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (100, 0));

    // The collector resends the batch (with a few new flows and a repeat inside).
    let mut resend = batch.clone();
    resend.push(flow("node-a/1/100").at_nanos(base + 100_000_000).build());
    resend.push(flow("node-a/1/100").at_nanos(base + 100_000_000).build());
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

/// A batch past `READBACK_TABLE_MIN_IDS` reads its stored ids back through
/// the writer's session table (the first and the last insert here, the table
/// made anew for each; the smaller resend between them uses a literal): each
/// flow is stored once. (With the table's read-back finding nothing, the last
/// insert stores every flow again: checked by hand.)
#[tokio::test]
async fn large_resends_are_read_back_through_a_table() {
    use netverdict_api::clickhouse::READBACK_TABLE_MIN_IDS;
    let db = TestDb::shared();
    let store = db.connect().await;
    let n = READBACK_TABLE_MIN_IDS as i64 + 500;
    let base = now_nanos() - 30_000_000_000;
    let make = |i: i64| {
        flow(format!("node-big/1/{i}"))
            .at_nanos(base + i * 1_000_000)
            .build()
    };
    let first: Vec<pb::Flow> = (0..n).map(make).collect();
    let out = store.insert(first.clone()).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (n as usize, 0));
    // The second half again, with 10 new flows after it.
    let resend: Vec<pb::Flow> = (n / 2..n + 10).map(make).collect();
    let out = store.insert(resend).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (10, (n - n / 2) as usize));
    // Everything again.
    let all: Vec<pb::Flow> = (0..n + 10).map(make).collect();
    let out = store.insert(all).await.unwrap();
    assert_eq!((out.stored, out.duplicates), (0, n as usize + 10));
    let counts = db.sql(&format!(
        "SELECT count(), uniqExact(id) FROM {}.flows",
        db.name
    ));
    assert_eq!(counts, format!("{0}\t{0}\n", n + 10));
    let rollup = db.sql(&format!(
        "SELECT sum(flows) FROM {}.flows_by_minute",
        db.name
    ));
    assert_eq!(
        rollup,
        format!("{}\n", n + 10),
        "the rollup counts each flow once"
    );
}

#[tokio::test]
async fn migration_4_gives_rows_stored_before_it_their_group_kind() {
    let db = TestDb::shared();
    let base = now_nanos() - 60_000_000_000;
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
        let mut f = flow(format!("node-a/1/{i}"))
            .at_nanos(base + i as i64)
            .build();
        f.verdict = pb::Verdict::Denied as i32;
        f.destination.as_mut().unwrap().kind = kind as i32;
        f.destination.as_mut().unwrap().node_name = "node-b".into();
        flows.push(f);
    }
    let mut no_destination = flow("node-a/1/9").at_nanos(base + 9).build();
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
    let mut new = flow("node-a/2/1").at_nanos(base + 20).build();
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
    let db = TestDb::shared();
    let base = now_nanos() - 60_000_000_000;
    let denied = flow("node-a/1/1")
        .at_nanos(base)
        .denied()
        .ingress(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            tier: pb::PolicyTier::NetworkPolicy as i32,
            ..Default::default()
        })
        .egress(direction(pb::PolicyStatus::NotIsolated))
        .build();
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
    let admin = flow("node-a/2/1")
        .at_nanos(base + 20)
        .denied()
        .egress(pb::DirectionVerdict {
            status: pb::PolicyStatus::Denied as i32,
            tier: pb::PolicyTier::Admin as i32,
            ..Default::default()
        })
        .with(|f| {
            f.denied_by = vec![pb::PolicyRef {
                name: "deny-tenant".into(),
                kind: pb::PolicyKind::AdminNetworkPolicy as i32,
                tier: pb::PolicyTier::Admin as i32,
                ..Default::default()
            }]
        })
        .build();
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
    let db = TestDb::shared();
    let store = db.connect().await;
    let day = 86_400_000_000_000i64;
    let old: Vec<pb::Flow> = (0..3)
        .map(|i| {
            flow(format!("node-a/old/{i}"))
                .at_nanos(now_nanos() - 9 * day + i)
                .build()
        })
        .collect();
    let new = flow("node-a/new/0")
        .at_nanos(now_nanos() - 60_000_000_000)
        .build();
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
async fn the_store_metrics_count_what_it_inserted() {
    let db = TestDb::shared();
    let store = db.connect().await;
    let base = now_nanos() - 5_000_000_000;
    let flows = vec![
        flow("a/1/1").at_nanos(base).build(),
        flow("a/1/2").at_nanos(base + 7).build(),
    ];
    store.insert(flows).await.unwrap();
    let status = store.status().await.unwrap();
    let metrics = netverdict_api::metrics::ApiMetrics::for_store(&store);
    metrics.record_status(Some(&status));
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
    let db = TestDb::shared();
    let store = netverdict_api::clickhouse::ClickHouseStore::connect(
        netverdict_api::clickhouse::ClickHouseConfig {
            query_max_rows: 5,
            ..db.config()
        },
    )
    .await
    .unwrap();
    let base = now_nanos() - 60_000_000_000;
    store
        .insert(
            (0..10)
                .map(|i| {
                    flow(format!("node-a/1/{i}"))
                        .at_nanos(base + i * 1_000_000)
                        .build()
                })
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

/// The reports' side is in the conformance suite; here, the rollups.
#[tokio::test]
async fn a_connection_seen_at_both_ends_counts_once_in_reports_and_rollups() {
    const N: usize = 7;
    let db = TestDb::shared();
    let store = db.connect().await;
    let flows = both_ends(N, now_nanos() - 60_000_000_000);
    store.insert(flows.clone()).await.unwrap();
    let denied = store.denied(&ReportQuery::default()).await.unwrap();
    assert_eq!(
        denied.iter().map(|g| g.count).sum::<u64>(),
        2 * N as u64,
        "{denied:#?}"
    );
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
    let what = format!("the rollups to hold {want:?}");
    wait_until(&what, Duration::from_secs(30), async || {
        db.sql(&sql) == want
    })
    .await;
}

#[tokio::test]
async fn migration_5_brings_a_database_of_migrations_1_to_4_up_to_date() {
    let db = TestDb::shared();
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
    let version_5 = format!("SELECT count() FROM {d}.schema_migrations WHERE version = 5");
    wait_until(
        "the mutation to be done",
        Duration::from_secs(30),
        async || db.sql(&version_5) == "0\n",
    )
    .await;
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
    let at = now_nanos() - 30_000_000_000;
    let weak = flow("node-0/9/1")
        .at_nanos(at)
        .mismatch(pb::Mismatch::NoAnswerThoughAllowed);
    let second = flow("node-1/9/1").at_nanos(at).counted_elsewhere();
    store
        .insert(vec![weak.build(), second.build()])
        .await
        .unwrap();
    let mismatches = format!(
        "SELECT mismatch, sum(flows) FROM {d}.flows_by_minute \
         WHERE mismatch != 'MISMATCH_NONE' GROUP BY mismatch"
    );
    let all = format!("SELECT sum(flows) FROM {d}.flows_by_minute");
    wait_until(
        "the recreated view to count records of account only",
        Duration::from_secs(30),
        async || {
            db.sql(&mismatches) == "MISMATCH_NO_ANSWER_THOUGH_ALLOWED\t1\n" && db.sql(&all) == "1\n"
        },
    )
    .await;
}

/// Denied flows over a few minutes (`base` a whole minute): pods of two
/// namespaces and an outside address, two policies, distinct times (at
/// nanoseconds), counts, reasons, outcomes and destination names; some
/// allowed, some counted elsewhere.
fn minutes_of_denied_flows(prefix: &str, base: i64, n: i64) -> Vec<pb::Flow> {
    use netverdict_testing::flow::{pod, world};
    (0..n)
        .map(|i| {
            let source = match i % 3 {
                0 => pod("a", &format!("client-{}", i % 2)).workload("client"),
                1 => pod("b", "batch-1").workload("batch"),
                _ => world("203.0.113.7"),
            };
            let mut f = flow(format!("{prefix}/{i}"))
                .at_nanos(base + i * 13_700_000_123)
                .count(1 + (i % 4) as u64)
                .from(source.labels(&[("app", if i % 2 == 0 { "x" } else { "y" })]))
                .to(pod("c", "api-0")
                    .workload("api")
                    .port(8080 + (i % 2) as u32))
                .reason(format!("reason {i}"))
                .outcome(if i % 5 == 0 {
                    pb::Outcome::Refused
                } else {
                    pb::Outcome::Dropped
                })
                .ingress_status(pb::PolicyStatus::Denied);
            f = if i % 7 == 3 {
                f.verdict(pb::Verdict::Allowed)
            } else {
                f.denied().denied_by(if i % 4 == 0 {
                    vec!["c/deny"]
                } else {
                    vec!["c/deny", "c/other"]
                })
            };
            if i % 11 == 5 {
                f = f.counted_elsewhere();
            }
            if i % 3 != 1 {
                f = f.with(|f| f.destination_names = vec![format!("n{}.example.com", i % 5)]);
            }
            f.build()
        })
        .collect()
}

/// Report windows over `base`'s minutes: whole, cut inside minutes, on
/// minute bounds, inside one minute, with namespaces and with labels.
fn report_windows(base: i64) -> Vec<ReportQuery> {
    use netverdict_proto::time::{TimeWindow, UnixNanos};
    let at = |ns: i64| Some(UnixNanos::from_nanos(ns));
    const M: i64 = 60_000_000_000;
    let windows = [
        TimeWindow::new(None, None),
        TimeWindow::new(at(base + 17_000_000_001), None),
        TimeWindow::new(None, at(base + 3 * M + 5)),
        TimeWindow::new(at(base + M - 1), at(base + 4 * M + 1)),
        TimeWindow::new(at(base + M), at(base + 3 * M)),
        TimeWindow::new(at(base + M + 1), at(base + M + 40_000_000_000)),
        TimeWindow::new(at(base + 2 * M), at(base + 2 * M)),
    ];
    let mut queries = Vec::new();
    for window in windows {
        queries.push(ReportQuery {
            window,
            ..Default::default()
        });
        queries.push(ReportQuery {
            window,
            namespaces: vec!["a".into(), "c".into()],
            ..Default::default()
        });
        queries.push(ReportQuery {
            window,
            namespaces: vec!["b".into()],
            limit: 2,
            ..Default::default()
        });
        queries.push(ReportQuery {
            window,
            labels: vec![
                netverdict_proto::filter::LabelSelector::parse("labels", "app=x").unwrap(),
            ],
            ..Default::default()
        });
    }
    queries
}

#[tokio::test]
async fn denied_reads_whole_minutes_from_the_rollup_and_the_rest_from_flows() {
    let db = TestDb::shared();
    let store = db.connect().await;
    let minute = 60_000_000_000;
    let base = (now_nanos() - 3_600_000_000_000) / minute * minute;
    let flows = minutes_of_denied_flows("node-a/1", base, 24);
    store.insert(flows.clone()).await.unwrap();
    let groups = db.sql(&format!(
        "SELECT countMerge(flows) FROM {}.denied_groups_by_minute",
        db.name
    ));
    let denied_flows = flows
        .iter()
        .filter(|f| f.verdict == pb::Verdict::Denied as i32 && !f.counted_elsewhere)
        .count();
    assert_eq!(
        groups,
        format!("{denied_flows}\n"),
        "the rollup holds every denied flow"
    );
    for q in report_windows(base) {
        let reference = netverdict_api::report::denied_groups(&flows, &q);
        assert_eq!(store.denied(&q).await.unwrap(), reference, "{q:?}");
    }
}

#[tokio::test]
async fn migration_10_covers_the_minutes_after_the_flows_stored_before_it() {
    let db = TestDb::shared();
    let d = &db.name;
    let minute = 60_000_000_000;
    let base = (now_nanos() - 3_600_000_000_000) / minute * minute;
    let before = minutes_of_denied_flows("node-a/1", base, 24);
    {
        let store = db.connect().await;
        store.insert(before.clone()).await.unwrap();
    }
    // The database as it was before migration 10.
    for sql in [
        format!("DROP TABLE {d}.denied_groups_by_minute_mv"),
        format!("DROP TABLE {d}.denied_groups_by_minute"),
        format!("DROP TABLE {d}.rollup_coverage"),
        format!("ALTER TABLE {d}.schema_migrations DELETE WHERE version = 10"),
    ] {
        db.sql(&sql);
    }
    let version_10 = format!("SELECT count() FROM {d}.schema_migrations WHERE version = 10");
    wait_until(
        "the mutation to be done",
        Duration::from_secs(30),
        async || db.sql(&version_10) == "0\n",
    )
    .await;
    let store = db.connect().await;
    let newest = before
        .iter()
        .map(|f| f.last_seen.unwrap().seconds)
        .max()
        .unwrap();
    assert_eq!(
        db.sql(&format!("SELECT toUInt32(since) FROM {d}.rollup_coverage")),
        format!("{}\n", newest / 60 * 60 + 60),
        "covered from the minute after the newest flow"
    );
    // Later flows, and late ones inside the minutes before the coverage
    // (in the rollup, but read from flows there).
    let mut all = before;
    let after = minutes_of_denied_flows("node-a/2", base + 5 * minute, 24);
    let late = minutes_of_denied_flows("node-a/3", base + 7_000_000, 10);
    store.insert(after.clone()).await.unwrap();
    store.insert(late.clone()).await.unwrap();
    all.extend(after);
    all.extend(late);
    for q in report_windows(base)
        .into_iter()
        .chain(report_windows(base + 5 * minute))
    {
        let reference = netverdict_api::report::denied_groups(&all, &q);
        assert_eq!(store.denied(&q).await.unwrap(), reference, "{q:?}");
    }
}

#[tokio::test]
async fn migration_9_adds_icmp_and_the_packet_counts() {
    let db = TestDb::shared();
    let base = now_nanos() - 60_000_000_000;
    {
        let store = db.connect().await;
        store
            .insert(vec![flow("node-a/1/1").at_nanos(base).build()])
            .await
            .unwrap();
    }
    let d = &db.name;
    // The database as it was before migration 9: three protocols, no counts.
    let old = "Enum8('PROTOCOL_UNSPECIFIED' = 0, 'PROTOCOL_TCP' = 1, 'PROTOCOL_UDP' = 2, \
               'PROTOCOL_SCTP' = 3)";
    for table in ["flows", "flows_by_minute", "denied_by_minute"] {
        db.sql(&format!(
            "ALTER TABLE {d}.{table} MODIFY COLUMN protocol {old}"
        ));
    }
    for column in ["packets", "bytes"] {
        db.sql(&format!("ALTER TABLE {d}.flows DROP COLUMN {column}"));
    }
    db.sql(&format!("DROP TABLE {d}.schema_migrations"));
    let store = db.connect().await;
    assert_eq!(
        db.sql(&format!("SELECT packets, bytes FROM {d}.flows")),
        "0\t0\n",
        "a row stored before migration 9 reads 0: not counted"
    );
    let ping = flow("node-a/2/1")
        .at_nanos(base + 20)
        .protocol(pb::Protocol::Icmp)
        .with(|f| {
            f.packets = 3;
            f.bytes = 252;
        })
        .build();
    store.insert(vec![ping]).await.unwrap();
    assert_eq!(
        db.sql(&format!(
            "SELECT toString(protocol), packets, bytes FROM {d}.flows WHERE id = 'node-a/2/1'"
        )),
        "PROTOCOL_ICMP\t3\t252\n"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT sum(flows) FROM {d}.flows_by_minute WHERE protocol = 'PROTOCOL_ICMP'"
        )),
        "1\n",
        "the rollup counts it under its protocol"
    );
    let filter = pb::FlowFilter {
        protocol: vec![pb::Protocol::Icmp as i32],
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
    assert_eq!((found[0].packets, found[0].bytes), (3, 252));
}
