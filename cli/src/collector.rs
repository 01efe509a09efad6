//! `netverdict collector`: the node agent. Turns flags into an
//! [`AgentConfig`](netverdict_collector::agent::AgentConfig), starts the
//! agent, and on SIGTERM or Ctrl-C shuts it down, flushing what it holds to
//! the ring and the API server.
//!
//! With `--tls-cert`, `--tls-key` and `--tls-client-ca` the Observer serves
//! mutual TLS on every address (readers only); without them it listens on
//! 127.0.0.1. With `--tls-ca` the export is TLS, presenting the same
//! certificate, whose CN must be the node name.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use netverdict_cluster::Source;
use netverdict_cluster::kube::{ClientOptions, KubeSourceConfig};
use netverdict_cluster::manifests::ManifestOptions;
use netverdict_collector::agent::{Agent, AgentConfig};
use netverdict_lab::lab::STATE_ROOT;
use netverdict_proto::ports;

use crate::tls_args::CollectorTlsArgs;

/// Run the node agent: annotate the flows the eBPF probes see, keep the last
/// ones for the Observer API, export them to the API server, serve /metrics
/// (as root).
#[derive(Debug, clap::Args)]
pub struct CollectorArgs {
    /// The node name flows are stamped with (default: the host name; with
    /// --lab, the lab node to collect for, by default its only node).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Cluster manifests (files or directories), reloaded on change. Without
    /// it, the Kubernetes API (or the lab's cluster with --lab).
    #[arg(long = "cluster", value_name = "PATH", num_args = 1..)]
    pub cluster: Vec<PathBuf>,
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, else the
    /// in-cluster service account).
    #[arg(long, value_name = "PATH", conflicts_with = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's ingest endpoint, e.g. https://netverdict-api:4255
    /// with --tls-ca (no export when absent).
    #[arg(long, value_name = "URL")]
    pub export: Option<String>,
    /// Where the Observer gRPC API listens [default: 0.0.0.0:4254 with
    /// mutual TLS, else 127.0.0.1:4254].
    #[arg(long, value_name = "ADDR")]
    pub observer_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: CollectorTlsArgs,
    /// Where /metrics is served.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::COLLECTOR_METRICS)))]
    pub metrics_listen: SocketAddr,
    /// How many recent flows are kept for the Observer API.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub ring_size: usize,
    /// How many policies get their own series in
    /// netverdict_collector_policy_verdicts_total; the rest count as `_other`.
    #[arg(long, value_name = "N", default_value_t = netverdict_collector::policy_verdicts::DEFAULT_MAX_POLICIES)]
    pub max_policy_series: usize,
    /// How many (pod, outside address) pairs named by the DNS answers the
    /// pods received are kept, each for its answer's TTL; past it the pairs
    /// that expire first are let go (counted).
    #[arg(long, value_name = "N", default_value_t = netverdict_collector::resolved_names::DEFAULT_MAX_ENTRIES)]
    pub max_resolved_names: usize,
    /// The shortest time a DNS answer names an address, whatever its TTL
    /// (answers with TTLs of 0 or a few seconds are common).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub resolved_name_min_ttl: std::time::Duration,
    /// Collect for one node of this lab (`netverdict lab up`): only the
    /// network namespaces of that node (its own and its pods'), as a node's
    /// collector sees them; its cluster unless --cluster is given.
    #[arg(long, value_name = "NAME")]
    pub lab: Option<String>,
    /// Where labs keep their state (for tests).
    #[arg(long, default_value = STATE_ROOT, hide = true)]
    pub lab_state_root: PathBuf,
    /// Append the ids of the flows the API server acknowledged to this file,
    /// one per line (for `netverdict lab soak`, which checks them against
    /// ClickHouse).
    #[arg(long, value_name = "PATH", hide = true, requires = "export")]
    pub acked_ids_log: Option<PathBuf>,
}

