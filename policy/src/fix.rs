//! The least-privilege fix of a denied flow: the NetworkPolicy objects that,
//! applied, allow exactly that flow, on each side that denies it.
//!
//! A flow goes from a source to one or more [`Target`]s (a pod, the backends
//! of a Service after DNAT, or an address), each on a port and protocol. For
//! every target the engine denies:
//!
//! - egress denied (the source is isolated for egress): one policy in the
//!   source's namespace selecting the source's workload, allowing egress to
//!   each denied target (its workload's pods, or its address as a /32 or
//!   /128 `ipBlock`) on its port and protocol only;
//! - ingress denied: one policy per destination workload, in its namespace,
//!   selecting that workload and allowing ingress from the source's workload
//!   (or the source's address) on those ports only.
//!
//! NetworkPolicy is additive, so these only add allowed flows. Each rule is one
//! peer by the ports that peer needs, so a rule allows nothing beyond the
//! targets. A workload is selected by the labels all its pods share minus
//! those Kubernetes sets per pod or per revision (`pod-template-hash`...), with `DoesNotExist`
//! requirements on labels that set apart other pods carrying the same labels,
//! so the selector picks the workload's pods only ([`workload_selector`]).
//! What a selector cannot do is said in [`Fix::notes`]: a pod with no labels
//! cannot be selected alone (that side gets no policy), pods of another
//! workload with identical labels are selected too, and a selected pod that
//! no egress (or ingress) policy selected yet becomes isolated.
//!
//! A side an Admin-tier policy denies (an AdminNetworkPolicy or Admin-tier
//! ClusterNetworkPolicy Deny, decided before NetworkPolicy) gets no policy but
//! a note naming the rule: no NetworkPolicy can override it. A side a
//! Baseline-tier policy denies is fixed like one NetworkPolicy denies: the
//! new policy isolates the pod, and NetworkPolicy then decides.
//!
//! DNS to the cluster DNS is fixed on UDP and TCP 53 together (see
//! [`dns_targets`]): resolvers retry over TCP, and the seed guide's advice is
//! both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::error::ConnectionError;
use crate::lint::cluster_dns_pods;
use crate::model::{Direction, NAMESPACE_NAME_LABEL, Pod, PodKey, Protocol, Tier, workload_name};
use crate::state::ClusterState;
use crate::verdict::Status;

/// Labels Kubernetes sets per pod or per revision: never part of a workload's
/// selector (a policy on them would select one pod, or one rollout).
pub const PER_POD_LABELS: [&str; 7] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-completion-index",
];

/// The label naming the tool that wrote a policy.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// `app.kubernetes.io/managed-by` of the policies `diagnose` writes.
const DIAGNOSE: &str = "netverdict-diagnose";

/// Labels a Job sets on its pods: per run of a CronJob.
const JOB_NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];

/// Where a flow goes: an endpoint (a pod by name, or an address) on a port
/// and protocol, after Service DNAT.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target {
    pub endpoint: TargetEndpoint,
    pub port: u16,
    pub protocol: Protocol,
}

/// A target's endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum TargetEndpoint {
    Pod(PodKey),
    Ip(IpAddr),
}

impl TargetEndpoint {
    /// As the engine's endpoint.
    pub fn engine(&self) -> Endpoint {
        match self {
            TargetEndpoint::Pod(key) => Endpoint::Pod(key.clone()),
            TargetEndpoint::Ip(ip) => Endpoint::Ip(*ip),
        }
    }
}

/// The fix of a flow.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fix {
    /// NetworkPolicy objects to apply (`kubectl apply -f -`); empty when the
    /// flow is already allowed.
    pub policies: Vec<net::NetworkPolicy>,
    /// What the policies cannot do exactly, or do besides (each a sentence).
    pub notes: Vec<String>,
}

/// The targets of a DNS flow to the cluster DNS pods on both UDP and TCP:
/// each DNS pod on port 53 (the port the kube-dns Service's `dns` and
/// `dns-tcp` ports reach, when it has them).
pub fn dns_targets(state: &ClusterState) -> Vec<Target> {
    let mut out = Vec::new();
    for pod in cluster_dns_pods(state) {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let port = dns_port(state, pod, protocol);
            out.push(Target {
                endpoint: TargetEndpoint::Pod(pod.key.clone()),
                port,
                protocol,
            });
        }
    }
    out
}

