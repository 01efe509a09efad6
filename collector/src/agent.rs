//! The node agent in one call: [`Agent::start`] wires the stages of this crate
//! into a running collector and returns an [`AgentHandle`].
//!
//! How data flows through it:
//!
//! ```text
//!  netverdict_cluster::start (kube | manifests | lab | a state the caller keeps)
//!                                                 └─> SharedState ─┐
//!                                                                  │ read
//!  events (eBPF probes | a replayed channel) ─> reader task ─> pipeline task ─> ring ─> Observer gRPC (TCP)
//!        (loss counters read every second)                          └──> exporter ─> API server Ingest
//!  /metrics (HTTP, Prometheus text) <─ a Snapshot of every stage's counters at each scrape
//! ```
//!
//! It is a library API so that one process can run the agent next to other
//! parts (the `netverdict demo` runs it with the API server); the CLI only turns
//! flags into an [`AgentConfig`]. Listeners may bind port 0: the handle tells
//! the bound addresses. [`AgentHandle::flush`] makes the agent deterministic
//! for tests and demos (no sleeps): it returns once every open aggregation
//! window is closed, its records are in the ring, and the exporter is done with
//! them (acknowledged by the server, or counted as dropped).
//!
//! Security: the Observer serves TLS with [`AgentConfig::tls`] (files
//! reloaded when they change) and admits only the group
//! `netverdict:readers` when clients must present certificates; without
//! mutual TLS it may listen only on a loopback address (the default,
//! `127.0.0.1:4254`) unless [`AgentConfig::insecure`]. The exporter's TLS is
//! in [`ExporterConfig`]; its certificate's CN must be the node name, since
//! the API server accepts only that node's flows from it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use netverdict_ebpf::{LossCounters, StreamError, StreamItem};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use netverdict_cluster::{ClusterHandle, SharedState, Source, SourceConfig, SourceMetrics};
use netverdict_proto::ports;
use netverdict_tls::accept::{Accept, accept_with_backoff};
use netverdict_tls::authz::{READERS, RequireGroup};
use netverdict_tls::server::{ConnectionCounters, TlsStats};
use netverdict_tls::{ServerTls, ServerTlsFiles};