/// Runs the agent on a multi-threaded runtime until a signal.
pub fn run(args: CollectorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(collect(args))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

async fn collect(args: CollectorArgs) -> anyhow::Result<()> {
    let mut node_name = args.node_name.clone().unwrap_or_else(hostname);
    let mut lab_netns = None;
    let mut lab_node_ip = None;
    if let Some(name) = &args.lab {
        let lab = netverdict_lab::Lab::open(name, &args.lab_state_root)
            .with_context(|| format!("opening lab {name}"))?;
        let node = lab_node(&lab, args.node_name.as_deref())?;
        node_name = node.name.clone();
        lab_node_ip = Some(node.ip);
        lab_netns = Some(netns_inodes(&lab, &node_name)?);
    }
    let cluster = if !args.cluster.is_empty() {
        let mut options = ManifestOptions::new(args.cluster.clone());
        // The lab allocates IPs to pods that have none in the manifests.
        options.require_pod_ips = args.lab.is_none();
        Source::Manifests(options)
    } else if let Some(name) = &args.lab {
        Source::Lab {
            name: name.clone(),
            state_root: args.lab_state_root.clone(),
        }
    } else {
        Source::Kube {
            client: ClientOptions {
                kubeconfig: args.kubeconfig.clone(),
                context: None,
            },
            config: KubeSourceConfig::default(),
        }
    };
    let mut config = AgentConfig::new(node_name, cluster);
    if let Some(url) = &args.export {
        config.export_to(url.clone());
        if let Some(export) = &mut config.export {
            export.tls = args.tls.export()?;
            export.insecure = args.tls.insecure;
            export.acked_ids_log = args.acked_ids_log.clone();
        }
    } else if args.tls.tls_ca.is_some() {
        anyhow::bail!("--tls-ca is for --export, which is not given");
    }
    config.observer_listen = Some(
        args.tls
            .observer_listen(args.observer_listen, ports::COLLECTOR_OBSERVER)?,
    );
    config.tls = args.tls.observer()?;
    config.insecure = args.tls.insecure;
    config.metrics_listen = Some(args.metrics_listen);
    config.ring_size = args.ring_size;
    config.pipeline.max_policy_series = args.max_policy_series;
    config.pipeline.resolved_names = netverdict_collector::resolved_names::ResolvedNamesConfig {
        max_entries: args.max_resolved_names,
        min_ttl: args.resolved_name_min_ttl,
    };
    if let Some(netns) = lab_netns {
        config.pipeline.netns = Some(netns);
        config.cluster.local_node_ips = vec![IpAddr::V4(netverdict_lab::lab::NODE_IP)];
        config.cluster.local_node_ips.extend(lab_node_ip);
    }
    let agent = Agent::start(config)
        .await
        .context("starting the collector")?;
    // One line tests and scripts can read for the bound addresses.
    eprintln!(
        "netverdict collector: observer on {}, metrics on {}",
        fmt_addr(agent.observer_addr()),
        fmt_addr(agent.metrics_addr())
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let failed = tokio::select! {
        _ = sigterm.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        error = agent.stopped() => Some(error),
    };
    tracing::info!("stopping: flushing what is held");
    let shutdown = agent.shutdown().await;
    if let Some(error) = failed {
        return Err(error).context("the collector failed");
    }
    let stats = shutdown.context("shutting down")?;
    if let Some(stats) = stats {
        tracing::info!(
            acked = stats.flows_acked,
            dropped = stats.flows_dropped,
            "export finished"
        );
    }
    Ok(())
}

fn fmt_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// The lab node a collector works for: `wanted` when it names one, else
/// the lab's only node.
fn lab_node<'a>(
    lab: &'a netverdict_lab::Lab,
    wanted: Option<&str>,
) -> anyhow::Result<&'a netverdict_lab::LabNode> {
    let names: Vec<&str> = lab.nodes().iter().map(|n| n.name.as_str()).collect();
    match (wanted, lab.nodes()) {
        (Some(name), _) if names.contains(&name) => Ok(lab.node(name)?),
        (None, [only]) => Ok(only),
        (Some(name), _) => anyhow::bail!(
            "--node-name {name}: lab {} has no such node (its nodes: {})",
            lab.name(),
            names.join(", ")
        ),
        (None, _) => anyhow::bail!(
            "lab {} has {} nodes: name the one to collect for with --node-name ({})",
            lab.name(),
            names.len(),
            names.join(", ")
        ),
    }
}

/// The inode numbers of the network namespaces of one lab node: the node's
/// own and its pods'. The probes see every namespace of the machine; a node's
/// collector keeps only these, as a real node's collector sees only its node.
pub(crate) fn netns_inodes(
    lab: &netverdict_lab::Lab,
    node: &str,
) -> anyhow::Result<rustc_hash::FxHashSet<u32>> {
    let by_node = lab.namespaces_by_node();
    let (_, names) = by_node
        .iter()
        .find(|(n, _)| n.name == node)
        .with_context(|| format!("lab {} has no node {node}", lab.name()))?;
    names
        .iter()
        .map(|name| {
            let path = Path::new("/run/netns").join(name);
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("lab network namespace {}", path.display()))?;
            Ok(meta.ino() as u32)
        })
        .collect()
}
