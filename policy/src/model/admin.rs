//! The cluster-scoped policies of the network-policy-api project as the engine
//! evaluates them: AdminNetworkPolicy and BaselineAdminNetworkPolicy
//! (v1alpha1) and ClusterNetworkPolicy (v1alpha2), all validated from the
//! [`crd`](crate::crd) types into one [`AdminPolicy`] with its [`Tier`] (Admin
//! or Baseline),
//! priority, subject and ordered rules; every error names the object and the
//! field, as NetworkPolicy's do.
//!
//! ClusterNetworkPolicy's `Accept` is the same action as AdminNetworkPolicy's
//! `Allow` ([`AdminAction::Allow`]); explanations spell it as the policy's kind
//! does ([`AdminAction::spelled_for`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use netverdict_proto::filter::DnsPattern;
use serde::Serialize;

use super::keys::{PolicyKey, PolicyKind, Tier};
use super::policy::Direction;
use super::ports::Protocol;
use super::validate::{parse_cidr, port_number, protocol_field, validate_port_name};
use super::workload::Pod;
use crate::crd::{self, v1alpha1, v1alpha2};
use crate::error::{FieldError, ObjectError};
use crate::selector::Selector;

/// The highest priority number the API allows.
pub const MAX_PRIORITY: u32 = 1000;

/// What a rule does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// Allowed, whatever later tiers say (ClusterNetworkPolicy's `Accept`).
    Allow,
    /// Denied, whatever later tiers say.
    Deny,
    /// The rest of the tier is skipped: the next tier decides (NetworkPolicy
    /// after the Admin tier, the default allow after the Baseline tier).
    Pass,
}

impl AdminAction {
    /// The action as policies of `kind` spell it (`Accept` for
    /// ClusterNetworkPolicy's allow).
    pub fn spelled_for(self, kind: PolicyKind) -> &'static str {
        match (self, kind) {
            (AdminAction::Allow, PolicyKind::ClusterNetworkPolicy) => "Accept",
            (AdminAction::Allow, _) => "Allow",
            (AdminAction::Deny, _) => "Deny",
            (AdminAction::Pass, _) => "Pass",
        }
    }

    pub fn allows(self) -> bool {
        self != AdminAction::Deny
    }
}

/// The pods a policy applies to (host-network pods never).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminSubject {
    /// Every pod of the matching namespaces.
    Namespaces(Selector),
    /// The matching pods of the matching namespaces.
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

impl fmt::Display for AdminSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminSubject::Namespaces(s) => write!(f, "pods in namespaces with {s}"),
            AdminSubject::Pods { namespaces, pods } => {
                write!(f, "pods with {pods} in namespaces with {namespaces}")
            }
        }
    }
}

/// Domain name patterns as written (normalized), comma-separated.
pub fn join_patterns(patterns: &[DnsPattern]) -> String {
    let text: Vec<String> = patterns.iter().map(ToString::to_string).collect();
    text.join(", ")
}

fn patterns_as_text<S: serde::Serializer>(
    patterns: &[DnsPattern],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(patterns.iter().map(ToString::to_string))
}

/// One peer of an admin rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminPeer {
    /// Every (non-host-network) pod of the matching namespaces.
    Namespaces(Selector),
    /// The matching (non-host-network) pods of the matching namespaces.
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
    /// The addresses of the nodes whose labels match (egress only).
    Nodes(Selector),
    /// Addresses in any of these CIDRs, pod addresses included (egress only).
    Networks(Vec<IpNet>),
    /// Destinations resolved from these domain names, exact or `*.`
    /// subdomains (egress Allow rules only). A connection matches when one of
    /// the names its source resolved to the destination address matches
    /// ([`crate::Connection::destination_names`], from the collector's DNS
    /// answers); a connection whose names are not known leaves the rule not
    /// evaluated.
    DomainNames(#[serde(serialize_with = "patterns_as_text")] Vec<DnsPattern>),
    /// A peer with none of the fields this version knows (a newer CRD's):
    /// upstream says to fail closed, so it matches nothing in an Allow rule and
    /// everything in a Deny or Pass rule, which then denies.
    Unrecognized,
}

