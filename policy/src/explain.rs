//! Explanations of verdicts for people and for machines: the flow's endpoints by
//! name, the verdict, and per direction the tier that decided, the admin or
//! baseline rule that decided or passed (policy, rule name, action), the
//! selecting NetworkPolicies, the allowing rules or the denial with the
//! policies that isolated the endpoint, and the nearest miss.

use std::fmt;

use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::model::{Direction, PolicyKey, Tier};
use crate::state::ClusterState;
use crate::verdict::{AdminMiss, DirectionVerdict, Status, Verdict};

/// A verdict with the flow it is about, ready to print or serialize.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation<'a> {
    /// The source as given: `namespace/pod` or an IP.
    pub src: String,
    /// The destination as given.
    pub dst: String,
    /// The pod an IP source resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_pod: Option<String>,
    /// The pod an IP destination resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_pod: Option<String>,
    /// The address the source uses.
    pub src_ip: String,
    /// The address the destination uses.
    pub dst_ip: String,
    /// The source for a person (`10.0.0.7 (pod ns/a)`, `1.2.3.4 (outside the cluster)`).
    #[serde(skip)]
    pub src_description: String,
    /// The destination for a person.
    #[serde(skip)]
    pub dst_description: String,
    pub port: u16,
    pub protocol: &'static str,
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// One sentence on why.
    pub reason: String,
    /// The source pod's egress.
    pub egress: &'a DirectionVerdict,
    /// The destination pod's ingress.
    pub ingress: &'a DirectionVerdict,
}

/// Explains `verdict`, the engine's answer for `conn` in `state`.
pub fn explain<'a>(
    state: &ClusterState,
    conn: &Connection,
    verdict: &'a Verdict,
) -> Explanation<'a> {
    let src_description = describe_endpoint(state, &conn.src);
    let mut dst_description = describe_endpoint(state, &conn.dst);
    if !conn.destination_names.is_empty() {
        dst_description = format!(
            "{dst_description}, resolved from {}",
            conn.destination_names.join(", ")
        );
    }
    let resolved_pod = |e: &Endpoint| match e {
        Endpoint::Ip(ip) => state.pod_by_ip(*ip).map(|p| p.key.to_string()),
        Endpoint::Pod(_) => None,
    };
    let (src_ip, dst_ip) = state
        .connection_ips(conn)
        .map(|(s, d)| (s.to_string(), d.to_string()))
        .unwrap_or_default();
    let reason = reason(
        verdict,
        Party {
            name: &src_description,
            ip: &src_ip,
        },
        Party {
            name: &dst_description,
            ip: &dst_ip,
        },
    );
    Explanation {
        src: conn.src.to_string(),
        dst: conn.dst.to_string(),
        src_pod: resolved_pod(&conn.src),
        dst_pod: resolved_pod(&conn.dst),
        src_ip,
        dst_ip,
        src_description,
        dst_description,
        port: conn.port,
        protocol: conn.protocol.as_str(),
        verdict: verdict.as_str(),
        reason,
        egress: &verdict.egress,
        ingress: &verdict.ingress,
    }
}

/// `ns/pod`, `10.0.0.7 (pod ns/pod)`, `10.1.0.1 (node)` or
/// `203.0.113.9 (outside the cluster)`.
pub fn describe_endpoint(state: &ClusterState, endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Pod(key) => match state.pod(key) {
            Some(p) if p.host_network => format!("{key} (host network)"),
            _ => key.to_string(),
        },
        Endpoint::Ip(ip) => match state.pod_by_ip(*ip) {
            Some(pod) => format!("{ip} (pod {})", pod.key),
            None if state.is_node_ip(*ip) => format!("{ip} (node)"),
            None => match state.service_by_ip(*ip) {
                Some(svc) => format!(
                    "{ip} (service {}/{}, not resolved to a backend)",
                    svc.namespace, svc.name
                ),
                None => format!("{ip} (outside the cluster)"),
            },
        },
    }
}

