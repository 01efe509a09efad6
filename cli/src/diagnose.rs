//! `netverdict diagnose`: the seed guide's debugging flow for one source and
//! destination. The policy steps come from the policy engine
//! (`netverdict_policy::diagnose`, over manifests or a live cluster); the
//! steps that need observed flows (evidence of enforcement, failed DNS
//! queries, the pair's recent flows) ask the API server given by `--server`,
//! and say so when there is none.
//!
//! ```text
//!  ClusterArgs ─> ClusterState ─> diagnose(state, request) ─┐
//!  --server ─> GetFlows: mismatches on the flow's nodes,     ├─> text (steps, then the fix as YAML)
//!              the source's DNS failures, the pair's flows  ─┘   or one JSON object (`fix`: objects)
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use netverdict_api::report::is_dns_failure;
use netverdict_policy::diagnose::{Destination, Diagnosis, Request, diagnose as diagnose_flow};
use netverdict_policy::fix::TargetEndpoint;
use netverdict_policy::model::Tier;
use netverdict_policy::verdict::{DirectionVerdict, Status};
use netverdict_policy::{Endpoint, Protocol};
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;
use serde_json::{Value, json};

use crate::output::{self, Output};
use crate::policy_cmds::ClusterArgs;
use crate::query_cmds::{self, ServerArgs};
use crate::render;

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Source: namespace/pod or an IP address.
    #[arg(long)]
    from: String,
    /// Destination: namespace/pod or namespace/service (namespace/pod/NAME or
    /// namespace/svc/NAME when both exist), or an IP address.
    #[arg(long)]
    to: String,
    /// Destination port (a Service's port for a Service); default: the
    /// destination's only port of that protocol.
    #[arg(long)]
    port: Option<u16>,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// The API server to read observed flows from (evidence of enforcement,
    /// failed DNS queries, the pair's recent flows); without --server (or
    /// $NETVERDICT_SERVER), those steps say they need one.
    #[command(flatten)]
    server: ServerArgs,
    /// How far back observed flows are read (e.g. 15m, 1h).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Output format: text (the steps, then the fix as YAML for `kubectl
    /// apply -f -`), json (one object; `fix` is an array of Kubernetes objects).
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
}

/// Flows read back for each step, at most.
const FLOWS_PER_STEP: u64 = 20;

/// What the API server showed, per step; `None` when there is no server.
pub struct Observed {
    /// Mismatched flows observed on the flow's nodes.
    enforcement: Vec<pb::Flow>,
    /// The source's failed DNS queries.
    dns_failures: Vec<pb::Flow>,
    /// The pair's recent flows.
    flows: Vec<pb::Flow>,
}

