//! The verdict engine: what standard NetworkPolicy says about a flow.
//!
//! A flow leaves its source through the source pod's egress and enters its
//! destination through the destination pod's ingress; each direction is decided
//! on its own and the flow is allowed when both allow it:
//!
//! - an endpoint that is not a pod (external IP, node, host-network pod) is never
//!   isolated;
//! - a pod no policy selects for a direction is not isolated for it;
//! - an isolated pod admits a flow when any rule of any selecting policy matches
//!   both the peer and the port (policies are additive; there is no deny rule).
//!
//! Choices where the API leaves behaviour to the implementation, as the upstream
//! conformance tests (e2e `netpol` suite) expect them:
//! - a pod connecting to itself (its own IP) is always allowed (the suite's
//!   `AllowLoopback`);
//! - ipBlock matches pod IPs as well as external ones (the suite's CIDR tests use
//!   pod IPs);
//! - traffic between a pod and its own node is always allowed;
//! - named ports resolve against the destination pod's container ports, for
//!   egress rules as for ingress rules; a named port on a non-pod destination
//!   matches nothing.
//!
//! Verdicts are cached per (source identity, destination identity, port,
//! protocol) where an identity is a namespace, label set and container ports plus
//! the set of ipBlocks the IP falls in; policy or namespace-label changes empty the
//! cache, pod changes do not need to (a changed pod has a new identity).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::FlowError;
use crate::model::{
    Direction, NamespaceMatch, Peer, Pod, PodKey, Policy, PortRef, PortRule, Protocol,
};
use crate::state::{ClusterState, EXTERNAL, cache_key};
use crate::verdict::{DirectionVerdict, Failure, Miss, RuleRef, Status, Verdict};

/// One side of a flow: a pod by name, or an IP address (resolved to the pod that
/// holds it, if any).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Endpoint {
    Pod(PodKey),
    Ip(IpAddr),
}

impl FromStr for Endpoint {
    type Err = FlowError;

    /// `namespace/pod` or an IPv4/IPv6 address.
    fn from_str(s: &str) -> Result<Self, FlowError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Endpoint::Pod(PodKey::new(ns, name)))
            }
            _ => Err(FlowError::BadEndpoint(s.to_string())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(key) => write!(f, "{key}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A connection attempt: source, destination, destination port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
}

impl Flow {
    pub fn new(src: Endpoint, dst: Endpoint, port: u16, protocol: Protocol) -> Self {
        Flow {
            src,
            dst,
            port,
            protocol,
        }
    }
}

/// A flow endpoint resolved against the state.
#[derive(Clone, Debug)]
struct View<'a> {
    /// The pod, if the endpoint is one (host-network pods included).
    pod: Option<&'a Arc<Pod>>,
    ip: IpAddr,
    identity: u32,
    ip_class: u32,
}

impl View<'_> {
    /// The pod, if policies can select it.
    fn selectable(&self) -> Option<&Arc<Pod>> {
        self.pod.filter(|p| !p.host_network)
    }

    fn unselected_status(&self) -> Status {
        match self.pod {
            Some(p) if p.host_network => Status::HostNetwork,
            _ => Status::NotAPod,
        }
    }
}

/// How the engine finds the policies selecting a pod.
#[derive(Clone, Copy)]
enum Selection {
    Indexed,
    Scan,
}

impl ClusterState {
    /// The verdict on a flow, from the cache when the same identities were asked
    /// about since the last policy change.
    pub fn verdict(&self, flow: &Flow) -> Result<Arc<Verdict>, FlowError> {
        let (src, dst) = self.resolve(flow)?;
        if let Some(v) = self.special_case(&src, &dst) {
            return Ok(Arc::new(v));
        }
        let Some(key) = cache_key(
            src.identity,
            src.ip_class,
            dst.identity,
            dst.ip_class,
            flow.port,
            flow.protocol,
        ) else {
            let verdict = self.evaluate(&src, &dst, flow.port, flow.protocol, Selection::Indexed);
            return Ok(Arc::new(verdict));
        };
        if let Some(hit) = self.cache_get(key) {
            return Ok(hit);
        }
        let verdict = self.evaluate(&src, &dst, flow.port, flow.protocol, Selection::Indexed);
        Ok(self.cache_insert(key, verdict))
    }

