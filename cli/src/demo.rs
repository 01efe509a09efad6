//! `netverdict demo`: the seed guide's scenario on one machine, end to end.
//!
//! Builds the seed's lab (pods as network namespaces on one or more nodes,
//! NetworkPolicy enforced by nftables or tc, a cluster DNS), runs one collector
//! agent per node (real eBPF probes; each keeps the namespaces of its node
//! only, under its node's name) and the API server they all export to
//! (embedded store, or ClickHouse) in this process, and walks
//! through the rollout: the seed's lab commands with no policy, after
//! default-deny, after allow-dns-egress and after api-from-web. After each step
//! it waits (with a deadline) until the step's flows are stored, then prints the
//! API server's incident reports, fetched over gRPC like `netverdict denied`
//! and `netverdict dns`. Then it runs `netverdict diagnose` on the flow the
//! rollout leaves denied (shop's frontend to the api Service): the guide's
//! debugging steps with the flows the API server stored, and the fix. The lab
//! is torn down at the end, even on failure.
//! With `--tls-dir` every gRPC connection of the demo is mutual TLS, with the
//! certificates of `netverdict certs` (made there for the lab's nodes,
//! `node-0`..., if missing): each exporter as its node's collector, the
//! reports as a reader.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, MemoryConfig, MemoryStore};
use netverdict_cluster::{Source, SourceConfig};
use netverdict_collector::agent::{Agent, AgentConfig, AgentHandle};
use netverdict_lab::lab::{NODE_IP, STATE_ROOT};
use netverdict_lab::{DnsAnswer, DownOnDrop, Lab, LabOptions};
use netverdict_policy::diagnose::{Destination, Request, diagnose};
use netverdict_policy::{Endpoint, K8sObject, Manifests, PodKey, Protocol};
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;
use pb::query_client::QueryClient;
use serde_json::{Value, json};

use crate::output::{self, Output};
use crate::render;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Store flows in ClickHouse at this URL (e.g. http://127.0.0.1:8123)
    /// instead of the embedded in-memory store.
    #[arg(long)]
    clickhouse: Option<String>,
    /// The ClickHouse database for the demo's flows (created if missing).
    #[arg(long, default_value = "netverdict_demo")]
    clickhouse_database: String,
    /// The lab's name (its network namespaces are `nv.<name>.*`).
    #[arg(long, default_value = "demo")]
    name: String,
    /// The seed's manifests: cluster.yaml and policies/ (default: the seed in
    /// the source tree, lab/examples/seed).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// How to print: text for people, or json (one JSON document of every step).
    #[arg(short, long, value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
    /// How many nodes the lab has (pods placed in turn); one collector per
    /// node, all exporting to the one API server.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// How the lab enforces NetworkPolicy: nftables or tc.
    #[arg(long, default_value = "nftables")]
    enforcement: netverdict_lab::Enforcement,
    /// Run every gRPC connection over mutual TLS with the certificates of
    /// `netverdict certs --out DIR --nodes node-0,...` (one per lab node;
    /// made there if missing; a CA in DIR is reused).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
}

/// The seed shipped in the source tree, or next to an installed binary.
fn default_seed() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/examples/seed");
    if source.exists() {
        return source;
    }
    PathBuf::from("/usr/share/netverdict/seed")
}

pub fn run(args: DemoArgs) -> Result<()> {
    netverdict_lab::preflight(true)
        .context("the demo builds a lab: run it as root with iproute2, nftables and dnsmasq-base installed (scripts/install-deps.sh)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        match &args.clickhouse {
            Some(url) => {
                let spool =
                    std::env::temp_dir().join(format!("netverdict-demo-spool-{}", args.name));
                let store = ClickHouseStore::connect(ClickHouseConfig::new(
                    url.clone(),
                    args.clickhouse_database.clone(),
                    spool,
                ))
                .await
                .with_context(|| format!("--clickhouse {url}"))?;
                demo(&args, store).await
            }
            None => {
                let store = MemoryStore::new(MemoryConfig::default())
                    .map_err(|e| anyhow::anyhow!("memory store: invalid {}", e.field))?;
                demo(&args, store).await
            }
        }
    })?;
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    }
    Ok(())
}

