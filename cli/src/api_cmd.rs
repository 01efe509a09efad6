//! `netverdict api`: runs the API server with its store and a cluster state
//! source, until SIGINT or SIGTERM. With `--tls-cert`, `--tls-key` and
//! `--tls-client-ca` it serves mutual TLS on every address; without them,
//! plaintext on 127.0.0.1 only (unless `--insecure`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, MemoryConfig, MemoryStore, ServeError};
use netverdict_cluster::kube::{ClientOptions, KubeSourceConfig};
use netverdict_cluster::manifests::ManifestOptions;
use netverdict_cluster::{ClusterHandle, SharedState, Source, SourceConfig, SyncPolicy};
use netverdict_proto::ports;
use netverdict_proto::validate::TimeBounds;

use crate::tls_args::ServerTlsArgs;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The gRPC address for collectors (Ingest) and clients (Observer,
    /// Query) [default: 0.0.0.0:4255 with mutual TLS, else 127.0.0.1:4255].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// The Prometheus /metrics address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::API_METRICS)))]
    metrics_listen: SocketAddr,
    /// Cluster state from manifest files or directories (reloaded on change),
    /// for the DNS policy gaps.
    #[arg(long, num_args = 1.., conflicts_with = "kubeconfig")]
    cluster: Vec<PathBuf>,
    /// Cluster state from the Kubernetes API with this kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Cluster state from the Kubernetes API: $KUBECONFIG or ~/.kube/config,
    /// else the in-cluster service account (as deployed). Only Namespaces,
    /// Pods, NetworkPolicies, Services and Nodes are listed and watched. The
    /// default when none of --cluster, --kubeconfig or --kubernetes is given
    /// and the server runs in a pod ($KUBERNETES_SERVICE_HOST is set).
    #[arg(long, conflicts_with = "cluster")]
    kubernetes: bool,
    /// How often the store's status is checked in the background for
    /// /metrics and /readyz (neither queries the store itself).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    store_check_interval: Duration,
    /// The in-memory store's bound, in flow records (without --clickhouse).
    /// The oldest minutes are dropped past it or past --memory-max-bytes.
    #[arg(long, default_value_t = MemoryConfig::DEFAULT_MAX_FLOWS)]
    memory_flows: usize,
    /// The in-memory store's bound, in bytes of its estimate of the memory
    /// it holds: rows (about 200 bytes a flow), report tallies, the flow id
    /// set and the interned texts, endpoints and policies (without --clickhouse).
    #[arg(long, default_value_t = MemoryConfig::DEFAULT_MAX_BYTES)]
    memory_max_bytes: usize,
    /// How many new flows a follower may fall behind before its stream ends.
    #[arg(long, default_value_t = 4096)]
    follow_buffer: usize,
    /// Bytes of flow batches (encoded) being stored at once across every
    /// collector, at most: what ingest holds in memory while the store is slow
    /// (collectors then wait).
    #[arg(long, default_value_t = 64 << 20)]
    max_in_flight_bytes: usize,
    /// The largest batch (encoded bytes) a collector may send; a larger one is
    /// refused for good.
    #[arg(long, default_value_t = 4 << 20)]
    max_message_bytes: usize,
    /// Collector ingest streams open at once, at most (more are refused; they
    /// retry after a backoff).
    #[arg(long, default_value_t = 1024)]
    max_streams: usize,
    /// Flows whose last_seen is further ahead of this server's clock are
    /// refused at ingest.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    max_clock_ahead: Duration,
    /// The most stored flows one query (observe --last/--first) may ask for.
    #[arg(long, default_value_t = 100_000)]
    max_query_flows: usize,
    /// The most groups one report (denied, dns --limit) may ask for.
    #[arg(long, default_value_t = 10_000)]
    max_report_groups: usize,
    /// Store flows in ClickHouse at this URL (its HTTP interface, e.g.
    /// http://clickhouse:8123) instead of in memory.
    #[arg(long)]
    clickhouse: Option<String>,
    /// For an https:// --clickhouse URL: the CA (PEM) of ClickHouse's
    /// certificate (default: the system's CA certificates).
    #[arg(
        long,
        value_name = "FILE",
        env = "NETVERDICT_CLICKHOUSE_CA",
        requires = "clickhouse"
    )]
    clickhouse_ca: Option<PathBuf>,
    /// The ClickHouse database (created, with its tables, if missing).
    #[arg(long, default_value = "netverdict", requires = "clickhouse")]
    clickhouse_database: String,
    /// Shard and replicate the tables over this ClickHouse cluster (a name
    /// in the servers' remote_servers; they need ZooKeeper or Keeper and the
    /// {shard} and {replica} macros): the schema is created ON CLUSTER with
    /// Replicated*MergeTree tables under Distributed tables. Several API
    /// servers may then write at once (run the Deployment with 2+ replicas).
    #[arg(long, value_name = "NAME", requires = "clickhouse")]
    clickhouse_cluster: Option<String>,
    /// The ClickHouse user.
    #[arg(long, default_value = "default", requires = "clickhouse")]
    clickhouse_user: String,
    /// The ClickHouse user's password (from the environment only, so that it
    /// stays out of process listings).
    #[arg(skip = std::env::var("NETVERDICT_CLICKHOUSE_PASSWORD").unwrap_or_default())]
    clickhouse_password: String,
    /// Where acknowledged flows are spooled while ClickHouse is unreachable,
    /// and replayed from when it returns (keep it on a persistent volume).
    #[arg(
        long,
        default_value = "/var/lib/netverdict/spool",
        requires = "clickhouse"
    )]
    spool_dir: PathBuf,
    /// The most bytes the spool may hold; when full, collectors' batches are
    /// not acknowledged (they keep them and retry). Keep it below the spool
    /// volume's size.
    #[arg(long, default_value_t = 1 << 30, requires = "clickhouse")]
    spool_max_bytes: u64,
    /// How many days ClickHouse keeps flows and rollups (flows older than
    /// that are refused at ingest).
    #[arg(long, default_value_t = 7, requires = "clickhouse")]
    retention_days: u32,
}

