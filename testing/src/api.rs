//! The test ingest server: the real API server (`netverdict_api::serve_shared`)
//! over a store the test holds, gRPC and `/metrics` on loopback ports the
//! system picks; plus the stores tests give it: a bounded memory store, and
//! [`ScriptedStore`], whose inserts fail or wait on command.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use netverdict_api::store::{
    FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreError, StoreStatus,
};
use netverdict_api::{ApiConfig, ApiServer, MemoryConfig, MemoryStore, serve_shared};
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;

/// A server configuration on loopback: gRPC and `/metrics` on ports the
/// system picks, a follow buffer of 4096, 5 s of shutdown grace, the store's
/// status checked every 50 ms.
pub fn config() -> ApiConfig {
    config_on("127.0.0.1:0".parse().expect("an address"))
}

/// [`config`] with gRPC on `listen` (e.g. the address of a stopped server).
pub fn config_on(listen: SocketAddr) -> ApiConfig {
    ApiConfig {
        listen,
        metrics_listen: Some("127.0.0.1:0".parse().expect("an address")),
        follow_buffer: 4096,
        shutdown_grace: Duration::from_secs(5),
        // The store gauges of /metrics follow inserts within a test's wait.
        store_check_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

/// The API server over `store`, with [`config`] and no cluster state.
pub async fn serve<S: Store>(store: Arc<S>) -> ApiServer {
    serve_with(config(), store, SharedState::default()).await
}

/// The API server over `store` with this configuration and cluster state.
pub async fn serve_with<S: Store>(
    config: ApiConfig,
    store: Arc<S>,
    cluster: SharedState,
) -> ApiServer {
    let listen = config.listen;
    serve_shared(config, store, cluster)
        .await
        .unwrap_or_else(|e| panic!("the API server does not start on {listen}: {e}"))
}

/// The server's gRPC URL (`http://127.0.0.1:port`).
pub fn url(server: &ApiServer) -> String {
    format!("http://{}", server.grpc_addr())
}

/// A memory store bounded to `max_flows`.
pub fn memory(max_flows: usize) -> Arc<MemoryStore> {
    Arc::new(
        MemoryStore::new(MemoryConfig {
            max_flows,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("memory store of {max_flows} flows: {e}")),
    )
}

/// The ids of every flow `store` holds, sorted.
pub async fn stored_ids<S: Store>(store: &S) -> Vec<String> {
    let mut ids: Vec<String> = store
        .flows(&FlowQuery::default())
        .await
        .unwrap_or_else(|e| panic!("reading the store: {e}"))
        .into_iter()
        .map(|f| f.id)
        .collect();
    ids.sort();
    ids
}

/// A memory store whose inserts fail while `failing` is set or when the
/// batch starts with a flow whose id ends in `/fail`, and wait for a permit
/// of `gate` when it starts with one ending in `/gated`; counts the inserts
/// running at once (`peak`: the most seen).
pub struct ScriptedStore {
    /// Where inserts that succeed go.
    pub inner: MemoryStore,
    /// Every insert fails while set.
    pub failing: AtomicBool,
    /// `/gated` batches wait for a permit.
    pub gate: tokio::sync::Semaphore,
    /// Inserts running now.
    pub active: AtomicUsize,
    /// The most inserts that ran at once.
    pub peak: AtomicUsize,
}

impl ScriptedStore {
    /// An empty store that inserts normally.
    pub fn new() -> ScriptedStore {
        ScriptedStore {
            inner: MemoryStore::new(MemoryConfig::default()).expect("the default memory store"),
            failing: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
            active: AtomicUsize::default(),
            peak: AtomicUsize::default(),
        }
    }

    async fn insert_scripted(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        let first = flows.first().map(|f| f.id.as_str()).unwrap_or_default();
        if first.ends_with("/gated") {
            self.gate
                .acquire()
                .await
                .expect("the gate is never closed")
                .forget();
        }
        if self.failing.load(Ordering::SeqCst) || first.ends_with("/fail") {
            return Err(StoreError::Backend {
                backend: "memory",
                message: "injected failure".into(),
            });
        }
        self.inner.insert(flows).await
    }
}

impl Default for ScriptedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for ScriptedStore {
    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let result = self.insert_scripted(flows).await;
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
