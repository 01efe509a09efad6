//! Property tests of the policy engine on random small clusters (namespaces and
//! pods with labels from a small vocabulary; pods with named ports, IPv4, IPv6
//! or dual-stack addresses, on a node or in the host network; random policies
//! with random selectors, peers, ports and ipBlocks) and random flows between
//! pods (by name or address), nodes and outside addresses:
//!
//! - the engine agrees with an independent brute-force evaluation of the
//!   NetworkPolicy semantics written here from the API documentation (and the
//!   engine's documented choices), and its verdicts are well formed;
//! - additivity: a direction an isolated pod allows stays allowed whatever policy
//!   is added, and adding a rule to a policy never turns an allow into a deny;
//! - a policy selecting no pod changes no verdict;
//! - `Selector::matches` agrees with a brute-force reading of LabelSelector;
//! - cached, uncached and scanning evaluations agree, explanations included,
//!   across random incremental updates (cache invalidation) and identity
//!   rebuilds;
//! - a state loaded from manifests and then updated object by object answers as
//!   one loaded fresh from the final manifests, and as one built in reverse;
//! - the fix of a denied flow (`netverdict diagnose`) allows it and nothing else
//!   that was denied, replayed over every pair of pods.

use crate::common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{objects, state_from_manifests};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use netverdict_policy::fix::{Target, TargetEndpoint, fix};
use netverdict_policy::selector::Selector;
use netverdict_policy::{
    ClusterState, Connection, Direction, Endpoint, ObjectKind, PodKey, Protocol, Status, Verdict,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

type Labels = BTreeMap<String, String>;

// ---- vocabulary ----------------------------------------------------------------

const NAMESPACES: [&str; 3] = ["n0", "n1", "n2"];
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const LABEL_KEYS: [&str; 2] = ["app", "env"];
const SELECTOR_KEYS: [&str; 3] = ["app", "env", NAME_LABEL];
const VALUES: [&str; 3] = ["a", "b", "n0"];
const FLOW_PORTS: [u16; 5] = [53, 80, 81, 8080, 9000];
const RULE_PORTS: [u16; 4] = [53, 80, 81, 8080];
const END_PORTS: [u16; 3] = [81, 100, 9000];
const PORT_NAMES: [&str; 2] = ["http", "dns"];
/// ipBlocks: over pod addresses (10.0.0.0/24), host addresses (192.168.0.0/24)
/// and the outside world.
const BLOCKS: [(&str, &[&str]); 10] = [
    ("10.0.0.0/24", &[]),
    ("10.0.0.0/24", &["10.0.0.0/30"]),
    ("10.0.0.2/31", &[]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("203.0.113.0/24", &["203.0.113.128/25"]),
    ("192.168.0.0/16", &[]),
    ("10.0.0.0/8", &["10.0.0.4/30", "10.0.0.1/32"]),
    ("fd00::/64", &[]),
    ("fd00::/64", &["fd00::2/127"]),
    ("::/0", &["fd00::/16"]),
];
/// Outside addresses, node addresses and a host-network address.
const EXTERNAL_IPS: [&str; 7] = [
    "203.0.113.5",
    "203.0.113.200",
    "8.8.8.8",
    "2001:db8::1",
    "192.168.1.1",
    "192.168.1.2",
    "192.168.0.1",
];
/// Nodes and their addresses; pods may run on one of them.
const NODES: [(&str, &str); 2] = [("node-0", "192.168.1.1"), ("node-1", "192.168.1.2")];
const MAX_PODS: usize = 6;
const MAX_POLICIES: usize = 6;

// ---- the generated model ---------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug)]
struct Expr {
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Sel {
    match_labels: Labels,
    exprs: Vec<Expr>,
}

#[derive(Clone, Debug)]
struct GPod {
    ns: usize,
    labels: Labels,
    /// Port of the TCP container port named `http`, if any.
    http: Option<u16>,
    /// Whether the pod has a UDP container port `dns` (53).
    dns: bool,
    host_network: bool,
    /// 0: IPv4 only, 1: dual-stack IPv4 first, 2: dual-stack IPv6 first, 3:
    /// IPv6 only.
    family: u8,
    node: Option<usize>,
}

#[derive(Clone, Debug)]
enum GPeer {
    Pods {
        namespaces: Option<Sel>,
        pods: Option<Sel>,
    },
    Block(usize),
}

#[derive(Clone, Debug)]
enum GPortRef {
    Number(u16, Option<u16>),
    Name(&'static str),
}

#[derive(Clone, Debug)]
struct GPort {
    protocol: Option<Protocol>,
    port: Option<GPortRef>,
}

#[derive(Clone, Debug)]
struct GRule {
    peers: Option<Vec<GPeer>>,
    ports: Option<Vec<GPort>>,
}

#[derive(Clone, Debug)]
struct GPolicy {
    ns: usize,
    selector: Sel,
    types: Option<Vec<Direction>>,
    ingress: Option<Vec<GRule>>,
    egress: Option<Vec<GRule>>,
}

/// A cluster: namespaces (declared with labels, or not declared), pods `p<i>`
/// and policies `np<i>` by index (None: absent).
#[derive(Clone, Debug)]
struct GCluster {
    namespaces: Vec<Option<Labels>>,
    pods: Vec<Option<GPod>>,
    policies: Vec<Option<GPolicy>>,
}

fn pod_name(i: usize) -> String {
    format!("p{i}")
}

fn policy_name(i: usize) -> String {
    format!("np{i}")
}

/// A pod's addresses in order (status.podIP first): host-network pods have
/// their node's address, others 10.0.0.<i+1> and/or fd00::<i+1>.
fn pod_ips(i: usize, pod: &GPod) -> Vec<IpAddr> {
    if pod.host_network {
        let ip = match pod.node {
            Some(node) => NODES[node].1.parse().unwrap(),
            None => Ipv4Addr::new(192, 168, 0, i as u8 + 1),
        };
        return vec![IpAddr::V4(ip)];
    }
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16 + 1));
    match pod.family {
        0 => vec![v4],
        1 => vec![v4, v6],
        2 => vec![v6, v4],
        _ => vec![v6],
    }
}

// ---- to Kubernetes objects -------------------------------------------------------

fn sel_json(sel: &Sel) -> Value {
    let exprs: Vec<Value> = sel
        .exprs
        .iter()
        .map(|e| {
            let op = match e.op {
                Op::In => "In",
                Op::NotIn => "NotIn",
                Op::Exists => "Exists",
                Op::DoesNotExist => "DoesNotExist",
            };
            if e.values.is_empty() {
                json!({"key": e.key, "operator": op})
            } else {
                json!({"key": e.key, "operator": op, "values": e.values})
            }
        })
        .collect();
    let mut out = serde_json::Map::new();
    if !sel.match_labels.is_empty() {
        out.insert("matchLabels".into(), json!(sel.match_labels));
    }
    if !exprs.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(out)
}

fn rule_json(rule: &GRule, peers_field: &str) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(peers) = &rule.peers {
        let peers: Vec<Value> = peers
            .iter()
            .map(|p| match p {
                GPeer::Pods { namespaces, pods } => {
                    let mut m = serde_json::Map::new();
                    if let Some(s) = namespaces {
                        m.insert("namespaceSelector".into(), sel_json(s));
                    }
                    if let Some(s) = pods {
                        m.insert("podSelector".into(), sel_json(s));
                    }
                    Value::Object(m)
                }
                GPeer::Block(b) => {
                    let (cidr, except) = BLOCKS[*b];
                    if except.is_empty() {
                        json!({"ipBlock": {"cidr": cidr}})
                    } else {
                        json!({"ipBlock": {"cidr": cidr, "except": except}})
                    }
                }
            })
            .collect();
        out.insert(peers_field.into(), Value::Array(peers));
    }
    if let Some(ports) = &rule.ports {
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = serde_json::Map::new();
                if let Some(proto) = p.protocol {
                    m.insert("protocol".into(), json!(proto.as_str()));
                }
                match &p.port {
                    None => {}
                    Some(GPortRef::Number(n, end)) => {
                        m.insert("port".into(), json!(n));
                        if let Some(end) = end {
                            m.insert("endPort".into(), json!(end));
                        }
                    }
                    Some(GPortRef::Name(name)) => {
                        m.insert("port".into(), json!(name));
                    }
                }
                Value::Object(m)
            })
            .collect();
        out.insert("ports".into(), Value::Array(ports));
    }
    Value::Object(out)
}

