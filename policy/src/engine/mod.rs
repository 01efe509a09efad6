//! The verdict engine: what policy says about a connection.
//!
//! A connection leaves its source through the source pod's egress and enters
//! its destination through the destination pod's ingress; each direction is
//! decided on its own and the connection is allowed when both allow it.
//!
//! A direction is decided in tiers ([`Tier`](crate::model::Tier)), in order:
//! the first tier with an opinion decides it, and a direction no tier has an
//! opinion on is allowed:
//!
//! 1. Admin (`admin`): AdminNetworkPolicies and `tier: Admin`
//!    ClusterNetworkPolicies, lowest priority first; the first matching rule's
//!    Allow or Deny decides, its Pass skips to NetworkPolicy;
//! 2. NetworkPolicy (`network_policy`): decides for the pods it isolates;
//! 3. Baseline (`admin` again): the BaselineAdminNetworkPolicy and `tier:
//!    Baseline` ClusterNetworkPolicies, for pods NetworkPolicy does not
//!    isolate; Pass leaves the default;
//! 4. the default: allowed.
//!
//! The verdict names the tier that decided, the admin rule that decided or
//! passed (policy, rule name and action), and NetworkPolicy's outcome.
//!
//! Before any tier, whatever the policies say:
//! - an endpoint that is not a pod (external IP, node, host-network pod) is never
//!   isolated;
//! - a pod connecting to itself (its own IP) is always allowed (the e2e `netpol`
//!   suite's `AllowLoopback`);
//! - traffic between a pod and its own node is always allowed.
//!
//! Verdicts are cached per (source identity, destination identity, port,
//! protocol) where an identity is a namespace, label set and container ports plus
//! the set of ipBlocks (and admin `networks`) the IP falls in; policy (of any
//! kind), namespace-label and node changes empty the cache, pod changes do not
//! need to (a changed pod has a new identity). A verdict with a node's address
//! as an end is not cached while an admin policy has a `nodes` peer (it
//! depends on the node's labels, which no key holds); a verdict on a
//! connection that carries destination names while an admin policy has a
//! `domainNames` peer is cached by the key and the names.

mod admin;
mod network_policy;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use netverdict_proto::filter::normalize_dns_names;
use serde::Serialize;

use crate::cache::cache_key;
use crate::error::ConnectionError;
use crate::model::{AdminAction, Direction, Pod, PodKey, Protocol, Tier};
use crate::state::{ClusterState, DEPARTED, EXTERNAL, HOST_NETWORK, PolicySet};
use crate::verdict::{DirectionVerdict, Status, Verdict};

/// One end of a connection: a pod by name, or an IP address (resolved to the pod that
/// holds it, if any).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Endpoint {
    Pod(PodKey),
    Ip(IpAddr),
}

impl FromStr for Endpoint {
    type Err = ConnectionError;

    /// `namespace/pod` or an IPv4/IPv6 address.
    fn from_str(s: &str) -> Result<Self, ConnectionError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Endpoint::Pod(PodKey::new(ns, name)))
            }
            _ => Err(ConnectionError::BadEndpoint(s.to_string())),
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

/// What the engine decides about: a connection from a source to a
/// destination port and protocol, as policy sees it (no source port, no
/// packets, no time; the collector's protobuf `Flow` is an observed one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Connection {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
    /// The names the source resolved to the destination's address (from
    /// its DNS answers), normalized ([`normalize_dns_names`]); empty when
    /// not known. Only admin `domainNames` peers look at them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_names: Vec<String>,
}

impl Connection {
    pub fn new(src: Endpoint, dst: Endpoint, port: u16, protocol: Protocol) -> Self {
        Connection {
            src,
            dst,
            port,
            protocol,
            destination_names: Vec::new(),
        }
    }