impl fmt::Display for AdminPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPeer::Namespaces(s) if s.is_empty() => f.write_str("pods in any namespace"),
            AdminPeer::Namespaces(s) => write!(f, "pods in namespaces with {s}"),
            AdminPeer::Pods { namespaces, pods } => {
                write!(f, "pods with {pods} in namespaces with {namespaces}")
            }
            AdminPeer::Nodes(s) if s.is_empty() => f.write_str("any node"),
            AdminPeer::Nodes(s) => write!(f, "nodes with {s}"),
            AdminPeer::Networks(nets) => {
                let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
                write!(f, "networks {}", nets.join(", "))
            }
            AdminPeer::DomainNames(names) => write!(f, "domain names {}", join_patterns(names)),
            AdminPeer::Unrecognized => f.write_str("a peer of a newer API version"),
        }
    }
}

impl AdminPeer {
    /// Whether `ip` is in one of the peer's networks (false for other peers).
    pub fn networks_contain(&self, ip: IpAddr) -> bool {
        matches!(self, AdminPeer::Networks(nets) if nets.iter().any(|n| n.contains(&ip)))
    }
}

/// One destination port match.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminPort {
    /// Every port of a protocol.
    Protocol(Protocol),
    /// One port.
    Number { protocol: Protocol, port: u16 },
    /// An inclusive range.
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// A container port name of the destination pod (with the port's protocol).
    Named(String),
}

impl fmt::Display for AdminPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPort::Protocol(p) => write!(f, "any {p} port"),
            AdminPort::Number { protocol, port } => write!(f, "{protocol}/{port}"),
            AdminPort::Range {
                protocol,
                start,
                end,
            } => write!(f, "{protocol}/{start}-{end}"),
            AdminPort::Named(name) => write!(f, "named port {name}"),
        }
    }
}

impl AdminPort {
    /// Whether the port matches `port`/`protocol` to a destination pod `dst`.
    pub fn matches(&self, dst: Option<&Pod>, port: u16, protocol: Protocol) -> bool {
        match self {
            AdminPort::Protocol(p) => *p == protocol,
            AdminPort::Number {
                protocol: p,
                port: n,
            } => *p == protocol && *n == port,
            AdminPort::Range {
                protocol: p,
                start,
                end,
            } => *p == protocol && (*start..=*end).contains(&port),
            AdminPort::Named(name) => {
                dst.and_then(|pod| pod.named_port(name, protocol)) == Some(port)
            }
        }
    }
}

/// One rule: its name (if it has one), action, peers (any matches) and ports
/// (empty: every port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AdminRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: AdminAction,
    pub peers: Vec<AdminPeer>,
    pub ports: Vec<AdminPort>,
}

/// A validated AdminNetworkPolicy, BaselineAdminNetworkPolicy or
/// ClusterNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminPolicy {
    /// Cluster-scoped: kind and name.
    pub key: PolicyKey,
    pub tier: Tier,
    /// 0-1000, lower first; None for the BaselineAdminNetworkPolicy, which has none.
    pub priority: Option<u32>,
    pub subject: AdminSubject,
    /// Rules on traffic into the subject's pods, in precedence order.
    pub ingress: Vec<AdminRule>,
    /// Rules on traffic out of the subject's pods, in precedence order.
    pub egress: Vec<AdminRule>,
}

/// The field holding a direction's rules and their peers.
pub fn rules_field(direction: Direction) -> (&'static str, &'static str) {
    match direction {
        Direction::Ingress => ("spec.ingress", "from"),
        Direction::Egress => ("spec.egress", "to"),
    }
}