fn policy_json(i: usize, p: &GPolicy) -> Value {
    let mut spec = serde_json::Map::new();
    spec.insert("podSelector".into(), sel_json(&p.selector));
    if let Some(types) = &p.types {
        let types: Vec<&str> = types
            .iter()
            .map(|d| match d {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            })
            .collect();
        spec.insert("policyTypes".into(), json!(types));
    }
    if let Some(rules) = &p.ingress {
        let rules: Vec<Value> = rules.iter().map(|r| rule_json(r, "from")).collect();
        spec.insert("ingress".into(), Value::Array(rules));
    }
    if let Some(rules) = &p.egress {
        let rules: Vec<Value> = rules.iter().map(|r| rule_json(r, "to")).collect();
        spec.insert("egress".into(), Value::Array(rules));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy_name(i), "namespace": NAMESPACES[p.ns]},
        "spec": spec,
    })
}

fn pod_json(i: usize, pod: &GPod) -> Value {
    let mut ports = Vec::new();
    if let Some(port) = pod.http {
        ports.push(json!({"name": "http", "containerPort": port}));
    }
    if pod.dns {
        ports.push(json!({"name": "dns", "containerPort": 53, "protocol": "UDP"}));
    }
    ports.push(json!({"containerPort": 9000}));
    let ips = pod_ips(i, pod);
    let mut spec = json!({
        "hostNetwork": pod.host_network,
        "containers": [{"name": "main", "ports": ports}],
    });
    if let Some(node) = pod.node {
        spec["nodeName"] = json!(NODES[node].0);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": NAMESPACES[pod.ns], "labels": pod.labels},
        "spec": spec,
        "status": {
            "podIP": ips[0].to_string(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
        },
    })
}

fn node_json(node: usize) -> Value {
    let (name, ip) = NODES[node];
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    })
}

fn namespace_json(ns: usize, labels: &Labels) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACES[ns], "labels": labels},
    })
}

fn to_yaml(value: &Value) -> String {
    format!("---\n{}", serde_yaml_ng::to_string(value).expect("yaml"))
}

/// Applies one object given as JSON.
fn apply_json(state: &mut ClusterState, value: &Value) {
    for object in objects(&to_yaml(value)) {
        state
            .apply(&object)
            .unwrap_or_else(|e| panic!("object rejected: {e}\n{value:#}"));
    }
}

