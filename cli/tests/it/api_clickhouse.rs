//! `netverdict api --clickhouse` as a process against the shared ClickHouse
//! server (scripts/start-clickhouse.sh): a collector's exporter streams flows
//! into it; the API server is SIGKILLed mid-stream and started again on the
//! same port; the exporter reconnects and every flow is acknowledged and
//! stored exactly once. The query commands run against it, a hostile
//! namespace included, and its /metrics carries the ClickHouse store's
//! counters.

use std::time::Duration;

use netverdict_collector::export::ConnectionState;
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow::policy_ref;
use netverdict_testing::{free_addr, pod, scrape, wait_until};

use crate::support::{ApiProcess, run, spawn_exporter, stdout};

const WAIT: Duration = Duration::from_secs(60);

/// Flows in the run; the server is killed with most of them sent.
const TOTAL: usize = 20_000;
const SENT_BEFORE_KILL: usize = 19_000;

fn id(i: usize) -> String {
    format!("node-a/1/{i:05}")
}

/// Flow `i`: every third one denied by shop/default-deny.
fn flow(i: usize) -> pb::Flow {
    let flow = netverdict_testing::flow(id(i))
        .from(
            pod("shop", "web-1")
                .workload("web")
                .port(40000 + i as u32 % 20000),
        )
        .to(pod("shop", "api-1").workload("api").port(8080));
    if i.is_multiple_of(3) {
        flow.denied()
            .outcome(pb::Outcome::Dropped)
            .ingress(pb::DirectionVerdict {
                isolated: true,
                selected_by: vec![policy_ref("shop/default-deny")],
                ..Default::default()
            })
            .build()
    } else {
        flow.ingress(pb::DirectionVerdict::default()).build()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_api_server_loses_nothing_acknowledged_and_stores_it_once() {
    let db = TestDb::shared();
    let listen = free_addr();
    let first = ApiProcess::start(&db, listen);
    assert_eq!(first.grpc, listen);
    let (tx, counters) = spawn_exporter(format!("http://{listen}"), 25);

    for i in 0..300 {
        tx.send(flow(i)).await.unwrap();
    }
    wait_until("the first 300 flows acknowledged", WAIT, async || {
        counters.snapshot().flows_acked == 300
    })
    .await;
    let metrics = scrape(first.metrics).await;
    assert_eq!(
        metrics.value("netverdict_api_clickhouse_rows_inserted_total"),
        300.0
    );
    assert_eq!(metrics.value("netverdict_api_ingest_flows_total"), 300.0);

    // The server dies while batches are in flight: some were inserted and
    // never acknowledged, some never reached it.
    for i in 300..SENT_BEFORE_KILL {
        tx.send(flow(i)).await.unwrap();
    }
    wait_until("some of the next flows acknowledged", WAIT, async || {
        counters.snapshot().flows_acked >= 1000
    })
    .await;
    first.kill();
    // Acknowledgements already in the socket still arrive after the kill:
    // count them once the exporter has seen the stream end.
    wait_until("the exporter to see the server gone", WAIT, async || {
        counters.snapshot().state != ConnectionState::Connected
    })
    .await;
    let acked_at_kill = counters.snapshot().flows_acked;
    let count_rows = || {
        db.sql(&format!("SELECT count() FROM {}.flows FORMAT TSV", db.name))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let stored_at_kill = count_rows();
    assert!(
        stored_at_kill >= acked_at_kill,
        "acknowledged {acked_at_kill}, stored {stored_at_kill}"
    );
    // Flows keep coming while it is down.
    for i in SENT_BEFORE_KILL..TOTAL {
        tx.send(flow(i)).await.unwrap();
    }
    let second = ApiProcess::start(&db, listen);
    wait_until(
        "every flow acknowledged after the restart",
        WAIT,
        async || counters.snapshot().flows_acked == TOTAL as u64,
    )
    .await;
    let stats = counters.snapshot();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.flows_dropped, 0, "{stats:?}");
    assert!(
        acked_at_kill < TOTAL as u64,
        "the kill came too late to test anything"
    );

    // Exactly once: every id, each in one row (not merged away: inserted once).
    let rows = db.sql(&format!(
        "SELECT count(), uniqExact(id) FROM {}.flows FORMAT TSV",
        db.name
    ));
    assert_eq!(
        rows.trim(),
        format!("{TOTAL}\t{TOTAL}"),
        "rows and distinct ids"
    );
    let ids = db.sql(&format!(
        "SELECT id FROM {}.flows ORDER BY id FORMAT TSV",
        db.name
    ));
    let expected: Vec<String> = (0..TOTAL).map(id).collect();
    assert_eq!(ids.lines().collect::<Vec<_>>(), expected);

    // The query commands read ClickHouse through the restarted server.
    let server = second.grpc.to_string();
    let args = |extra: &[&str]| {
        ["denied", "--server", &server, "-o", "json"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let out = stdout(&run(args(&["-n", "shop"])).await);
    let groups: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(groups[0]["destination"]["workload"], "api", "{out}");
    assert_eq!(groups[0]["count"], TOTAL.div_ceil(3), "{out}");
    for hostile in ["x' OR 1=1 --", "shop' --", "shop\\"] {
        let out = stdout(&run(args(&["-n", hostile])).await);
        assert_eq!(out.trim(), "[]", "-n {hostile:?}");
    }
    let out = stdout(
        &run([
            "observe",
            "--server",
            &server,
            "-n",
            "shop",
            "--verdict",
            "denied",
            "--last",
            "5",
            "-o",
            "jsonl",
        ]
        .map(String::from)
        .to_vec())
        .await,
    );
    assert_eq!(out.lines().count(), 5, "{out}");

    // The second server inserted exactly what the first had not stored, and
    // skipped (and counted) what was stored but not acknowledged before the
    // kill; nothing waits in the spool. What the first stored is known only
    // now: ClickHouse finishes inserts whose request it had received when the
    // server was killed, after `stored_at_kill` was counted, so that count is
    // a lower bound.
    let metrics = scrape(second.metrics).await;
    let metric = |series: &str| metrics.value(series) as u64;
    let text = &metrics.text;
    let inserted = metric("netverdict_api_clickhouse_rows_inserted_total");
    let duplicates = metric("netverdict_api_clickhouse_rows_duplicate_total");
    let received = metric("netverdict_api_ingest_flows_total");
    let stored_by_first = TOTAL as u64 - inserted;
    eprintln!(
        "acknowledged at the kill {acked_at_kill}, stored {stored_at_kill} then \
         {stored_by_first} by the first server; after the restart: received {received}, \
         inserted {inserted}, duplicates skipped {duplicates}"
    );
    assert!(stored_by_first >= stored_at_kill, "{text}");
    assert_eq!(received, inserted + duplicates, "{text}");
    assert!(duplicates >= stored_by_first - acked_at_kill, "{text}");
    assert_eq!(metric("netverdict_api_clickhouse_spool_pending_rows"), 0);
    // The store gauges follow the background status check.
    wait_until("the store gauge to count every flow", WAIT, async || {
        scrape(second.metrics)
            .await
            .get("netverdict_api_store_flows")
            == Some(TOTAL as f64)
    })
    .await;
}
