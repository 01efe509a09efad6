//! Lint: the pitfalls of a policy set, found before any traffic flows.
//!
//! - egress isolation without DNS to the cluster DNS on UDP and TCP 53 (the seed
//!   guide's "default-deny egress often breaks DNS first");
//! - namespaceSelector and podSelector as separate peers where one peer (AND) was
//!   likely meant, and one peer whose AND matches nothing where separate peers
//!   (OR) would match;
//! - selectors that match no pod or namespace, policies that select no pod;
//! - named ports no relevant pod defines;
//! - namespace labels (e.g. `kubernetes.io/metadata.name: kube-sytem`) that no
//!   namespace carries.

use std::fmt;

use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::model::{
    Direction, NamespaceMatch, NetworkPolicy, Peer, Pod, PolicyKey, PortRef, Protocol, Rule,
};
use crate::selector::Selector;
use crate::state::ClusterState;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; often intended.
    Info,
    /// Very likely a mistake that breaks or opens traffic.
    Warning,
}

/// One lint finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable identifier of the check (e.g. `dns-egress-blocked`).
    pub code: &'static str,
    /// The policy at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyKey>,
    /// Where in the policy (e.g. `spec.egress[0].to[1]`), where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}[{}]", self.code)?;
        if let Some(p) = &self.policy {
            write!(f, " {p}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Runs every check; findings come warnings first, then by policy.
pub fn lint(state: &ClusterState) -> Vec<Finding> {
    let mut out = Vec::new();
    check_dns(state, &mut out);
    for policy in state.policies() {
        check_policy(state, policy, &mut out);
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.policy.cmp(&b.policy))
    });
    out
}

/// The cluster DNS pods: the backends of kube-system/kube-dns, else pods labelled
/// k8s-app=kube-dns.
pub fn cluster_dns_pods(state: &ClusterState) -> Vec<&Pod> {
    let mut pods: Vec<&Pod> = Vec::new();
    if let Some(svc) = state.service("kube-system", "kube-dns")
        && let Some(sel) = &svc.selector
    {
        pods.extend(
            state
                .pods_in("kube-system")
                .filter(|p| sel.matches(&p.labels))
                .map(|p| &**p),
        );
    }
    if pods.is_empty() {
        pods.extend(
            state
                .pods()
                .into_iter()
                .filter(|p| p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
                .map(|p| &**p),
        );
    }
    pods
}

/// For a pod, which DNS protocols (UDP, TCP on 53) its egress policies deny to
/// the cluster DNS pods, and which policies isolate it. None when its egress is
/// not isolated or no DNS pod is known.
pub fn dns_denied(state: &ClusterState, pod: &Pod) -> Option<(Vec<Protocol>, Vec<PolicyKey>)> {
    let dns = cluster_dns_pods(state);
    let isolating = state.policies_selecting(pod, Direction::Egress);
    if isolating.is_empty() || dns.is_empty() || pod.ips.is_empty() {
        return None;
    }
    let mut denied = Vec::new();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        // Allowed when the egress policy admits at least one DNS pod.
        let any_allowed = dns.iter().filter(|d| d.key != pod.key).any(|d| {
            let conn = Connection::new(
                Endpoint::Pod(pod.key.clone()),
                Endpoint::Pod(d.key.clone()),
                53,
                protocol,
            );
            state.verdict(&conn).is_ok_and(|v| v.egress.allowed())
        });
        if !any_allowed {
            denied.push(protocol);
        }
    }
    Some((denied, isolating.iter().map(|p| p.key.clone()).collect()))
}

/// Pods of one namespace isolated by the same policies with the same DNS denial.
struct DnsGroup {
    namespace: String,
    policies: Vec<PolicyKey>,
    denied: Vec<Protocol>,
    pods: Vec<String>,
}