impl GCluster {
    fn manifests(&self) -> String {
        let mut out: String = (0..NODES.len()).map(|n| to_yaml(&node_json(n))).collect();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if let Some(labels) = ns {
                out.push_str(&to_yaml(&namespace_json(i, labels)));
            }
        }
        for (i, pod) in self.pods.iter().enumerate() {
            if let Some(pod) = pod {
                out.push_str(&to_yaml(&pod_json(i, pod)));
            }
        }
        for (i, policy) in self.policies.iter().enumerate() {
            if let Some(policy) = policy {
                out.push_str(&to_yaml(&policy_json(i, policy)));
            }
        }
        out
    }

    /// The state built object by object (as watches deliver them).
    fn state(&self) -> ClusterState {
        let mut state = ClusterState::new();
        for node in 0..NODES.len() {
            apply_json(&mut state, &node_json(node));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if let Some(labels) = ns {
                apply_json(&mut state, &namespace_json(i, labels));
            }
        }
        for (i, pod) in self.pods.iter().enumerate() {
            if let Some(pod) = pod {
                apply_json(&mut state, &pod_json(i, pod));
            }
        }
        for (i, policy) in self.policies.iter().enumerate() {
            if let Some(policy) = policy {
                apply_json(&mut state, &policy_json(i, policy));
            }
        }
        state
    }

    /// The same state built in the opposite order: policies first, then pods
    /// (last to first), then namespaces and nodes.
    fn state_reversed(&self) -> ClusterState {
        let mut state = ClusterState::new();
        for (i, policy) in self.policies.iter().enumerate().rev() {
            if let Some(policy) = policy {
                apply_json(&mut state, &policy_json(i, policy));
            }
        }
        for (i, pod) in self.pods.iter().enumerate().rev() {
            if let Some(pod) = pod {
                apply_json(&mut state, &pod_json(i, pod));
            }
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if let Some(labels) = ns {
                apply_json(&mut state, &namespace_json(i, labels));
            }
        }
        for node in 0..NODES.len() {
            apply_json(&mut state, &node_json(node));
        }
        state
    }
}

// ---- the reference evaluation -------------------------------------------------------

/// Brute-force LabelSelector semantics: every matchLabels pair present with
/// that value, and every expression holding.
fn reference_matches(sel: &Sel, labels: &Labels) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.exprs.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.op {
                Op::In => value.is_some_and(|v| e.values.contains(v)),
                Op::NotIn => !value.is_some_and(|v| e.values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
}

/// A resolved flow endpoint: the pod (index) if it is one, and its address.
#[derive(Clone, Copy, Debug)]
struct RefEndpoint {
    pod: Option<usize>,
    ip: IpAddr,
}

impl GCluster {
    fn namespace_labels(&self, ns: usize) -> Labels {
        let mut labels = self.namespaces[ns].clone().unwrap_or_default();
        labels
            .entry(NAME_LABEL.to_string())
            .or_insert_with(|| NAMESPACES[ns].to_string());
        labels
    }

    /// The pod at an index, if it exists and policies apply to it.
    fn selectable(&self, pod: Option<usize>) -> Option<(usize, &GPod)> {
        let i = pod?;
        self.pods[i]
            .as_ref()
            .filter(|p| !p.host_network)
            .map(|p| (i, p))
    }

    /// Whether policy `p` isolates its pods for `direction` (policyTypes, or
    /// when absent or empty: Ingress, and Egress if there are egress rules).
    fn applies(p: &GPolicy, direction: Direction) -> bool {
        match &p.types {
            Some(types) if !types.is_empty() => types.contains(&direction),
            _ => match direction {
                Direction::Ingress => true,
                Direction::Egress => p.egress.as_ref().is_some_and(|r| !r.is_empty()),
            },
        }
    }

    fn peer_matches(&self, policy: &GPolicy, peer: &GPeer, other: RefEndpoint) -> bool {
        match peer {
            GPeer::Block(b) => {
                let (cidr, except) = BLOCKS[*b];
                let ip = other.ip;
                let net = |s: &str| s.parse::<IpNet>().expect("cidr");
                net(cidr).contains(&ip) && !except.iter().any(|e| net(e).contains(&ip))
            }
            GPeer::Pods { namespaces, pods } => {
                let Some((_, pod)) = self.selectable(other.pod) else {
                    return false;
                };
                let ns_ok = match namespaces {
                    None => pod.ns == policy.ns,
                    Some(sel) => reference_matches(sel, &self.namespace_labels(pod.ns)),
                };
                ns_ok
                    && pods
                        .as_ref()
                        .is_none_or(|sel| reference_matches(sel, &pod.labels))
            }
        }
    }

    fn port_matches(
        &self,
        port: &GPort,
        dst: RefEndpoint,
        number: u16,
        protocol: Protocol,
    ) -> bool {
        if port.protocol.unwrap_or(Protocol::Tcp) != protocol {
            return false;
        }
        match &port.port {
            None => true,
            Some(GPortRef::Number(n, None)) => *n == number,
            Some(GPortRef::Number(n, Some(end))) => *n <= number && number <= *end,
            Some(GPortRef::Name(name)) => {
                let Some((_, pod)) = self.selectable(dst.pod) else {
                    return false;
                };
                let resolved = match (*name, protocol) {
                    ("http", Protocol::Tcp) => pod.http,
                    ("dns", Protocol::Udp) if pod.dns => Some(53),
                    _ => None,
                };
                resolved == Some(number)
            }
        }
    }

    /// Whether `direction` of the pod `subject` admits the flow with `peer`.
    fn direction_allows(
        &self,
        direction: Direction,
        subject: (usize, &GPod),
        peer: RefEndpoint,
        dst: RefEndpoint,
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let selecting: Vec<&GPolicy> = self
            .policies
            .iter()
            .flatten()
            .filter(|p| {
                p.ns == subject.1.ns
                    && Self::applies(p, direction)
                    && reference_matches(&p.selector, &subject.1.labels)
            })
            .collect();
        if selecting.is_empty() {
            return true;
        }
        selecting.iter().any(|p| {
            let rules = match direction {
                Direction::Ingress => &p.ingress,
                Direction::Egress => &p.egress,
            };
            rules.iter().flatten().any(|rule| {
                let peers = rule.peers.as_deref().unwrap_or_default();
                let ports = rule.ports.as_deref().unwrap_or_default();
                (peers.is_empty() || peers.iter().any(|x| self.peer_matches(p, x, peer)))
                    && (ports.is_empty()
                        || ports
                            .iter()
                            .any(|x| self.port_matches(x, dst, port, protocol)))
            })
        })
    }

    /// Resolves an endpoint as the engine documents it: a pod named without
    /// address talks over its address of the peer's family when it has one
    /// (else its first); an address is the pod holding it, if any.
    fn resolve(&self, endpoint: &Endpoint, peer_ip: Option<IpAddr>) -> RefEndpoint {
        match endpoint {
            Endpoint::Pod(key) => {
                let i: usize = key.name[1..].parse().expect("p<i>");
                let ips = pod_ips(i, self.pods[i].as_ref().expect("present pod"));
                let ip = peer_ip
                    .and_then(|peer| ips.iter().find(|ip| ip.is_ipv4() == peer.is_ipv4()))
                    .unwrap_or(&ips[0]);
                RefEndpoint {
                    pod: Some(i),
                    ip: *ip,
                }
            }
            Endpoint::Ip(ip) => RefEndpoint {
                pod: self.pods.iter().enumerate().find_map(|(i, p)| {
                    p.as_ref()
                        .filter(|p| !p.host_network && pod_ips(i, p).contains(ip))
                        .map(|_| i)
                }),
                ip: *ip,
            },
        }
    }

    /// Whether `ip` is the address of the node `pod` runs on.
    fn on_node_of(pod: &GPod, ip: IpAddr) -> bool {
        pod.node
            .is_some_and(|n| NODES[n].1.parse::<IpAddr>().unwrap() == ip)
    }

    /// The reference verdict.
    fn allowed(&self, flow: &Connection) -> bool {
        let ip_of = |e: &Endpoint| match e {
            Endpoint::Ip(ip) => Some(*ip),
            Endpoint::Pod(_) => None,
        };
        let src = self.resolve(&flow.src, ip_of(&flow.dst));
        let dst = self.resolve(&flow.dst, Some(src.ip));
        // A pod reaching itself, and a pod and its own node, are always allowed.
        if (src.pod.is_some() && src.pod == dst.pod) || src.ip == dst.ip {
            return true;
        }
        let (src_pod, dst_pod) = (self.selectable(src.pod), self.selectable(dst.pod));
        match (src_pod, dst_pod) {
            (Some((_, pod)), None) if Self::on_node_of(pod, dst.ip) => return true,
            (None, Some((_, pod))) if Self::on_node_of(pod, src.ip) => return true,
            _ => {}
        }
        let egress = src_pod.is_none_or(|pod| {
            self.direction_allows(Direction::Egress, pod, dst, dst, flow.port, flow.protocol)
        });
        let ingress = dst_pod.is_none_or(|pod| {
            self.direction_allows(Direction::Ingress, pod, src, dst, flow.port, flow.protocol)
        });
        egress && ingress
    }

    /// A flow from generated indices: endpoints `0..n` are pods by name, `n..2n`
    /// pods by their first address, `2n..3n` by their last, the rest outside
    /// addresses. None if it names an absent pod.
    fn flow(&self, f: &FlowSpec) -> Option<Connection> {
        let n = self.pods.len();
        let endpoint = |e: usize| -> Option<Endpoint> {
            let e = e % (3 * n + EXTERNAL_IPS.len());
            if e < n {
                let pod = self.pods[e].as_ref()?;
                Some(Endpoint::Pod(PodKey::new(NAMESPACES[pod.ns], pod_name(e))))
            } else if e < 3 * n {
                let i = e % n;
                let ips = pod_ips(i, self.pods[i].as_ref()?);
                Some(Endpoint::Ip(if e < 2 * n {
                    ips[0]
                } else {
                    ips[ips.len() - 1]
                }))
            } else {
                Some(Endpoint::Ip(EXTERNAL_IPS[e - 3 * n].parse().unwrap()))
            }
        };
        Some(Connection::new(
            endpoint(f.src)?,
            endpoint(f.dst)?,
            f.port,
            f.protocol,
        ))
    }
}

#[derive(Clone, Debug)]
struct FlowSpec {
    src: usize,
    dst: usize,
    port: u16,
    protocol: Protocol,
}

// ---- strategies --------------------------------------------------------------------

fn strings(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(items).prop_map(str::to_string)
}

fn labels(keys: &'static [&'static str]) -> impl Strategy<Value = Labels> {
    btree_map(strings(keys), strings(&VALUES), 0..=2)
}

