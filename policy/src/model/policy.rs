//! NetworkPolicy as the engine evaluates it: the policy's pod selector, its
//! ingress and egress rules, their peers (pods by namespace and pod selectors,
//! or ipBlocks) and ports, validated from networking.k8s.io/v1 with every error
//! naming the field.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::keys::{PolicyKey, PolicyKind};
use super::ports::{PortRef, Protocol};
use super::validate::{named, parse_cidr, port_number, protocol_field, validate_port_name};
use super::workload::Pod;
use crate::error::{FieldError, ObjectError};
use crate::selector::Selector;

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PortRule {
    pub protocol: Protocol,
    /// None: every port of the protocol.
    pub port: Option<PortRef>,
    /// With a numeric port: the last port of the range.
    pub end_port: Option<u16>,
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.port, self.end_port) {
            (None, _) => write!(f, "any {} port", self.protocol),
            (Some(p), Some(end)) => write!(f, "{}/{}-{}", self.protocol, p, end),
            (Some(p), None) => write!(f, "{}/{}", self.protocol, p),
        }
    }
}

/// A CIDR with exceptions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `ip` is in the CIDR and in none of the exceptions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if !self.except.is_empty() {
            let except: Vec<String> = self.except.iter().map(|e| e.to_string()).collect();
            write!(f, " except {}", except.join(","))?;
        }
        Ok(())
    }
}

/// Which namespaces a pod peer may be in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMatch {
    /// No namespaceSelector: the policy's own namespace.
    PolicyNamespace,
    /// Namespaces whose labels match.
    Selector(Selector),
}

/// One entry of a rule's `from`/`to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Pods selected by namespace and pod selectors (both must match; a missing
    /// podSelector selects every pod of the selected namespaces).
    Pods {
        namespaces: NamespaceMatch,
        pods: Option<Selector>,
    },
    /// Addresses in a CIDR, pod IPs included.
    IpBlock(IpBlock),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pods { namespaces, pods } => {
                match namespaces {
                    NamespaceMatch::PolicyNamespace => {
                        f.write_str("pods in the policy's namespace")?
                    }
                    NamespaceMatch::Selector(s) if s.is_empty() => {
                        f.write_str("pods in any namespace")?
                    }
                    NamespaceMatch::Selector(s) => write!(f, "pods in namespaces with {s}")?,
                }
                match pods {
                    Some(s) if !s.is_empty() => write!(f, " with labels {s}"),
                    _ => Ok(()),
                }
            }
            Peer::IpBlock(block) => write!(f, "ipBlock {block}"),
        }
    }
}

/// One ingress or egress rule. Empty `peers` allows every peer; empty `ports`
/// allows every port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortRule>,
}

/// A direction of policy, relative to the pod a policy selects: ingress is
/// traffic into it, egress traffic out of it. (Where the kernel saw a packet
/// is another thing: `netverdict_ebpf::TrafficDirection`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkPolicy {
    /// Always of kind NetworkPolicy, with a namespace.
    pub key: PolicyKey,
    pub pod_selector: Selector,
    /// Some when the policy applies to ingress (its pods are isolated for
    /// ingress); the rules may be empty (allow nothing).
    pub ingress: Option<Vec<Rule>>,
    /// Some when the policy applies to egress.
    pub egress: Option<Vec<Rule>>,
}

impl NetworkPolicy {
    /// The policy's namespace: the only namespace whose pods it selects, and
    /// the one a podSelector peer without namespaceSelector admits.
    pub fn namespace(&self) -> &str {
        debug_assert_eq!(self.key.kind(), PolicyKind::NetworkPolicy);
        self.key.namespace().unwrap_or_default()
    }

    /// The rules of one direction, if the policy applies to it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy selects `pod` (host-network pods are never selected).
    pub fn selects(&self, pod: &Pod) -> bool {
        !pod.host_network
            && self.namespace() == pod.key.namespace
            && self.pod_selector.matches(&pod.labels)
    }

    /// The ipBlocks the policy's rules name (each occurrence once per peer).
    pub fn ip_blocks(&self) -> impl Iterator<Item = &IpBlock> {
        self.ingress
            .iter()
            .chain(self.egress.iter())
            .flatten()
            .flat_map(|rule| rule.peers.iter())
            .filter_map(|peer| match peer {
                Peer::IpBlock(block) => Some(block),
                Peer::Pods { .. } => None,
            })
    }

