//! The API server: one gRPC port for `Ingest`, `Observer` and `Query`, and an
//! HTTP port for `/metrics`, `/healthz` and `/readyz`, over any [`Store`].
//!
//! How data flows through it:
//!
//! ```text
//! collectors ─Push(FlowBatch)─> ingest ─insert─> Store ─Ack(seq)─> collectors
//!                                  └─broadcast (new flows)─> GetFlows follow streams
//! CLI ─GetFlows─> observer: store.flows(query), then the broadcast, filtered
//! CLI ─Denied / DnsReport─> query: store.denied / store.dns_failures,
//!                                   + policy gaps from the cluster state
//! ```
//!
//! - [`ingest`]: acknowledges a batch only after the store made it durable; a
//!   store error ends the stream so the collector sends it again;
//! - [`observer`]: flow queries and follow streams (a lagging follower is told
//!   and counted, never slows ingest);
//! - [`query`]: the incident views;
//! - a background check of the store's status every
//!   [`ApiConfig::store_check_interval`] ([`crate::health`]), which `/metrics`
//!   and `/readyz` read: neither queries the store per request.
//!
//! [`serve`] binds both listeners (port 0 allowed; [`ApiServer::grpc_addr`]
//! tells the port) and returns a handle; [`ApiServer::shutdown`] ends the open
//! streams, waits for in-flight batches and stops.
//!
//! Security (`netverdict_tls`): the gRPC port speaks TLS with
//! [`ApiConfig::tls`] (certificate files reloaded when they change), and with
//! a client CA every client must present a certificate. Each service admits
//! one group ([`netverdict_tls::authz`]): `Ingest` the collectors, `Observer`
//! and `Query` the readers; [`authz`] binds a collector's pushes to its own
//! node. Without mutual TLS the server listens only on a loopback address,
//! unless [`ApiConfig::insecure`].

pub mod authz;
pub mod ingest;
pub mod observer;
pub mod query;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netverdict_cluster::SharedState;
use netverdict_proto::ports;
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::TimeBounds;
use netverdict_tls::authz::{COLLECTORS, READERS, RequireGroup};
use netverdict_tls::{ServerTls, ServerTlsFiles};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use crate::health::StoreHealth;
use crate::metrics::{ApiMetrics, serve_metrics};
use crate::store::Store;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The gRPC address (Ingest, Observer, Query); port 0 picks a free port.
    /// Without mutual TLS it must be a loopback address, unless `insecure`.
    pub listen: SocketAddr,
    /// TLS on the gRPC port: certificate, key and (for mutual TLS, which
    /// enables authorization by group) the client CA. None: plaintext.
    pub tls: Option<ServerTlsFiles>,
    /// How often the TLS files are checked for new content.
    pub tls_reload_interval: Duration,
    /// Allows listening on a non-loopback address without mutual TLS.
    pub insecure: bool,
    /// The `/metrics` HTTP address; None serves no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// How many new flows a follower may fall behind before its stream ends.
    pub follow_buffer: usize,
    /// How long [`ApiServer::shutdown`] waits for streams to end before
    /// cutting them.
    pub shutdown_grace: Duration,
    /// Bytes of batches (encoded) being inserted at once across every ingest
    /// stream, at most: the bound on what ingest holds in memory while the
    /// store works (a larger batch waits for all of it and goes alone).
    /// Streams stop reading while it is reached, so collectors wait.
    pub max_in_flight_bytes: usize,
    /// The largest ingest message (one batch, encoded) a collector may send;
    /// a larger one is refused for good (`OUT_OF_RANGE`). Besides the
    /// in-flight bound, each stream holds at most one batch read and waiting
    /// for room, so ingest memory is bounded by about `max_in_flight_bytes +
    /// max_streams * max_message_bytes` of encoded flows.
    pub max_message_bytes: usize,
    /// Ingest streams open at once, at most; more are refused with
    /// `RESOURCE_EXHAUSTED` (collectors retry after a backoff).
    pub max_streams: usize,
    /// How far from this server's clock a flow's `last_seen` may be; flows
    /// outside are refused at ingest (set the age to the store's retention).
    pub time_bounds: TimeBounds,
    /// The most stored flows one `GetFlows` may ask for (`number`); a larger
    /// number is refused with `INVALID_ARGUMENT`.
    pub max_query_flows: usize,
    /// The most groups one report may ask for (`limit`); a larger limit is
    /// refused with `INVALID_ARGUMENT`.
    pub max_report_groups: usize,
    /// How often the store's status is checked for `/metrics` and `/readyz`
    /// (each check is one status query; each is bounded by this interval).
    pub store_check_interval: Duration,
}

