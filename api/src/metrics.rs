//! The API server's metrics (Prometheus / OpenMetrics text, `netverdict_api_*`)
//! and the small HTTP endpoint of its metrics port: `/metrics`, `/healthz`
//! (liveness: answers while the process serves HTTP) and `/readyz` (readiness:
//! the store's last status check, see [`crate::health`]).
//!
//! Counters and the histogram are updated by the services as they work; the
//! store gauges hold the last [`Store::status`](crate::store::Store::status)
//! the background check got, so a scrape never queries the store. Labels stay
//! low-cardinality (none carry pod names, ids or addresses).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use netverdict_proto::time::UnixNanos;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::health::{Readiness, StoreHealth};
use crate::store::{Store, StoreStatus};

/// Every metric of the API server.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    /// Batches received on ingest streams.
    pub ingest_batches: Counter,
    /// Flows received on ingest streams (valid or not, duplicates included).
    pub ingest_flows: Counter,
    /// Flows the store already held (a resent batch).
    pub ingest_duplicates: Counter,
    /// Flows refused before the store (invalid, or `last_seen` outside the
    /// time bounds).
    pub ingest_invalid_flows: Counter,
    /// Flows stored with enum numbers this build does not know (a newer
    /// collector).
    pub ingest_unknown_enum_flows: Counter,
    /// Flows the store rejected and set aside (ClickHouse's `dead_letters`).
    pub ingest_rejected_flows: Counter,
    /// Ingest streams refused because `max_streams` were open.
    pub ingest_streams_refused: Counter,
    /// Batches refused (ending their stream with `PERMISSION_DENIED`)
    /// because they name another node than the client certificate's.
    pub ingest_batches_denied: Counter,
    /// Ingest streams open now.
    pub ingest_streams: Gauge,
    /// Batches read and waiting for room under the server's in-flight bound.
    pub ingest_batches_waiting: Gauge,
    /// How long `Store::insert` took per batch.
    pub store_insert_duration: Histogram,
    /// `Store::insert` failures (the batch is not acknowledged and is resent).
    pub store_insert_errors: Counter,
    /// Follow streams open now.
    pub follow_subscribers: Gauge,
    /// Follow streams ended because the follower fell behind.
    pub follow_lagged: Counter,
    store_flows: Gauge,
    store_flows_dropped: Gauge,
    store_oldest: Gauge,
    store_newest: Gauge,
    store_status_errors: Counter,
    store_ready: Gauge,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics::new()
    }
}

impl ApiMetrics {
    /// Registers every metric of the server and those of `store`.
    pub fn for_store<S: Store>(store: &S) -> Self {
        let mut m = ApiMetrics::new();
        store.register_metrics(&mut m.registry);
        m
    }