/// Prints the diagnosis; exit 0 when policy allows the flow, 1 when it denies it.
pub fn diagnose(args: DiagnoseArgs) -> Result<ExitCode> {
    let state = args.cluster.load()?;
    let protocol = Protocol::from_str(&args.protocol)
        .ok()
        .filter(|p| p.has_ports())
        .ok_or_else(|| {
            anyhow::anyhow!("--protocol {:?}: expected TCP, UDP or SCTP", args.protocol)
        })?;
    let from = Endpoint::from_str(&args.from).with_context(|| format!("--from {}", args.from))?;
    let to = Destination::from_str(&args.to)?;
    let request = Request {
        from,
        to,
        port: args.port,
        protocol,
    };
    let diagnosis = diagnose_flow(&state, &request)?;
    let observed = match &args.server.server {
        Some(_) => {
            let target = query_cmds::target(&args.server)?;
            let since = query_cmds::parse_time("--since", &args.since, SystemTime::now())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            Some(runtime.block_on(observe(&target, since, &request, &diagnosis))?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let value = json_report(&diagnosis, observed.as_ref())?;
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        _ => write!(out, "{}", text_report(&diagnosis, observed.as_ref())?)?,
    }
    Ok(if diagnosis.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads the observed flows each step needs from the API server, since `since`.
pub async fn observe(
    server: &netverdict_tls::Target,
    since: prost_types::Timestamp,
    request: &Request,
    d: &Diagnosis,
) -> Result<Observed> {
    let source = |filter: &mut pb::FlowFilter| match &request.from {
        Endpoint::Pod(key) => filter.source_pod.push(key.to_string()),
        Endpoint::Ip(ip) => filter.source_ip.push(ip.to_string()),
    };
    // Step 1: mismatches on the nodes of the flow's pods (any node if none).
    let enforcement = pb::FlowFilter {
        flow_type: vec![pb::FlowType::Mismatch as i32],
        node_name: d.nodes.clone(),
        ..Default::default()
    };
    // Step 5: the source's DNS flows (failures are picked below).
    let mut dns = pb::FlowFilter {
        flow_type: vec![pb::FlowType::Dns as i32],
        ..Default::default()
    };
    source(&mut dns);
    // Step 7: the pair, at every target (after Service DNAT).
    let mut pair = pb::FlowFilter {
        destination_port: d.targets.iter().map(|t| u32::from(t.port)).collect(),
        protocol: vec![pb_protocol(d.protocol) as i32],
        ..Default::default()
    };
    source(&mut pair);
    for target in &d.targets {
        match &target.endpoint {
            TargetEndpoint::Pod(key) => pair.destination_pod.push(key.to_string()),
            TargetEndpoint::Ip(ip) => pair.destination_ip.push(ip.to_string()),
        }
    }
    let request = |filter: pb::FlowFilter| pb::GetFlowsRequest {
        number: FLOWS_PER_STEP,
        include: vec![filter],
        since: Some(since),
        ..Default::default()
    };
    let channel = server
        .connect_default(std::time::Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot reach the netverdict server at {server}"))?;
    let mut client = ObserverClient::new(channel);
    let enforcement = flows(&mut client, request(enforcement)).await?;
    let mut dns_request = request(dns);
    // Failures are picked from more of the DNS flows than are shown.
    dns_request.number = 10 * FLOWS_PER_STEP;
    let mut dns_failures: Vec<pb::Flow> = flows(&mut client, dns_request)
        .await?
        .into_iter()
        .filter(is_dns_failure)
        .collect();
    dns_failures.truncate(FLOWS_PER_STEP as usize);
    let flows = flows(&mut client, request(pair)).await?;
    Ok(Observed {
        enforcement,
        dns_failures,
        flows,
    })
}

/// Every flow a GetFlows request answers.
async fn flows(
    client: &mut ObserverClient<tonic::transport::Channel>,
    request: pb::GetFlowsRequest,
) -> Result<Vec<pb::Flow>> {
    let mut stream = client
        .get_flows(request)
        .await
        .map_err(|s| query_cmds::status_error("GetFlows", s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream
        .message()
        .await
        .map_err(|s| query_cmds::status_error("GetFlows", s))?
    {
        out.extend(response.flow);
    }
    Ok(out)
}

fn pb_protocol(protocol: Protocol) -> pb::Protocol {
    match protocol {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
        Protocol::Sctp => pb::Protocol::Sctp,
        Protocol::Icmp => pb::Protocol::Icmp,
    }
}

/// One JSON object: the policy steps as the engine reports them, the
/// observed steps (null without a server), and `fix` as an array of
/// Kubernetes objects (`fix_notes`: what they cannot do exactly).
pub fn json_report(d: &Diagnosis, observed: Option<&Observed>) -> Result<Value> {
    let mut value = serde_json::to_value(d)?;
    let flows_json = |flows: &[pb::Flow]| flows.iter().map(render::flow_json).collect::<Vec<_>>();
    if let Value::Object(map) = &mut value {
        map.insert("fix".into(), serde_json::to_value(&d.fix.policies)?);
        map.insert("fix_notes".into(), json!(d.fix.notes));
        let (enforcement, dns_failures, flows) = match observed {
            Some(o) => (
                json!(flows_json(&o.enforcement)),
                json!(flows_json(&o.dns_failures)),
                json!(flows_json(&o.flows)),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        map.insert("enforcement_evidence".into(), enforcement);
        map.insert("dns_failures".into(), dns_failures);
        map.insert("observed_flows".into(), flows);
    }
    Ok(value)
}

/// What a direction's verdict says, in words (the deciding tier's rule when
/// an admin or baseline policy decided).
fn direction_text(v: &DirectionVerdict) -> String {
    let policies = |keys: &[netverdict_policy::PolicyKey]| {
        keys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let decided = match (v.tier, &v.admin_rule, &v.baseline_rule) {
        (Some(Tier::Admin), Some(rule), _) => Some(format!("{rule}, before NetworkPolicy")),
        (Some(Tier::Baseline), _, Some(rule)) => {
            Some(format!("{rule}, as no NetworkPolicy isolates it"))
        }
        _ => None,
    };
    match (v.status, decided) {
        (Status::Allowed, Some(rule)) => format!("allowed by {rule}"),
        (Status::Denied, Some(rule)) => format!("DENIED by {rule}"),
        (Status::NotAPod, _) => "not a pod: NetworkPolicy does not apply".into(),
        (Status::HostNetwork, _) => "a host-network pod: no policy selects it".into(),
        (Status::SelfTraffic, _) => "a pod to itself: always allowed".into(),
        (Status::NodeLocal, _) => "between a pod and its node: always allowed".into(),
        (Status::NotIsolated, _) => "not isolated (no policy selects it): allowed".into(),
        (Status::Allowed, None) => format!(
            "allowed by {} (isolated by {})",
            v.allowed_by
                .iter()
                .map(|r| r.policy.to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
            policies(&v.selected_by)
        ),
        (Status::Denied, None) => format!(
            "DENIED: isolated by {}, and no rule allows it",
            policies(&v.selected_by)
        ),
    }
}

const NO_SERVER: &str = "needs an API server (--server): not checked";

/// The steps as text, then the fix as YAML.
pub fn text_report(d: &Diagnosis, observed: Option<&Observed>) -> Result<String> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let port = d
        .destination
        .service_port
        .or_else(|| d.targets.first().map(|t| t.port))
        .unwrap_or(0);
    writeln!(
        s,
        "{} -> {} {port}/{}: {}",
        d.source.name,
        d.destination.name,
        d.protocol,
        if d.allowed { "ALLOWED" } else { "DENIED" }
    )?;
    if d.destination.kind == "service" {
        let targets: Vec<String> = d
            .targets
            .iter()
            .map(|t| format!("{} port {}", target_name(&t.endpoint), t.port))
            .collect();
        writeln!(s, "  the Service's backends: {}", targets.join(", "))?;
    }

    writeln!(s, "\n1. Enforcement (nodes {})", or_none(&d.nodes))?;
    match observed {
        None => writeln!(s, "   {NO_SERVER}")?,
        Some(o) if o.enforcement.is_empty() => writeln!(
            s,
            "   no mismatch observed on these nodes: no evidence either way"
        )?,
        Some(o) => {
            writeln!(
                s,
                "   {} flows where the kernel contradicted policy (the CNI may not enforce it as written):",
                o.enforcement.len()
            )?;
            for f in &o.enforcement {
                writeln!(s, "   {}", render::flow_line(f, true))?;
            }
        }
    }

    writeln!(s, "\n2-3. Policies, and which select the flow's pods")?;
    for ns in &d.policies {
        if ns.policies.is_empty() {
            writeln!(s, "   {}: no NetworkPolicy", ns.namespace)?;
            continue;
        }
        writeln!(s, "   {}:", ns.namespace)?;
        for p in &ns.policies {
            let types: Vec<&str> = p.policy_types.iter().map(|t| t.as_str()).collect();
            let selects: Vec<String> = p
                .selects
                .iter()
                .map(|x| format!("{} ({})", x.pod, x.direction))
                .collect();
            writeln!(
                s,
                "     {} [{}]: {}",
                p.policy.name(),
                types.join(", "),
                if selects.is_empty() {
                    "selects none of the flow's pods".to_string()
                } else {
                    format!("selects {}", selects.join(", "))
                }
            )?;
        }
    }

    writeln!(s, "\n4. Labels (those the policies' selectors read)")?;
    for l in &d.labels {
        let picked = |m: &std::collections::BTreeMap<String, Option<String>>| {
            m.iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => format!("{k} (absent)"),
                })
                .collect::<Vec<_>>()
        };
        writeln!(
            s,
            "   {} {}: {}",
            l.role,
            l.pod,
            or_none(&picked(&l.that_matter))
        )?;
        writeln!(
            s,
            "     namespace {}: {}",
            l.pod.namespace,
            or_none(&picked(&l.namespace_labels_that_matter))
        )?;
    }

    writeln!(s, "\n5. DNS of the source")?;
    match &d.dns {
        None => writeln!(s, "   the source is not a pod of the cluster")?,
        Some(dns) => {
            let dns_pods: Vec<String> = dns.dns_pods.iter().map(ToString::to_string).collect();
            if !dns.isolated {
                writeln!(s, "   egress not isolated: DNS allowed")?;
            } else if dns.denied.is_empty() {
                writeln!(
                    s,
                    "   egress isolated by {}; DNS to {} allowed",
                    or_none(&keys(&dns.egress_policies)),
                    or_none(&dns_pods)
                )?;
            } else {
                let denied: Vec<&str> = dns.denied.iter().map(|p| p.as_str()).collect();
                writeln!(
                    s,
                    "   egress isolated by {}: DNS ({} 53) to {} DENIED",
                    or_none(&keys(&dns.egress_policies)),
                    denied.join(" and "),
                    or_none(&dns_pods)
                )?;
            }
        }
    }
    match observed {
        None => writeln!(s, "   failed queries: {NO_SERVER}")?,
        Some(o) if o.dns_failures.is_empty() => writeln!(s, "   no failed query observed")?,
        Some(o) => {
            writeln!(s, "   failed queries:")?;
            for f in &o.dns_failures {
                writeln!(s, "   {}", render::flow_line(f, false))?;
            }
        }
    }

    writeln!(s, "\n6. Egress and ingress, separately")?;
    for p in &d.paths {
        writeln!(
            s,
            "   to {} port {}/{}:",
            target_name(&p.target.endpoint),
            p.target.port,
            p.target.protocol
        )?;
        writeln!(
            s,
            "     egress of the source:       {}",
            direction_text(&p.egress)
        )?;
        writeln!(
            s,
            "     ingress of the destination: {}",
            direction_text(&p.ingress)
        )?;
        if p.verdict != "allow" {
            writeln!(s, "     {}", p.reason)?;
        }
    }

    writeln!(s, "\n7. Observed flows of this pair")?;
    match observed {
        None => writeln!(s, "   {NO_SERVER}")?,
        Some(o) if o.flows.is_empty() => writeln!(s, "   none observed")?,
        Some(o) => {
            for f in &o.flows {
                writeln!(s, "   {}", render::flow_line(f, true))?;
            }
        }
    }

    if d.allowed {
        writeln!(s, "\nFix: none needed, policy allows this flow")?;
    } else if d.fix.policies.is_empty() {
        writeln!(s, "\nFix: no NetworkPolicy can allow it exactly")?;
    } else {
        writeln!(
            s,
            "\nFix: the least-privilege policies that allow exactly this flow (kubectl apply -f -):"
        )?;
    }
    for note in &d.fix.notes {
        writeln!(s, "# note: {note}")?;
    }
    for policy in &d.fix.policies {
        writeln!(s, "---")?;
        s.push_str(&render::object_yaml(policy, &|_| None)?);
    }
    Ok(s)
}

fn target_name(endpoint: &TargetEndpoint) -> String {
    match endpoint {
        TargetEndpoint::Pod(key) => key.to_string(),
        TargetEndpoint::Ip(ip) => ip.to_string(),
    }
}

fn keys(keys: &[netverdict_policy::PolicyKey]) -> Vec<String> {
    keys.iter().map(ToString::to_string).collect()
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