/// The port a DNS pod answers on for `protocol`: where the kube-dns Service's
/// port 53 of that protocol leads, else 53.
fn dns_port(state: &ClusterState, pod: &Pod, protocol: Protocol) -> u16 {
    state
        .service("kube-system", "kube-dns")
        .and_then(|svc| svc.cluster_ips.first().copied())
        .and_then(|ip| state.service_backends(ip, 53, protocol))
        .and_then(|backends| {
            backends
                .into_iter()
                .find(|(key, _)| *key == pod.key)
                .map(|(_, port)| port)
        })
        .unwrap_or(53)
}

/// Whether every target is a cluster DNS pod on the DNS port: a DNS flow,
/// fixed on both protocols.
pub fn is_dns(state: &ClusterState, targets: &[Target]) -> bool {
    let dns: Vec<&PodKey> = cluster_dns_pods(state)
        .into_iter()
        .map(|p| &p.key)
        .collect();
    !targets.is_empty()
        && targets.iter().all(|t| match &t.endpoint {
            TargetEndpoint::Pod(key) => {
                dns.contains(&key)
                    && state
                        .pod(key)
                        .is_some_and(|p| t.port == dns_port(state, p, t.protocol))
            }
            TargetEndpoint::Ip(_) => false,
        })
}

/// A peer of a rule: pods (namespace, and the selector of their workload) or
/// an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PeerSpec {
    Pods {
        namespace: String,
        selector: SelectorSpec,
    },
    Address(IpAddr),
}

/// A label selector as matchLabels and `DoesNotExist` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SelectorSpec {
    pub match_labels: BTreeMap<String, String>,
    pub absent: BTreeSet<String>,
}

impl SelectorSpec {
    /// Whether labels satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.absent.iter().all(|k| !labels.contains_key(k))
    }

    pub(crate) fn to_k8s(&self) -> LabelSelector {
        LabelSelector {
            match_labels: (!self.match_labels.is_empty()).then(|| self.match_labels.clone()),
            match_expressions: (!self.absent.is_empty()).then(|| {
                self.absent
                    .iter()
                    .map(|key| LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "DoesNotExist".into(),
                        values: None,
                    })
                    .collect()
            }),
        }
    }
}