    /// Converts and validates a NetworkPolicy. `policyTypes` defaults as the API
    /// server does: Ingress always, Egress when the policy has egress rules.
    pub fn from_k8s(np: &net::NetworkPolicy) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("NetworkPolicy", &np.metadata)?;
        let key = PolicyKey::network_policy(namespace, name);
        let spec = np
            .spec
            .as_ref()
            .ok_or_else(|| fail(FieldError::new("spec", "missing")))?;
        let pod_selector = match &spec.pod_selector {
            Some(s) => Selector::compile(s, "spec.podSelector").map_err(&fail)?,
            None => Selector::default(),
        };
        let (mut applies_ingress, mut applies_egress) = (false, false);
        // The API server defaults an empty list as it does an absent one
        // (`len(policyTypes) == 0`).
        match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => applies_ingress = true,
                        "Egress" => applies_egress = true,
                        other => {
                            return Err(fail(FieldError::new(
                                format!("spec.policyTypes[{i}]"),
                                format!(
                                    "unknown policy type {other:?} (expected Ingress or Egress)"
                                ),
                            )));
                        }
                    }
                }
            }
            None => {
                applies_ingress = true;
                applies_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }
        let ingress = if applies_ingress {
            let mut rules = Vec::new();
            for (i, r) in spec.ingress.iter().flatten().enumerate() {
                let at = format!("spec.ingress[{i}]");
                let peers =
                    convert_peers(r.from.as_deref(), &format!("{at}.from")).map_err(&fail)?;
                let ports =
                    convert_ports(r.ports.as_deref(), &format!("{at}.ports")).map_err(&fail)?;
                rules.push(Rule { peers, ports });
            }
            Some(rules)
        } else {
            None
        };
        let egress = if applies_egress {
            let mut rules = Vec::new();
            for (i, r) in spec.egress.iter().flatten().enumerate() {
                let at = format!("spec.egress[{i}]");
                let peers = convert_peers(r.to.as_deref(), &format!("{at}.to")).map_err(&fail)?;
                let ports =
                    convert_ports(r.ports.as_deref(), &format!("{at}.ports")).map_err(&fail)?;
                rules.push(Rule { peers, ports });
            }
            Some(rules)
        } else {
            None
        };
        Ok(NetworkPolicy {
            key,
            pod_selector,
            ingress,
            egress,
        })
    }
}

fn convert_peers(
    peers: Option<&[net::NetworkPolicyPeer]>,
    field: &str,
) -> Result<Vec<Peer>, FieldError> {
    let mut out = Vec::new();
    for (i, p) in peers.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        if let Some(block) = &p.ip_block {
            if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                return Err(FieldError::new(
                    &at,
                    "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
                ));
            }
            let cidr = parse_cidr(&block.cidr, &format!("{at}.ipBlock.cidr"))?;
            let mut except = Vec::new();
            for (j, e) in block.except.iter().flatten().enumerate() {
                let ef = format!("{at}.ipBlock.except[{j}]");
                let net = parse_cidr(e, &ef)?;
                if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
                    return Err(FieldError::new(
                        ef,
                        format!("{net} is not strictly inside the cidr {cidr}"),
                    ));
                }
                except.push(net);
            }
            out.push(Peer::IpBlock(IpBlock { cidr, except }));
            continue;
        }
        let namespaces = match &p.namespace_selector {
            Some(s) => {
                NamespaceMatch::Selector(Selector::compile(s, &format!("{at}.namespaceSelector"))?)
            }
            None => NamespaceMatch::PolicyNamespace,
        };
        let pods = match &p.pod_selector {
            Some(s) => Some(Selector::compile(s, &format!("{at}.podSelector"))?),
            None => None,
        };
        if pods.is_none() && matches!(namespaces, NamespaceMatch::PolicyNamespace) {
            return Err(FieldError::new(
                at,
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ));
        }
        out.push(Peer::Pods { namespaces, pods });
    }
    Ok(out)
}

fn convert_ports(
    ports: Option<&[net::NetworkPolicyPort]>,
    field: &str,
) -> Result<Vec<PortRule>, FieldError> {
    let mut out = Vec::new();
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let protocol = protocol_field(p.protocol.as_deref(), &format!("{at}.protocol"))?;
        let port = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => {
                Some(PortRef::Number(port_number(*n, &format!("{at}.port"))?))
            }
            Some(IntOrString::String(s)) => {
                validate_port_name(s, &format!("{at}.port"))?;
                Some(PortRef::Name(s.clone()))
            }
        };
        let end_port = match (p.end_port, &port) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(FieldError::new(
                    format!("{at}.endPort"),
                    "endPort needs port",
                ));
            }
            (Some(_), Some(PortRef::Name(_))) => {
                return Err(FieldError::new(
                    format!("{at}.endPort"),
                    "endPort needs a numeric port, not a named one",
                ));
            }
            (Some(end), Some(PortRef::Number(start))) => {
                let end = port_number(end, &format!("{at}.endPort"))?;
                if end < *start {
                    return Err(FieldError::new(
                        format!("{at}.endPort"),
                        format!("endPort {end} is below port {start}"),
                    ));
                }
                Some(end)
            }
        };
        out.push(PortRule {
            protocol,
            port,
            end_port,
        });
    }
    Ok(out)
}
