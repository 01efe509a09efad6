//! The validated cluster model: namespaces, pods, NetworkPolicies, services,
//! endpoint slices and nodes as the engine needs them, converted from the
//! k8s-openapi types with every field checked. A conversion error names the field.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::error::{FieldError, ObjectError};
use crate::selector::{Labels, Selector};

/// The namespace label the API server sets on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace used for namespaced objects that do not say theirs.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A transport protocol NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The IANA protocol number (6, 17, 132).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Parses a protocol as the API writes it (`TCP`), or absent as TCP.
    fn from_field(value: Option<&str>, field: &str) -> Result<Protocol, FieldError> {
        match value {
            None => Ok(Protocol::Tcp),
            Some(v) => Protocol::from_str(v).map_err(|_| {
                FieldError::new(
                    field,
                    format!("unknown protocol {v:?} (expected TCP, UDP or SCTP)"),
                )
            }),
        }
    }
}

impl FromStr for Protocol {
    type Err = ();
    /// Accepts `TCP`, `UDP`, `SCTP` in any case.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Serialized as `namespace/name`.
impl Serialize for PodKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A NetworkPolicy's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PolicyKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Serialized as `namespace/name`.
impl Serialize for PolicyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A namespace and its labels (always including `kubernetes.io/metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with only the labels the API server gives every namespace.
    pub fn implicit(name: &str) -> Self {
        Namespace {
            name: name.to_string(),
            labels: Arc::new(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
        }
    }

    pub fn from_k8s(ns: &core::Namespace) -> Result<Self, ObjectError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let object = format!("Namespace {name}");
        if name.is_empty() {
            return Err(ObjectError {
                object,
                error: FieldError::new("metadata.name", "missing"),
            });
        }
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        validate_labels(&labels).map_err(|error| ObjectError {
            object: object.clone(),
            error,
        })?;
        // The API server sets this label to the name on every namespace,
        // whatever the manifest says; hand-written manifests often leave it out.
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Ok(Namespace {
            name,
            labels: Arc::new(labels),
        })
    }
}

/// A port a container declares, which named ports in policies resolve against.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod as the policy engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub key: PodKey,
    pub labels: Labels,
    /// The pod's IPs (status.podIPs, else status.podIP); empty before it runs.
    pub ips: Vec<IpAddr>,
    /// Host-network pods use their node's IP and are never selected by policies.
    pub host_network: bool,
    /// The node the pod runs on (spec.nodeName).
    pub node: Option<String>,
    /// The ports of all containers, for named-port resolution.
    pub ports: Arc<[ContainerPort]>,
}

impl Pod {
    /// Converts a pod; `require_ip` rejects pods without status.podIP.
    pub fn from_k8s(pod: &core::Pod, require_ip: bool) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("Pod", &pod.metadata)?;
        let key = PodKey::new(namespace, name);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        validate_labels(&labels).map_err(&fail)?;
        let mut ips = Vec::new();
        if let Some(status) = &pod.status {
            for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
                let parsed = parse_ip(&ip.ip, &format!("status.podIPs[{i}].ip")).map_err(&fail)?;
                if !ips.contains(&parsed) {
                    ips.push(parsed);
                }
            }
            if let Some(ip) = &status.pod_ip {
                let parsed = parse_ip(ip, "status.podIP").map_err(&fail)?;
                if !ips.contains(&parsed) {
                    ips.insert(0, parsed);
                }
            }
        }
        // A finished pod's address is back in the pool (its status keeps it,
        // and another pod may hold it already): it holds none.
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        if finished {
            ips.clear();
        }
        if require_ip && ips.is_empty() && !finished {
            return Err(fail(FieldError::new(
                "status.podIP",
                "the pod has no IP address (set status.podIP, or let `netverdict lab up` allocate one)",
            )));
        }
        let spec = pod.spec.as_ref();
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c))
                .chain(
                    spec.init_containers
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c)),
                );
            for (at, container) in containers {
                for (j, p) in container.ports.iter().flatten().enumerate() {
                    let field = format!("{at}.ports[{j}]");
                    let port = port_number(p.container_port, &format!("{field}.containerPort"))
                        .map_err(&fail)?;
                    let protocol =
                        Protocol::from_field(p.protocol.as_deref(), &format!("{field}.protocol"))
                            .map_err(&fail)?;
                    if let Some(name) = &p.name {
                        validate_port_name(name, &format!("{field}.name")).map_err(&fail)?;
                    }
                    ports.push(ContainerPort {
                        name: p.name.clone(),
                        port,
                        protocol,
                    });
                }
            }
        }
        Ok(Pod {
            key,
            labels: Arc::new(labels),
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node: spec.and_then(|s| s.node_name.clone()),
            ports: ports.into(),
        })
    }

    /// Resolves a named port against this pod's container ports.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// A port in a rule: a number or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => write!(f, "{name}"),
        }
    }
}

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

/// Traffic direction relative to the selected pod.
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
pub struct Policy {
    pub key: PolicyKey,
    pub pod_selector: Selector,
    /// Some when the policy applies to ingress (its pods are isolated for
    /// ingress); the rules may be empty (allow nothing).
    pub ingress: Option<Vec<Rule>>,
    /// Some when the policy applies to egress.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// The rules of one direction, if the policy applies to it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Converts and validates a NetworkPolicy. `policyTypes` defaults as the API
    /// server does: Ingress always, Egress when the policy has egress rules.
    pub fn from_k8s(np: &net::NetworkPolicy) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("NetworkPolicy", &np.metadata)?;
        let key = PolicyKey::new(namespace, name);
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
        Ok(Policy {
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
        let protocol = Protocol::from_field(p.protocol.as_deref(), &format!("{at}.protocol"))?;
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

/// A port of a service, and the pod port it forwards to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// The backend port: a number or a container port name.
    pub target_port: PortRef,
}

/// A Service: its cluster IPs, pod selector and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    /// None for services without selector (their endpoints come from slices).
    pub selector: Option<Selector>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn from_k8s(svc: &core::Service) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("Service", &svc.metadata)?;
        let spec = svc.spec.clone().unwrap_or_default();
        let mut cluster_ips = Vec::new();
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            if ip != "None" {
                cluster_ips.push(parse_ip(ip, &format!("spec.clusterIPs[{i}]")).map_err(&fail)?);
            }
        }
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None" && !ip.is_empty())
        {
            let ip = parse_ip(ip, "spec.clusterIP").map_err(&fail)?;
            if !cluster_ips.contains(&ip) {
                cluster_ips.insert(0, ip);
            }
        }
        let selector = spec
            .selector
            .as_ref()
            .map(|s| Selector::from_labels(s.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let at = format!("spec.ports[{i}]");
            let port = port_number(p.port, &format!("{at}.port")).map_err(&fail)?;
            let protocol = Protocol::from_field(p.protocol.as_deref(), &format!("{at}.protocol"))
                .map_err(&fail)?;
            let target_port = match &p.target_port {
                None => PortRef::Number(port),
                Some(IntOrString::Int(n)) => {
                    PortRef::Number(port_number(*n, &format!("{at}.targetPort")).map_err(&fail)?)
                }
                Some(IntOrString::String(s)) => {
                    validate_port_name(s, &format!("{at}.targetPort")).map_err(&fail)?;
                    PortRef::Name(s.clone())
                }
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                port,
                protocol,
                target_port,
            });
        }
        Ok(Service {
            namespace,
            name,
            cluster_ips,
            selector,
            ports,
        })
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub pod: Option<PodKey>,
}

/// An EndpointSlice: the backends of a service, by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub endpoints: Vec<SliceEndpoint>,
    /// Port name (as in the service), number and protocol.
    pub ports: Vec<ContainerPort>,
}

impl EndpointSlice {
    pub fn from_k8s(slice: &discovery::EndpointSlice) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("EndpointSlice", &slice.metadata)?;
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name").cloned());
        let mut endpoints = Vec::new();
        for (i, e) in slice.endpoints.iter().enumerate() {
            let mut addresses = Vec::new();
            if slice.address_type == "IPv4" || slice.address_type == "IPv6" {
                for (j, a) in e.addresses.iter().enumerate() {
                    addresses.push(
                        parse_ip(a, &format!("endpoints[{i}].addresses[{j}]")).map_err(&fail)?,
                    );
                }
            }
            let pod = e
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| {
                    Some(PodKey::new(
                        t.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        t.name.clone()?,
                    ))
                });
            endpoints.push(SliceEndpoint { addresses, pod });
        }
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            let Some(n) = p.port else { continue };
            ports.push(ContainerPort {
                name: p.name.clone(),
                port: port_number(n, &format!("ports[{i}].port")).map_err(&fail)?,
                protocol: Protocol::from_field(
                    p.protocol.as_deref(),
                    &format!("ports[{i}].protocol"),
                )
                .map_err(&fail)?,
            });
        }
        Ok(EndpointSlice {
            namespace,
            name,
            service,
            endpoints,
            ports,
        })
    }
}

/// A node and its addresses (traffic between a pod and its node is always allowed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

impl Node {
    pub fn from_k8s(node: &core::Node) -> Result<Self, ObjectError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let object = format!("Node {name}");
        let mut ips = Vec::new();
        for (i, a) in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                let ip = parse_ip(&a.address, &format!("status.addresses[{i}].address")).map_err(
                    |error| ObjectError {
                        object: object.clone(),
                        error,
                    },
                )?;
                ips.push(ip);
            }
        }
        Ok(Node { name, ips })
    }
}

/// The namespace and name of a namespaced object, and the function that turns a
/// field error into an error naming the object (`Kind namespace/name`). A
/// missing name is itself an error.
fn named(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String, impl Fn(FieldError) -> ObjectError + use<>), ObjectError> {
    let namespace = namespace_of(meta);
    let name = meta.name.clone().unwrap_or_default();
    let object = format!("{kind} {namespace}/{name}");
    if name.is_empty() {
        return Err(ObjectError {
            object,
            error: FieldError::new("metadata.name", "missing"),
        });
    }
    Ok((namespace, name, move |error| ObjectError {
        object: object.clone(),
        error,
    }))
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for key in labels.keys() {
        crate::selector::validate_label_key(key, "metadata.labels")?;
    }
    Ok(())
}

fn parse_ip(s: &str, field: &str) -> Result<IpAddr, FieldError> {
    s.parse()
        .map_err(|_| FieldError::new(field, format!("invalid IP address {s:?}")))
}

fn parse_cidr(s: &str, field: &str) -> Result<IpNet, FieldError> {
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .map_err(|_| FieldError::new(field, format!("invalid CIDR {s:?}")))
}

fn port_number(n: i32, field: &str) -> Result<u16, FieldError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| FieldError::new(field, format!("port {n} is outside 1-65535")))
}

/// A port name is an IANA service name: at most 15 lowercase letters, digits and
/// hyphens, with at least one letter, no leading/trailing or double hyphen.
fn validate_port_name(name: &str, field: &str) -> Result<(), FieldError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{name:?} is neither a port number nor a valid port name"),
        ))
    }
}