impl AdminPolicy {
    /// The rules of one direction, in precedence order.
    pub fn rules(&self, direction: Direction) -> &[AdminRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The order policies of one tier are decided in: priority (the
    /// BaselineAdminNetworkPolicy, which has none, after every Baseline
    /// ClusterNetworkPolicy), then name, then kind (AdminNetworkPolicy before
    /// ClusterNetworkPolicy). Upstream leaves the order of equal priorities
    /// undefined; this is netverdict's, and `lint` warns where it matters.
    pub fn order_key(&self) -> (u32, &str, PolicyKind) {
        (
            self.priority.unwrap_or(MAX_PRIORITY + 1),
            self.key.name(),
            self.key.kind(),
        )
    }

    /// Whether the subject selects `pod` in a namespace labelled `ns_labels`.
    pub fn selects(
        &self,
        pod: &Pod,
        ns_labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        if pod.host_network {
            return false;
        }
        match &self.subject {
            AdminSubject::Namespaces(ns) => ns.matches(ns_labels),
            AdminSubject::Pods { namespaces, pods } => {
                namespaces.matches(ns_labels) && pods.matches(&pod.labels)
            }
        }
    }

    /// Every CIDR of the policy's `networks` peers.
    pub fn networks(&self) -> impl Iterator<Item = &IpNet> {
        self.ingress
            .iter()
            .chain(&self.egress)
            .flat_map(|r| &r.peers)
            .flat_map(|p| match p {
                AdminPeer::Networks(nets) => nets.as_slice(),
                _ => &[],
            })
    }

    /// Whether a rule has a `nodes` peer.
    pub fn has_node_peers(&self) -> bool {
        self.ingress
            .iter()
            .chain(&self.egress)
            .flat_map(|r| &r.peers)
            .any(|p| matches!(p, AdminPeer::Nodes(_)))
    }

    /// Whether a rule has a `domainNames` peer.
    pub fn has_domain_peers(&self) -> bool {
        self.egress
            .iter()
            .flat_map(|r| &r.peers)
            .any(|p| matches!(p, AdminPeer::DomainNames(_)))
    }

    /// Converts and validates an AdminNetworkPolicy.
    pub fn from_anp(anp: &v1alpha1::AdminNetworkPolicy) -> Result<Self, ObjectError> {
        let (key, fail) = cluster_named(PolicyKind::AdminNetworkPolicy, &anp.metadata)?;
        let spec = &anp.spec;
        let priority = priority(spec.priority, "spec.priority").map_err(&fail)?;
        let subject = subject(spec.subject.as_ref()).map_err(&fail)?;
        let ingress = v1alpha1_rules(&spec.ingress, Direction::Ingress, true).map_err(&fail)?;
        let egress = v1alpha1_rules(&spec.egress, Direction::Egress, true).map_err(&fail)?;
        Ok(AdminPolicy {
            key,
            tier: Tier::Admin,
            priority: Some(priority),
            subject,
            ingress,
            egress,
        })
    }

    /// Converts and validates a BaselineAdminNetworkPolicy (named `default`).
    pub fn from_banp(banp: &v1alpha1::BaselineAdminNetworkPolicy) -> Result<Self, ObjectError> {
        let (key, fail) = cluster_named(PolicyKind::BaselineAdminNetworkPolicy, &banp.metadata)?;
        if key.name() != "default" {
            return Err(fail(FieldError::new(
                "metadata.name",
                "a BaselineAdminNetworkPolicy must be named \"default\" (there is at most one)",
            )));
        }
        let spec = &banp.spec;
        let subject = subject(spec.subject.as_ref()).map_err(&fail)?;
        let ingress = v1alpha1_rules(&spec.ingress, Direction::Ingress, false).map_err(&fail)?;
        let egress = v1alpha1_rules(&spec.egress, Direction::Egress, false).map_err(&fail)?;
        Ok(AdminPolicy {
            key,
            tier: Tier::Baseline,
            priority: None,
            subject,
            ingress,
            egress,
        })
    }

    /// Converts and validates a ClusterNetworkPolicy.
    pub fn from_cnp(cnp: &v1alpha2::ClusterNetworkPolicy) -> Result<Self, ObjectError> {
        let (key, fail) = cluster_named(PolicyKind::ClusterNetworkPolicy, &cnp.metadata)?;
        let spec = &cnp.spec;
        let tier = match spec.tier.as_deref() {
            Some("Admin") => Tier::Admin,
            Some("Baseline") => Tier::Baseline,
            Some(other) => {
                return Err(fail(FieldError::new(
                    "spec.tier",
                    format!("unknown tier {other:?} (expected Admin or Baseline)"),
                )));
            }
            None => return Err(fail(FieldError::new("spec.tier", "missing"))),
        };
        let priority = priority(spec.priority, "spec.priority").map_err(&fail)?;
        let subject = subject(spec.subject.as_ref()).map_err(&fail)?;
        let ingress = v1alpha2_rules(&spec.ingress, Direction::Ingress).map_err(&fail)?;
        let egress = v1alpha2_rules(&spec.egress, Direction::Egress).map_err(&fail)?;
        Ok(AdminPolicy {
            key,
            tier,
            priority: Some(priority),
            subject,
            ingress,
            egress,
        })
    }
}

/// The key of a cluster-scoped object, and the function that turns a field
/// error into an error naming it (`AdminNetworkPolicy name`).
fn cluster_named(
    kind: PolicyKind,
    meta: &ObjectMeta,
) -> Result<(PolicyKey, impl Fn(FieldError) -> ObjectError + use<>), ObjectError> {
    let name = meta.name.clone().unwrap_or_default();
    let object = format!("{kind} {name}");
    if name.is_empty() {
        return Err(ObjectError {
            object,
            error: FieldError::new("metadata.name", "missing"),
        });
    }
    let key = PolicyKey::cluster_scoped(kind, name).ok_or_else(|| ObjectError {
        object: object.clone(),
        error: FieldError::new("kind", "not a cluster-scoped policy kind"),
    })?;
    Ok((key, move |error| ObjectError {
        object: object.clone(),
        error,
    }))
}

fn priority(value: Option<i32>, field: &str) -> Result<u32, FieldError> {
    let value = value.ok_or_else(|| FieldError::new(field, "missing"))?;
    u32::try_from(value)
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or_else(|| FieldError::new(field, format!("{value} is outside 0-{MAX_PRIORITY}")))
}

fn selector(s: Option<&LabelSelector>, field: &str) -> Result<Selector, FieldError> {
    match s {
        Some(s) => Selector::compile(s, field),
        None => Ok(Selector::default()),
    }
}

fn subject(subject: Option<&crd::Subject>) -> Result<AdminSubject, FieldError> {
    let subject = subject.ok_or_else(|| FieldError::new("spec.subject", "missing"))?;
    match (&subject.namespaces, &subject.pods) {
        (Some(ns), None) => Ok(AdminSubject::Namespaces(Selector::compile(
            ns,
            "spec.subject.namespaces",
        )?)),
        (None, Some(pods)) => Ok(AdminSubject::Pods {
            namespaces: selector(
                pods.namespace_selector.as_ref(),
                "spec.subject.pods.namespaceSelector",
            )?,
            pods: selector(pods.pod_selector.as_ref(), "spec.subject.pods.podSelector")?,
        }),
        _ => Err(FieldError::new(
            "spec.subject",
            "exactly one of namespaces and pods must be set",
        )),
    }
}

fn rule_name(name: Option<&String>, field: &str) -> Result<Option<String>, FieldError> {
    match name {
        Some(n) if n.chars().count() > 100 => {
            Err(FieldError::new(field, "longer than 100 characters"))
        }
        Some(n) if !n.is_empty() => Ok(Some(n.clone())),
        _ => Ok(None),
    }
}

fn peers(
    list: Option<&Vec<crd::Peer>>,
    direction: Direction,
    action: AdminAction,
    field: &str,
) -> Result<Vec<AdminPeer>, FieldError> {
    let list = match list {
        Some(l) if !l.is_empty() => l,
        _ => return Err(FieldError::new(field, "needs at least one peer")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let set = [
            p.namespaces.is_some(),
            p.pods.is_some(),
            p.nodes.is_some(),
            p.networks.is_some(),
            p.domain_names.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set > 1 {
            return Err(FieldError::new(
                at,
                "exactly one of namespaces, pods, nodes, networks and domainNames may be set",
            ));
        }
        let egress_only = |what: &str| {
            if direction == Direction::Ingress {
                Err(FieldError::new(
                    format!("{at}.{what}"),
                    format!("{what} peers are for egress rules only"),
                ))
            } else {
                Ok(())
            }
        };
        let peer = if let Some(ns) = &p.namespaces {
            AdminPeer::Namespaces(Selector::compile(ns, &format!("{at}.namespaces"))?)
        } else if let Some(pods) = &p.pods {
            AdminPeer::Pods {
                namespaces: selector(
                    pods.namespace_selector.as_ref(),
                    &format!("{at}.pods.namespaceSelector"),
                )?,
                pods: selector(
                    pods.pod_selector.as_ref(),
                    &format!("{at}.pods.podSelector"),
                )?,
            }
        } else if let Some(nodes) = &p.nodes {
            egress_only("nodes")?;
            AdminPeer::Nodes(Selector::compile(nodes, &format!("{at}.nodes"))?)
        } else if let Some(networks) = &p.networks {
            egress_only("networks")?;
            if networks.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.networks"),
                    "needs at least one CIDR",
                ));
            }
            let mut nets = Vec::with_capacity(networks.len());
            for (j, n) in networks.iter().enumerate() {
                nets.push(parse_cidr(n, &format!("{at}.networks[{j}]"))?);
            }
            AdminPeer::Networks(nets)
        } else if let Some(names) = &p.domain_names {
            egress_only("domainNames")?;
            if action != AdminAction::Allow {
                return Err(FieldError::new(
                    format!("{at}.domainNames"),
                    "domainNames peers are for Allow (Accept) rules only",
                ));
            }
            if names.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.domainNames"),
                    "needs at least one domain name",
                ));
            }
            let mut patterns = Vec::with_capacity(names.len());
            for (j, name) in names.iter().enumerate() {
                let pattern = DnsPattern::new(name).map_err(|reason| {
                    FieldError::new(
                        format!("{at}.domainNames[{j}]"),
                        format!("{name:?}: {reason}"),
                    )
                })?;
                patterns.push(pattern);
            }
            AdminPeer::DomainNames(patterns)
        } else {
            AdminPeer::Unrecognized
        };
        out.push(peer);
    }
    Ok(out)
}

