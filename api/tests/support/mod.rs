//! Shared helpers of the API server tests (and of the CLI's test of the
//! collector's exporter against the server): flows, servers on real sockets,
//! waiting on conditions with deadlines, a `/metrics` scrape, and a store whose
//! inserts fail or wait on command.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use netverdict_api::store::{
    FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreError, StoreStatus,
};
use netverdict_api::{ApiConfig, ApiServer, MemoryConfig, MemoryStore, serve_shared};
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use prost_types::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn at(t: SystemTime) -> Option<Timestamp> {
    Some(netverdict_proto::time::timestamp(t))
}

pub fn pod(ns: &str, name: &str, workload: &str, port: u32) -> Option<pb::Endpoint> {
    Some(pb::Endpoint {
        kind: pb::EndpointKind::Pod as i32,
        namespace: ns.into(),
        pod_name: name.into(),
        workload: workload.into(),
        port,
        ip: "10.244.0.1".into(),
        ..Default::default()
    })
}

/// A plain allowed TCP flow with id `id`, last seen now.
pub fn flow(id: &str) -> pb::Flow {
    let now = SystemTime::now();
    pb::Flow {
        id: id.into(),
        first_seen: at(now),
        last_seen: at(now),
        count: 1,
        node_name: "node-a".into(),
        source: pod("shop", "web-1", "web", 40000),
        destination: pod("shop", "api-1", "api", 8080),
        protocol: pb::Protocol::Tcp as i32,
        verdict: pb::Verdict::Allowed as i32,
        outcome: pb::Outcome::Established as i32,
        ..Default::default()
    }
}

pub fn memory(max_flows: usize) -> Arc<MemoryStore> {
    Arc::new(
        MemoryStore::new(MemoryConfig {
            max_flows,
            ..Default::default()
        })
        .unwrap(),
    )
}

pub fn config(listen: SocketAddr) -> ApiConfig {
    ApiConfig {
        listen,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        follow_buffer: 4096,
        shutdown_grace: Duration::from_secs(5),
        // The store gauges of /metrics follow inserts within a test's wait.
        store_check_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

pub async fn start<S: Store>(store: Arc<S>) -> ApiServer {
    start_with(store, SharedState::default()).await
}

pub async fn start_with<S: Store>(store: Arc<S>, cluster: SharedState) -> ApiServer {
    serve_shared(config("127.0.0.1:0".parse().unwrap()), store, cluster)
        .await
        .unwrap()
}

pub fn url(server: &ApiServer) -> String {
    format!("http://{}", server.grpc_addr())
}

/// Waits until `condition` holds, checking every 10 ms, failing after 20 s.
pub async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn stored_ids<S: Store>(store: &S) -> Vec<String> {
    let mut ids: Vec<String> = store
        .flows(&FlowQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    ids.sort();
    ids
}

/// Scrapes `/metrics` over HTTP/1.1 and parses the samples by name and labels.
pub async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text")
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (name.to_string(), value)
        })
        .collect()
}

/// A memory store whose inserts fail while `failing` is set or when the
/// batch starts with a `/fail` flow, and wait for a permit of `gate` when it
/// starts with a `/gated` flow; counts inserts running at once (`peak`: the
/// most seen).
pub struct Scripted {
    pub inner: MemoryStore,
    pub failing: AtomicBool,
    pub gate: tokio::sync::Semaphore,
    pub active: AtomicUsize,
    pub peak: AtomicUsize,
}

impl Scripted {
    pub fn new() -> Scripted {
        Scripted {
            inner: MemoryStore::new(Default::default()).unwrap(),
            failing: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
            active: Default::default(),
            peak: Default::default(),
        }
    }

    async fn insert_gated(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        if flows[0].id.ends_with("/gated") {
            self.gate.acquire().await.unwrap().forget();
        }
        if self.failing.load(Ordering::SeqCst) || flows[0].id.ends_with("/fail") {
            return Err(StoreError::Backend {
                backend: "memory",
                message: "injected failure".into(),
            });
        }
        self.inner.insert(flows).await
    }
}

impl Store for Scripted {
    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let result = self.insert_gated(flows).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        result
    }
    async fn flows(&self, q: &FlowQuery) -> Result<Vec<pb::Flow>> {
        self.inner.flows(q).await
    }
    async fn denied(&self, q: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        self.inner.denied(q).await
    }
    async fn dns_failures(&self, q: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        self.inner.dns_failures(q).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.inner.status().await
    }
}