fn expr() -> impl Strategy<Value = Expr> {
    (
        strings(&SELECTOR_KEYS),
        0..4u8,
        vec(strings(&VALUES), 1..=2),
    )
        .prop_map(|(key, op, values)| match op {
            0 => Expr {
                key,
                op: Op::In,
                values,
            },
            1 => Expr {
                key,
                op: Op::NotIn,
                values,
            },
            2 => Expr {
                key,
                op: Op::Exists,
                values: Vec::new(),
            },
            _ => Expr {
                key,
                op: Op::DoesNotExist,
                values: Vec::new(),
            },
        })
}

fn selector() -> impl Strategy<Value = Sel> {
    (
        btree_map(strings(&SELECTOR_KEYS), strings(&VALUES), 0..=1),
        vec(expr(), 0..=2),
    )
        .prop_map(|(match_labels, exprs)| Sel {
            match_labels,
            exprs,
        })
}

/// Often `{}`, which selects everything.
fn selector_or_empty() -> impl Strategy<Value = Sel> {
    prop_oneof![1 => Just(Sel::default()), 2 => selector()]
}

fn peer() -> impl Strategy<Value = GPeer> {
    prop_oneof![
        3 => (option::of(selector_or_empty()), option::of(selector_or_empty())).prop_map(
            |(namespaces, pods)| GPeer::Pods {
                pods: if namespaces.is_none() && pods.is_none() {
                    Some(Sel::default())
                } else {
                    pods
                },
                namespaces,
            }
        ),
        1 => (0..BLOCKS.len()).prop_map(GPeer::Block),
    ]
}