/// The selector of `pod`'s workload in its namespace (see the module
/// documentation), and notes on what it selects besides. Err (a sentence)
/// when the pod has no label to select it by.
pub fn workload_selector(
    state: &ClusterState,
    pod: &Pod,
) -> Result<(SelectorSpec, Vec<String>), String> {
    let workload = state.workload_of(pod);
    let same_workload = |other: &Pod| {
        other.key == pod.key || (workload.is_some() && state.workload_of(other) == workload)
    };
    let cron = workload.as_ref().is_some_and(|w| w.kind == "CronJob");
    let skip =
        |key: &str| PER_POD_LABELS.contains(&key) || (cron && JOB_NAME_LABELS.contains(&key));
    let in_namespace: Vec<&Pod> = state
        .pods_in(&pod.key.namespace)
        .map(|p| &**p)
        .filter(|p| !p.host_network)
        .collect();
    // The labels every pod of the workload carries with the same value (pods
    // of two revisions may differ), minus the per-pod ones.
    let mut match_labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .filter(|(k, _)| !skip(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for other in in_namespace.iter().filter(|p| same_workload(p)) {
        match_labels.retain(|k, v| other.labels.get(k) == Some(v));
    }
    let name = workload_name(workload.as_deref(), &pod.key);
    if match_labels.is_empty() {
        return Err(format!(
            "{} ({name}) has no labels a policy can select it by: label it (kubectl label pod -n {} {} KEY=VALUE), and its workload's other pods alike",
            pod.key, pod.key.namespace, pod.key.name
        ));
    }
    let mut spec = SelectorSpec {
        match_labels,
        absent: BTreeSet::new(),
    };
    // Keys the workload's own pods carry cannot be required absent.
    let own_keys: BTreeSet<&String> = in_namespace
        .iter()
        .filter(|p| same_workload(p))
        .flat_map(|p| p.labels.keys())
        .collect();
    let mut others: Vec<&Pod> = in_namespace
        .iter()
        .copied()
        .filter(|p| !same_workload(p) && spec.matches(&p.labels))
        .collect();
    let mut notes = Vec::new();
    while !others.is_empty() {
        // The key absent from the workload that sets the most others apart.
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for other in &others {
            for key in other.labels.keys().filter(|k| !own_keys.contains(k)) {
                *counts.entry(key).or_default() += 1;
            }
        }
        let Some((key, _)) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        else {
            let names: Vec<String> = others.iter().map(|p| p.key.to_string()).collect();
            notes.push(format!(
                "the selector of {name} also selects {} (same labels, another workload): give {name} a label of its own to tell them apart",
                names.join(", ")
            ));
            break;
        };
        let key = key.clone();
        others.retain(|p| !p.labels.contains_key(&key));
        spec.absent.insert(key);
    }
    Ok((spec, notes))
}

/// The fix of the flow from `source` to `targets` (see the module
/// documentation). Each target is judged by the engine; the fix covers the
/// denied sides only. `Err` when an endpoint is not in the state.
pub fn fix(
    state: &ClusterState,
    source: &Endpoint,
    targets: &[Target],
) -> Result<Fix, ConnectionError> {
    let mut admin_denied: Vec<String> = Vec::new();
    let mut egress_denied: Vec<&Target> = Vec::new();
    let mut ingress_denied: Vec<&Target> = Vec::new();
    for target in targets {
        let conn = Connection::new(
            source.clone(),
            target.endpoint.engine(),
            target.port,
            target.protocol,
        );
        let verdict = state.verdict(&conn)?;
        for (side, denied) in [
            (&verdict.egress, &mut egress_denied),
            (&verdict.ingress, &mut ingress_denied),
        ] {
            if side.status != Status::Denied {
                continue;
            }
            // An Admin-tier Deny is decided before NetworkPolicy: no
            // NetworkPolicy can allow what it denies.
            if side.tier == Some(Tier::Admin) {
                let by = side
                    .admin_rule
                    .as_ref()
                    .map_or_else(|| "an Admin-tier policy".to_string(), ToString::to_string);
                admin_denied.push(format!(
                    "{} to {} port {}/{} is denied by {by}, decided before NetworkPolicy: no NetworkPolicy can allow it; the policy's owner must change it",
                    side.direction,
                    target_label(&target.endpoint),
                    target.port,
                    target.protocol
                ));
                continue;
            }
            denied.push(target);
        }
    }
    let mut out = Fix {
        notes: admin_denied,
        ..Fix::default()
    };
    if egress_denied.is_empty() && ingress_denied.is_empty() {
        out.notes.sort();
        out.notes.dedup();
        return Ok(out);
    }
    let dns = is_dns(state, targets);
    let source_pod = state.endpoint_pod(source).filter(|p| !p.host_network);
    let source_ip = match source {
        Endpoint::Ip(ip) => Some(*ip),
        Endpoint::Pod(_) => source_pod.and_then(|p| p.ips.first().copied()),
    };
    let mut selectors: BTreeMap<PodKey, Option<SelectorSpec>> = BTreeMap::new();
    let mut selector_of = |pod: &Pod, notes: &mut Vec<String>| -> Option<SelectorSpec> {
        selectors
            .entry(pod.key.clone())
            .or_insert_with(|| match workload_selector(state, pod) {
                Ok((spec, more)) => {
                    notes.extend(more);
                    Some(spec)
                }
                Err(note) => {
                    notes.push(note);
                    None
                }
            })
            .clone()
    };
    let peer_of = |endpoint: &TargetEndpoint,
                   selector_of: &mut dyn FnMut(&Pod, &mut Vec<String>) -> Option<SelectorSpec>,
                   notes: &mut Vec<String>|
     -> Option<PeerSpec> {
        let pod = match endpoint {
            TargetEndpoint::Pod(key) => state.pod(key),
            TargetEndpoint::Ip(ip) => state.pod_by_ip(*ip),
        };
        match pod {
            Some(pod) if !pod.host_network => Some(PeerSpec::Pods {
                namespace: pod.key.namespace.clone(),
                selector: selector_of(pod, notes)?,
            }),
            Some(pod) => pod.ips.first().map(|ip| PeerSpec::Address(*ip)),
            None => match endpoint {
                TargetEndpoint::Ip(ip) => Some(PeerSpec::Address(*ip)),
                TargetEndpoint::Pod(_) => None,
            },
        }
    };

    // Egress: the source's workload to each denied target.
    if let Some(pod) = source_pod.filter(|_| !egress_denied.is_empty())
        && let Some(selector) = selector_of(pod, &mut out.notes)
    {
        let mut ports_by_peer: BTreeMap<PeerSpec, BTreeSet<(Protocol, u16)>> = BTreeMap::new();
        for target in &egress_denied {
            if let Some(peer) = peer_of(&target.endpoint, &mut selector_of, &mut out.notes) {
                ports_by_peer
                    .entry(peer)
                    .or_default()
                    .insert((target.protocol, target.port));
            }
        }
        let rules = rules(ports_by_peer);
        if !rules.is_empty() {
            let source_name = short_name(state, pod);
            let name = if dns {
                format!("allow-dns-egress-{source_name}")
            } else {
                format!(
                    "allow-egress-{source_name}-to-{}-{}",
                    targets_name(state, &egress_denied),
                    ports_name(&egress_denied)
                )
            };
            note_isolation(
                state,
                &pod.key.namespace,
                &selector,
                Direction::Egress,
                &mut out.notes,
            );
            out.policies.push(policy(
                &pod.key.namespace,
                &unique_name(state, &pod.key.namespace, &name),
                DIAGNOSE,
                &selector,
                Direction::Egress,
                rules,
            ));
        }
    }

    // Ingress: each denied destination workload from the source.
    let source_peer = match source_pod {
        Some(pod) => selector_of(pod, &mut out.notes).map(|selector| PeerSpec::Pods {
            namespace: pod.key.namespace.clone(),
            selector,
        }),
        None => source_ip.map(PeerSpec::Address),
    };
    let mut by_destination: BTreeMap<(String, SelectorSpec), (String, Vec<&Target>)> =
        BTreeMap::new();
    for target in &ingress_denied {
        let Some(pod) = (match &target.endpoint {
            TargetEndpoint::Pod(key) => state.pod(key),
            TargetEndpoint::Ip(ip) => state.pod_by_ip(*ip),
        }) else {
            continue;
        };
        let Some(selector) = selector_of(pod, &mut out.notes) else {
            continue;
        };
        by_destination
            .entry((pod.key.namespace.clone(), selector))
            .or_insert_with(|| (short_name(state, pod), Vec::new()))
            .1
            .push(target);
    }
    if let Some(source_peer) = source_peer {
        let source_name = match source_pod {
            Some(pod) => short_name(state, pod),
            None => source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        for ((namespace, selector), (destination_name, targets)) in by_destination {
            let ports: BTreeSet<(Protocol, u16)> =
                targets.iter().map(|t| (t.protocol, t.port)).collect();
            let rules = rules(BTreeMap::from([(source_peer.clone(), ports)]));
            let name = if dns {
                format!("allow-dns-ingress-{destination_name}-from-{source_name}")
            } else {
                format!(
                    "allow-ingress-{destination_name}-from-{source_name}-{}",
                    ports_name(&targets)
                )
            };
            note_isolation(
                state,
                &namespace,
                &selector,
                Direction::Ingress,
                &mut out.notes,
            );
            out.policies.push(policy(
                &namespace,
                &unique_name(state, &namespace, &name),
                DIAGNOSE,
                &selector,
                Direction::Ingress,
                rules,
            ));
        }
    } else if !ingress_denied.is_empty() {
        out.notes.push(format!(
            "the source {source} has no address: no ingress policy can name it"
        ));
    }
    out.notes.sort();
    out.notes.dedup();
    Ok(out)
}

/// The (protocol, port) pairs a rule allows.
pub(crate) type Ports = BTreeSet<(Protocol, u16)>;

/// One rule of a policy to write: its peers, on each of its ports.
pub(crate) type RuleSpec = (Vec<PeerSpec>, Ports);

/// One rule per peer with its ports, rules with the same ports merged (a
/// rule allows its peers on each of its ports: still exactly what is needed).
pub(crate) fn rules(ports_by_peer: BTreeMap<PeerSpec, Ports>) -> Vec<RuleSpec> {
    let mut by_ports: BTreeMap<Ports, Vec<PeerSpec>> = BTreeMap::new();
    for (peer, ports) in ports_by_peer {
        by_ports.entry(ports).or_default().push(peer);
    }
    by_ports
        .into_iter()
        .map(|(ports, peers)| (peers, ports))
        .collect()
}

/// Notes the pods a new policy selects that no policy isolated yet for its
/// direction: applying it isolates them.
fn note_isolation(
    state: &ClusterState,
    namespace: &str,
    selector: &SelectorSpec,
    direction: Direction,
    notes: &mut Vec<String>,
) {
    let newly: Vec<String> = state
        .pods_in(namespace)
        .filter(|p| !p.host_network && selector.matches(&p.labels))
        .filter(|p| state.policies_selecting(p, direction).is_empty())
        .map(|p| p.key.to_string())
        .collect();
    if !newly.is_empty() {
        notes.push(format!(
            "applying it isolates {} for {direction} (no {direction} policy selected them yet): their other {direction} traffic becomes denied",
            newly.join(", ")
        ));
    }
}

/// The NetworkPolicy object `name` in `namespace`, selecting `selector`
/// for `direction` with `rules`, labelled as made by `managed_by` (the
/// command, for `app.kubernetes.io/managed-by`).
pub(crate) fn policy(
    namespace: &str,
    name: &str,
    managed_by: &str,
    selector: &SelectorSpec,
    direction: Direction,
    rules: Vec<RuleSpec>,
) -> net::NetworkPolicy {
    let peers = |peers: &[PeerSpec]| -> Vec<net::NetworkPolicyPeer> {
        peers
            .iter()
            .map(|peer| match peer {
                PeerSpec::Pods {
                    namespace: peer_namespace,
                    selector,
                } => net::NetworkPolicyPeer {
                    namespace_selector: (peer_namespace != namespace).then(|| LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_string(),
                            peer_namespace.clone(),
                        )])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(selector.to_k8s()),
                    ip_block: None,
                },
                PeerSpec::Address(ip) => net::NetworkPolicyPeer {
                    ip_block: Some(net::IPBlock {
                        cidr: match ip {
                            IpAddr::V4(_) => format!("{ip}/32"),
                            IpAddr::V6(_) => format!("{ip}/128"),
                        },
                        except: None,
                    }),
                    namespace_selector: None,
                    pod_selector: None,
                },
            })
            .collect()
    };
    let ports = |ports: &BTreeSet<(Protocol, u16)>| -> Vec<net::NetworkPolicyPort> {
        ports
            .iter()
            .map(|(protocol, port)| net::NetworkPolicyPort {
                protocol: Some(protocol.as_str().to_string()),
                port: Some(IntOrString::Int(i32::from(*port))),
                end_port: None,
            })
            .collect()
    };
    let (ingress, egress, types) = match direction {
        Direction::Ingress => (
            Some(
                rules
                    .iter()
                    .map(|(p, q)| net::NetworkPolicyIngressRule {
                        from: Some(peers(p)),
                        ports: Some(ports(q)),
                    })
                    .collect(),
            ),
            None,
            "Ingress",
        ),
        Direction::Egress => (
            None,
            Some(
                rules
                    .iter()
                    .map(|(p, q)| net::NetworkPolicyEgressRule {
                        to: Some(peers(p)),
                        ports: Some(ports(q)),
                    })
                    .collect(),
            ),
            "Egress",
        ),
    };
    net::NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                managed_by.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(selector.to_k8s()),
            policy_types: Some(vec![types.to_string()]),
            ingress,
            egress,
        }),
    }
}

