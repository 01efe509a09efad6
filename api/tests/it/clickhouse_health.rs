//! The API server's HTTP port against a real ClickHouse: `/metrics`,
//! `/healthz` and `/readyz` never query ClickHouse per request (one status
//! query per check interval, whatever the traffic), `/readyz` follows
//! ClickHouse going away and coming back, and `/healthz` does not.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use netverdict_api::clickhouse::{ClickHouseStats, ClickHouseStore};
use netverdict_api::{ApiConfig, ApiServer};
use netverdict_cluster::SharedState;
use netverdict_testing::clickhouse::{OwnServer, TestDb};
use netverdict_testing::{free_addr, http};

async fn serve(store: ClickHouseStore, check_every: Duration) -> ApiServer {
    let config = ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        shutdown_grace: Duration::from_secs(5),
        store_check_interval: check_every,
        ..Default::default()
    };
    netverdict_api::serve(config, store, SharedState::default())
        .await
        .unwrap()
}

/// GET: the status code and the body.
async fn get(addr: SocketAddr, path: &'static str) -> (u16, String) {
    let response = http::get(addr, path).await;
    (response.status, response.body)
}

/// Queries the store has sent to ClickHouse (successful or not).
fn queries(stats: &ClickHouseStats) -> u64 {
    let h = &stats.query_latency;
    h.buckets.iter().map(|b| b.load(Relaxed)).sum::<u64>() + h.overflow.load(Relaxed)
}

/// Polls `path` every 50 ms until it answers `code`, or fails after `secs`
/// with the last answer.
async fn wait_status(addr: SocketAddr, path: &'static str, code: u16, secs: u64) -> String {
    wait_answer(addr, path, code, "", secs).await
}

/// As [`wait_status`], until the body also contains `part`.
async fn wait_answer(
    addr: SocketAddr,
    path: &'static str,
    code: u16,
    part: &str,
    secs: u64,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (got, body) = get(addr, path).await;
        if got == code && body.contains(part) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} ({body:?}) after {secs} s, want {code}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_scrapes_do_not_query_clickhouse() {
    let db = TestDb::shared();
    let store = db.connect().await;
    let stats = store.stats();
    // One check at start, the next one in an hour: every query the test
    // sees after the first check came from a request.
    let server = serve(store, Duration::from_secs(3600)).await;
    let http = server.metrics_addr().unwrap();
    let body = wait_status(http, "/readyz", 200, 30).await;
    assert!(body.starts_with("ready: the store answered"), "{body}");
    let after_first_check = queries(&stats);
    assert_eq!(after_first_check, 1, "the first check is one status query");
    for _ in 0..20 {
        let (code, metrics) = get(http, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            metrics.contains("netverdict_api_store_ready 1"),
            "{metrics}"
        );
        assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_string()));
        assert_eq!(get(http, "/readyz").await.0, 200);
    }
    assert_eq!(
        queries(&stats),
        after_first_check,
        "60 requests to the HTTP port sent no query to ClickHouse"
    );
    assert_eq!(get(http, "/nope").await.0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_clickhouse_and_liveness_does_not() {
    let mut clickhouse = OwnServer::start();
    let db = TestDb::new(&clickhouse.addr());
    let store = ClickHouseStore::start(db.config()).await.unwrap();
    let server = serve(store, Duration::from_millis(200)).await;
    let http = server.metrics_addr().unwrap();
    wait_status(http, "/readyz", 200, 30).await;

    clickhouse.kill();
    let body = wait_status(http, "/readyz", 503, 30).await;
    assert!(
        body.starts_with("not ready: the store's last status check failed: "),
        "{body}"
    );
    // Alive all along: a ClickHouse outage must not get the server restarted.
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_string()));
    let (_, metrics) = get(http, "/metrics").await;
    assert!(
        metrics.contains("netverdict_api_store_ready 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("netverdict_api_store_status_errors_total 0\n"),
        "{metrics}"
    );
    let ready = server.health().readiness(tokio::time::Instant::now());
    assert!(
        matches!(ready, netverdict_api::health::Readiness::NotReady { .. }),
        "{ready:?}"
    );

    clickhouse.restart();
    wait_status(http, "/readyz", 200, 60).await;
    let (_, metrics) = get(http, "/metrics").await;
    assert!(
        metrics.contains("netverdict_api_store_ready 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_clickhouse_is_down_is_alive_but_not_ready() {
    // Nothing listens on this address: ClickHouse never answers.
    let db = TestDb::new(&free_addr().to_string());
    let store = ClickHouseStore::start(db.config()).await.unwrap();
    let server = serve(store, Duration::from_millis(100)).await;
    let http = server.metrics_addr().unwrap();
    let body = wait_answer(http, "/readyz", 503, "status check failed", 30).await;
    assert!(body.contains("clickhouse: "), "{body}");
    assert_eq!(get(http, "/healthz").await.0, 200);
    server.shutdown().await.unwrap();
}