pub fn run(args: ApiArgs) -> Result<()> {
    let mut config = ApiConfig {
        listen: args.tls.listen(args.listen, ports::API_GRPC)?,
        tls: args.tls.files()?,
        insecure: args.tls.insecure,
        metrics_listen: Some(args.metrics_listen),
        follow_buffer: args.follow_buffer,
        max_in_flight_bytes: args.max_in_flight_bytes,
        max_message_bytes: args.max_message_bytes,
        max_streams: args.max_streams,
        time_bounds: TimeBounds {
            max_age: None,
            max_ahead: args.max_clock_ahead,
        },
        max_query_flows: args.max_query_flows,
        max_report_groups: args.max_report_groups,
        store_check_interval: args.store_check_interval,
        ..Default::default()
    };
    if args.clickhouse.is_some() {
        // Older flows would be dropped by the next retention pass.
        config.time_bounds.max_age =
            Some(Duration::from_secs(u64::from(args.retention_days) * 86_400));
    }
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(async {
            let cluster = start_cluster(&args).await?;
            match &args.clickhouse {
                Some(url) => {
                    // Started even while ClickHouse is down: acknowledged
                    // flows are spooled until it answers.
                    let store = ClickHouseStore::start(ClickHouseConfig {
                        url: url.clone(),
                        ca_file: args.clickhouse_ca.clone(),
                        database: args.clickhouse_database.clone(),
                        cluster: args.clickhouse_cluster.clone(),
                        user: args.clickhouse_user.clone(),
                        password: args.clickhouse_password.clone(),
                        retention_days: args.retention_days,
                        spool_dir: args.spool_dir.clone(),
                        spool_max_bytes: args.spool_max_bytes,
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("--clickhouse {url}"))?;
                    serve(config, store, cluster).await
                }
                None => {
                    let store = MemoryStore::new(MemoryConfig {
                        max_flows: args.memory_flows,
                        max_bytes: args.memory_max_bytes,
                        ..Default::default()
                    })
                    .context("--memory-flows, --memory-max-bytes")?;
                    serve(config, store, cluster).await
                }
            }
        })
}

/// Starts the source of the cluster state the DNS report reads (its policy
/// gaps). The server is useful before the Kubernetes lists complete, so a late
/// initial sync is a warning, not a failure.
async fn start_cluster(args: &ApiArgs) -> Result<ClusterHandle> {
    let (source, flag) = if !args.cluster.is_empty() {
        let options = ManifestOptions::new(args.cluster.clone());
        (Source::Manifests(options), "--cluster")
    } else if args.kubeconfig.is_some() || args.kubernetes || in_a_pod() {
        let client = ClientOptions {
            kubeconfig: args.kubeconfig.clone(),
            context: None,
        };
        // Only what the DNS policy gaps read: the role grants only these.
        let config = KubeSourceConfig {
            kinds: netverdict_api::CLUSTER_KINDS.to_vec(),
            ..KubeSourceConfig::default()
        };
        let flag = if args.kubeconfig.is_some() {
            "--kubeconfig"
        } else if args.kubernetes {
            "--kubernetes"
        } else {
            "the in-cluster Kubernetes API ($KUBERNETES_SERVICE_HOST is set)"
        };
        (Source::Kube { client, config }, flag)
    } else {
        tracing::warn!(
            "no cluster state (--cluster, --kubeconfig or --kubernetes, and not in a pod): the DNS report will list no policy gaps"
        );
        (Source::Shared(SharedState::default()), "the cluster state")
    };
    let mut config = SourceConfig::new(source);
    config.sync = SyncPolicy::warn_after(Duration::from_secs(60));
    netverdict_cluster::start(config).await.context(flag)
}

/// Whether this process runs in a Kubernetes pod (the kubelet sets
/// `KUBERNETES_SERVICE_HOST` in every container).
fn in_a_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

async fn serve<S: Store>(config: ApiConfig, store: S, cluster: ClusterHandle) -> Result<()> {
    let mut server = netverdict_api::serve(config, store, cluster.state().clone())
        .await
        .map_err(|e| match e {
            // The settings are this command's flags: name the flag.
            ServeError::Config { field, reason } => {
                anyhow::anyhow!("--{}: {reason}", field.replace('_', "-"))
            }
            e => e.into(),
        })?;
    let security = match server.tls() {
        Some(tls) if tls.mutual() => "mutual TLS",
        Some(_) => "TLS, no client certificates",
        None => "plaintext",
    };
    eprintln!("netverdict api: gRPC security: {security}");
    eprintln!(
        "netverdict api: gRPC on {}, metrics on http://{}/metrics",
        server.grpc_addr(),
        server
            .metrics_addr()
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        result = server.wait() => {
            result?;
            bail!("the gRPC server stopped unexpectedly");
        }
    }
    eprintln!("netverdict api: shutting down");
    server.shutdown().await?;
    Ok(())
}