    /// Registers every metric of the server.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("netverdict_api");
        let m = ApiMetrics {
            ingest_batches: Counter::default(),
            ingest_flows: Counter::default(),
            ingest_duplicates: Counter::default(),
            ingest_invalid_flows: Counter::default(),
            ingest_unknown_enum_flows: Counter::default(),
            ingest_rejected_flows: Counter::default(),
            ingest_streams_refused: Counter::default(),
            ingest_batches_denied: Counter::default(),
            ingest_streams: Gauge::default(),
            ingest_batches_waiting: Gauge::default(),
            store_insert_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            store_insert_errors: Counter::default(),
            follow_subscribers: Gauge::default(),
            follow_lagged: Counter::default(),
            store_flows: Gauge::default(),
            store_flows_dropped: Gauge::default(),
            store_oldest: Gauge::default(),
            store_newest: Gauge::default(),
            store_status_errors: Counter::default(),
            store_ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ingest_batches",
            "Flow batches received from collectors",
            m.ingest_batches.clone(),
        );
        registry.register(
            "ingest_flows",
            "Flow records received from collectors",
            m.ingest_flows.clone(),
        );
        registry.register(
            "ingest_duplicates",
            "Flow records received again and stored once",
            m.ingest_duplicates.clone(),
        );
        registry.register(
            "ingest_invalid_flows",
            "Flow records refused before the store (invalid, or last_seen outside the time bounds)",
            m.ingest_invalid_flows.clone(),
        );
        registry.register(
            "ingest_unknown_enum_flows",
            "Flow records stored with enum values this server does not know (newer collectors)",
            m.ingest_unknown_enum_flows.clone(),
        );
        registry.register(
            "ingest_rejected_flows",
            "Flow records the store rejected and set aside (ClickHouse dead_letters)",
            m.ingest_rejected_flows.clone(),
        );
        registry.register(
            "ingest_streams_refused",
            "Ingest streams refused because max_streams were open",
            m.ingest_streams_refused.clone(),
        );
        registry.register(
            "ingest_batches_denied",
            "Batches refused because they name another node than the client certificate's",
            m.ingest_batches_denied.clone(),
        );
        registry.register(
            "ingest_streams",
            "Collector ingest streams open",
            m.ingest_streams.clone(),
        );
        registry.register(
            "ingest_batches_waiting",
            "Batches waiting for room under the in-flight bound (max_in_flight_bytes)",
            m.ingest_batches_waiting.clone(),
        );
        registry.register_with_unit(
            "store_insert_duration",
            "Time the store took to make one batch durable",
            Unit::Seconds,
            m.store_insert_duration.clone(),
        );
        registry.register(
            "store_insert_errors",
            "Store inserts that failed (the batch is resent)",
            m.store_insert_errors.clone(),
        );
        registry.register(
            "follow_subscribers",
            "GetFlows follow streams open",
            m.follow_subscribers.clone(),
        );
        registry.register(
            "follow_lagged",
            "Follow streams ended because the follower fell behind",
            m.follow_lagged.clone(),
        );
        registry.register(
            "store_flows",
            "Flow records the store holds",
            m.store_flows.clone(),
        );
        registry.register(
            "store_flows_dropped",
            "Flow records the store evicted or expired",
            m.store_flows_dropped.clone(),
        );
        registry.register_with_unit(
            "store_oldest_timestamp",
            "last_seen of the oldest record held (Unix time)",
            Unit::Seconds,
            m.store_oldest.clone(),
        );
        registry.register_with_unit(
            "store_newest_timestamp",
            "last_seen of the newest record held (Unix time)",
            Unit::Seconds,
            m.store_newest.clone(),
        );
        registry.register(
            "store_status_errors",
            "Store status checks that failed (the server is not ready meanwhile)",
            m.store_status_errors.clone(),
        );
        registry.register(
            "store_ready",
            "1 when the last store status check succeeded, else 0",
            m.store_ready.clone(),
        );
        ApiMetrics { registry, ..m }
    }

    /// Adds the gRPC port's TLS counters (`netverdict_api_tls_*`).
    pub fn register_tls(&mut self, stats: Arc<netverdict_tls::server::TlsStats>) {
        self.registry
            .register_collector(Box::new(netverdict_tls::metrics::TlsCollector::new(stats)));
    }

    /// Adds the gRPC server's accept counters (failed accepts, connections
    /// closed for a missing HTTP/2 preface).
    pub fn register_connections(
        &mut self,
        counters: Arc<netverdict_tls::server::ConnectionCounters>,
    ) {
        self.registry.register_collector(Box::new(
            netverdict_tls::metrics::ConnectionCollector::new(counters),
        ));
    }

    /// Sets the store gauges from a status check (None: the check failed;
    /// the gauges keep their last values and the failure is counted).
    pub fn record_status(&self, status: Option<&StoreStatus>) {
        match status {
            Some(status) => {
                let secs = |t: Option<std::time::SystemTime>| {
                    t.map_or(0, |t| UnixNanos::from_system(t).floor_seconds().max(0))
                };
                let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                self.store_flows.set(clamp(status.flows_stored));
                self.store_flows_dropped.set(clamp(status.flows_dropped));
                self.store_oldest.set(secs(status.oldest));
                self.store_newest.set(secs(status.newest));
                self.store_ready.set(1);
            }
            None => {
                self.store_status_errors.inc();
                self.store_ready.set(0);
            }
        }
    }

    /// Renders every metric as it is now (the store is not asked).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`
/// turns true.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<ApiMetrics>,
    health: Arc<StoreHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::server::stopped(&mut shutdown) => return,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (metrics, health) = (metrics.clone(), health.clone());
                async move { Ok::<_, Infallible>(respond(&req, &metrics, &health)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "metrics connection ended");
                    }
                }
                () = crate::server::stopped(&mut conn_shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &ApiMetrics,
    health: &StoreHealth,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&Method::GET, "/readyz") => match health.readiness(tokio::time::Instant::now()) {
            Readiness::Ready { checked_ago } => (
                StatusCode::OK,
                "text/plain",
                format!("ready: the store answered {checked_ago:.0?} ago\n"),
            ),
            Readiness::NotReady { reason } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
