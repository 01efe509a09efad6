//! The policy engine's subcommands: `verdicts` (bulk, JSON lines), `explain`
//! (one flow, for a person) and `lint`.

use std::io::{BufRead, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_policy::lint::{DnsTarget, LintOptions, Severity};
use netverdict_policy::{ClusterState, Connection, Endpoint, LoadOptions, Manifests, Protocol};
use serde::Deserialize;

use crate::output::{self, Output};

/// Where the cluster state comes from.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Cluster manifests: YAML/JSON files or directories (e.g. the output of
    /// `kubectl get ns,pods,netpol,svc -A -o yaml`). Repeatable.
    #[arg(long = "cluster", required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// IP addresses of the node(s) the pods run on, when the manifests hold no
    /// Node objects: traffic between a pod and its node is always allowed.
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<IpAddr>,
}

impl ClusterArgs {
    fn load(&self) -> Result<ClusterState> {
        let mut state = ClusterState::load_paths(&self.paths).context("loading the cluster")?;
        if !self.node_ips.is_empty() {
            state.set_local_node_ips(self.node_ips.iter().copied());
        }
        Ok(state)
    }
}

#[derive(Args, Debug)]
pub struct VerdictsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// JSON lines `{"src":"x/a","dst":"y/b","port":80,"protocol":"TCP"}` (src/dst
    /// as namespace/pod or an IP; protocol defaults to TCP). Default: stdin.
    #[arg(long, value_name = "FILE")]
    flows: Option<PathBuf>,
}

/// One input line of `verdicts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowLine {
    pub src: String,
    pub dst: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
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
                parse_flow(&f.src, &f.dst, f.port, f.protocol.as_deref())
                    .map_err(|e| format!("invalid flow: {e}"))
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
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Output format: text, json.
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
}

/// Prints the explanation; exit 0 when allowed, 1 when denied.
pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let state = args.cluster.load()?;
    let flow = parse_flow(&args.from, &args.to, args.port, Some(&args.protocol))?;
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
    /// Cluster manifests: YAML/JSON files or directories (e.g. the output of
    /// `kubectl get ns,pods,netpol,svc -A -o yaml`). Repeatable. With -f: the
    /// cluster the policies would be applied to.
    #[arg(
        long = "cluster",
        value_name = "PATH",
        required_unless_present = "files"
    )]
    cluster: Vec<PathBuf>,
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
    /// IP addresses of the node(s) the pods run on (see `verdicts`).
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<IpAddr>,
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
    let paths: Vec<&PathBuf> = args.cluster.iter().chain(&args.files).collect();
    let (mut state, errors) =
        ClusterState::from_manifests(Manifests::read_paths(&paths), &LoadOptions::default());
    if !errors.is_empty() {
        return Err(netverdict_policy::LoadErrors(errors)).context("loading the manifests");
    }
    if !args.node_ips.is_empty() {
        state.set_local_node_ips(args.node_ips.iter().copied());
    }
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
        bail!("the manifests hold no pods and no policies");
    }
    Ok(ExitCode::SUCCESS)
}