fn check_dns(state: &ClusterState, out: &mut Vec<Finding>) {
    let dns = cluster_dns_pods(state);
    // One finding per namespace and set of isolating policies, naming the pods.
    let mut groups: Vec<DnsGroup> = Vec::new();
    for pod in state.pods() {
        if pod.host_network || dns.iter().any(|d| d.key == pod.key) {
            continue;
        }
        if dns.is_empty() {
            let isolating = state.policies_selecting(pod, Direction::Egress);
            if !isolating.is_empty() {
                let keys: Vec<PolicyKey> = isolating.iter().map(|p| p.key.clone()).collect();
                push_group(&mut groups, pod, keys, Vec::new());
            }
            continue;
        }
        if let Some((denied, isolating)) = dns_denied(state, pod)
            && !denied.is_empty()
        {
            push_group(&mut groups, pod, isolating, denied);
        }
    }
    for DnsGroup {
        namespace,
        policies,
        denied,
        pods,
    } in groups
    {
        let names = policies
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let message = if denied.is_empty() {
            format!(
                "pods {} in namespace {namespace} are isolated for egress by {names}, and no cluster DNS pod \
                 (kube-system/kube-dns backends or k8s-app=kube-dns) is known to check that DNS is allowed",
                pods.join(", ")
            )
        } else {
            let protos = denied
                .iter()
                .map(|p| format!("{p}/53"))
                .collect::<Vec<_>>()
                .join(" and ");
            format!(
                "egress isolation by {names} blocks DNS ({protos}) to the cluster DNS for pods {} in namespace \
                 {namespace}: allow egress to the kube-dns pods on UDP and TCP 53 (see allow-dns-egress)",
                pods.join(", ")
            )
        };
        out.push(Finding {
            severity: if denied.is_empty() {
                Severity::Info
            } else {
                Severity::Warning
            },
            code: "dns-egress-blocked",
            policy: policies.first().cloned(),
            field: None,
            message,
        });
    }
}

fn push_group(
    groups: &mut Vec<DnsGroup>,
    pod: &Pod,
    policies: Vec<PolicyKey>,
    denied: Vec<Protocol>,
) {
    match groups
        .iter_mut()
        .find(|g| g.namespace == pod.key.namespace && g.policies == policies && g.denied == denied)
    {
        Some(g) => g.pods.push(pod.key.name.clone()),
        None => groups.push(DnsGroup {
            namespace: pod.key.namespace.clone(),
            policies,
            denied,
            pods: vec![pod.key.name.clone()],
        }),
    }
}

fn check_policy(state: &ClusterState, policy: &NetworkPolicy, out: &mut Vec<Finding>) {
    let finding = |severity, code, field: Option<String>, message: String| Finding {
        severity,
        code,
        policy: Some(policy.key.clone()),
        field,
        message,
    };
    let selected = state.selected_pods(policy);
    if selected.is_empty() {
        out.push(finding(
            Severity::Warning,
            "selects-no-pod",
            Some("spec.podSelector".into()),
            format!(
                "podSelector {} selects no pod in namespace {}: the policy has no effect",
                policy.pod_selector,
                policy.namespace()
            ),
        ));
    }
    for direction in [Direction::Ingress, Direction::Egress] {
        let Some(rules) = policy.rules(direction) else {
            continue;
        };
        let (list, peers_field) = match direction {
            Direction::Ingress => ("spec.ingress", "from"),
            Direction::Egress => ("spec.egress", "to"),
        };
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{list}[{i}]");
            check_peer_split(state, policy, rule, &format!("{at}.{peers_field}"), out);
            for (j, peer) in rule.peers.iter().enumerate() {
                check_peer(
                    state,
                    policy,
                    peer,
                    &format!("{at}.{peers_field}[{j}]"),
                    out,
                );
            }
            check_named_ports(state, policy, direction, rule, &selected, &at, out);
        }
    }
}

/// Separate namespaceSelector-only and podSelector-only peers in one rule (OR)
/// where one peer with both (AND) was likely meant; and one peer with both
/// whose AND matches no pod while each selector alone matches some.
fn check_peer_split(
    state: &ClusterState,
    policy: &NetworkPolicy,
    rule: &Rule,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let ns_only = rule.peers.iter().position(|p| {
        matches!(p, Peer::Pods { namespaces: NamespaceMatch::Selector(s), pods: None } if !s.is_empty())
    });
    let pod_only = rule.peers.iter().position(|p| {
        matches!(
            p,
            Peer::Pods {
                namespaces: NamespaceMatch::PolicyNamespace,
                pods: Some(_)
            }
        )
    });
    if let (Some(n), Some(p)) = (ns_only, pod_only) {
        out.push(Finding {
            severity: Severity::Warning,
            code: "peers-or-not-and",
            policy: Some(policy.key.clone()),
            field: Some(field.to_string()),
            message: format!(
                "items [{n}] (namespaceSelector) and [{p}] (podSelector) are separate peers, so either matches \
                 (OR): every pod of the selected namespaces, or the selected pods of {}. If you meant the selected \
                 pods inside the selected namespaces, put both selectors in one item",
                policy.namespace()
            ),
        });
    }
    for (j, peer) in rule.peers.iter().enumerate() {
        let Peer::Pods {
            namespaces: NamespaceMatch::Selector(ns_sel),
            pods: Some(pod_sel),
        } = peer
        else {
            continue;
        };
        let pods = state.pods();
        let matches_and = pods
            .iter()
            .any(|p| state.peer_matches_pod(policy.namespace(), peer, p));
        let ns_match = !state.namespaces_matching(ns_sel).is_empty();
        let pod_match = pods
            .iter()
            .any(|p| !p.host_network && pod_sel.matches(&p.labels));
        if !matches_and && ns_match && pod_match {
            out.push(Finding {
                severity: Severity::Warning,
                code: "peer-and-matches-nothing",
                policy: Some(policy.key.clone()),
                field: Some(format!("{field}[{j}]")),
                message: format!(
                    "namespaceSelector {ns_sel} and podSelector {pod_sel} in one item must both match (AND), and no \
                     pod does; each alone matches something. If either was meant, make them separate items"
                ),
            });
        }
    }
}