use crate::export::{self, ExportCounters, ExportStats, Exporter, ExporterConfig, Flusher};
use crate::metrics::Snapshot;
use crate::observer::ObserverService;
use crate::pipeline::{self, Control, Pipeline, PipelineConfig};

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster state source could not start: invalid manifests, no
    /// Kubernetes client, initial lists not complete in time, an unreadable lab.
    #[error(transparent)]
    Cluster(#[from] netverdict_cluster::Error),
    /// The eBPF probes could not be loaded (the error says what is missing).
    #[error("eBPF probes: {0}")]
    Probes(#[from] netverdict_ebpf::LoadError),
    /// The probes' event stream failed.
    #[error("eBPF event stream: {0}")]
    Stream(#[from] StreamError),
    /// The export settings are invalid.
    #[error("export: {0}")]
    Export(#[from] export::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// Which server (`observer`, `metrics`).
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The Observer may not listen there without mutual TLS.
    #[error(transparent)]
    Insecure(#[from] netverdict_tls::policy::Error),
    /// The Observer's TLS files cannot be used.
    #[error("the Observer's TLS: {0}")]
    Tls(#[from] netverdict_tls::server::Error),
    /// The exporter's certificate names another node than this one.
    #[error(
        "the client certificate {cert} is node {cn:?}'s but this collector is node {node:?}: the API \
         server accepts only the flows of the node its certificate names"
    )]
    WrongNode {
        /// The certificate file.
        cert: String,
        /// Its CN.
        cn: String,
        /// This collector's node name.
        node: String,
    },
    /// A flush did not complete in time.
    #[error("flush not complete after {waited:?}: {pending}")]
    FlushTimeout {
        waited: Duration,
        /// What was still outstanding.
        pending: String,
    },
    /// A task of the agent stopped (the pipeline, the cluster source...).
    #[error("the agent stopped: {0}")]
    Stopped(String),
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where kernel events come from.
#[derive(Debug)]
pub enum EventSource {
    /// The eBPF probes, loaded with this configuration (as root).
    Probes(netverdict_ebpf::Config),
    /// Events the caller sends (replays, tests); the pipeline ends when the
    /// sender is dropped or the agent is shut down.
    Channel(mpsc::Receiver<Result<StreamItem, StreamError>>),
}

/// The agent's settings. [`AgentConfig::new`] gives defaults that work for a
/// node agent; every field can be changed before [`Agent::start`].
#[derive(Debug)]
pub struct AgentConfig {
    /// The node name flows and batches are stamped with.
    pub node_name: String,
    /// Where the cluster state comes from, the node's own IPs, and how long
    /// the Kubernetes source may take for its initial lists (the agent fails
    /// after 120 s by default: verdicts against half a cluster are wrong).
    pub cluster: SourceConfig,
    /// Where kernel events come from.
    pub events: EventSource,
    /// The API server's ingest endpoint (e.g. `https://netverdict-api:4255`),
    /// with the exporter's TLS and tuning; None: no export.
    pub export: Option<ExporterConfig>,
    /// Where the Observer gRPC service listens; None: not served. Without
    /// mutual TLS (`tls` with a client CA) it must be a loopback address,
    /// unless `insecure`.
    pub observer_listen: Option<SocketAddr>,
    /// The Observer's TLS: certificate, key and the CA of readers' client
    /// certificates. None: plaintext.
    pub tls: Option<ServerTlsFiles>,
    /// How often the Observer's TLS files are checked for new content.
    pub tls_reload_interval: Duration,
    /// Allows the Observer on a non-loopback address without mutual TLS.
    pub insecure: bool,
    /// Where `/metrics` is served over HTTP; None: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// How many recent flows the ring keeps (overrides
    /// `pipeline.ring_capacity`).
    pub ring_size: usize,
    /// The pipeline's settings (windows, timeouts, tick, the netns filter of a
    /// lab); its `node_name` and `ring_capacity` are taken from this config.
    pub pipeline: PipelineConfig,
    /// How long [`AgentHandle::flush`] and the final flush of
    /// [`AgentHandle::shutdown`] wait for the exporter.
    pub flush_timeout: Duration,
    /// How long a client of `/metrics` and `/healthz` may take to send its
    /// request's headers before the connection is closed.
    pub http_header_timeout: Duration,
}

impl AgentConfig {
    /// Defaults: probes with their default configuration, no export, the
    /// Observer in plaintext on `127.0.0.1:4254` ([`ports::COLLECTOR_OBSERVER`]),
    /// metrics on `0.0.0.0:9967` ([`ports::COLLECTOR_METRICS`]), 10 000 flows
    /// in the ring.
    pub fn new(node_name: impl Into<String>, cluster: Source) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            cluster: SourceConfig::new(cluster),
            events: EventSource::Probes(netverdict_ebpf::Config::default()),
            export: None,
            observer_listen: Some(SocketAddr::from((
                [127, 0, 0, 1],
                ports::COLLECTOR_OBSERVER,
            ))),
            tls: None,
            tls_reload_interval: netverdict_tls::server::DEFAULT_RELOAD_INTERVAL,
            insecure: false,
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], ports::COLLECTOR_METRICS))),
            ring_size: 10_000,
            pipeline: PipelineConfig::default(),
            flush_timeout: Duration::from_secs(10),
            http_header_timeout: Duration::from_secs(10),
        }
    }

    /// Exports to `endpoint` with the exporter's default tuning.
    pub fn export_to(&mut self, endpoint: impl Into<String>) -> &mut Self {
        self.export = Some(ExporterConfig::new(endpoint, self.node_name.clone()));
        self
    }
}

/// What [`AgentHandle::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records the flush closed (now in the ring, and exported if exporting).
    pub records: u64,
    /// The exporter's counters after the flush (None when not exporting).
    pub export: Option<ExportStats>,
}

/// The namespace for [`Agent::start`].
#[derive(Debug)]
pub struct Agent;