/// The action of a rule; `pass` whether Pass is allowed (not in a
/// BaselineAdminNetworkPolicy); `allow` how Allow is spelled.
fn action(
    value: Option<&str>,
    field: &str,
    allow: &str,
    pass: bool,
) -> Result<AdminAction, FieldError> {
    match value {
        Some(v) if v == allow => Ok(AdminAction::Allow),
        Some("Deny") => Ok(AdminAction::Deny),
        Some("Pass") if pass => Ok(AdminAction::Pass),
        Some(other) => Err(FieldError::new(
            field,
            format!(
                "unknown action {other:?} (expected {allow}, Deny{})",
                if pass { " or Pass" } else { "" }
            ),
        )),
        None => Err(FieldError::new(field, "missing")),
    }
}

fn v1alpha1_rules(
    rules: &[v1alpha1::Rule],
    direction: Direction,
    pass: bool,
) -> Result<Vec<AdminRule>, FieldError> {
    let (list, peers_field) = rules_field(direction);
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let name = rule_name(r.name.as_ref(), &format!("{at}.name"))?;
        let action = action(r.action.as_deref(), &format!("{at}.action"), "Allow", pass)?;
        let peer_list = match direction {
            Direction::Ingress => r.from.as_ref(),
            Direction::Egress => r.to.as_ref(),
        };
        let peers = peers(peer_list, direction, action, &format!("{at}.{peers_field}"))?;
        let mut ports = Vec::new();
        if let Some(list) = &r.ports {
            if list.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.ports"),
                    "needs at least one port",
                ));
            }
            for (j, p) in list.iter().enumerate() {
                let pf = format!("{at}.ports[{j}]");
                let port = match (&p.port_number, &p.named_port, &p.port_range) {
                    (Some(n), None, None) => AdminPort::Number {
                        protocol: protocol_field(
                            n.protocol.as_deref(),
                            &format!("{pf}.portNumber.protocol"),
                        )?,
                        port: required_port(n.port, &format!("{pf}.portNumber.port"))?,
                    },
                    (None, Some(name), None) => {
                        validate_port_name(name, &format!("{pf}.namedPort"))?;
                        AdminPort::Named(name.clone())
                    }
                    (None, None, Some(r)) => {
                        let protocol = protocol_field(
                            r.protocol.as_deref(),
                            &format!("{pf}.portRange.protocol"),
                        )?;
                        let (start, end) = range(r.start, r.end, &format!("{pf}.portRange"))?;
                        AdminPort::Range {
                            protocol,
                            start,
                            end,
                        }
                    }
                    _ => {
                        return Err(FieldError::new(
                            pf,
                            "exactly one of portNumber, namedPort and portRange must be set",
                        ));
                    }
                };
                ports.push(port);
            }
        }
        check_named_ports(&peers, &ports, &at)?;
        out.push(AdminRule {
            name,
            action,
            peers,
            ports,
        });
    }
    Ok(out)
}