/// A target for a person: `ns/pod` or the address.
fn target_label(endpoint: &TargetEndpoint) -> String {
    match endpoint {
        TargetEndpoint::Pod(key) => key.to_string(),
        TargetEndpoint::Ip(ip) => ip.to_string(),
    }
}

/// A pod's workload's name (`web` for `Deployment/web`), for policy names.
fn short_name(state: &ClusterState, pod: &Pod) -> String {
    match state.workload_of(pod) {
        Some(owner) => owner.name.clone(),
        None => pod.key.name.clone(),
    }
}

/// The targets' workloads (or addresses) for a policy name.
fn targets_name(state: &ClusterState, targets: &[&Target]) -> String {
    let names: BTreeSet<String> = targets
        .iter()
        .map(|t| match &t.endpoint {
            TargetEndpoint::Pod(key) => state
                .pod(key)
                .map_or_else(|| key.name.clone(), |p| short_name(state, p)),
            TargetEndpoint::Ip(ip) => match state.pod_by_ip(*ip) {
                Some(pod) => short_name(state, pod),
                None => ip.to_string(),
            },
        })
        .collect();
    names.into_iter().collect::<Vec<_>>().join("-")
}

/// `8080-tcp`, `53-udp-53-tcp`.
fn ports_name(targets: &[&Target]) -> String {
    let ports: BTreeSet<(u16, Protocol)> = targets.iter().map(|t| (t.port, t.protocol)).collect();
    ports
        .into_iter()
        .map(|(port, protocol)| format!("{port}-{}", protocol.as_str().to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join("-")
}

/// A valid object name (lowercase letters, digits and `-`, at most 63
/// characters) not taken by a policy of the namespace.
fn unique_name(state: &ClusterState, namespace: &str, wanted: &str) -> String {
    let base = object_name(wanted);
    let taken = |name: &str| {
        state
            .policy(&crate::PolicyKey::network_policy(namespace, name))
            .is_some()
    };
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .unwrap_or(base)
}

/// `wanted` as an object name: lowercase letters, digits and single `-`,
/// at most 56 characters (room for a `-N` suffix within 63).
pub(crate) fn object_name(wanted: &str) -> String {
    let mut base: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    base.truncate(56);
    base.trim_matches('-').to_string()
}