impl Agent {
    /// Starts the agent: fills the cluster state with [`netverdict_cluster::start`]
    /// (failing if the manifests are invalid or, under the default sync policy,
    /// the Kubernetes lists do not complete in time), loads the
    /// probes, binds the listeners, then runs every task in the background.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: AgentConfig) -> Result<AgentHandle> {
        let AgentConfig {
            node_name,
            cluster,
            events,
            export,
            observer_listen,
            tls,
            tls_reload_interval,
            insecure,
            metrics_listen,
            ring_size,
            mut pipeline,
            flush_timeout,
            http_header_timeout,
        } = config;
        // Security settings first: they fail before anything starts.
        if let Some(addr) = observer_listen {
            netverdict_tls::policy::check_listen(
                "collector's Observer",
                addr,
                tls.as_ref(),
                insecure,
            )?;
        }
        if let Some(cert) = export
            .as_ref()
            .and_then(|e| e.tls.as_ref())
            .and_then(|t| t.cert.as_ref())
        {
            let identity = netverdict_tls::server::identity_of_file(cert)?;
            if identity.name != node_name {
                return Err(Error::WrongNode {
                    cert: cert.display().to_string(),
                    cn: identity.name,
                    node: node_name,
                });
            }
        }
        let observer_tls = match (&tls, observer_listen) {
            (Some(files), Some(_)) => {
                Some(ServerTls::load(files.clone(), Some(tls_reload_interval)).await?)
            }
            _ => None,
        };
        let (failure_tx, failure) = watch::channel(None::<String>);
        let failure_tx = Arc::new(failure_tx);
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks = Vec::new();

        // The cluster state, kept current by a task that also reports if the
        // source stops.
        let cluster = netverdict_cluster::start(cluster).await?;
        let state = cluster.state().clone();
        let source = cluster.metrics().map(|m| (cluster.name(), m.clone()));
        tasks.push(tokio::spawn(follow_cluster(
            cluster,
            stop.clone(),
            failure_tx.clone(),
        )));

        // The listeners, bound before anything runs so that errors are early.
        let observer_listener = match observer_listen {
            Some(addr) => Some(bind("observer", addr).await?),
            None => None,
        };
        let metrics_listener = match metrics_listen {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let observer_addr = observer_listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

        // The events.
        let losses = Arc::new(StdMutex::new(None::<LossCounters>));
        let (reader, events_rx) = match events {
            EventSource::Probes(probe_config) => {
                let probes = netverdict_ebpf::Probes::load(&probe_config)?;
                let stream = probes.into_stream()?;
                let (tx, rx) = mpsc::channel(65_536);
                (
                    Some(tokio::spawn(read_probes(stream, tx, losses.clone()))),
                    rx,
                )
            }
            // Straight to the pipeline: a flush then sees every event sent before it.
            EventSource::Channel(rx) => (None, rx),
        };

        // The exporter.
        let (export_tx, exporter) = match export {
            Some(mut export_config) => {
                export_config.node_name = node_name.clone();
                let exporter = Exporter::new(export_config)?;
                let counters = exporter.counters();
                let flusher = exporter.flusher();
                let (tx, rx) = mpsc::channel(4096);
                let task = tokio::spawn(exporter.run(rx));
                (Some(tx), Some((counters, flusher, task)))
            }
            None => (None, None),
        };

        // The pipeline.
        pipeline.node_name = node_name.clone();
        pipeline.ring_capacity = ring_size;
        let pipeline = Pipeline::new(pipeline, state.clone());
        let ring = pipeline.ring().reader();
        let pipeline = Arc::new(Mutex::new(pipeline));
        let (control, control_rx) = mpsc::channel(16);
        let pipeline_task = {
            let pipeline = pipeline.clone();
            let failure_tx = failure_tx.clone();
            tokio::spawn(async move {
                let result =
                    pipeline::run_with_control(&pipeline, events_rx, export_tx, control_rx).await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "the event stream failed");
                    failure_tx.send_replace(Some(format!("eBPF event stream: {e}")));
                }
            })
        };

        let observer = ObserverService::new(ring);
        let accept_errors = Arc::new(AcceptErrors::default());
        if let Some(listener) = observer_listener {
            let errors = accept_errors.observer.clone();
            let server = tonic::service::interceptor::InterceptedService::new(
                observer.clone().into_server(),
                RequireGroup::new(READERS, "Observer"),
            );
            let mut stop = stop.clone();
            let failure_tx = failure_tx.clone();
            let tls = observer_tls.clone();
            tasks.push(tokio::spawn(async move {
                let incoming = netverdict_tls::server::incoming_counted(listener, tls, errors);
                let result = tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, async move {
                        until_stopped(&mut stop).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "the observer server failed");
                    failure_tx.send_replace(Some(format!("observer server: {e}")));
                }
            }));
        }

        let inputs = Arc::new(MetricsInputs {
            pipeline: pipeline.clone(),
            state: state.clone(),
            losses,
            export: exporter.as_ref().map(|(c, _, _)| c.clone()),
            source,
            observer: observer.clone(),
            observer_tls: observer_tls.as_ref().map(ServerTls::stats),
            accept_errors,
            http_connections_refused: AtomicU64::new(0),
        });
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(serve_metrics(
                listener,
                inputs.clone(),
                http_header_timeout,
                stop.clone(),
            )));
        }

        tracing::info!(
            node = %node_name,
            observer = ?observer_addr,
            observer_tls = observer_tls.is_some(),
            metrics = ?metrics_addr,
            exporting = exporter.is_some(),
            "collector started"
        );
        Ok(AgentHandle {
            observer_addr,
            metrics_addr,
            state,
            pipeline,
            control,
            exporter,
            inputs,
            reader,
            pipeline_task,
            tasks,
            stop: stop_tx,
            failure,
            flush_timeout,
        })
    }
}