fn keys(keys: &[PolicyKey]) -> String {
    keys.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An endpoint of a flow as explanations name it.
#[derive(Clone, Copy, Debug)]
pub struct Party<'a> {
    /// For a person: `ns/pod`, `10.1.0.1 (node)`...
    pub name: &'a str,
    /// The address the flow uses.
    pub ip: &'a str,
}

/// One sentence on why, naming the endpoints as `src` and `dst` describe them.
pub fn reason(verdict: &Verdict, src: Party, dst: Party) -> String {
    if verdict.allowed {
        return allow_reason(verdict);
    }
    // The peer of the source's egress is the destination, and the reverse.
    [(&verdict.egress, src, dst), (&verdict.ingress, dst, src)]
        .into_iter()
        .filter(|(d, _, _)| d.status == Status::Denied)
        .map(|(d, who, peer)| denial_reason(d, who.name, peer.ip))
        .collect::<Vec<_>>()
        .join("; and ")
}

fn allow_reason(v: &Verdict) -> String {
    let part = |d: &DirectionVerdict| -> String {
        if let Some(rule) = d.deciding_admin_rule() {
            return format!("{} allowed by {rule}", d.direction);
        }
        let passed = match (&d.admin_rule, &d.baseline_rule) {
            (Some(a), _) => format!(" (after {a} passed)"),
            (None, Some(b)) => format!(" ({b} passed)"),
            _ => String::new(),
        };
        let text = match d.status {
            Status::NotAPod => format!("{} does not apply (not a pod)", d.direction),
            Status::HostNetwork => format!("{} does not apply (host-network pod)", d.direction),
            Status::SelfTraffic => "a pod may always reach itself".to_string(),
            Status::NodeLocal => {
                "traffic between a pod and its own node is always allowed".to_string()
            }
            Status::NotIsolated => {
                format!("{} not isolated (no policy selects the pod)", d.direction)
            }
            Status::Allowed => format!(
                "{} allowed by {}",
                d.direction,
                d.allowed_by
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Status::Denied => format!("{} denied", d.direction),
        };
        text + &passed
    };
    if v.egress.status == Status::SelfTraffic || v.egress.status == Status::NodeLocal {
        return part(&v.egress);
    }
    if v.ingress.status == Status::NodeLocal {
        return part(&v.ingress);
    }
    format!("{}; {}", part(&v.egress), part(&v.ingress))
}

/// Why one direction denies: the policies that isolated the endpoint, and the
/// nearest miss.
fn denial_reason(d: &DirectionVerdict, who: &str, peer_ip: &str) -> String {
    if let Some(rule) = d.deciding_admin_rule() {
        let mut out = format!("{} of {who} denied by {rule}", d.direction);
        if let Some(miss) = &d.admin_nearest_miss {
            out.push_str(&format!(
                "; nearest miss: {} {}",
                miss.rule,
                describe_failures(miss, d.direction, peer_ip).join(" and ")
            ));
        }
        return out;
    }
    let mut out = String::new();
    if let Some(pass) = &d.admin_rule {
        out.push_str(&format!("{pass} passed, then "));
    }
    out.push_str(&format!(
        "{} of {who} denied: isolated by {}",
        d.direction,
        keys(&d.selected_by)
    ));
    match &d.nearest_miss {
        Some(miss) => {
            let what: Vec<String> = miss
                .failures
                .iter()
                .map(|f| f.describe(d.direction, peer_ip))
                .collect();
            out.push_str(&format!(
                "; nearest miss: rule {} of {} {}",
                miss.rule,
                miss.policy,
                what.join(" and ")
            ));
        }
        None => out.push_str(&format!(", which allow no {} at all", d.direction)),
    }
    out
}

fn describe_failures(miss: &AdminMiss, direction: Direction, peer_ip: &str) -> Vec<String> {
    if miss.failures.is_empty() {
        return vec!["(its peer and ports match; a rule before it decided)".to_string()];
    }
    miss.failures
        .iter()
        .map(|f| f.describe(direction, peer_ip))
        .collect()
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} -> {} {}/{}",
            self.verdict.to_uppercase(),
            self.src_description,
            self.dst_description,
            self.protocol,
            self.port
        )?;
        for (d, who, peer_ip) in [
            (self.egress, &self.src_description, &self.dst_ip),
            (self.ingress, &self.dst_description, &self.src_ip),
        ] {
            write_direction(f, d, who, peer_ip)?;
        }
        write!(f, "  why: {}", self.reason)
    }
}