    /// The connection with the names its source resolved to the destination.
    pub fn with_destination_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.destination_names = normalize_dns_names(names);
        self
    }

    /// Whether the port fits the protocol: 1 to 65535 for TCP, UDP and
    /// SCTP; 0 for ICMP, which has none.
    fn check_port(&self) -> Result<(), ConnectionError> {
        match (self.protocol.has_ports(), self.port) {
            (true, 0) => Err(ConnectionError::BadPort),
            (false, port @ 1..) => Err(ConnectionError::IcmpPort(port)),
            _ => Ok(()),
        }
    }

    /// What the connection becomes after Service DNAT in `state`: one
    /// connection per backend (pod and target port) when its destination is
    /// a Service address with backends for its port, else itself. A flow
    /// recorded before DNAT (a flows file's line to a ClusterIP) may have
    /// reached any backend; policies judge the backend, never the Service's
    /// address.
    pub fn through_services(&self, state: &ClusterState) -> Vec<Connection> {
        if let Endpoint::Ip(ip) = &self.dst
            && let Some(backends) = state.service_backends(*ip, self.port, self.protocol)
            && !backends.is_empty()
        {
            return backends
                .into_iter()
                .map(|(pod, port)| Connection {
                    dst: Endpoint::Pod(pod),
                    port,
                    ..self.clone()
                })
                .collect();
        }
        vec![self.clone()]
    }
}

/// A connection's endpoint resolved against the state.
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

/// One direction of a connection to decide, as every tier sees it.
struct DirectionCase<'a> {
    direction: Direction,
    /// The pod whose policies decide: the source for egress, the destination
    /// for ingress.
    subject: &'a Pod,
    /// The other end of the connection.
    peer: &'a View<'a>,
    /// The destination, which named ports resolve against.
    dst: &'a View<'a>,
    port: u16,
    protocol: Protocol,
    /// The names the source resolved to the destination (empty: not known).
    destination_names: &'a [String],
    selection: Selection,
    /// The policies that decide: the current ones, or those in effect when
    /// a past flow started.
    policies: &'a PolicySet,
}

impl ClusterState {
    /// The verdict on a connection, from the cache when the same identities were asked
    /// about since the last policy change.
    pub fn verdict(&self, conn: &Connection) -> Result<Arc<Verdict>, ConnectionError> {
        let (src, dst) = self.resolve(conn)?;
        let policies = self.current_policies();
        if let Some(v) = self.special_case(&src, &dst, policies) {
            return Ok(Arc::new(v));
        }
        let evaluate = || self.evaluate(&src, &dst, conn, Selection::Indexed, policies);
        let Some(key) = cache_key(
            src.identity,
            src.ip_class,
            dst.identity,
            dst.ip_class,
            conn.port,
            conn.protocol,
        ) else {
            return Ok(Arc::new(evaluate()));
        };
        if self.admin_node_peers() && (self.is_node_ip(src.ip) || self.is_node_ip(dst.ip)) {
            // The verdict depends on the node's labels, which no key holds.
            return Ok(Arc::new(evaluate()));
        }
        if !conn.destination_names.is_empty() && self.admin_domain_peers() {
            // The verdict depends on the destination's names too.
            let names = &conn.destination_names;
            if let Some(hit) = self.cache_get_named(key, names) {
                return Ok(hit);
            }
            return Ok(self.cache_insert_named(key, names, evaluate()));
        }
        if let Some(hit) = self.cache_get(key) {
            return Ok(hit);
        }
        Ok(self.cache_insert(key, evaluate()))
    }

    /// The verdict on a connection at time `at` (in the state's time, see
    /// [`ClusterState::set_time`]): an IP endpoint resolves to the pod that
    /// held the IP then ([`ClusterState::holder_at`]), so a recycled pod IP is
    /// judged as the pod that used it. From the cache when both sides are
    /// current holders (as [`ClusterState::verdict`]); evaluated afresh, not
    /// cached, when a side is a departed pod (or an earlier version of one).
    /// The policies that judge are those in effect at `at`, when the state
    /// keeps the sets changes replaced ([`ClusterState::set_policy_retention`]);
    /// a verdict by a replaced set is not cached either.
    pub fn verdict_at(
        &self,
        conn: &Connection,
        at: SystemTime,
    ) -> Result<Arc<Verdict>, ConnectionError> {
        let past = |e: &Endpoint| match e {
            Endpoint::Ip(ip) => self
                .holder_at(*ip, at)
                .filter(|h| !h.current)
                .map(|h| (h.pod, *ip)),
            Endpoint::Pod(_) => None,
        };
        let (src_past, dst_past) = (past(&conn.src), past(&conn.dst));
        if src_past.is_none() && dst_past.is_none() && self.policies_current_at(at) {
            return self.verdict(conn);
        }
        let policies = self.policies_at(at);
        conn.check_port()?;
        let src = match src_past {
            Some((pod, ip)) => self.pod_view(pod, DEPARTED, ip),
            None => self.view(&conn.src, None)?,
        };
        let dst = match dst_past {
            Some((pod, ip)) => self.pod_view(pod, DEPARTED, ip),
            None => self.view(&conn.dst, Some(src.ip))?,
        };
        let verdict = self.decide(&src, &dst, conn, Selection::Indexed, policies);
        Ok(Arc::new(verdict))
    }