fn v1alpha2_rules(
    rules: &[v1alpha2::Rule],
    direction: Direction,
) -> Result<Vec<AdminRule>, FieldError> {
    let (list, peers_field) = rules_field(direction);
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let name = rule_name(r.name.as_ref(), &format!("{at}.name"))?;
        let action = action(r.action.as_deref(), &format!("{at}.action"), "Accept", true)?;
        let peer_list = match direction {
            Direction::Ingress => r.from.as_ref(),
            Direction::Egress => r.to.as_ref(),
        };
        let peers = peers(peer_list, direction, action, &format!("{at}.{peers_field}"))?;
        let mut ports = Vec::new();
        if let Some(list) = &r.protocols {
            if list.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.protocols"),
                    "needs at least one protocol",
                ));
            }
            for (j, p) in list.iter().enumerate() {
                let pf = format!("{at}.protocols[{j}]");
                let port = match (&p.tcp, &p.udp, &p.sctp, &p.destination_named_port) {
                    (Some(ports), None, None, None) => {
                        protocol_ports(Protocol::Tcp, ports, &format!("{pf}.tcp"))?
                    }
                    (None, Some(ports), None, None) => {
                        protocol_ports(Protocol::Udp, ports, &format!("{pf}.udp"))?
                    }
                    (None, None, Some(ports), None) => {
                        protocol_ports(Protocol::Sctp, ports, &format!("{pf}.sctp"))?
                    }
                    (None, None, None, Some(name)) => {
                        validate_port_name(name, &format!("{pf}.destinationNamedPort"))?;
                        AdminPort::Named(name.clone())
                    }
                    _ => {
                        return Err(FieldError::new(
                            pf,
                            "exactly one of tcp, udp, sctp and destinationNamedPort must be set",
                        ));
                    }
                };
                ports.push(port);
            }
        }
        check_named_ports(&peers, &ports, &at)?;
        out.push(AdminRule {
            name,
            action,
            peers,
            ports,
        });
    }
    Ok(out)
}