fn check_peer(
    state: &ClusterState,
    policy: &NetworkPolicy,
    peer: &Peer,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let Peer::Pods { namespaces, pods } = peer else {
        return;
    };
    if let NamespaceMatch::Selector(sel) = namespaces {
        let matched = state.namespaces_matching(sel);
        if matched.is_empty() {
            let unknown = unknown_namespace_labels(state, sel);
            let message = if unknown.is_empty() {
                format!("namespaceSelector {sel} matches no namespace")
            } else {
                format!(
                    "namespaceSelector {sel} matches no namespace: no namespace carries {}",
                    unknown.join(", ")
                )
            };
            out.push(Finding {
                severity: Severity::Warning,
                code: if unknown.is_empty() {
                    "namespace-selector-matches-nothing"
                } else {
                    "unknown-namespace-label"
                },
                policy: Some(policy.key.clone()),
                field: Some(format!("{field}.namespaceSelector")),
                message,
            });
            return;
        }
    }
    if pods.is_some()
        && !state
            .pods()
            .iter()
            .any(|p| state.peer_matches_pod(policy.namespace(), peer, p))
    {
        let scope = match namespaces {
            NamespaceMatch::PolicyNamespace => format!("in namespace {}", policy.namespace()),
            NamespaceMatch::Selector(s) => format!("in namespaces with {s}"),
        };
        out.push(Finding {
            severity: Severity::Warning,
            code: "pod-selector-matches-nothing",
            policy: Some(policy.key.clone()),
            field: Some(format!("{field}.podSelector")),
            message: format!(
                "podSelector {} matches no pod {scope}",
                pods.as_ref().map(|s| s.to_string()).unwrap_or_default()
            ),
        });
    }
}

/// The `key=value` requirements of a selector that no namespace carries.
fn unknown_namespace_labels(state: &ClusterState, selector: &Selector) -> Vec<String> {
    let names = state.namespace_names();
    selector
        .requirements()
        .iter()
        .filter(|r| {
            matches!(
                r.operator,
                crate::selector::Operator::In(_) | crate::selector::Operator::Exists
            )
        })
        .filter(|r| !names.iter().any(|n| r.matches(&state.namespace_labels(n))))
        .map(|r| r.to_string())
        .collect()
}

/// Named ports that no pod they would resolve against defines: for ingress the
/// selected pods, for egress the pods the rule's peers reach.
fn check_named_ports(
    state: &ClusterState,
    policy: &NetworkPolicy,
    direction: Direction,
    rule: &Rule,
    selected: &[&std::sync::Arc<Pod>],
    field: &str,
    out: &mut Vec<Finding>,
) {
    for (k, port) in rule.ports.iter().enumerate() {
        let Some(PortRef::Name(name)) = &port.port else {
            continue;
        };
        let defined = match direction {
            Direction::Ingress => selected
                .iter()
                .any(|p| p.named_port(name, port.protocol).is_some()),
            Direction::Egress => state
                .pods()
                .into_iter()
                .filter(|p| {
                    rule.peers.is_empty()
                        || rule
                            .peers
                            .iter()
                            .any(|peer| state.peer_matches_pod(policy.namespace(), peer, p))
                })
                .any(|p| p.named_port(name, port.protocol).is_some()),
        };
        if !defined {
            let whose = match direction {
                Direction::Ingress => "no pod the policy selects",
                Direction::Egress => "no destination pod of the rule",
            };
            out.push(Finding {
                severity: Severity::Warning,
                code: "named-port-undefined",
                policy: Some(policy.key.clone()),
                field: Some(format!("{field}.ports[{k}].port")),
                message: format!(
                    "{whose} defines a {} container port named {name:?}: the rule matches no traffic on it",
                    port.protocol
                ),
            });
        }
    }
}