    /// The verdict on a flow at time `at` (in the state's time, see
    /// [`ClusterState::set_time`]): an IP endpoint resolves to the pod that
    /// held the IP then ([`ClusterState::holder_at`]), so a recycled pod IP is
    /// judged as the pod that used it. From the cache when both sides are
    /// current holders (as [`ClusterState::verdict`]); evaluated afresh, not
    /// cached, when a side is a departed pod (or an earlier version of one).
    pub fn verdict_at(&self, flow: &Flow, at: SystemTime) -> Result<Arc<Verdict>, FlowError> {
        let past = |e: &Endpoint| match e {
            Endpoint::Ip(ip) => self
                .holder_at(*ip, at)
                .filter(|h| !h.current)
                .map(|h| (h.pod, *ip)),
            Endpoint::Pod(_) => None,
        };
        let (src_past, dst_past) = (past(&flow.src), past(&flow.dst));
        if src_past.is_none() && dst_past.is_none() {
            return self.verdict(flow);
        }
        if flow.port == 0 {
            return Err(FlowError::BadPort);
        }
        // Identities only key the cache, which departed pods stay out of.
        let departed_identity = EXTERNAL - 2;
        let src = match src_past {
            Some((pod, ip)) => self.pod_view(pod, departed_identity, ip),
            None => self.view(&flow.src, None)?,
        };
        let dst = match dst_past {
            Some((pod, ip)) => self.pod_view(pod, departed_identity, ip),
            None => self.view(&flow.dst, Some(src.ip))?,
        };
        let verdict = self.special_case(&src, &dst).unwrap_or_else(|| {
            self.evaluate(&src, &dst, flow.port, flow.protocol, Selection::Indexed)
        });
        Ok(Arc::new(verdict))
    }

    /// The verdict computed afresh through the label index (no cache).
    pub fn verdict_uncached(&self, flow: &Flow) -> Result<Verdict, FlowError> {
        let (src, dst) = self.resolve(flow)?;
        Ok(self.special_case(&src, &dst).unwrap_or_else(|| {
            self.evaluate(&src, &dst, flow.port, flow.protocol, Selection::Indexed)
        }))
    }

    /// The verdict computed by scanning every policy of the cluster: the
    /// reference the indexed engine is checked and measured against.
    pub fn verdict_by_scan(&self, flow: &Flow) -> Result<Verdict, FlowError> {
        let (src, dst) = self.resolve(flow)?;
        Ok(self.special_case(&src, &dst).unwrap_or_else(|| {
            self.evaluate(&src, &dst, flow.port, flow.protocol, Selection::Scan)
        }))
    }

    /// The addresses a flow's endpoints use (a pod named by key uses its address
    /// of the other side's family).
    pub fn flow_ips(&self, flow: &Flow) -> Result<(IpAddr, IpAddr), FlowError> {
        let (src, dst) = self.resolve(flow)?;
        Ok((src.ip, dst.ip))
    }

    /// The pod an endpoint names or whose IP it is, if any.
    pub fn endpoint_pod(&self, endpoint: &Endpoint) -> Option<&Arc<Pod>> {
        match endpoint {
            Endpoint::Pod(key) => self.pod(key),
            Endpoint::Ip(ip) => self.pod_by_ip(*ip),
        }
    }

    fn resolve(&self, flow: &Flow) -> Result<(View<'_>, View<'_>), FlowError> {
        if flow.port == 0 {
            return Err(FlowError::BadPort);
        }
        let other_ip = |e: &Endpoint| match e {
            Endpoint::Ip(ip) => Some(*ip),
            Endpoint::Pod(_) => None,
        };
        let src = self.view(&flow.src, other_ip(&flow.dst))?;
        let dst = self.view(&flow.dst, Some(src.ip))?;
        Ok((src, dst))
    }