fn write_direction(
    f: &mut fmt::Formatter<'_>,
    d: &DirectionVerdict,
    who: &str,
    peer_ip: &str,
) -> fmt::Result {
    let head = match d.direction {
        Direction::Egress => "egress of",
        Direction::Ingress => "ingress of",
    };
    let decided_by = match d.tier {
        Some(tier @ (Tier::Admin | Tier::Baseline)) => Some(tier),
        _ => None,
    };
    let status = match d.status {
        Status::Allowed | Status::Denied if decided_by.is_some() => format!(
            "{}: {}",
            decided_by.map(Tier::title).unwrap_or_default(),
            if d.status == Status::Allowed {
                "allowed"
            } else {
                "DENIED"
            }
        ),
        Status::NotAPod => "not a pod: NetworkPolicy does not apply".to_string(),
        Status::HostNetwork => "host-network pod: never selected by NetworkPolicy".to_string(),
        Status::SelfTraffic => "a pod reaching itself: always allowed".to_string(),
        Status::NodeLocal => "traffic with the pod's own node: always allowed".to_string(),
        Status::NotIsolated => "not isolated (no policy selects it): allowed".to_string(),
        Status::Allowed => "isolated: allowed".to_string(),
        Status::Denied => "isolated: DENIED".to_string(),
    };
    writeln!(f, "  {head} {who}: {status}")?;
    for r in &d.not_evaluated {
        writeln!(
            f,
            "    not evaluated: {r}: no DNS answer seen by netverdict named the destination for its source"
        )?;
    }
    if let Some(rule) = &d.admin_rule {
        let verb = if d.tier == Some(Tier::Admin) {
            "decided by"
        } else {
            "passed by"
        };
        writeln!(f, "    {verb}: {rule}")?;
    }
    if let Some(rule) = d
        .deciding_admin_rule()
        .filter(|_| d.tier == Some(Tier::Baseline))
    {
        writeln!(f, "    decided by: {rule}")?;
    }
    if let Some(miss) = &d.admin_nearest_miss {
        writeln!(f, "    nearest miss: {}", miss.rule)?;
        for failure in describe_failures(miss, d.direction, peer_ip) {
            writeln!(f, "      - {failure}")?;
        }
    }
    if d.tier == Some(Tier::Baseline) || (d.tier.is_none() && d.baseline_rule.is_some()) {
        if let Some(rule) = d.baseline_rule.as_ref().filter(|_| d.tier.is_none()) {
            writeln!(f, "    passed by: {rule}")?;
        }
        writeln!(f, "    no NetworkPolicy isolates it")?;
    }
    if !d.selected_by.is_empty() {
        let note = if decided_by == Some(Tier::Admin) {
            " (not evaluated: the Admin tier decided)"
        } else {
            ""
        };
        writeln!(f, "    selected by: {}{note}", keys(&d.selected_by))?;
    }
    for r in &d.allowed_by {
        writeln!(f, "    allowed by: {r}")?;
    }
    if d.status == Status::Denied && d.tier == Some(Tier::NetworkPolicy) {
        if !d.without_rules.is_empty() {
            writeln!(
                f,
                "    default deny: {} allow(s) no {} at all",
                keys(&d.without_rules),
                d.direction
            )?;
        }
        match &d.nearest_miss {
            Some(miss) => {
                writeln!(f, "    nearest miss: rule {} of {}", miss.rule, miss.policy)?;
                for failure in &miss.failures {
                    writeln!(f, "      - {}", failure.describe(d.direction, peer_ip))?;
                }
            }
            None => writeln!(f, "    no selecting policy has any {} rule", d.direction)?,
        }
    }
    Ok(())
}
