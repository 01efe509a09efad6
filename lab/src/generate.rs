//! Generated clusters: random small clusters with random policy sets (for the
//! lab-versus-engine tests), the same with random admin policies
//! (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy of
//! both tiers) on top, the benchmark cluster (100 pods, 50 policies) and the
//! chaos soak's cluster (`netverdict lab soak`).
//!
//! Generation is deterministic per seed, so a failing cluster can be rebuilt
//! from the seed the test prints.

use netverdict_policy::manifest::K8sObject;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("generated objects are valid")
}

fn namespace(name: &str, labels: Value) -> K8sObject {
    let mut labels = labels;
    labels["kubernetes.io/metadata.name"] = json!(name);
    K8sObject::Namespace(Box::new(obj(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}
    }))))
}

fn pod(ns: &str, name: &str, labels: Value, ports: Value, ip: Option<String>) -> K8sObject {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": ports}]}
    });
    if let Some(ip) = ip {
        v["status"] = json!({"podIP": ip});
    }
    K8sObject::Pod(Box::new(obj(v)))
}

fn policy(ns: &str, name: &str, spec: Value) -> K8sObject {
    K8sObject::NetworkPolicy(Box::new(obj(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))))
}

const NAMESPACES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];
const APPS: [&str; 2] = ["web", "db"];
const TEAMS: [&str; 2] = ["red", "blue"];

fn random_pod_selector(rng: &mut StdRng) -> Value {
    match rng.random_range(0..4) {
        0 => json!({}),
        1 => json!({"matchLabels": {"app": APPS.choose(rng).unwrap_or(&"web")}}),
        2 => json!({"matchExpressions": [{"key": "tier", "operator": "In",
                     "values": [if rng.random_bool(0.5) { "front" } else { "back" }]}]}),
        _ => json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}),
    }
}

fn random_ns_selector(rng: &mut StdRng) -> Value {
    match rng.random_range(0..3) {
        0 => json!({}),
        1 => json!({"matchLabels": {"team": TEAMS.choose(rng).unwrap_or(&"red")}}),
        _ => {
            json!({"matchLabels": {"kubernetes.io/metadata.name": NAMESPACES.choose(rng).unwrap_or(&"ns-a")}})
        }
    }
}

fn random_peer(rng: &mut StdRng) -> Value {
    match rng.random_range(0..5) {
        0 => json!({"podSelector": random_pod_selector(rng)}),
        1 => json!({"namespaceSelector": random_ns_selector(rng)}),
        2 => {
            json!({"namespaceSelector": random_ns_selector(rng), "podSelector": random_pod_selector(rng)})
        }
        3 => {
            // Pod IPs are 10.1.<ns>.<pod>: blocks cut across namespaces and pods.
            let ns = rng.random_range(0..3);
            if rng.random_bool(0.5) {
                json!({"ipBlock": {"cidr": "10.1.0.0/16", "except": [format!("10.1.{ns}.0/24")]}})
            } else {
                json!({"ipBlock": {"cidr": format!("10.1.{ns}.0/24"), "except": [format!("10.1.{ns}.11/32")]}})
            }
        }
        _ => json!({"ipBlock": {"cidr": format!("10.1.{}.0/24", rng.random_range(0..3))}}),
    }
}

fn random_port(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!({"protocol": "TCP", "port": 80}),
        1 => json!({"protocol": "TCP", "port": 81}),
        2 => json!({"protocol": "TCP", "port": 79, "endPort": 80}),
        3 => json!({"protocol": "TCP", "port": "http"}),
        4 => json!({"protocol": "UDP", "port": 80}),
        _ => json!({"protocol": "UDP"}),
    }
}

fn random_rules(rng: &mut StdRng, key: &str) -> Value {
    let n = rng.random_range(0..3);
    let rules: Vec<Value> = (0..n)
        .map(|_| {
            let mut rule = json!({});
            if rng.random_bool(0.8) {
                let peers: Vec<Value> = (0..rng.random_range(1..3))
                    .map(|_| random_peer(rng))
                    .collect();
                rule[key] = json!(peers);
            }
            if rng.random_bool(0.7) {
                let ports: Vec<Value> = (0..rng.random_range(1..3))
                    .map(|_| random_port(rng))
                    .collect();
                rule["ports"] = json!(ports);
            }
            rule
        })
        .collect();
    json!(rules)
}