fn protocol_ports(
    protocol: Protocol,
    ports: &v1alpha2::ProtocolPorts,
    field: &str,
) -> Result<AdminPort, FieldError> {
    let Some(port) = &ports.destination_port else {
        return Ok(AdminPort::Protocol(protocol));
    };
    let at = format!("{field}.destinationPort");
    match (port.number, &port.range) {
        (Some(n), None) => Ok(AdminPort::Number {
            protocol,
            port: port_number(n, &format!("{at}.number"))?,
        }),
        (None, Some(r)) => {
            let (start, end) = range(r.start, r.end, &format!("{at}.range"))?;
            Ok(AdminPort::Range {
                protocol,
                start,
                end,
            })
        }
        _ => Err(FieldError::new(
            at,
            "exactly one of number and range must be set",
        )),
    }
}

fn required_port(n: Option<i32>, field: &str) -> Result<u16, FieldError> {
    port_number(n.ok_or_else(|| FieldError::new(field, "missing"))?, field)
}

fn range(start: Option<i32>, end: Option<i32>, field: &str) -> Result<(u16, u16), FieldError> {
    let start = required_port(start, &format!("{field}.start"))?;
    let end = required_port(end, &format!("{field}.end"))?;
    if end < start {
        return Err(FieldError::new(
            format!("{field}.end"),
            format!("end {end} is below start {start}"),
        ));
    }
    Ok((start, end))
}

/// Named ports need pod peers (networks, nodes and domain names have none).
fn check_named_ports(peers: &[AdminPeer], ports: &[AdminPort], at: &str) -> Result<(), FieldError> {
    let named = ports.iter().any(|p| matches!(p, AdminPort::Named(_)));
    let not_pods = peers.iter().any(|p| {
        matches!(
            p,
            AdminPeer::Nodes(_) | AdminPeer::Networks(_) | AdminPeer::DomainNames(_)
        )
    });
    if named && not_pods {
        return Err(FieldError::new(
            at,
            "named ports cannot be used with networks, nodes or domainNames peers, which have no named ports",
        ));
    }
    Ok(())
}