    /// The verdict computed afresh through the label index (no cache).
    pub fn verdict_uncached(&self, conn: &Connection) -> Result<Verdict, ConnectionError> {
        let (src, dst) = self.resolve(conn)?;
        Ok(self.decide(
            &src,
            &dst,
            conn,
            Selection::Indexed,
            self.current_policies(),
        ))
    }

    /// The verdict computed by scanning every policy of the cluster: the
    /// reference the indexed engine is checked and measured against.
    pub fn verdict_by_scan(&self, conn: &Connection) -> Result<Verdict, ConnectionError> {
        let (src, dst) = self.resolve(conn)?;
        Ok(self.decide(&src, &dst, conn, Selection::Scan, self.current_policies()))
    }

    /// The addresses a connection's endpoints use (a pod named by key uses its
    /// address of the other side's family).
    pub fn connection_ips(&self, conn: &Connection) -> Result<(IpAddr, IpAddr), ConnectionError> {
        let (src, dst) = self.resolve(conn)?;
        Ok((src.ip, dst.ip))
    }

    /// The pod an endpoint names or whose IP it is, if any.
    pub fn endpoint_pod(&self, endpoint: &Endpoint) -> Option<&Arc<Pod>> {
        match endpoint {
            Endpoint::Pod(key) => self.pod(key),
            Endpoint::Ip(ip) => self.pod_by_ip(*ip),
        }
    }

    fn resolve(&self, conn: &Connection) -> Result<(View<'_>, View<'_>), ConnectionError> {
        conn.check_port()?;
        let other_ip = |e: &Endpoint| match e {
            Endpoint::Ip(ip) => Some(*ip),
            Endpoint::Pod(_) => None,
        };
        let src = self.view(&conn.src, other_ip(&conn.dst))?;
        let dst = self.view(&conn.dst, Some(src.ip))?;
        Ok((src, dst))
    }