fn port() -> impl Strategy<Value = GPort> {
    let protocol = option::of(select(Protocol::ALL.to_vec()));
    let port_ref = prop_oneof![
        1 => Just(None),
        2 => (select(RULE_PORTS.to_vec()), option::of(select(END_PORTS.to_vec()))).prop_map(
            |(n, end)| Some(GPortRef::Number(n, end.filter(|e| *e >= n)))
        ),
        2 => select(PORT_NAMES.to_vec()).prop_map(|n| Some(GPortRef::Name(n))),
    ];
    (protocol, port_ref).prop_map(|(protocol, port)| GPort { protocol, port })
}

fn rule() -> impl Strategy<Value = GRule> {
    (
        option::weighted(0.8, vec(peer(), 0..=2)),
        option::weighted(0.6, vec(port(), 0..=2)),
    )
        .prop_map(|(peers, ports)| GRule { peers, ports })
}

fn rules() -> impl Strategy<Value = Option<Vec<GRule>>> {
    option::weighted(0.7, vec(rule(), 0..=3))
}

fn policy_types() -> impl Strategy<Value = Option<Vec<Direction>>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Vec::new())),
        2 => Just(Some(vec![Direction::Ingress])),
        2 => Just(Some(vec![Direction::Egress])),
        2 => Just(Some(vec![Direction::Ingress, Direction::Egress])),
    ]
}

fn policy() -> impl Strategy<Value = GPolicy> {
    (
        0..NAMESPACES.len(),
        selector_or_empty(),
        policy_types(),
        rules(),
        rules(),
    )
        .prop_map(|(ns, selector, types, ingress, egress)| GPolicy {
            ns,
            selector,
            types,
            ingress,
            egress,
        })
}

fn pod() -> impl Strategy<Value = GPod> {
    (
        0..NAMESPACES.len(),
        labels(&LABEL_KEYS),
        prop_oneof![Just(None), Just(Some(80u16)), Just(Some(8080u16))],
        any::<bool>(),
        proptest::bool::weighted(0.1),
        prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        option::of(0..NODES.len()),
    )
        .prop_map(|(ns, labels, http, dns, host_network, family, node)| GPod {
            ns,
            labels,
            http,
            dns,
            host_network,
            family,
            node,
        })
}

fn cluster() -> impl Strategy<Value = GCluster> {
    (
        vec(option::weighted(0.8, labels(&LABEL_KEYS)), 3),
        vec(option::weighted(0.9, pod()), 2..=MAX_PODS),
        vec(option::weighted(0.9, policy()), 1..=5),
    )
        .prop_map(|(namespaces, pods, policies)| GCluster {
            namespaces,
            pods,
            policies,
        })
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        0..3 * MAX_PODS + EXTERNAL_IPS.len(),
        0..3 * MAX_PODS + EXTERNAL_IPS.len(),
        select(FLOW_PORTS.to_vec()),
        select(Protocol::ALL.to_vec()),
    )
        .prop_map(|(src, dst, port, protocol)| FlowSpec {
            src,
            dst,
            port,
            protocol,
        })
}

fn flows() -> impl Strategy<Value = Vec<FlowSpec>> {
    vec(flow_spec(), 20..60)
}

/// One update, as a watch would deliver it.
#[derive(Clone, Debug)]
enum Update {
    Pod(usize, Option<GPod>),
    Policy(usize, Option<GPolicy>),
    Namespace(usize, Option<Labels>),
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        3 => (0..MAX_PODS, option::weighted(0.7, pod())).prop_map(|(i, p)| Update::Pod(i, p)),
        3 => (0..MAX_POLICIES, option::weighted(0.7, policy()))
            .prop_map(|(i, p)| Update::Policy(i, p)),
        3 => (0..NAMESPACES.len(), option::weighted(0.8, labels(&LABEL_KEYS)))
            .prop_map(|(i, l)| Update::Namespace(i, l)),
    ]
}

// ---- helpers -------------------------------------------------------------------------

impl GCluster {
    /// Applies an update to the model and to `state` (deleting the old object
    /// first when it moves to another namespace, as it is then another object).
    fn update(&mut self, state: &mut ClusterState, update: &Update) {
        match update {
            Update::Pod(i, new) => {
                if *i >= self.pods.len() {
                    self.pods.resize(i + 1, None);
                }
                if let Some(old) = &self.pods[*i]
                    && new.as_ref().is_none_or(|n| n.ns != old.ns)
                {
                    assert!(state.delete(ObjectKind::Pod, NAMESPACES[old.ns], &pod_name(*i)));
                }
                if let Some(new) = new {
                    apply_json(state, &pod_json(*i, new));
                }
                self.pods[*i] = new.clone();
            }
            Update::Policy(i, new) => {
                if *i >= self.policies.len() {
                    self.policies.resize(i + 1, None);
                }
                if let Some(old) = &self.policies[*i]
                    && new.as_ref().is_none_or(|n| n.ns != old.ns)
                {
                    assert!(state.delete(
                        ObjectKind::NetworkPolicy,
                        NAMESPACES[old.ns],
                        &policy_name(*i)
                    ));
                }
                if let Some(new) = new {
                    apply_json(state, &policy_json(*i, new));
                }
                self.policies[*i] = new.clone();
            }
            Update::Namespace(i, labels) => {
                match labels {
                    Some(labels) => apply_json(state, &namespace_json(*i, labels)),
                    None => {
                        let existed = state.delete(ObjectKind::Namespace, "", NAMESPACES[*i]);
                        assert_eq!(existed, self.namespaces[*i].is_some());
                    }
                }
                self.namespaces[*i] = labels.clone();
            }
        }
    }