    /// Resolves an endpoint; a pod named without IP uses its address of the
    /// family of `peer_ip` when it has one.
    fn view(&self, endpoint: &Endpoint, peer_ip: Option<IpAddr>) -> Result<View<'_>, FlowError> {
        match endpoint {
            Endpoint::Pod(key) => {
                let entry = self
                    .pod_entry(key)
                    .ok_or_else(|| FlowError::UnknownPod(key.to_string()))?;
                let pod = &entry.pod;
                let ip = peer_ip
                    .and_then(|peer| pod.ips.iter().find(|ip| ip.is_ipv4() == peer.is_ipv4()))
                    .or(pod.ips.first())
                    .copied()
                    .ok_or_else(|| FlowError::PodWithoutIp(key.to_string()))?;
                Ok(self.pod_view(pod, entry.identity, ip))
            }
            Endpoint::Ip(ip) => match self.ip_entry(*ip) {
                Some(entry) => Ok(View {
                    pod: Some(&entry.pod),
                    ip: *ip,
                    identity: entry.identity,
                    ip_class: entry.ip_class,
                }),
                None => Ok(View {
                    pod: None,
                    ip: *ip,
                    identity: EXTERNAL,
                    ip_class: self.ip_class(*ip),
                }),
            },
        }
    }

    fn pod_view<'a>(&'a self, pod: &'a Arc<Pod>, identity: u32, ip: IpAddr) -> View<'a> {
        View {
            pod: Some(pod),
            ip,
            // Host-network pods are addresses of their node for policy purposes.
            identity: if pod.host_network {
                EXTERNAL - 1
            } else {
                identity
            },
            ip_class: self.ip_class(ip),
        }
    }

    /// Self traffic and pod-to-own-node traffic: allowed whatever the policies say.
    fn special_case(&self, src: &View, dst: &View) -> Option<Verdict> {
        let same_pod = match (src.pod, dst.pod) {
            // One Arc per pod: the index and the pod map share it.
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if same_pod || src.ip == dst.ip {
            return Some(self.always_allowed(src, dst, Status::SelfTraffic, Status::SelfTraffic));
        }
        if let Some(pod) = src.selectable()
            && dst.selectable().is_none()
            && self.is_node_of(pod, dst.ip)
        {
            return Some(self.always_allowed(src, dst, Status::NodeLocal, dst.unselected_status()));
        }
        if let Some(pod) = dst.selectable()
            && src.selectable().is_none()
            && self.is_node_of(pod, src.ip)
        {
            return Some(self.always_allowed(src, dst, src.unselected_status(), Status::NodeLocal));
        }
        None
    }

    fn always_allowed(&self, src: &View, dst: &View, egress: Status, ingress: Status) -> Verdict {
        let side = |view: &View, direction: Direction, status: Status| {
            let selected_by: Vec<_> = match view.selectable() {
                Some(pod) => self
                    .policies_selecting(pod, direction)
                    .iter()
                    .map(|p| p.key.clone())
                    .collect(),
                None => Vec::new(),
            };
            DirectionVerdict {
                direction,
                status,
                isolated: !selected_by.is_empty(),
                selected_by,
                allowed_by: Vec::new(),
                without_rules: Vec::new(),
                nearest_miss: None,
            }
        };
        Verdict {
            allowed: true,
            egress: side(src, Direction::Egress, egress),
            ingress: side(dst, Direction::Ingress, ingress),
        }
    }

    fn evaluate(
        &self,
        src: &View,
        dst: &View,
        port: u16,
        protocol: Protocol,
        selection: Selection,
    ) -> Verdict {
        let egress = match src.selectable() {
            Some(pod) => {
                self.evaluate_direction(Direction::Egress, pod, dst, dst, port, protocol, selection)
            }
            None => DirectionVerdict::unselected(Direction::Egress, src.unselected_status()),
        };
        let ingress = match dst.selectable() {
            Some(pod) => self.evaluate_direction(
                Direction::Ingress,
                pod,
                src,
                dst,
                port,
                protocol,
                selection,
            ),
            None => DirectionVerdict::unselected(Direction::Ingress, dst.unselected_status()),
        };
        Verdict {
            allowed: egress.allowed() && ingress.allowed(),
            egress,
            ingress,
        }
    }

    /// Decides one direction for the pod `subject`, whose peer is `peer`; named
    /// ports resolve against the destination `dst`.
    #[expect(
        clippy::too_many_arguments,
        reason = "internal helper; the arguments are the flow's parts"
    )]
    fn evaluate_direction(
        &self,
        direction: Direction,
        subject: &Pod,
        peer: &View,
        dst: &View,
        port: u16,
        protocol: Protocol,
        selection: Selection,
    ) -> DirectionVerdict {
        let policies = match selection {
            Selection::Indexed => self.policies_selecting(subject, direction),
            Selection::Scan => self.policies_selecting_by_scan(subject, direction),
        };
        if policies.is_empty() {
            return DirectionVerdict::unselected(direction, Status::NotIsolated);
        }
        let mut allowed_by = Vec::new();
        let mut nearest: Option<(u32, Miss)> = None;
        for policy in &policies {
            let rules = policy.rules(direction).unwrap_or_default();
            for (rule_index, rule) in rules.iter().enumerate() {
                let port_result = match_ports(&rule.ports, dst.selectable(), port, protocol);
                let peer_result = self.match_peers(policy, &rule.peers, peer);
                match (peer_result, port_result) {
                    (Ok(peer_index), Ok(port_index)) => allowed_by.push(RuleRef {
                        policy: policy.key.clone(),
                        rule: rule_index,
                        peer: peer_index,
                        port: port_index,
                    }),
                    (peer_result, port_result) => {
                        let (peer_index, mut failures) = match peer_result {
                            Ok(index) => (index, Vec::new()),
                            Err((index, failures)) => (Some(index), failures),
                        };
                        if let Err(failure) = port_result {
                            failures.push(failure);
                        }
                        let distance: u32 = failures.iter().map(Failure::distance).sum();
                        if nearest.as_ref().is_none_or(|(d, _)| distance < *d) {
                            nearest = Some((
                                distance,
                                Miss {
                                    policy: policy.key.clone(),
                                    rule: rule_index,
                                    peer: peer_index,
                                    failures,
                                },
                            ));
                        }
                    }
                }
            }
        }
        let status = if allowed_by.is_empty() {
            Status::Denied
        } else {
            Status::Allowed
        };
        DirectionVerdict {
            direction,
            status,
            isolated: true,
            selected_by: policies.iter().map(|p| p.key.clone()).collect(),
            without_rules: policies
                .iter()
                .filter(|p| p.rules(direction).is_some_and(|r| r.is_empty()))
                .map(|p| p.key.clone())
                .collect(),
            nearest_miss: if status == Status::Denied {
                nearest.map(|(_, miss)| miss)
            } else {
                None
            },
            allowed_by,
        }
    }

    /// Ok(index of the first matching peer, None when the rule allows every peer),
    /// or Err(the nearest peer and what it lacks).
    fn match_peers(
        &self,
        policy: &Policy,
        peers: &[Peer],
        view: &View,
    ) -> Result<Option<usize>, (usize, Vec<Failure>)> {
        if peers.is_empty() {
            return Ok(None);
        }
        let mut nearest: Option<(u32, usize, Vec<Failure>)> = None;
        for (i, peer) in peers.iter().enumerate() {
            let failures = self.peer_failures(&policy.key.namespace, peer, view);
            if failures.is_empty() {
                return Ok(Some(i));
            }
            let distance = failures.iter().map(Failure::distance).sum();
            if nearest.as_ref().is_none_or(|(d, _, _)| distance < *d) {
                nearest = Some((distance, i, failures));
            }
        }
        let (_, i, failures) = nearest.expect("peers is not empty");
        Err((i, failures))
    }

    /// What keeps `peer` (of a policy in `policy_namespace`) from matching `view`.
    fn peer_failures(&self, policy_namespace: &str, peer: &Peer, view: &View) -> Vec<Failure> {
        match peer {
            Peer::IpBlock(block) => {
                if !block.cidr.contains(&view.ip) {
                    vec![Failure::OutsideCidr {
                        cidr: block.cidr.to_string(),
                    }]
                } else if let Some(except) = block.except.iter().find(|e| e.contains(&view.ip)) {
                    vec![Failure::InExcept {
                        except: except.to_string(),
                    }]
                } else {
                    Vec::new()
                }
            }
            Peer::Pods { namespaces, pods } => {
                let Some(pod) = view.selectable() else {
                    return vec![Failure::NotAPod];
                };
                let mut failures = Vec::new();
                match namespaces {
                    NamespaceMatch::PolicyNamespace => {
                        if pod.key.namespace != policy_namespace {
                            failures.push(Failure::OtherNamespace {
                                policy_namespace: policy_namespace.to_string(),
                                namespace: pod.key.namespace.clone(),
                            });
                        }
                    }
                    NamespaceMatch::Selector(selector) => {
                        let labels = self.namespace_labels(&pod.key.namespace);
                        for req in selector.failures(&labels) {
                            failures.push(Failure::NamespaceLabel {
                                requirement: req.to_string(),
                                namespace: pod.key.namespace.clone(),
                                actual: req.describe_actual(&labels),
                            });
                        }
                    }
                }
                if let Some(selector) = pods {
                    for req in selector.failures(&pod.labels) {
                        failures.push(Failure::PodLabel {
                            requirement: req.to_string(),
                            actual: req.describe_actual(&pod.labels),
                        });
                    }
                }
                failures
            }
        }
    }
}

