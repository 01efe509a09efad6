//! `netverdict api`: runs the API server with its store and a cluster state
//! source, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_api::{ApiConfig, MemoryConfig, MemoryStore};
use netverdict_collector::cluster::SharedState;
use netverdict_collector::cluster::kube::{self, ClientOptions, KubeSource, KubeSourceConfig};
use netverdict_collector::cluster::manifests::{ManifestOptions, ManifestSource};

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The gRPC address for collectors (Ingest) and clients (Observer, Query).
    #[arg(long, default_value = "0.0.0.0:4245")]
    listen: SocketAddr,
    /// The Prometheus /metrics address.
    #[arg(long, default_value = "0.0.0.0:9966")]
    metrics_listen: SocketAddr,
    /// Cluster state from manifest files or directories (reloaded on change),
    /// for the DNS policy gaps.
    #[arg(long, num_args = 1.., conflicts_with = "kubeconfig")]
    cluster: Vec<PathBuf>,
    /// Cluster state from the Kubernetes API with this kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The in-memory store's bound, in flow records.
    #[arg(long, default_value_t = 1_000_000)]
    memory_flows: usize,
    /// How many new flows a follower may fall behind before its stream ends.
    #[arg(long, default_value_t = 4096)]
    follow_buffer: usize,
    /// Store flows in ClickHouse at this URL instead of in memory.
    #[arg(long)]
    clickhouse: Option<String>,
    /// The ClickHouse database.
    #[arg(long, default_value = "netverdict")]
    clickhouse_database: String,
    /// Where flows are spooled while ClickHouse is unreachable.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// How long ClickHouse keeps flows.
    #[arg(long, default_value_t = 7)]
    retention_days: u32,
}

pub fn run(args: ApiArgs) -> Result<()> {
    // ---- Store selection -------------------------------------------------
    // CLICKHOUSE: once the ClickHouse store is merged, `--clickhouse URL`
    // (with --clickhouse-database, --spool-dir, --retention-days) builds it
    // here and serves it instead of the memory store.
    if let Some(url) = &args.clickhouse {
        bail!(
            "--clickhouse {url:?}: the ClickHouse store is not built into this binary yet; \
             run without --clickhouse to use the in-memory store (database {:?}, retention {} days \
             and spool dir {:?} are accepted but unused)",
            args.clickhouse_database,
            args.retention_days,
            args.spool_dir
        );
    }
    if args.spool_dir.is_some() {
        bail!("--spool-dir: only used with --clickhouse");
    }
    let store = MemoryStore::new(MemoryConfig {
        max_flows: args.memory_flows,
        ..Default::default()
    })
    .context("--memory-flows")?;
    let config = ApiConfig {
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        follow_buffer: args.follow_buffer,
        ..Default::default()
    };
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(serve(args, config, store))
}

async fn serve(args: ApiArgs, config: ApiConfig, store: MemoryStore) -> Result<()> {
    let cluster = SharedState::default();
    let _manifests;
    let _kube;
    if !args.cluster.is_empty() {
        _manifests =
            ManifestSource::start(ManifestOptions::new(args.cluster.clone()), cluster.clone())
                .context("--cluster")?;
    } else if let Some(path) = &args.kubeconfig {
        let client = kube::client(&ClientOptions {
            kubeconfig: Some(path.clone()),
            context: None,
        })
        .await
        .context("--kubeconfig")?;
        let source = KubeSource::spawn(client, cluster.clone(), KubeSourceConfig::default());
        if let Err(e) = source.wait_synced(Duration::from_secs(60)).await {
            tracing::warn!(error = %e, "cluster state not synced yet; DNS policy gaps may be incomplete");
        }
        _kube = source;
    } else {
        tracing::warn!(
            "no cluster state (--cluster or --kubeconfig): the DNS report will list no policy gaps"
        );
    }
    let mut server = netverdict_api::serve(config, store, cluster).await?;
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