    /// Every (present) flow of `specs`, and one between every pair of pods (by
    /// name) and outside addresses.
    fn flows(&self, specs: &[FlowSpec]) -> Vec<Connection> {
        let n = self.pods.len();
        let named: Vec<usize> = (0..n).chain(3 * n..3 * n + EXTERNAL_IPS.len()).collect();
        let pairs = named.iter().flat_map(|&s| {
            // Between pods, and between pods and the outside.
            let to = named.iter().filter(move |&&d| s < n || d < n);
            to.map(move |&d| FlowSpec {
                src: s,
                dst: d,
                port: FLOW_PORTS[(s + d) % FLOW_PORTS.len()],
                protocol: Protocol::ALL[(s * 7 + d) % 3],
            })
        });
        specs
            .iter()
            .cloned()
            .chain(pairs)
            .filter_map(|f| self.flow(&f))
            .collect()
    }
}

/// Checks that the three evaluation paths agree on `flow` and returns the
/// verdict, without stopping at the first difference (proptest shrinks on the
/// returned error).
fn evaluate(state: &ClusterState, flow: &Connection) -> Result<Verdict, TestCaseError> {
    let cached = state.verdict(flow).expect("valid flow");
    let uncached = state.verdict_uncached(flow).expect("valid flow");
    let scanned = state.verdict_by_scan(flow).expect("valid flow");
    prop_assert_eq!(
        &*cached,
        &uncached,
        "cached and uncached verdicts differ for {:?}",
        flow
    );
    prop_assert_eq!(
        &uncached,
        &scanned,
        "indexed and scanned verdicts differ for {:?}",
        flow
    );
    Ok(uncached)
}

/// What a verdict promises about itself, and that it can be explained.
fn check_verdict_shape(
    state: &ClusterState,
    flow: &Connection,
    verdict: &Verdict,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        verdict.allowed,
        verdict.egress.allowed() && verdict.ingress.allowed()
    );
    for d in [&verdict.egress, &verdict.ingress] {
        match d.status {
            Status::Allowed => prop_assert!(d.isolated && !d.allowed_by.is_empty()),
            Status::Denied => {
                prop_assert!(d.isolated && d.allowed_by.is_empty() && !d.selected_by.is_empty())
            }
            Status::NotIsolated | Status::NotAPod | Status::HostNetwork => {
                prop_assert!(!d.isolated && d.selected_by.is_empty())
            }
            Status::SelfTraffic | Status::NodeLocal => {}
        }
        prop_assert_eq!(d.isolated, !d.selected_by.is_empty());
        prop_assert_eq!(
            d.nearest_miss.is_some(),
            d.status == Status::Denied && d.without_rules.len() < d.selected_by.len()
        );
    }
    let explanation = netverdict_policy::explain(state, flow, verdict);
    let text = explanation.to_string();
    prop_assert!(
        text.starts_with(if verdict.allowed { "ALLOW" } else { "DENY" }),
        "{}",
        text
    );
    serde_json::to_string(&explanation).expect("explanations serialize");
    Ok(())
}

fn check_against_reference(
    model: &GCluster,
    state: &ClusterState,
    specs: &[FlowSpec],
) -> Result<(), TestCaseError> {
    for flow in model.flows(specs) {
        let verdict = evaluate(state, &flow)?;
        check_verdict_shape(state, &flow, &verdict)?;
        prop_assert_eq!(
            verdict.allowed,
            model.allowed(&flow),
            "engine and reference disagree on {:?}\nengine: {}\npolicies:\n{}",
            flow,
            netverdict_policy::explain(state, &flow, &verdict),
            model
                .policies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| to_yaml(&policy_json(i, p))))
                .collect::<String>()
        );
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