/// One lab command of the seed and what it printed.
struct Command {
    from: PodKey,
    text: String,
    result: String,
    ok: bool,
    /// The flows the collector must have stored for this command.
    expects: Vec<Expect>,
}

/// A flow the collector must store for a command.
enum Expect {
    /// A DNS query of this name from the command's pod.
    Dns(String),
    /// A TCP connection attempt from the command's pod to this port.
    Tcp(u16),
}

/// The whole scenario; returns the JSON report of every step.
async fn demo<S: Store>(args: &DemoArgs, store: S) -> Result<Value> {
    let text = args.output == Output::Text;
    let seed = args.seed.clone().unwrap_or_else(default_seed);
    let policy = |name: &str| seed.join("policies").join(format!("{name}.yaml"));
    let mut options = LabOptions::new(&args.name, crate::lab::server_command()?);
    options.nodes = args.nodes;
    options.enforcement = args.enforcement;
    let _down = DownOnDrop {
        name: args.name.clone(),
        state_root: PathBuf::from(STATE_ROOT),
    };
    let mut lab = tokio::task::block_in_place(|| Lab::up(&[seed.join("cluster.yaml")], &options))
        .with_context(|| format!("building lab {}", args.name))?;
    // The lab's cluster, shared by the API server and the collector; each step
    // below applies its policy to it.
    let cluster = netverdict_cluster::start(SourceConfig::new(Source::Lab {
        name: args.name.clone(),
        state_root: PathBuf::from(STATE_ROOT),
    }))
    .await?;
    let state = cluster.state().clone();

    let pki = match &args.tls_dir {
        Some(dir) => Some(
            netverdict_tls::certs::write_pki(
                dir,
                &netverdict_tls::certs::PkiOptions {
                    nodes: lab.nodes().iter().map(|n| n.name.clone()).collect(),
                    ..Default::default()
                },
            )
            .with_context(|| format!("--tls-dir {}", dir.display()))?,
        ),
        None => None,
    };
    let api = netverdict_api::serve(
        ApiConfig {
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: None,
            tls: pki.as_ref().map(|pki| netverdict_tls::ServerTlsFiles {
                cert: pki.api.cert.clone(),
                key: pki.api.key.clone(),
                client_ca: Some(pki.api.ca.clone()),
            }),
            ..ApiConfig::default()
        },
        store,
        state.clone(),
    )
    .await
    .context("starting the API server")?;
    // The address the certificates name (127.0.0.1), with the port bound.
    let server = format!("127.0.0.1:{}", api.grpc_addr().port());
    let tls_client = |bundle: &netverdict_tls::certs::Bundle| netverdict_tls::ClientTlsFiles {
        ca: bundle.ca.clone(),
        cert: Some(bundle.cert.clone()),
        key: Some(bundle.key.clone()),
        server_name: None,
    };
    let reader = netverdict_tls::Target::new(
        &server,
        0,
        pki.as_ref().map(|pki| tls_client(&pki.reader)),
        false,
    )?;
    let mut agents = Vec::new();
    for node in lab.nodes() {
        let mut config = AgentConfig::new(&node.name, Source::Shared(state.clone()));
        config.export_to(server.clone());
        if let (Some(export), Some(pki)) = (&mut config.export, &pki) {
            export.tls = pki
                .collectors
                .iter()
                .find(|(name, _)| *name == node.name)
                .map(|(_, bundle)| tls_client(bundle));
        }
        config.observer_listen = None;
        config.metrics_listen = None;
        config.cluster.local_node_ips = vec![IpAddr::V4(NODE_IP), node.ip];
        config.pipeline.netns = Some(crate::collector::netns_inodes(&lab, &node.name)?);
        config.pipeline.timeouts.dns = Duration::from_secs(2);
        let agent = Agent::start(config)
            .await
            .with_context(|| format!("starting the collector of {} (eBPF probes)", node.name))?;
        agents.push(agent);
    }
    if text && lab.nodes().len() > 1 {
        println!(
            "lab {}: {} nodes enforcing with {}, a collector on each",
            args.name,
            lab.nodes().len(),
            lab.state().enforcement.as_str()
        );
        for (node, _) in lab.namespaces_by_node() {
            let pods: Vec<String> = lab
                .pods()
                .into_iter()
                .filter(|p| p.node == node.index)
                .map(|p| p.key().to_string())
                .collect();
            println!("  {} ({}): {}", node.name, node.ip, pods.join(", "));
        }
    }
    let started = SystemTime::now();

    let client = PodKey::new("default", "np-client");
    let shop = PodKey::new("shop", "np-client");
    let steps: [(&str, Option<&str>); 4] = [
        (
            "No NetworkPolicy yet: everything is reachable, DNS works",
            None,
        ),
        (
            "Roll out default-deny (ingress and egress) in namespace default",
            Some("default-deny"),
        ),
        (
            "Allow DNS egress to kube-system on UDP and TCP 53: DNS recovers",
            Some("allow-dns-egress"),
        ),
        (
            "api-from-web: frontends of team=web namespaces may call the API on 8080",
            Some("api-from-web"),
        ),
    ];
    let mut report = Vec::new();
    for (number, (title, apply)) in steps.into_iter().enumerate() {
        let number = number + 1;
        if text {
            println!("\n== {number}. {title}");
        }
        if let Some(name) = apply {
            let path = policy(name);
            let objects = read_objects(&path)?;
            tokio::task::block_in_place(|| lab.apply(&[&path]))
                .with_context(|| format!("applying {}", path.display()))?;
            state.update(|s| {
                for object in &objects {
                    s.apply(object)
                        .with_context(|| format!("{}: an object is invalid", path.display()))?;
                }
                anyhow::Ok(())
            })?;
            if text {
                println!("$ kubectl apply -f {}", path.display());
            }
        }
        let step_start = SystemTime::now();
        let mut commands = Vec::new();
        for from in [&client, &shop] {
            if from == &client {
                commands.push(nslookup(&lab, from, "kubernetes.default.svc.cluster.local"));
            }
            for port in [8080, 5432] {
                if from == &shop && port == 5432 {
                    continue;
                }
                commands.push(nc(&lab, from, "api.default.svc.cluster.local", port));
            }
        }
        for c in &commands {
            if text {
                println!("$ kubectl exec {} -- {}\n    {}", c.from, c.text, c.result);
            }
        }
        wait_stored(&agents, &reader, step_start, &commands).await?;
        let (denied, dns) = reports(&reader, step_start).await?;
        if text {
            println!("-- netverdict denied (this step):");
            print!("{}", render::denied_table(&denied, true));
            println!("-- netverdict dns (this step):");
            print!("{}", render::dns_table(&dns, true));
        }
        report.push(json!({
            "step": number,
            "title": title,
            "applied": apply,
            "commands": commands.iter().map(|c| json!({
                "from": c.from.to_string(),
                "command": c.text,
                "ok": c.ok,
                "result": c.result,
            })).collect::<Vec<_>>(),
            "denied": render::denied_json(&denied),
            "dns": render::dns_json(&dns),
        }));
    }
    let lab_nodes: Vec<Value> = lab
        .namespaces_by_node()
        .into_iter()
        .map(|(node, _)| {
            json!({
                "name": node.name,
                "ip": node.ip.to_string(),
                "pods": lab.pods().into_iter().filter(|p| p.node == node.index)
                    .map(|p| p.key().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (denied, dns) = reports(&reader, started).await?;
    // The guide's debugging flow for the flow the rollout left denied.
    let request = Request {
        from: Endpoint::Pod(shop.clone()),
        to: Destination::Service(PodKey::new("default", "api")),
        port: Some(8080),
        protocol: Protocol::Tcp,
    };
    let diagnosis = diagnose(&state.read(), &request).context("diagnosing the denied flow")?;
    let observed = crate::diagnose::observe(
        &reader,
        netverdict_proto::time::timestamp(started),
        &request,
        &diagnosis,
    )
    .await
    .context("reading the observed flows for diagnose")?;
    if text {
        println!("\n== Why is shop's frontend still denied, and what would fix it?");
        println!("$ netverdict diagnose --from shop/np-client --to default/svc/api --port 8080");
        print!(
            "{}",
            crate::diagnose::text_report(&diagnosis, Some(&observed))?
        );
    }
    let diagnosed = crate::diagnose::json_report(&diagnosis, Some(&observed))?;
    if text {
        println!("\n== The whole rollout: what an SRE would ask the API server");
        println!(
            "$ netverdict denied -o wide --since {}s",
            started.elapsed().unwrap_or_default().as_secs() + 1
        );
        print!("{}", render::denied_table(&denied, true));
        println!("$ netverdict dns -o wide");
        print!("{}", render::dns_table(&dns, true));
        println!("\n== Tear down");
    }
    let mut exported: Option<(u64, u64)> = None;
    for agent in agents {
        if let Some(stats) = agent.shutdown().await.context("stopping a collector")? {
            let (acked, dropped) = exported.unwrap_or_default();
            exported = Some((acked + stats.flows_acked, dropped + stats.flows_dropped));
        }
    }
    api.shutdown().await.context("stopping the API server")?;
    tokio::task::block_in_place(|| netverdict_lab::down(&args.name, Path::new(STATE_ROOT)))
        .with_context(|| format!("tearing lab {} down", args.name))?;
    if text {
        if let Some((acked, dropped)) = exported {
            println!("collectors: {acked} flows acknowledged by the API server, {dropped} dropped");
        }
        println!("lab {} is down", args.name);
    }
    Ok(json!({
        "lab": args.name,
        "store": if args.clickhouse.is_some() { "clickhouse" } else { "memory" },
        "tls": reader.is_tls(),
        "steps": report,
        "diagnose": diagnosed,
        "total": {
            "denied": render::denied_json(&denied),
            "dns": render::dns_json(&dns),
        },
        "nodes": lab_nodes,
        "exported": exported.map(|(acked, dropped)| json!({"acked": acked, "dropped": dropped})),
    }))
}

/// The objects of one manifest file, for the collector's cluster state.
fn read_objects(path: &Path) -> Result<Vec<K8sObject>> {
    let manifests = Manifests::read_paths(&[path]);
    if let Some(error) = manifests.errors.first() {
        bail!("{error}");
    }
    Ok(manifests.objects.into_iter().map(|o| o.object).collect())
}

/// `nslookup NAME` in a pod.
fn nslookup(lab: &Lab, from: &PodKey, name: &str) -> Command {
    let answer = tokio::task::block_in_place(|| lab.dns(from, name, Duration::from_secs(2)));
    let (ok, result) = match answer {
        Ok(DnsAnswer::Addresses(a)) if !a.is_empty() => (
            true,
            format!(
                "{name} has address {}",
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Ok(other) => (false, format!("{name}: {other}")),
        Err(e) => (false, format!("error: {e}")),
    };
    Command {
        from: from.clone(),
        text: format!("nslookup {name}"),
        result,
        ok,
        expects: vec![Expect::Dns(name.to_string())],
    }
}

/// `nc -vz NAME PORT` in a pod: resolves the name through the cluster DNS
/// first, as nc does; returns the lookup alone when it fails.
fn nc(lab: &Lab, from: &PodKey, name: &str, port: u16) -> Command {
    let text = format!("nc -vz {name} {port}");
    let resolved = tokio::task::block_in_place(|| lab.dns(from, name, Duration::from_secs(2)));
    let ip = match resolved {
        Ok(DnsAnswer::Addresses(a)) if !a.is_empty() => a[0],
        Ok(other) => {
            return Command {
                from: from.clone(),
                text,
                result: format!("nc: bad address '{name}' (DNS: {other})"),
                ok: false,
                expects: vec![Expect::Dns(name.to_string())],
            };
        }
        Err(e) => {
            return Command {
                from: from.clone(),
                text,
                result: format!("error: {e}"),
                ok: false,
                expects: vec![Expect::Dns(name.to_string())],
            };
        }
    };
    let outcome = tokio::task::block_in_place(|| {
        lab.probe(from, ip, port, Protocol::Tcp, Duration::from_secs(2))
    });
    let (ok, result) = match outcome {
        Ok(netverdict_lab::Outcome::Succeeded) => (true, format!("{name} ({ip}:{port}) open")),
        Ok(other) => (false, format!("{name} ({ip}:{port}): {other}")),
        Err(e) => (false, format!("error: {e}")),
    };
    Command {
        from: from.clone(),
        text,
        result,
        ok,
        expects: vec![Expect::Dns(name.to_string()), Expect::Tcp(port)],
    }
}

/// Flushes the collectors until every command's flow is in the API server's
/// store (over the Observer API), or fails after a deadline naming what is
/// missing. Kernel events may still be in the ring buffer at the first flush.
async fn wait_stored(
    agents: &[AgentHandle],
    server: &netverdict_tls::Target,
    since: SystemTime,
    commands: &[Command],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut observer = ObserverClient::new(
        server
            .connect_default(Duration::from_secs(5))
            .await
            .context("connecting to the API server")?,
    );
    loop {
        for agent in agents {
            agent.flush().await.context("flushing a collector")?;
        }
        let request = pb::GetFlowsRequest {
            since: Some(netverdict_proto::time::timestamp(since)),
            ..Default::default()
        };
        let mut stream = observer
            .get_flows(request)
            .await
            .context("GetFlows")?
            .into_inner();
        let mut flows = Vec::new();
        while let Some(item) = stream.message().await.context("GetFlows stream")? {
            flows.extend(item.flow);
        }
        let missing: Vec<String> = commands
            .iter()
            .flat_map(|c| c.expects.iter().map(move |e| (c, e)))
            .filter(|(c, e)| !flows.iter().any(|f| matches(f, &c.from, e)))
            .map(|(c, _)| format!("{} `{}`", c.from, c.text))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after 30 s the collector had stored no flow for: {}",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `flow` is one a command from `from` makes.
fn matches(flow: &pb::Flow, from: &PodKey, expect: &Expect) -> bool {
    let Some(source) = &flow.source else {
        return false;
    };
    if source.namespace != from.namespace || source.pod_name != from.name {
        return false;
    }
    match expect {
        Expect::Dns(name) => flow.dns.as_ref().is_some_and(|d| d.query == *name),
        Expect::Tcp(port) => {
            flow.protocol() == pb::Protocol::Tcp
                && flow
                    .destination
                    .as_ref()
                    .is_some_and(|d| d.port == u32::from(*port))
        }
    }
}

/// The denied and DNS reports since `since`, from the API server over gRPC.
async fn reports(
    server: &netverdict_tls::Target,
    since: SystemTime,
) -> Result<(Vec<pb::DeniedGroup>, pb::DnsReportResponse)> {
    let mut query = QueryClient::new(
        server
            .connect_default(Duration::from_secs(5))
            .await
            .context("connecting to the API server")?,
    );
    let request = pb::ReportRequest {
        since: Some(netverdict_proto::time::timestamp(since)),
        ..Default::default()
    };
    let denied = query
        .denied(request.clone())
        .await
        .context("Denied")?
        .into_inner()
        .groups;
    let dns = query
        .dns_report(request)
        .await
        .context("DnsReport")?
        .into_inner();
    Ok((denied, dns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(ns: &str, pod: &str, port: u32, dns: Option<&str>) -> pb::Flow {
        pb::Flow {
            source: Some(pb::Endpoint {
                namespace: ns.into(),
                pod_name: pod.into(),
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                port,
                ..Default::default()
            }),
            protocol: if dns.is_some() {
                pb::Protocol::Udp
            } else {
                pb::Protocol::Tcp
            } as i32,
            dns: dns.map(|q| pb::Dns {
                query: q.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_command_matches_only_its_own_flow() {
        let from = PodKey::new("default", "np-client");
        let tcp = Expect::Tcp(8080);
        assert!(matches(
            &flow("default", "np-client", 8080, None),
            &from,
            &tcp
        ));
        assert!(!matches(
            &flow("default", "np-client", 5432, None),
            &from,
            &tcp
        ));
        assert!(!matches(
            &flow("shop", "np-client", 8080, None),
            &from,
            &tcp
        ));
        let dns = Expect::Dns("a.b".into());
        assert!(matches(
            &flow("default", "np-client", 53, Some("a.b")),
            &from,
            &dns
        ));
        assert!(!matches(
            &flow("default", "np-client", 53, Some("c.d")),
            &from,
            &dns
        ));
        assert!(!matches(
            &flow("default", "np-client", 53, None),
            &from,
            &dns
        ));
    }
}
