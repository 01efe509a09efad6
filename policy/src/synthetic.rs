//! Synthetic clusters for benchmarks: many namespaces, pods and policies with the
//! shapes real clusters have (default-deny, app-to-app rules across namespaces,
//! matchExpressions, named ports, port ranges, ipBlocks), generated
//! deterministically from a seed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::{Connection, Endpoint};
use crate::manifest::K8sObject;
use crate::model::Protocol;

/// The size of a synthetic cluster.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
}

impl Size {
    /// The benchmark cluster: 10,000 pods, 500 namespaces, 2,000 policies.
    pub const LARGE: Size = Size {
        namespaces: 500,
        pods: 10_000,
        policies: 2_000,
    };
}

const TIERS: [&str; 3] = ["web", "api", "db"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

fn labels(pairs: &[(&str, String)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn match_labels(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: None,
    }
}

/// The IP of pod number `i`.
pub fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        128 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
}

/// Generates the objects of a cluster of `size`, deterministically from `seed`.
pub fn cluster(size: Size, seed: u64) -> Vec<K8sObject> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(size.namespaces + size.pods + size.policies);
    let ns_name = |i: usize| format!("ns-{i}");
    for i in 0..size.namespaces {
        out.push(K8sObject::Namespace(Box::new(core::Namespace {
            metadata: ObjectMeta {
                name: Some(ns_name(i)),
                labels: labels(&[
                    ("team", format!("team-{}", i % 25)),
                    ("env", ENVS[i % 3].to_string()),
                ]),
                ..Default::default()
            },
            ..Default::default()
        })));
    }
    for i in 0..size.pods {
        let ns = i % size.namespaces;
        let port = |name: &str, n: i32| core::ContainerPort {
            name: Some(name.to_string()),
            container_port: n,
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        out.push(K8sObject::Pod(Box::new(core::Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{i}")),
                namespace: Some(ns_name(ns)),
                labels: labels(&[
                    ("app", format!("app-{}", (i / size.namespaces) % 10)),
                    ("tier", TIERS[i % 3].to_string()),
                    (
                        "pod-template-hash",
                        format!("{:x}", rng.random::<u32>() % 4),
                    ),
                ]),
                ..Default::default()
            },
            spec: Some(core::PodSpec {
                node_name: Some(format!("node-{}", i % 50)),
                containers: vec![core::Container {
                    name: "main".into(),
                    ports: Some(vec![port("http", 8080), port("metrics", 9090)]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                pod_ip: Some(pod_ip(i).to_string()),
                ..Default::default()
            }),
        })));
    }
    for i in 0..size.policies {
        let ns = i % size.namespaces;
        let kind = (i / size.namespaces) % 4;
        let np_port = |p: IntOrString, end: Option<i32>| net::NetworkPolicyPort {
            port: Some(p),
            end_port: end,
            protocol: Some("TCP".into()),
        };
        let spec = match kind {
            // Default deny ingress, allowing the namespace's own pods.
            0 => net::NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                ingress: Some(vec![net::NetworkPolicyIngressRule {
                    from: Some(vec![net::NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    }]),
                    ports: None,
                }]),
                ..Default::default()
            },
            // An app reachable from web pods of one team's namespaces, on its named port.
            1 => net::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[(
                    "app",
                    format!("app-{}", rng.random_range(0..10)),
                )])),
                ingress: Some(vec![net::NetworkPolicyIngressRule {
                    from: Some(vec![net::NetworkPolicyPeer {
                        namespace_selector: Some(match_labels(&[(
                            "team",
                            format!("team-{}", rng.random_range(0..25)),
                        )])),
                        pod_selector: Some(match_labels(&[("tier", "web".into())])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![np_port(IntOrString::String("http".into()), None)]),
                }]),
                ..Default::default()
            },
            // Tier isolation with matchExpressions and a port range.
            2 => net::NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "In".into(),
                        values: Some(vec!["api".into(), "db".into()]),
                    }]),
                }),
                ingress: Some(vec![net::NetworkPolicyIngressRule {
                    from: Some(vec![net::NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: None,
                            match_expressions: Some(vec![LabelSelectorRequirement {
                                key: "env".into(),
                                operator: "NotIn".into(),
                                values: Some(vec!["dev".into()]),
                            }]),
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![np_port(IntOrString::Int(8000), Some(8100))]),
                }]),
                ..Default::default()
            },
            // Egress: the namespace, the DNS, and an external range with a hole.
            _ => net::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[(
                    "tier",
                    TIERS[rng.random_range(0..3)].into(),
                )])),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    net::NetworkPolicyEgressRule {
                        to: Some(vec![net::NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector::default()),
                            ..Default::default()
                        }]),
                        ports: None,
                    },
                    net::NetworkPolicyEgressRule {
                        to: Some(vec![net::NetworkPolicyPeer {
                            ip_block: Some(net::IPBlock {
                                cidr: "203.0.113.0/24".into(),
                                except: Some(vec!["203.0.113.128/25".into()]),
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(vec![np_port(IntOrString::Int(443), None)]),
                    },
                ]),
                ..Default::default()
            },
        };
        out.push(K8sObject::NetworkPolicy(Box::new(net::NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(format!("policy-{i}")),
                namespace: Some(ns_name(ns)),
                ..Default::default()
            },
            spec: Some(spec),
        })));
    }
    out
}

/// `count` connections between random pods of a cluster of `size` (by IP, as a node
/// agent sees them), on the ports the policies name, with some external peers.
pub fn connections(size: Size, count: usize, seed: u64) -> Vec<Connection> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let src = Endpoint::Ip(pod_ip(rng.random_range(0..size.pods)));
            let dst = if rng.random_ratio(1, 20) {
                Endpoint::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.random())))
            } else {
                Endpoint::Ip(pod_ip(rng.random_range(0..size.pods)))
            };
            let port = [8080, 9090, 8050, 443][rng.random_range(0..4)];
            Connection::new(src, dst, port, Protocol::Tcp)
        })
        .collect()
}