/// A running agent. Dropping it without [`AgentHandle::shutdown`] stops its
/// tasks without the final flush.
#[derive(Debug)]
pub struct AgentHandle {
    observer_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    state: SharedState,
    pipeline: Arc<Mutex<Pipeline>>,
    control: mpsc::Sender<Control>,
    exporter: Option<(Arc<ExportCounters>, Flusher, JoinHandle<()>)>,
    inputs: Arc<MetricsInputs>,
    reader: Option<JoinHandle<()>>,
    pipeline_task: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    failure: watch::Receiver<Option<String>>,
    flush_timeout: Duration,
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(reader) = &self.reader {
            reader.abort();
        }
        self.pipeline_task.abort();
        if let Some((_, _, exporter)) = &self.exporter {
            exporter.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl AgentHandle {
    /// The Observer service's bound address (None when not served).
    pub fn observer_addr(&self) -> Option<SocketAddr> {
        self.observer_addr
    }

    /// The metrics server's bound address (None when not served).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The cluster state flows are annotated against.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// The pipeline, with its ring of recent flows and its counters; hold the
    /// lock briefly.
    pub fn pipeline(&self) -> &Arc<Mutex<Pipeline>> {
        &self.pipeline
    }

    /// The exporter's counters now (None when not exporting).
    pub fn export_stats(&self) -> Option<ExportStats> {
        self.exporter.as_ref().map(|(c, _, _)| c.snapshot())
    }

    /// Every counter now, as `/metrics` serves them.
    pub async fn metrics(&self) -> Snapshot {
        self.inputs.snapshot().await
    }

    /// Closes every open aggregation window now; returns once the records are
    /// in the ring and, when exporting, acknowledged by the server or counted
    /// as dropped. Waits at most the configured `flush_timeout`.
    pub async fn flush(&self) -> Result<FlushReport> {
        self.flush_within(self.flush_timeout).await
    }

    /// [`flush`](Self::flush) with its own deadline.
    pub async fn flush_within(&self, timeout: Duration) -> Result<FlushReport> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Stopped("the pipeline is not running".into());
        self.control
            .send(Control::Flush(reply))
            .await
            .map_err(|_| stopped())?;
        let flushed = tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(|_| Error::FlushTimeout {
                waited: timeout,
                pending: "the pipeline did not answer".into(),
            })?
            .map_err(|_| stopped())?;
        let Some((counters, flusher, _)) = &self.exporter else {
            return Ok(FlushReport {
                records: flushed.records,
                export: None,
            });
        };
        flusher.flush();
        if tokio::time::timeout_at(deadline, counters.wait_done(flushed.handed_to_export))
            .await
            .is_err()
        {
            let s = counters.snapshot();
            return Err(Error::FlushTimeout {
                waited: timeout,
                pending: format!(
                    "{} of {} flows handed to the exporter are neither acknowledged nor dropped \
                     (connection {:?})",
                    flushed.handed_to_export.saturating_sub(counters.settled()),
                    flushed.handed_to_export,
                    s.state
                ),
            });
        }
        Ok(FlushReport {
            records: flushed.records,
            export: Some(counters.snapshot()),
        })
    }

    /// Resolves when a task of the agent fails (the event stream, the
    /// cluster source, a server), with what failed; the caller should shut
    /// the agent down.
    pub async fn stopped(&self) -> Error {
        let mut failure = self.failure.clone();
        match failure.wait_for(Option::is_some).await {
            Ok(message) => Error::Stopped(message.clone().unwrap_or_default()),
            Err(_) => Error::Stopped("the agent's tasks are gone".into()),
        }
    }

    /// Stops taking events, flushes everything held (including flows still
    /// waiting for their outcome) into the ring and the exporter, waits up to
    /// `flush_timeout` for the exporter to be done, then stops the servers.
    /// Returns the exporter's final counters.
    pub async fn shutdown(mut self) -> Result<Option<ExportStats>> {
        if let Some(reader) = self.reader.take() {
            reader.abort();
            let _ = reader.await;
        }
        // The pipeline takes what was delivered, flushes everything and ends,
        // closing the exporter's input. (It may have ended already.)
        let _ = self.control.send(Control::Stop).await;
        let pipeline_done = tokio::time::timeout(self.flush_timeout, &mut self.pipeline_task).await;
        let mut result = Ok(());
        if pipeline_done.is_err() {
            result = Err(Error::FlushTimeout {
                waited: self.flush_timeout,
                pending: "the pipeline did not finish".into(),
            });
        }
        let stats = if let Some((counters, _, task)) = self.exporter.as_mut() {
            if tokio::time::timeout(self.flush_timeout, &mut *task)
                .await
                .is_err()
            {
                task.abort();
                let s = counters.snapshot();
                tracing::warn!(
                    unacknowledged = s.buffered,
                    "export not finished at shutdown; flows still held are lost"
                );
                if result.is_ok() {
                    result = Err(Error::FlushTimeout {
                        waited: self.flush_timeout,
                        pending: format!("{} flows not acknowledged", s.buffered),
                    });
                }
            }
            Some(counters.snapshot())
        } else {
            None
        };
        self.stop.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        result.map(|()| stats)
    }
}

/// What a scrape reads.
#[derive(Debug)]
struct MetricsInputs {
    pipeline: Arc<Mutex<Pipeline>>,
    state: SharedState,
    losses: Arc<StdMutex<Option<LossCounters>>>,
    export: Option<Arc<ExportCounters>>,
    source: Option<(&'static str, Arc<SourceMetrics>)>,
    observer: ObserverService,
    observer_tls: Option<Arc<TlsStats>>,
    /// Failed accepts of the servers.
    accept_errors: Arc<AcceptErrors>,
    /// Metrics connections closed at once because [`MAX_HTTP_CONNECTIONS`]
    /// were open.
    http_connections_refused: AtomicU64,
}

/// Accepts that failed (EMFILE, ENFILE, ENOMEM...), by server, and the
/// Observer's connections closed for a missing HTTP/2 preface.
#[derive(Debug, Default)]
struct AcceptErrors {
    metrics: AtomicU64,
    observer: Arc<ConnectionCounters>,
}

impl MetricsInputs {
    async fn snapshot(&self) -> Snapshot {
        let (counters, ring_flows, ring_evictions, nat, held, resolved_names) = {
            let p = self.pipeline.lock().await;
            (
                p.counters().clone(),
                p.ring().len() as u64,
                p.ring().evicted(),
                (p.correlation().nat_joined, p.correlation().nat_unclaimed),
                p.held(),
                p.resolved_names(),
            )
        };
        Snapshot {
            pipeline: counters,
            losses: *self.losses.lock().unwrap_or_else(|e| e.into_inner()),
            export: self.export.as_ref().map(|c| c.snapshot()),
            cluster: self.source.as_ref().map(|(name, m)| (*name, m.snapshot())),
            cluster_objects: Snapshot::count_objects(&self.state.read()),
            ring_flows,
            ring_evictions,
            observer_lagged: self.observer.lagged(),
            nat,
            observer_tls: self.observer_tls.as_ref().map(|s| s.snapshot()),
            held,
            resolved_names,
            accept_errors: (
                self.accept_errors.metrics.load(Ordering::Relaxed),
                self.accept_errors
                    .observer
                    .accept_errors
                    .load(Ordering::Relaxed),
            ),
            observer_preface_timeouts: self
                .accept_errors
                .observer
                .preface_timeouts
                .load(Ordering::Relaxed),
            http_connections_refused: self.http_connections_refused.load(Ordering::Relaxed),
        }
    }
}

/// Resolves once the agent is told to stop (or its handle is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Owns the probes' stream: forwards its items and refreshes the loss counters
/// every second. Ends when the pipeline is gone, after an error, or when aborted.
async fn read_probes(
    mut stream: netverdict_ebpf::EventStream,
    tx: mpsc::Sender<Result<StreamItem, StreamError>>,
    losses: Arc<StdMutex<Option<LossCounters>>>,
) {
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = refresh.tick() => {
                match stream.losses() {
                    Ok(l) => *losses.lock().unwrap_or_else(|e| e.into_inner()) = Some(l),
                    Err(e) => tracing::warn!(error = %e, "reading the probes' loss counters"),
                }
                continue;
            }
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Keeps the cluster source until the agent stops; reports if it stops first.
async fn follow_cluster(
    mut cluster: ClusterHandle,
    mut stop: watch::Receiver<bool>,
    failure: Arc<watch::Sender<Option<String>>>,
) {
    tokio::select! {
        error = cluster.stopped() => {
            tracing::error!(error = %error, source = cluster.name(), "the cluster source stopped");
            failure.send_replace(Some(error.to_string()));
        }
        () = until_stopped(&mut stop) => cluster.shutdown().await,
    }
}

/// Most connections the metrics server keeps open at once; more are closed
/// at once (counted): Prometheus and the kubelet's probes need a few.
const MAX_HTTP_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` and `/healthz` (anything else is 404) until the agent
/// stops. Accepts go through [`accept_with_backoff`]; a client gets
/// `header_timeout` to send its request's headers; at most
/// [`MAX_HTTP_CONNECTIONS`] connections are served at once.
async fn serve_metrics(
    mut listener: impl Accept,
    inputs: Arc<MetricsInputs>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            (conn, _) = accept_with_backoff(&mut listener, &inputs.accept_errors.metrics, "metrics") => conn,
            () = until_stopped(&mut stop) => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            inputs
                .http_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let inputs = inputs.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: Request<_>| {
                let inputs = inputs.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(metrics_response(&inputs, &request).await)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn metrics_response<B>(
    inputs: &MetricsInputs,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            let text = inputs.snapshot().await.encode();
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        // Liveness: answers while the agent serves HTTP; reads nothing.
        "/healthz" => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"not found; try /metrics or /healthz\n",
            )));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener out of file descriptors: every accept fails with EMFILE.
    struct OutOfFds(Arc<AtomicU64>);

    impl Accept for OutOfFds {
        type Conn = tokio::net::TcpStream;

        async fn accept(&mut self) -> std::io::Result<(Self::Conn, std::net::SocketAddr)> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(std::io::Error::from_raw_os_error(24))
        }
    }

    fn inputs() -> Arc<MetricsInputs> {
        let pipeline = Pipeline::new(PipelineConfig::default(), SharedState::default());
        let observer = ObserverService::new(pipeline.ring().reader());
        Arc::new(MetricsInputs {
            pipeline: Arc::new(Mutex::new(pipeline)),
            state: SharedState::default(),
            losses: Arc::default(),
            export: None,
            source: None,
            observer,
            observer_tls: None,
            accept_errors: Arc::default(),
            http_connections_refused: AtomicU64::new(0),
        })
    }

    /// The backoff itself is `netverdict_tls::accept`'s (tested there): here,
    /// that the metrics server counts failed accepts and still stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_accepts_are_counted_and_the_server_still_stops() {
        let attempts = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let inputs = inputs();
        let server = tokio::spawn(serve_metrics(
            OutOfFds(attempts.clone()),
            inputs.clone(),
            Duration::from_secs(1),
            stop,
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while attempts.load(Ordering::Relaxed) < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no third accept in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap();
        let attempts = attempts.load(Ordering::Relaxed);
        assert_eq!(inputs.snapshot().await.accept_errors, (attempts, 0));
    }
}
