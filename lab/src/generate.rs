//! Generated clusters: random small clusters with random policy sets (for the
//! lab-versus-engine tests) and the benchmark cluster (100 pods, 50 policies).
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