    /// Resolves an endpoint; a pod named without IP uses its address of the
    /// family of `peer_ip` when it has one.
    fn view(
        &self,
        endpoint: &Endpoint,
        peer_ip: Option<IpAddr>,
    ) -> Result<View<'_>, ConnectionError> {
        match endpoint {
            Endpoint::Pod(key) => {
                let entry = self
                    .pod_entry(key)
                    .ok_or_else(|| ConnectionError::UnknownPod(key.to_string()))?;
                let pod = &entry.pod;
                let ip = peer_ip
                    .and_then(|peer| pod.ips.iter().find(|ip| ip.is_ipv4() == peer.is_ipv4()))
                    .or(pod.ips.first())
                    .copied()
                    .ok_or_else(|| ConnectionError::PodWithoutIp(key.to_string()))?;
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
                HOST_NETWORK
            } else {
                identity
            },
            ip_class: self.ip_class(ip),
        }
    }

    /// Self traffic and pod-to-own-node traffic: allowed whatever the policies say.
    /// The verdict, uncached: a special case, or the tiers' evaluation.
    fn decide(
        &self,
        src: &View,
        dst: &View,
        conn: &Connection,
        selection: Selection,
        policies: &PolicySet,
    ) -> Verdict {
        self.special_case(src, dst, policies)
            .unwrap_or_else(|| self.evaluate(src, dst, conn, selection, policies))
    }

    fn special_case(&self, src: &View, dst: &View, policies: &PolicySet) -> Option<Verdict> {
        let same_pod = match (src.pod, dst.pod) {
            // One Arc per pod: the index and the pod map share it.
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if same_pod || src.ip == dst.ip {
            return Some(self.always_allowed(
                src,
                dst,
                policies,
                Status::SelfTraffic,
                Status::SelfTraffic,
            ));
        }
        if let Some(pod) = src.selectable()
            && dst.selectable().is_none()
            && self.is_node_of(pod, dst.ip)
        {
            return Some(self.always_allowed(
                src,
                dst,
                policies,
                Status::NodeLocal,
                dst.unselected_status(),
            ));
        }
        if let Some(pod) = dst.selectable()
            && src.selectable().is_none()
            && self.is_node_of(pod, src.ip)
        {
            return Some(self.always_allowed(
                src,
                dst,
                policies,
                src.unselected_status(),
                Status::NodeLocal,
            ));
        }
        None
    }

    fn always_allowed(
        &self,
        src: &View,
        dst: &View,
        policies: &PolicySet,
        egress: Status,
        ingress: Status,
    ) -> Verdict {
        let side = |view: &View, direction: Direction, status: Status| {
            let selected_by: Vec<_> = match view.selectable() {
                Some(pod) => policies
                    .network
                    .selecting(pod, direction)
                    .iter()
                    .map(|p| p.key.clone())
                    .collect(),
                None => Vec::new(),
            };
            DirectionVerdict {
                isolated: !selected_by.is_empty(),
                selected_by,
                ..DirectionVerdict::unselected(direction, status)
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
        conn: &Connection,
        selection: Selection,
        policies: &PolicySet,
    ) -> Verdict {
        let decide = |direction: Direction, subject: Option<&Arc<Pod>>, peer: &View| {
            let case = DirectionCase {
                direction,
                subject: subject?,
                peer,
                dst,
                port: conn.port,
                protocol: conn.protocol,
                destination_names: &conn.destination_names,
                selection,
                policies,
            };
            Some(self.decide_direction(&case))
        };
        let egress = decide(Direction::Egress, src.selectable(), dst).unwrap_or_else(|| {
            DirectionVerdict::unselected(Direction::Egress, src.unselected_status())
        });
        let ingress = decide(Direction::Ingress, dst.selectable(), src).unwrap_or_else(|| {
            DirectionVerdict::unselected(Direction::Ingress, dst.unselected_status())
        });
        Verdict {
            allowed: egress.allowed() && ingress.allowed(),
            egress,
            ingress,
        }
    }

    /// Decides one direction for a pod: each tier in order, until one decides;
    /// allowed (not isolated) when none does.
    fn decide_direction(&self, case: &DirectionCase) -> DirectionVerdict {
        let admin = self.admin_tier_outcome(Tier::Admin, case);
        let mut not_evaluated = admin.not_evaluated;
        if let Some(rule) = &admin.decided
            && rule.action != AdminAction::Pass
        {
            // NetworkPolicy does not decide, but the verdict still says which
            // NetworkPolicies select the pod.
            let selected_by: Vec<_> = self.selecting(case).iter().map(|p| p.key.clone()).collect();
            return DirectionVerdict {
                status: if rule.action.allows() {
                    Status::Allowed
                } else {
                    Status::Denied
                },
                tier: Some(Tier::Admin),
                isolated: !selected_by.is_empty(),
                selected_by,
                admin_rule: admin.decided,
                admin_nearest_miss: admin.nearest_miss,
                not_evaluated,
                ..DirectionVerdict::unselected(case.direction, Status::Allowed)
            };
        }
        let passed = admin.decided;
        if let Some(mut verdict) = self.network_policy_tier(case) {
            verdict.tier = Some(Tier::NetworkPolicy);
            verdict.admin_rule = passed;
            verdict.not_evaluated = not_evaluated;
            return verdict;
        }
        let baseline = self.admin_tier_outcome(Tier::Baseline, case);
        not_evaluated.extend(baseline.not_evaluated);
        let (status, tier) = match baseline.decided.as_ref().map(|r| r.action) {
            Some(AdminAction::Allow) => (Status::Allowed, Some(Tier::Baseline)),
            Some(AdminAction::Deny) => (Status::Denied, Some(Tier::Baseline)),
            Some(AdminAction::Pass) | None => (Status::NotIsolated, None),
        };
        DirectionVerdict {
            tier,
            admin_rule: passed,
            baseline_rule: baseline.decided,
            admin_nearest_miss: baseline.nearest_miss,
            not_evaluated,
            ..DirectionVerdict::unselected(case.direction, status)
        }
    }
}