/// A random cluster: 3 namespaces × 2 pods (ports among TCP 80 `http`, TCP 81
/// `http` and UDP 80), 1 to 4 random policies. Pod IPs are `10.1.<ns>.<10+i>`.
pub fn random_cluster(seed: u64) -> Vec<K8sObject> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        out.push(namespace(
            ns,
            json!({"team": TEAMS.choose(&mut rng).unwrap_or(&"red")}),
        ));
        for i in 0..2 {
            let labels = json!({
                "app": APPS.choose(&mut rng).unwrap_or(&"web"),
                "tier": if rng.random_bool(0.5) { "front" } else { "back" },
            });
            // The named port `http` is 80 on some pods and 81 on others.
            let ports = match rng.random_range(0..3) {
                0 => json!([{"name": "http", "containerPort": 80, "protocol": "TCP"},
                            {"containerPort": 80, "protocol": "UDP"}]),
                1 => json!([{"name": "http", "containerPort": 81, "protocol": "TCP"},
                            {"containerPort": 80, "protocol": "TCP"}]),
                _ => json!([{"containerPort": 80, "protocol": "TCP"},
                            {"containerPort": 81, "protocol": "TCP"},
                            {"containerPort": 80, "protocol": "UDP"}]),
            };
            out.push(pod(
                ns,
                &format!("p{i}"),
                labels,
                ports,
                Some(format!("10.1.{n}.{}", 10 + i)),
            ));
        }
    }
    for k in 0..rng.random_range(1..5) {
        let ns = NAMESPACES.choose(&mut rng).unwrap_or(&"ns-a");
        let mut spec = json!({"podSelector": random_pod_selector(&mut rng)});
        let (ing, eg) = match rng.random_range(0..3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let mut types = Vec::new();
        if ing {
            types.push("Ingress");
            spec["ingress"] = random_rules(&mut rng, "from");
        }
        if eg {
            types.push("Egress");
            spec["egress"] = random_rules(&mut rng, "to");
        }
        spec["policyTypes"] = json!(types);
        out.push(policy(ns, &format!("pol-{k}"), spec));
    }
    out
}

/// The admin policy kinds, as the generator writes them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AdminKind {
    Anp,
    Banp,
    Cnp,
}

impl AdminKind {
    fn allow(self) -> &'static str {
        match self {
            AdminKind::Cnp => "Accept",
            _ => "Allow",
        }
    }
}

fn admin_object(kind: AdminKind, name: &str, spec: Value) -> K8sObject {
    let v = |api: &str, kind: &str| {
        json!({"apiVersion": format!("policy.networking.k8s.io/{api}"), "kind": kind,
               "metadata": {"name": name}, "spec": spec})
    };
    match kind {
        AdminKind::Anp => {
            K8sObject::AdminNetworkPolicy(Box::new(obj(v("v1alpha1", "AdminNetworkPolicy"))))
        }
        AdminKind::Banp => K8sObject::BaselineAdminNetworkPolicy(Box::new(obj(v(
            "v1alpha1",
            "BaselineAdminNetworkPolicy",
        )))),
        AdminKind::Cnp => {
            K8sObject::ClusterNetworkPolicy(Box::new(obj(v("v1alpha2", "ClusterNetworkPolicy"))))
        }
    }
}

fn random_admin_subject(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.5) {
        json!({"namespaces": random_ns_selector(rng)})
    } else {
        json!({"pods": {"namespaceSelector": random_ns_selector(rng),
                        "podSelector": random_pod_selector(rng)}})
    }
}