impl Default for ApiConfig {
    /// gRPC in plaintext on 127.0.0.1:4255 ([`ports::API_GRPC`]), metrics on
    /// 0.0.0.0:9966 ([`ports::API_METRICS`]); 64 MiB in flight, messages up
    /// to 4 MiB, 1024 streams; queries up to 100 000 flows and 10 000 report
    /// groups; the store checked every 15 s.
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], ports::API_GRPC)),
            tls: None,
            tls_reload_interval: netverdict_tls::server::DEFAULT_RELOAD_INTERVAL,
            insecure: false,
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], ports::API_METRICS))),
            follow_buffer: 4096,
            shutdown_grace: Duration::from_secs(10),
            max_in_flight_bytes: 64 << 20,
            max_message_bytes: 4 << 20,
            max_streams: 1024,
            time_bounds: TimeBounds::default(),
            max_query_flows: 100_000,
            max_report_groups: 10_000,
            store_check_interval: Duration::from_secs(15),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener ("grpc", "metrics").
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("API server setting {field} is invalid: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listen address needs mutual TLS or `insecure`.
    #[error(transparent)]
    Insecure(#[from] netverdict_tls::policy::Error),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] netverdict_tls::server::Error),
}

/// What every service shares.
pub(crate) struct Shared<S> {
    pub store: Arc<S>,
    pub metrics: Arc<ApiMetrics>,
    pub cluster: SharedState,
    /// New flows, for followers.
    pub flows: broadcast::Sender<Arc<pb::Flow>>,
    /// Turns true when the server stops; open streams end.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per byte being inserted ([`ApiConfig::max_in_flight_bytes`]).
    pub in_flight_bytes: Arc<tokio::sync::Semaphore>,
    /// One permit per open ingest stream ([`ApiConfig::max_streams`]).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The settings the services read.
    pub config: ApiConfig,
}

/// A running API server. Dropping it without [`shutdown`](Self::shutdown)
/// leaves the server running in the background until the runtime ends.
#[derive(Debug)]
pub struct ApiServer {
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    metrics: Arc<ApiMetrics>,
    health: Arc<StoreHealth>,
    shutdown: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<()>>,
    health_check: JoinHandle<()>,
    grace: Duration,
    tls: Option<ServerTls>,
}

/// Binds the listeners and starts serving `store` with the cluster state
/// `cluster` (for the DNS policy gaps). Must be called inside a tokio runtime.
pub async fn serve<S: Store>(
    config: ApiConfig,
    store: S,
    cluster: SharedState,
) -> Result<ApiServer, ServeError> {
    serve_shared(config, Arc::new(store), cluster).await
}

/// As [`serve`], with a store the caller keeps a handle on (tests, the demo).
pub async fn serve_shared<S: Store>(
    config: ApiConfig,
    store: Arc<S>,
    cluster: SharedState,
) -> Result<ApiServer, ServeError> {
    if config.follow_buffer == 0 {
        return Err(ServeError::Config {
            field: "follow_buffer",
            reason: "must be at least 1",
        });
    }
    if config.store_check_interval.is_zero() {
        return Err(ServeError::Config {
            field: "store_check_interval",
            reason: "must be more than 0",
        });
    }
    let positive = |field, value: usize| {
        if value == 0 || value > u32::MAX as usize {
            return Err(ServeError::Config {
                field,
                reason: "must be between 1 and 4294967295",
            });
        }
        Ok(())
    };
    positive("max_in_flight_bytes", config.max_in_flight_bytes)?;
    positive("max_message_bytes", config.max_message_bytes)?;
    positive("max_streams", config.max_streams)?;
    positive("max_query_flows", config.max_query_flows)?;
    positive("max_report_groups", config.max_report_groups)?;
    netverdict_tls::policy::check_listen(
        "API server",
        config.listen,
        config.tls.as_ref(),
        config.insecure,
    )?;
    let tls = match &config.tls {
        Some(files) => {
            Some(ServerTls::load(files.clone(), Some(config.tls_reload_interval)).await?)
        }
        None => None,
    };
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let grpc_listener = bind("grpc", config.listen).await?;
    let grpc_addr = local_addr(&grpc_listener, "grpc", config.listen)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind("metrics", addr).await?),
        None => None,
    };
    let metrics_addr = match (&metrics_listener, config.metrics_listen) {
        (Some(l), Some(addr)) => Some(local_addr(l, "metrics", addr)?),
        _ => None,
    };
    let mut metrics = ApiMetrics::for_store(&*store);
    if let Some(tls) = &tls {
        metrics.register_tls(tls.stats());
    }
    let connections = Arc::new(netverdict_tls::server::ConnectionCounters::default());
    metrics.register_connections(connections.clone());
    let metrics = Arc::new(metrics);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (flows, _) = broadcast::channel(config.follow_buffer);
    let shared = Arc::new(Shared {
        store: store.clone(),
        metrics: metrics.clone(),
        cluster,
        flows,
        shutdown: shutdown_rx.clone(),
        in_flight_bytes: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_bytes)),
        streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
        config: config.clone(),
    });
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            ingest::IngestService::new(shared.clone()).into_server(),
            RequireGroup::new(COLLECTORS, "Ingest"),
        ))
        .add_service(InterceptedService::new(
            observer::ObserverService::new(shared.clone()).into_server(),
            RequireGroup::new(READERS, "Observer"),
        ))
        .add_service(InterceptedService::new(
            query::QueryService::new(shared).into_server(),
            RequireGroup::new(READERS, "Query"),
        ));
    let mut grpc_shutdown = shutdown_rx.clone();
    let grpc = tokio::spawn(router.serve_with_incoming_shutdown(
        netverdict_tls::server::incoming_counted(grpc_listener, tls.clone(), connections),
        async move {
            stopped(&mut grpc_shutdown).await;
        },
    ));
    let health = Arc::new(StoreHealth::new(config.store_check_interval));
    let health_check = tokio::spawn(health.clone().run(
        store,
        metrics.clone(),
        shutdown_rx.clone(),
    ));
    let http = metrics_listener.map(|listener| {
        tokio::spawn(serve_metrics(
            listener,
            metrics.clone(),
            health.clone(),
            shutdown_rx,
        ))
    });
    tracing::info!(
        %grpc_addr,
        metrics_addr = ?metrics_addr,
        tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(ServerTls::mutual),
        "API server listening"
    );
    Ok(ApiServer {
        grpc_addr,
        metrics_addr,
        metrics,
        health,
        shutdown,
        grpc,
        http,
        health_check,
        grace: config.shutdown_grace,
        tls,
    })
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn local_addr(
    listener: &TcpListener,
    what: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { what, addr, source })
}

impl ApiServer {
    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound metrics address, if serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<ApiMetrics> {
        &self.metrics
    }

    /// The gRPC port's TLS configuration (None in plaintext): its counters,
    /// and its generation to wait for a certificate reload.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The store's last status check and readiness (what `/readyz` answers).
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Waits until the gRPC server stops on its own (it only does on error).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        match (&mut self.grpc).await {
            Ok(result) => result.map_err(ServeError::from),
            Err(e) => {
                tracing::error!(error = %e, "gRPC server task failed");
                Ok(())
            }
        }
    }

    /// Stops accepting, ends open streams (after the batch being inserted),
    /// and waits up to the grace period for connections to close.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        let mut grpc = self.grpc;
        let result = match tokio::time::timeout(self.grace, &mut grpc).await {
            Ok(Ok(result)) => result.map_err(ServeError::from),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "API server did not stop in time; cutting connections");
                grpc.abort();
                Ok(())
            }
        };
        self.health_check.abort();
        if let Some(http) = self.http {
            let abort = http.abort_handle();
            if tokio::time::timeout(self.grace, http).await.is_err() {
                tracing::warn!("metrics endpoint did not stop in time");
                abort.abort();
            }
        }
        tracing::info!("API server stopped");
        result
    }
}