/// Ok(index of the first matching port, None when the rule allows every port), or
/// Err(why none matched). Named ports resolve against the destination pod.
fn match_ports(
    ports: &[PortRule],
    dst_pod: Option<&Arc<Pod>>,
    port: u16,
    protocol: Protocol,
) -> Result<Option<usize>, Failure> {
    if ports.is_empty() {
        return Ok(None);
    }
    let mut unresolved_name = None;
    for (i, rule) in ports.iter().enumerate() {
        if rule.protocol != protocol {
            continue;
        }
        let matched = match (&rule.port, rule.end_port) {
            (None, _) => true,
            (Some(PortRef::Number(start)), Some(end)) => (*start..=end).contains(&port),
            (Some(PortRef::Number(n)), None) => *n == port,
            (Some(PortRef::Name(name)), _) => {
                match dst_pod.and_then(|p| p.named_port(name, protocol)) {
                    Some(resolved) => resolved == port,
                    None => {
                        unresolved_name.get_or_insert(name);
                        false
                    }
                }
            }
        };
        if matched {
            return Ok(Some(i));
        }
    }
    let only_names_failed = ports
        .iter()
        .filter(|r| r.protocol == protocol)
        .all(|r| matches!(r.port, Some(PortRef::Name(_))));
    match unresolved_name {
        Some(name) if only_names_failed => Err(Failure::NamedPortUndefined {
            name: name.clone(),
            protocol: protocol.to_string(),
        }),
        _ => Err(Failure::Port {
            allowed: ports
                .iter()
                .map(|r| describe_port_rule(r, dst_pod))
                .collect(),
            actual: format!("{protocol}/{port}"),
        }),
    }
}

/// `TCP/8080`, `TCP/8000-8100`, `TCP/http (8080 on the destination)`, `any UDP port`.
fn describe_port_rule(rule: &PortRule, dst_pod: Option<&Arc<Pod>>) -> String {
    match &rule.port {
        Some(PortRef::Name(name)) => {
            match dst_pod.and_then(|p| p.named_port(name, rule.protocol)) {
                Some(n) => format!("{}/{name} ({n} on the destination)", rule.protocol),
                None => format!("{}/{name}", rule.protocol),
            }
        }
        _ => rule.to_string(),
    }
}