/// A peer of an admin rule; `addresses` allows `networks` and `nodes` (egress
/// rules without named ports).
fn random_admin_peer(rng: &mut StdRng, addresses: bool) -> Value {
    match rng.random_range(0..if addresses { 6 } else { 3 }) {
        0 => json!({"namespaces": random_ns_selector(rng)}),
        1 | 2 => json!({"pods": {"namespaceSelector": random_ns_selector(rng),
                                 "podSelector": random_pod_selector(rng)}}),
        3 => {
            // Pod IPs are 10.1.<ns>.<10+i>: networks of a namespace, of one
            // pod, or of everything, overlapping each other.
            let ns = rng.random_range(0..3);
            let nets = match rng.random_range(0..3) {
                0 => json!([format!("10.1.{ns}.0/24")]),
                1 => json!([
                    format!("10.1.{ns}.{}/32", 10 + rng.random_range(0..2)),
                    format!("10.1.{}.0/24", (ns + 1) % 3)
                ]),
                _ => json!(["10.1.0.0/16", format!("10.1.{ns}.0/24")]),
            };
            json!({"networks": nets})
        }
        4 => json!({"networks": [format!("10.1.{}.0/25", rng.random_range(0..3))]}),
        _ => json!({"nodes": {}}),
    }
}

/// The ports of an admin rule (None: every port), and whether one is named.
fn random_admin_ports(rng: &mut StdRng, kind: AdminKind) -> (Option<Value>, bool) {
    if rng.random_bool(0.35) {
        return (None, false);
    }
    let mut named = false;
    let ports: Vec<Value> = (0..rng.random_range(1..3))
        .map(|_| {
            let pick = rng.random_range(0..6);
            named |= pick == 3;
            match (kind, pick) {
                (AdminKind::Cnp, 0) => json!({"tcp": {"destinationPort": {"number": 80}}}),
                (AdminKind::Cnp, 1) => json!({"tcp": {"destinationPort": {"number": 81}}}),
                (AdminKind::Cnp, 2) => {
                    json!({"tcp": {"destinationPort": {"range": {"start": 79, "end": 80}}}})
                }
                (AdminKind::Cnp, 3) => json!({"destinationNamedPort": "http"}),
                (AdminKind::Cnp, 4) => json!({"udp": {"destinationPort": {"number": 80}}}),
                (AdminKind::Cnp, _) => json!({"tcp": {}}),
                (_, 0) => json!({"portNumber": {"protocol": "TCP", "port": 80}}),
                (_, 1) => json!({"portNumber": {"protocol": "TCP", "port": 81}}),
                (_, 2) => json!({"portRange": {"protocol": "TCP", "start": 79, "end": 80}}),
                (_, 3) => json!({"namedPort": "http"}),
                (_, 4) => json!({"portNumber": {"protocol": "UDP", "port": 80}}),
                (_, _) => json!({"portRange": {"protocol": "TCP", "start": 81, "end": 90}}),
            }
        })
        .collect();
    let field = if kind == AdminKind::Cnp {
        "protocols"
    } else {
        "ports"
    };
    (Some(json!({field: ports})), named)
}

fn random_admin_rules(rng: &mut StdRng, kind: AdminKind, egress: bool) -> Value {
    let (peers_field, prefix) = if egress { ("to", "e") } else { ("from", "i") };
    let rules: Vec<Value> = (0..rng.random_range(0..4))
        .map(|r| {
            let actions: &[&str] = if kind == AdminKind::Banp {
                &["Deny", "Allow"]
            } else {
                &["Deny", "Pass", "Allow"]
            };
            let action = match *actions.choose(rng).unwrap_or(&"Deny") {
                "Allow" => kind.allow(),
                other => other,
            };
            let (ports, named) = random_admin_ports(rng, kind);
            let peers: Vec<Value> = (0..rng.random_range(1..3))
                .map(|_| random_admin_peer(rng, egress && !named))
                .collect();
            let mut rule = json!({"name": format!("{prefix}{r}-{}", action.to_lowercase()),
                                  "action": action, peers_field: peers});
            if let Some(Value::Object(ports)) = ports {
                for (k, v) in ports {
                    rule[k] = v;
                }
            }
            rule
        })
        .collect();
    json!(rules)
}

fn random_admin_spec(rng: &mut StdRng, kind: AdminKind) -> Value {
    let mut spec = json!({"subject": random_admin_subject(rng)});
    // Few priorities, so some are shared (decided by name, then kind).
    if kind != AdminKind::Banp {
        spec["priority"] = json!([1, 2, 2, 5].choose(rng).unwrap_or(&1));
    }
    spec["ingress"] = random_admin_rules(rng, kind, false);
    spec["egress"] = random_admin_rules(rng, kind, true);
    spec
}

