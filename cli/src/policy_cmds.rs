//! The policy engine's subcommands: `verdicts` (bulk, JSON lines), `explain`
//! (one flow, for a person) and `lint`, over manifests or a live cluster
//! ([`ClusterArgs`], which `diagnose` shares).

use std::io::{BufRead, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_cluster::kube::ClientOptions;
use netverdict_policy::lint::{DnsTarget, LintOptions, Severity};
use netverdict_policy::{ClusterState, Connection, Endpoint, LoadOptions, Manifests, Protocol};
use serde::Deserialize;

use crate::output::{self, Output};

/// Where the cluster state comes from: manifest files (`--cluster`), else a
/// live cluster, listed once, found as kubectl finds it (`--kubeconfig`,
/// `--context`, else `$KUBECONFIG` or `~/.kube/config`, else the in-cluster
/// service account).
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Cluster manifests: YAML/JSON files or directories (e.g. the output of
    /// `kubectl get ns,pods,netpol,svc,endpointslices,nodes,rs,jobs -A -o yaml`),
    /// instead of a live cluster. Repeatable.
    #[arg(long = "cluster", value_name = "PATH", conflicts_with_all = ["kubeconfig", "context"])]
    paths: Vec<PathBuf>,
    /// The kubeconfig of the live cluster (default: $KUBECONFIG, else
    /// ~/.kube/config, else the in-cluster service account).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// IP addresses of the node(s) the pods run on, when the cluster holds no
    /// Node objects: traffic between a pod and its node is always allowed.
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<IpAddr>,
}

/// Objects per page when listing a live cluster.
const LIST_PAGE_SIZE: u32 = 500;

impl ClusterArgs {
    /// Whether a cluster was named (manifests, a kubeconfig or a context),
    /// rather than left to the defaults.
    pub fn is_given(&self) -> bool {
        !self.paths.is_empty() || self.kubeconfig.is_some() || self.context.is_some()
    }

    /// Declares the `--node-ip`s on a state built elsewhere.
    pub fn set_node_ips(&self, state: &mut ClusterState) {
        if !self.node_ips.is_empty() {
            state.set_local_node_ips(self.node_ips.iter().copied());
        }
    }

    pub fn load(&self) -> Result<ClusterState> {
        let mut state = if self.paths.is_empty() {
            self.load_live()?
        } else {
            ClusterState::load_paths(&self.paths).context("loading the cluster")?
        };
        if !self.node_ips.is_empty() {
            state.set_local_node_ips(self.node_ips.iter().copied());
        }
        Ok(state)
    }

    /// Lists every kind the engine reads once; an invalid object is left out
    /// with a warning naming it and the field, as the watchers do.
    fn load_live(&self) -> Result<ClusterState> {
        let options = ClientOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let objects = runtime.block_on(async {
            let client = netverdict_cluster::kube::client(&options).await.context(
                "no cluster: pass --cluster FILES, or --kubeconfig/--context (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
            )?;
            netverdict_cluster::kube::list_once(&client, &netverdict_cluster::KINDS, LIST_PAGE_SIZE)
                .await
                .context("listing the cluster")
        })?;
        let mut state = ClusterState::new();
        for object in &objects {
            if let Err(error) = state.apply(object) {
                tracing::warn!("left out of the cluster state: {error}");
                eprintln!("netverdict: warning: left out: {error}");
            }
        }
        Ok(state)
    }
}

#[derive(Args, Debug)]
pub struct VerdictsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// JSON lines `{"src":"x/a","dst":"y/b","port":80,"protocol":"TCP"}` (src/dst
    /// as namespace/pod or an IP; protocol defaults to TCP; `"dst_name"`: the
    /// name the source resolved to the destination address). Default: stdin.
    #[arg(long, value_name = "FILE")]
    flows: Option<PathBuf>,
}

/// One line of a flows file: what `verdicts` decides, and what `whatif`
/// and `recommend` read as observed flows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowLine {
    pub src: String,
    pub dst: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    /// What policy decided when the flow was seen, `allow` or `deny` (as
    /// `verdicts` prints it): `recommend` keeps allowed flows only (without
    /// it, the cluster as given decides); `verdicts` and `whatif` decide
    /// anew.
    #[serde(default)]
    pub verdict: Option<String>,
    /// The DNS name the source resolved to the destination address: admin
    /// `domainNames` peers match it, and `recommend` writes it beside the
    /// address's ipBlock.
    #[serde(default)]
    pub dst_name: Option<String>,
}

impl FlowLine {
    /// The observed verdict: Some(true) for `allow`, Some(false) for `deny`.
    pub fn observed_allowed(&self) -> Result<Option<bool>> {
        match self.verdict.as_deref() {
            None => Ok(None),
            Some("allow") => Ok(Some(true)),
            Some("deny") => Ok(Some(false)),
            Some(other) => bail!("verdict: {other:?} is not allow or deny"),
        }
    }
}

pub(crate) fn parse_flow(
    src: &str,
    dst: &str,
    port: u16,
    protocol: Option<&str>,
) -> Result<Connection, netverdict_policy::ConnectionError> {
    let protocol = match protocol {
        None => Protocol::Tcp,
        Some(p) => Protocol::from_str(p)
            .map_err(|_| netverdict_policy::ConnectionError::BadProtocol(p.to_string()))?,
    };
    Ok(Connection::new(
        Endpoint::from_str(src)?,
        Endpoint::from_str(dst)?,
        port,
        protocol,
    ))
}