// ---- properties ----------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// The engine decides as the brute-force reference does.
    #[test]
    fn engine_agrees_with_reference(model in cluster(), specs in flows()) {
        let state = model.state();
        check_against_reference(&model, &state, &specs)?;
    }

    /// `Selector::matches` agrees with a brute-force reading of LabelSelector.
    #[test]
    fn selector_agrees_with_reference(
        sel in selector(),
        samples in vec(btree_map(strings(&SELECTOR_KEYS), strings(&VALUES), 0..=3), 16),
    ) {
        let k8s: LabelSelector = serde_json::from_value(sel_json(&sel)).expect("selector");
        let compiled = Selector::compile(&k8s, "podSelector").expect("valid selector");
        for labels in &samples {
            prop_assert_eq!(
                compiled.matches(labels),
                reference_matches(&sel, labels),
                "{:?} on {:?}", sel, labels
            );
            prop_assert_eq!(compiled.failures(labels).is_empty(), compiled.matches(labels));
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Adding a rule to a policy, in a direction the policy already applies to,
    /// never turns an allowed flow into a denied one (isolation is unchanged and
    /// rules only allow).
    #[test]
    fn adding_a_rule_never_turns_an_allow_into_a_deny(
        mut model in cluster(),
        new_policy in policy(),
        which in any::<prop::sample::Index>(),
        ingress_first in any::<bool>(),
        extra in rule(),
        specs in flows(),
    ) {
        if model.policies.iter().all(Option::is_none) {
            model.policies.push(Some(new_policy));
        }
        let present: Vec<usize> =
            (0..model.policies.len()).filter(|i| model.policies[*i].is_some()).collect();
        let index = present[which.index(present.len())];
        let before = model.state();
        let mut after_model = model.clone();
        let policy = after_model.policies[index].as_mut().expect("present");
        let direction = [Direction::Ingress, Direction::Egress]
            .into_iter()
            .filter(|d| GCluster::applies(policy, *d))
            .min_by_key(|d| (*d == Direction::Ingress) != ingress_first)
            .expect("every policy applies to some direction");
        match direction {
            Direction::Ingress => policy.ingress.get_or_insert_with(Vec::new).push(extra),
            Direction::Egress => policy.egress.get_or_insert_with(Vec::new).push(extra),
        }
        let after = after_model.state();
        for flow in model.flows(&specs) {
            let (b, a) = (evaluate(&before, &flow)?, evaluate(&after, &flow)?);
            prop_assert_eq!(&b.egress.selected_by, &a.egress.selected_by);
            prop_assert_eq!(&b.ingress.selected_by, &a.ingress.selected_by);
            prop_assert!(!b.allowed || a.allowed, "{:?} denied after adding {:?} rule to np{}", flow, direction, index);
        }
    }

    /// Adding any policy can deny a flow only by isolating an endpoint that was
    /// not isolated before: a direction an isolated pod allowed stays allowed,
    /// and an allowed flow whose endpoints the policy does not newly isolate
    /// stays allowed.
    #[test]
    fn adding_a_policy_only_denies_through_new_isolation(
        model in cluster(),
        new_policy in policy(),
        specs in flows(),
    ) {
        let before = model.state();
        let mut after_model = model.clone();
        after_model.policies.push(Some(new_policy));
        let after = after_model.state();
        for flow in model.flows(&specs) {
            let (b, a) = (evaluate(&before, &flow)?, evaluate(&after, &flow)?);
            for (db, da) in [(&b.egress, &a.egress), (&b.ingress, &a.ingress)] {
                if db.status == Status::Allowed {
                    prop_assert_eq!(da.status, Status::Allowed, "{:?}", flow);
                }
                if da.status == Status::Denied && db.status != Status::Denied {
                    prop_assert_eq!(db.status, Status::NotIsolated, "{:?}", flow);
                }
            }
            if b.allowed && !a.allowed {
                prop_assert!(
                    (!b.egress.isolated && a.egress.isolated)
                        || (!b.ingress.isolated && a.ingress.isolated),
                    "{:?} denied without new isolation", flow
                );
            }
        }
    }

    /// A policy that selects no pod (its namespace has none, or its selector
    /// requires a label no pod has) changes no verdict, explanations included.
    #[test]
    fn a_policy_selecting_no_pod_changes_no_verdict(
        model in cluster(),
        mut new_policy in policy(),
        empty_namespace in any::<bool>(),
        specs in flows(),
    ) {
        if empty_namespace {
            let Some(ns) = (0..NAMESPACES.len())
                .find(|ns| model.pods.iter().flatten().all(|p| p.ns != *ns))
            else {
                return Ok(());
            };
            new_policy.ns = ns;
        } else {
            new_policy
                .selector
                .match_labels
                .insert("app".to_string(), "nobody".to_string());
        }
        let before = model.state();
        let mut after_model = model.clone();
        after_model.policies.push(Some(new_policy));
        let after = after_model.state();
        for flow in model.flows(&specs) {
            prop_assert_eq!(evaluate(&before, &flow)?, evaluate(&after, &flow)?, "{:?}", flow);
        }
    }

    /// Across random updates, the cached verdict agrees with the uncached and
    /// scanning ones and with the reference (stale cache entries would not).
    #[test]
    fn incremental_updates_keep_verdicts_exact(
        mut model in cluster(),
        updates in vec(update(), 1..12),
        specs in flows(),
    ) {
        let mut state = model.state();
        check_against_reference(&model, &state, &specs)?;
        for update in &updates {
            model.update(&mut state, update);
            check_against_reference(&model, &state, &specs)?;
        }
    }

    /// Loading manifests, then deleting and re-applying objects one by one, ends
    /// in a state that answers exactly as one loaded fresh from the final set,
    /// and as one built from the same objects in the opposite order.
    #[test]
    fn updated_state_answers_like_a_fresh_one(
        model in cluster(),
        updates in vec(update(), 1..8),
        specs in flows(),
    ) {
        let mut state = state_from_manifests(&model.manifests());
        // Warm the cache before updating.
        for flow in model.flows(&specs) {
            evaluate(&state, &flow)?;
        }
        let mut final_model = model.clone();
        for update in &updates {
            final_model.update(&mut state, update);
        }
        // Delete and re-apply every object.
        let mut replay = final_model.clone();
        for i in 0..replay.pods.len() {
            if let Some(pod) = replay.pods[i].clone() {
                replay.update(&mut state, &Update::Pod(i, None));
                replay.update(&mut state, &Update::Pod(i, Some(pod)));
            }
        }
        for i in 0..replay.policies.len() {
            if let Some(policy) = replay.policies[i].clone() {
                replay.update(&mut state, &Update::Policy(i, None));
                replay.update(&mut state, &Update::Policy(i, Some(policy)));
            }
        }
        let fresh = state_from_manifests(&final_model.manifests());
        let reversed = final_model.state_reversed();
        for flow in final_model.flows(&specs) {
            let (updated, loaded) = (evaluate(&state, &flow)?, evaluate(&fresh, &flow)?);
            prop_assert_eq!(&updated, &loaded, "{:?}", flow);
            prop_assert_eq!(&evaluate(&reversed, &flow)?, &loaded, "{:?} (built in reverse)", flow);
        }
    }
}

/// The engine forgets identities no pod has any more once they outnumber the
/// pods (about every thousand relabellings): verdicts asked by pod name and by
/// IP stay exact across those rebuilds, with the cache warm throughout.
#[test]
fn identity_rebuilds_keep_verdicts_exact() {
    let mut model = GCluster {
        namespaces: vec![None; 3],
        pods: vec![None, None, None],
        policies: vec![Some(GPolicy {
            ns: 0,
            selector: Sel {
                match_labels: Labels::from([("app".to_string(), "b".to_string())]),
                exprs: Vec::new(),
            },
            types: None,
            ingress: Some(vec![GRule {
                peers: Some(vec![GPeer::Pods {
                    namespaces: None,
                    pods: Some(Sel {
                        match_labels: Labels::from([("env".to_string(), "a".to_string())]),
                        exprs: Vec::new(),
                    }),
                }]),
                ports: None,
            }]),
            egress: None,
        })],
    };
    let mut state = model.state();
    let server = GPod {
        ns: 0,
        labels: Labels::from([("app".to_string(), "b".to_string())]),
        http: Some(80),
        dns: false,
        host_network: false,
        family: 0,
        node: None,
    };
    model.update(&mut state, &Update::Pod(1, Some(server)));
    // Pods 0, 1 and 2 by name (endpoints 0-2) and by IP (3-5), every way.
    let specs: Vec<FlowSpec> = (0..6)
        .flat_map(|src| (0..6).map(move |dst| (src, dst)))
        .map(|(src, dst)| FlowSpec {
            src,
            dst,
            port: 80,
            protocol: Protocol::Tcp,
        })
        .collect();
    for generation in 0..2300 {
        // Every generation is a new identity; every other one is admitted.
        let env = if generation % 2 == 0 { "a" } else { "b" };
        let client = GPod {
            ns: 0,
            labels: Labels::from([
                ("app".to_string(), format!("g{generation}")),
                ("env".to_string(), env.to_string()),
            ]),
            http: None,
            dns: false,
            host_network: false,
            family: 0,
            node: None,
        };
        model.update(&mut state, &Update::Pod(0, Some(client)));
        if generation == 7 {
            // A pod that keeps the identity it had before the rebuilds.
            let other = GPod {
                ns: 0,
                labels: Labels::from([("env".to_string(), "b".to_string())]),
                http: None,
                dns: false,
                host_network: false,
                family: 0,
                node: None,
            };
            model.update(&mut state, &Update::Pod(2, Some(other)));
        }
        for spec in &specs {
            let Some(flow) = model.flow(spec) else {
                continue;
            };
            let cached = state.verdict(&flow).expect("valid flow");
            assert_eq!(*cached, state.verdict_uncached(&flow).unwrap(), "{flow:?}");
            assert_eq!(cached.allowed, model.allowed(&flow), "{flow:?}");
        }
    }
}

// ---- the fix of a denied flow ----------------------------------------------------------

/// Every flow between the cluster's pods (by name) on every flow port and
/// protocol, with its decision.
fn every_pod_flow(
    model: &GCluster,
    state: &ClusterState,
) -> Vec<(usize, usize, u16, Protocol, bool)> {
    let present: Vec<usize> = (0..model.pods.len())
        .filter(|i| model.pods[*i].is_some())
        .collect();
    let mut out = Vec::new();
    for &s in &present {
        for &d in &present {
            for port in FLOW_PORTS {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    let flow = Connection::new(
                        Endpoint::Pod(PodKey::new(
                            NAMESPACES[model.pods[s].as_ref().map_or(0, |p| p.ns)],
                            pod_name(s),
                        )),
                        Endpoint::Pod(PodKey::new(
                            NAMESPACES[model.pods[d].as_ref().map_or(0, |p| p.ns)],
                            pod_name(d),
                        )),
                        port,
                        protocol,
                    );
                    let allowed = state.verdict(&flow).expect("valid flow").allowed;
                    out.push((s, d, port, protocol, allowed));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config(128))]

    /// The fix of a denied flow between two pods allows it, and allows
    /// nothing else that was denied but the same flow between pods its
    /// selectors cannot tell apart from these two (same namespace, same
    /// labels); an allowed flow gets no fix. The fix's objects are loaded
    /// as manifests, as `kubectl apply` would take them.
    #[test]
    fn the_fix_allows_the_flow_and_nothing_else_denied(
        model in cluster(),
        src in 0..MAX_PODS,
        dst in 0..MAX_PODS,
        port in select(&FLOW_PORTS[..]),
        udp in any::<bool>(),
    ) {
        let (Some(Some(s)), Some(Some(d))) = (model.pods.get(src), model.pods.get(dst)) else {
            return Ok(());
        };
        prop_assume!(src != dst && !s.host_network && !d.host_network);
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let before = model.state();
        let source = Endpoint::Pod(PodKey::new(NAMESPACES[s.ns], pod_name(src)));
        let target = Target {
            endpoint: TargetEndpoint::Pod(PodKey::new(NAMESPACES[d.ns], pod_name(dst))),
            port,
            protocol,
        };
        let flow = Connection::new(source.clone(), target.endpoint.engine(), port, protocol);
        let was_allowed = before.verdict(&flow).expect("valid flow").allowed;
        let fixed = fix(&before, &source, std::slice::from_ref(&target)).expect("fix");
        if was_allowed {
            prop_assert!(fixed.policies.is_empty(), "{:?}", fixed);
            return Ok(());
        }
        prop_assert!(!fixed.policies.is_empty() || !fixed.notes.is_empty(), "neither a fix nor a reason");
        let mut yaml = model.manifests();
        for policy in &fixed.policies {
            yaml.push_str(&to_yaml(&serde_json::to_value(policy).expect("policy as JSON")));
        }
        let after = state_from_manifests(&yaml);
        let now_allowed = after.verdict(&flow).expect("valid flow").allowed;
        // Only a pod without labels (no selector can pick it alone) is left denied.
        if !now_allowed {
            prop_assert!(s.labels.is_empty() || d.labels.is_empty(), "not fixed: {:?}", fixed);
            prop_assert!(fixed.notes.iter().any(|n| n.contains("no labels")), "{:?}", fixed.notes);
        }
        let like = |i: usize, j: usize| {
            let (a, b) = (model.pods[i].as_ref(), model.pods[j].as_ref());
            a.zip(b).is_some_and(|(a, b)| a.ns == b.ns && a.labels == b.labels && !a.host_network)
        };
        let old = every_pod_flow(&model, &before);
        let new = every_pod_flow(&model, &after);
        for (o, n) in old.iter().zip(&new) {
            if !o.4 && n.4 {
                let (os, od, oport, oproto, _) = *o;
                prop_assert!(
                    like(os, src) && like(od, dst) && oport == port && oproto == protocol,
                    "the fix of p{}->p{} {}/{:?} also allows p{}->p{} {}/{:?}: {:#?}",
                    src, dst, port, protocol, os, od, oport, oproto, fixed.policies
                );
            }
        }
    }
}