/// [`random_cluster`] for the same seed, plus random admin policies: 1 to 3
/// AdminNetworkPolicies, often a BaselineAdminNetworkPolicy, and sometimes
/// an Admin or a Baseline ClusterNetworkPolicy (priorities among 1, 2 and 5,
/// so some are shared). Rules have Allow (Accept), Deny and Pass actions,
/// `namespaces` and `pods` peers, egress `networks` (overlapping CIDRs) and
/// `nodes`, and ports by number, range, protocol or name.
pub fn random_admin_cluster(seed: u64) -> Vec<K8sObject> {
    let mut out = random_cluster(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xad41_0000_0000_0000);
    for k in 0..rng.random_range(1..4) {
        let spec = random_admin_spec(&mut rng, AdminKind::Anp);
        out.push(admin_object(AdminKind::Anp, &format!("anp-{k}"), spec));
    }
    if rng.random_bool(0.7) {
        let spec = random_admin_spec(&mut rng, AdminKind::Banp);
        out.push(admin_object(AdminKind::Banp, "default", spec));
    }
    for tier in ["Admin", "Baseline"] {
        if rng.random_bool(0.5) {
            let mut spec = random_admin_spec(&mut rng, AdminKind::Cnp);
            spec["tier"] = json!(tier);
            let name = format!("cnp-{}", tier.to_lowercase());
            out.push(admin_object(AdminKind::Cnp, &name, spec));
        }
    }
    out
}

/// The benchmark cluster: `pods` pods over 10 namespaces (no IPs: the lab
/// allocates them), each serving TCP 80, and `policies` policies mixing
/// selectors, namespace selectors and ipBlocks.
pub fn bench_cluster(pods: usize, policies: usize) -> Vec<K8sObject> {
    let mut out = Vec::new();
    for n in 0..10 {
        out.push(namespace(
            &format!("bench-{n}"),
            json!({"team": format!("t{}", n % 3)}),
        ));
    }
    for i in 0..pods {
        out.push(pod(
            &format!("bench-{}", i % 10),
            &format!("pod-{i}"),
            json!({"app": format!("a{}", i % 7), "tier": if i % 2 == 0 { "front" } else { "back" }}),
            json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}]),
            None,
        ));
    }
    for k in 0..policies {
        let ns = format!("bench-{}", k % 10);
        let spec = match k % 5 {
            0 => json!({"podSelector": {"matchLabels": {"app": format!("a{}", k % 7)}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "front"}}}],
                             "ports": [{"port": "http", "protocol": "TCP"}]}]}),
            1 => json!({"podSelector": {"matchLabels": {"tier": "back"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 3)}}}]}]}),
            2 => json!({"podSelector": {"matchLabels": {"app": format!("a{}", k % 7)}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.250.0.0/16", "except": ["10.250.0.0/26"]}}],
                            "ports": [{"port": 80, "protocol": "TCP"}]}]}),
            3 => json!({"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": format!("a{}", k % 7)}}}]}]}),
            _ => {
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a1", "a2"]}]},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}]}]})
            }
        };
        out.push(policy(&ns, &format!("pol-{k}"), spec));
    }
    out
}

/// The namespaces of [`soak_cluster`], in the order its pods are placed.
pub const SOAK_NAMESPACES: [&str; 3] = ["soak-web", "soak-api", "soak-db"];