/// Decides each input line; a bad line yields an error line, never an exit.
pub fn verdicts(args: VerdictsArgs) -> Result<ExitCode> {
    let state = args.cluster.load()?;
    let input: Box<dyn BufRead> = match &args.flows {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (index, line) in input.lines().enumerate() {
        let line_number = index + 1;
        let line = line.context("reading flows")?;
        if line.trim().is_empty() {
            continue;
        }
        let decided = serde_json::from_str::<FlowLine>(&line)
            .map_err(|e| format!("invalid flow: {e}"))
            .and_then(|f| {
                let flow = parse_flow(&f.src, &f.dst, f.port, f.protocol.as_deref())
                    .map_err(|e| format!("invalid flow: {e}"))?;
                Ok(match &f.dst_name {
                    Some(name) => flow.with_destination_names(&[name]),
                    None => flow,
                })
            })
            .and_then(|flow| match state.verdict(&flow) {
                Ok(v) => Ok((flow, v)),
                Err(e) => Err(e.to_string()),
            });
        match decided {
            Ok((flow, verdict)) => {
                serde_json::to_writer(
                    &mut out,
                    &netverdict_policy::explain(&state, &flow, &verdict),
                )?;
            }
            Err(error) => {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({ "line": line_number, "error": error }),
                )?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Source: namespace/pod or an IP address.
    #[arg(long)]
    from: String,
    /// Destination: namespace/pod or an IP address.
    #[arg(long)]
    to: String,
    /// Destination port.
    #[arg(long)]
    port: u16,
    /// TCP, UDP, SCTP or ICMP (with port 0).
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// A DNS name the source resolved to the destination address, for admin
    /// `domainNames` peers (repeatable).
    #[arg(long = "to-name", value_name = "NAME")]
    to_names: Vec<String>,
    /// Output format: text, json.
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
}

/// Prints the explanation; exit 0 when allowed, 1 when denied.
pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let state = args.cluster.load()?;
    let flow = parse_flow(&args.from, &args.to, args.port, Some(&args.protocol))?
        .with_destination_names(&args.to_names);
    let verdict = state.verdict(&flow)?;
    let explanation = netverdict_policy::explain(&state, &flow, &verdict);
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?,
        _ => writeln!(out, "{explanation}")?,
    }
    Ok(if verdict.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// With -f: the cluster the policies would be applied to, when given
    /// (--cluster, --kubeconfig or --context); without -f, the cluster to lint.
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Policy manifests, read as kubectl reads them: files, directories (their
    /// .yaml, .yml and .json files), `-` for standard input; multi-document
    /// YAML and `kind: List`. Repeatable. Alone, before `kubectl apply`: checks
    /// that need pods or namespaces are skipped, and said so.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// The cluster DNS's namespace, for the DNS check when the manifests hold
    /// no DNS pod.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    dns_namespace: String,
    /// The cluster DNS pods' labels (`key=value,...`), for the DNS check when
    /// the manifests hold no DNS pod.
    #[arg(long, value_name = "LABELS", default_value = "k8s-app=kube-dns")]
    dns_labels: String,
    /// Output format: text, json.
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
}

/// `key=value,...` into labels; an error names the flag.
fn parse_labels(flag: &str, text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => bail!("{flag}: invalid label {pair:?}: expected key=value"),
        }
    }
    if labels.is_empty() {
        bail!("{flag}: give at least one key=value label");
    }
    Ok(labels)
}

/// Prints the findings; exit 1 when there is a warning.
pub fn lint(args: LintArgs) -> Result<ExitCode> {
    let options = LintOptions {
        dns: DnsTarget {
            namespace: args.dns_namespace.clone(),
            labels: parse_labels("--dns-labels", &args.dns_labels)?,
        },
    };
    let state = if args.files.is_empty() {
        args.cluster.load()?
    } else {
        let files = Manifests::read_paths(&args.files);
        let mut errors = Vec::new();
        let state = if args.cluster.is_given() {
            // These policies applied to that cluster.
            let mut state = args.cluster.load()?;
            errors.extend(files.errors);
            for sourced in files.objects {
                if let Err(error) = state.apply(&sourced.object) {
                    errors.push(netverdict_policy::LoadError::Invalid {
                        origin: sourced.origin,
                        error,
                    });
                }
            }
            state
        } else {
            let (mut state, read_errors) =
                ClusterState::from_manifests(files, &LoadOptions::default());
            errors = read_errors;
            args.cluster.set_node_ips(&mut state);
            state
        };
        if !errors.is_empty() {
            return Err(netverdict_policy::LoadErrors(errors)).context("loading -f");
        }
        state
    };
    let findings = netverdict_policy::lint::lint_with(&state, &options);
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&findings)?)?,
        _ => {
            for f in &findings {
                writeln!(out, "{f}")?;
            }
            if findings.iter().all(|f| f.severity != Severity::Warning) {
                writeln!(
                    out,
                    "no warnings ({} policies, {} admin policies, {} pods)",
                    state.policy_count(),
                    state.admin_policy_count(),
                    state.pod_count()
                )?;
            }
        }
    }
    if findings.iter().any(|f| f.severity == Severity::Warning) {
        return Ok(ExitCode::from(1));
    }
    if state.policy_count() == 0 && state.admin_policy_count() == 0 && state.pod_count() == 0 {
        bail!("the cluster holds no pods and no policies");
    }
    Ok(ExitCode::SUCCESS)
}