/// The chaos soak's cluster: `pods` pods (at least 3) spread over
/// [`SOAK_NAMESPACES`], each serving TCP 80, and two policies so that some
/// traffic is denied: soak-db admits only soak-api on TCP 80 (a port scan of
/// a soak-db pod is denied on every other port), and soak-web may send only
/// DNS to kube-system and TCP 80 (its scans are denied on the way out).
pub fn soak_cluster(pods: usize) -> Vec<K8sObject> {
    let mut out = Vec::new();
    for (n, ns) in SOAK_NAMESPACES.iter().enumerate() {
        out.push(namespace(
            ns,
            json!({"tier": ns.trim_start_matches("soak-"), "n": n.to_string()}),
        ));
    }
    for i in 0..pods.max(SOAK_NAMESPACES.len()) {
        let ns = SOAK_NAMESPACES[i % SOAK_NAMESPACES.len()];
        out.push(pod(
            ns,
            &format!("{}-{i}", ns.trim_start_matches("soak-")),
            json!({"app": ns.trim_start_matches("soak-")}),
            json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}]),
            None,
        ));
    }
    out.push(policy(
        "soak-db",
        "db-from-api",
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "api"}}}],
                         "ports": [{"port": 80, "protocol": "TCP"}]}]}),
    ));
    out.push(policy(
        "soak-web",
        "web-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                 "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {"ports": [{"port": 80, "protocol": "TCP"}]}
            ]}),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::build_cluster;

    #[test]
    fn the_soak_cluster_denies_scans_and_allows_its_services() {
        let lab = crate::lab::fixture::planned(soak_cluster(9), true);
        assert_eq!(lab.cluster().policy_count(), 2);
        assert_eq!(lab.pods().len(), 10, "9 pods and the cluster DNS");
        let allowed = |from: &str, to: &str, port: u16| {
            lab.verdict(from, to, port, netverdict_policy::Protocol::Tcp)
                .0
        };
        assert!(allowed("soak-api/api-1", "soak-db/db-2", 80));
        assert!(
            !allowed("soak-api/api-1", "soak-db/db-2", 8443),
            "a scan of db"
        );
        assert!(!allowed("soak-web/web-0", "soak-db/db-2", 80));
        assert!(allowed("soak-web/web-0", "soak-api/api-1", 80));
        assert!(
            !allowed("soak-web/web-0", "soak-api/api-1", 8443),
            "a scan from web"
        );
        assert!(allowed("soak-api/api-1", "soak-web/web-0", 8443));
    }
    use netverdict_policy::model::{AdminAction, AdminPeer, AdminPort, Tier};

    #[test]
    fn random_admin_clusters_are_valid_and_mix_every_kind_action_peer_and_port() {
        let mut kinds = std::collections::BTreeSet::new();
        let (mut actions, mut peers, mut ports) = (
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        );
        let mut shared_priority = false;
        for seed in 0..60 {
            let objects = random_admin_cluster(seed);
            let cluster = build_cluster(&objects).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(cluster.admin_policy_count() >= 1);
            assert_eq!(
                cluster.policy_count(),
                build_cluster(&random_cluster(seed)).unwrap().policy_count(),
                "the NetworkPolicies are random_cluster's"
            );
            let admin = cluster.admin_tier(Tier::Admin);
            shared_priority |= admin.windows(2).any(|w| w[0].priority == w[1].priority);
            for policy in cluster.admin_policies() {
                kinds.insert((policy.key.kind().to_string(), policy.tier));
                for rule in policy.ingress.iter().chain(&policy.egress) {
                    actions.insert(rule.action);
                    for peer in &rule.peers {
                        peers.insert(match peer {
                            AdminPeer::Namespaces(_) => "namespaces",
                            AdminPeer::Pods { .. } => "pods",
                            AdminPeer::Networks(_) => "networks",
                            AdminPeer::Nodes(_) => "nodes",
                            _ => "other",
                        });
                    }
                    for port in &rule.ports {
                        ports.insert(match port {
                            AdminPort::Number { .. } => "number",
                            AdminPort::Range { .. } => "range",
                            AdminPort::Protocol(_) => "protocol",
                            AdminPort::Named(_) => "named",
                        });
                    }
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert_eq!(
            actions.into_iter().collect::<Vec<_>>(),
            [AdminAction::Allow, AdminAction::Deny, AdminAction::Pass]
        );
        assert_eq!(
            peers.into_iter().collect::<Vec<_>>(),
            ["namespaces", "networks", "nodes", "pods"]
        );
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            ["named", "number", "protocol", "range"]
        );
        assert!(shared_priority);
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let a: Vec<_> = random_admin_cluster(7)
            .iter()
            .map(|o| o.to_json().ok())
            .collect();
        let b: Vec<_> = random_admin_cluster(7)
            .iter()
            .map(|o| o.to_json().ok())
            .collect();
        assert_eq!(a, b);
    }
}
