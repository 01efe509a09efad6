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
//!   namespace carries;
//! - the admin-tier pitfalls: an Admin-tier Pass rule whose subject pods no
//!   NetworkPolicy isolates (the passed traffic falls through to the Baseline
//!   tier, or is allowed); an Admin-tier Deny that shadows a NetworkPolicy
//!   allow (the NetworkPolicy's author sees a rule that never applies); and
//!   Admin-tier policies that share a priority and select the same pods (their
//!   order is undefined upstream; netverdict's is by name).

use std::fmt;

use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::model::admin::rules_field;
use crate::model::{
    AdminAction, AdminPolicy, AdminPort, Direction, NamespaceMatch, NetworkPolicy, Peer, Pod,
    PolicyKey, PortRef, Protocol, Rule, Tier,
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
    check_admin_passes(state, &mut out);
    check_admin_shadows(state, &mut out);
    check_admin_ties(state, &mut out);
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

/// `spec.ingress[2] "name"`: where a rule is, for findings.
fn rule_field(direction: Direction, index: usize) -> String {
    format!("{}[{index}]", rules_field(direction).0)
}

fn rule_label(policy: &AdminPolicy, direction: Direction, index: usize) -> String {
    let rule = &policy.rules(direction)[index];
    match &rule.name {
        Some(name) => format!("rule {index} {name:?}"),
        None => format!("rule {index}"),
    }
}

fn pod_list(pods: &[&std::sync::Arc<Pod>]) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<String> = pods.iter().take(SHOWN).map(|p| p.key.to_string()).collect();
    if pods.len() > SHOWN {
        names.push(format!("and {} more", pods.len() - SHOWN));
    }
    names.join(", ")
}

/// Admin-tier Pass rules over pods no NetworkPolicy isolates for the rule's
/// direction: the passed traffic goes on to the Baseline tier (or the
/// default allow), which is rarely what "hand over to the namespace owners"
/// meant.
fn check_admin_passes(state: &ClusterState, out: &mut Vec<Finding>) {
    for policy in state.admin_tier(Tier::Admin) {
        let subjects = state.admin_selected_pods(policy);
        for direction in [Direction::Ingress, Direction::Egress] {
            let unisolated: Vec<&std::sync::Arc<Pod>> = subjects
                .iter()
                .copied()
                .filter(|p| state.policies_selecting(p, direction).is_empty())
                .collect();
            if unisolated.is_empty() {
                continue;
            }
            for (i, rule) in policy.rules(direction).iter().enumerate() {
                if rule.action != AdminAction::Pass {
                    continue;
                }
                let baselines: Vec<String> = state
                    .admin_tier(Tier::Baseline)
                    .iter()
                    .filter(|b| {
                        !b.rules(direction).is_empty()
                            && unisolated.iter().any(|p| state.admin_selects(b, p))
                    })
                    .map(|b| b.key.to_string())
                    .collect();
                let then = if baselines.is_empty() {
                    "no baseline policy selects them either, so it is allowed".to_string()
                } else {
                    format!(
                        "it falls through to the Baseline tier ({})",
                        baselines.join(", ")
                    )
                };
                out.push(Finding {
                    severity: Severity::Warning,
                    code: "admin-pass-without-network-policy",
                    policy: Some(policy.key.clone()),
                    field: Some(rule_field(direction, i)),
                    message: format!(
                        "{} passes {direction} traffic to NetworkPolicy, but no NetworkPolicy isolates {} for \
                         {direction}: {then}",
                        rule_label(policy, direction, i),
                        pod_list(&unisolated)
                    ),
                });
            }
        }
    }
}

/// The ports worth trying for a NetworkPolicy rule and an admin rule: the
/// rule's own, else the admin rule's, else 80.
fn probe_ports(rule: &Rule, admin_ports: &[AdminPort], dst: &Pod) -> Vec<(u16, Protocol)> {
    let mut out = Vec::new();
    for p in &rule.ports {
        match &p.port {
            Some(PortRef::Number(n)) => out.push((*n, p.protocol)),
            Some(PortRef::Name(name)) => {
                if let Some(n) = dst.named_port(name, p.protocol) {
                    out.push((n, p.protocol));
                }
            }
            None => {}
        }
    }
    if out.is_empty() {
        for p in admin_ports {
            match p {
                AdminPort::Number { protocol, port } => out.push((*port, *protocol)),
                AdminPort::Range {
                    protocol, start, ..
                } => out.push((*start, *protocol)),
                AdminPort::Protocol(protocol) => out.push((80, *protocol)),
                AdminPort::Named(name) => {
                    for protocol in Protocol::ALL {
                        if let Some(n) = dst.named_port(name, protocol) {
                            out.push((n, protocol));
                        }
                    }
                }
            }
        }
    }
    if out.is_empty() {
        out.push((80, Protocol::Tcp));
    }
    out
}

/// Admin-tier Deny rules that deny traffic a NetworkPolicy rule allows: one
/// finding per (Deny rule, NetworkPolicy rule), with an example connection.
fn check_admin_shadows(state: &ClusterState, out: &mut Vec<Finding>) {
    if state.admin_tier(Tier::Admin).is_empty() {
        return;
    }
    let pods: Vec<&std::sync::Arc<Pod>> = state
        .pods()
        .into_iter()
        .filter(|p| !p.host_network && !p.ips.is_empty())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for subject in &pods {
        for direction in [Direction::Ingress, Direction::Egress] {
            for np in state.policies_selecting(subject, direction) {
                let Some(rules) = np.rules(direction) else {
                    continue;
                };
                for (ri, rule) in rules.iter().enumerate() {
                    for peer in &pods {
                        if peer.key == subject.key
                            || !(rule.peers.is_empty()
                                || rule
                                    .peers
                                    .iter()
                                    .any(|p| state.peer_matches_pod(np.namespace(), p, peer)))
                        {
                            continue;
                        }
                        let (src, dst) = match direction {
                            Direction::Ingress => (*peer, *subject),
                            Direction::Egress => (*subject, *peer),
                        };
                        let admin_ports: Vec<AdminPort> = state
                            .admin_tier(Tier::Admin)
                            .iter()
                            .flat_map(|a| a.rules(direction))
                            .filter(|r| r.action == AdminAction::Deny)
                            .flat_map(|r| r.ports.iter().cloned())
                            .collect();
                        for (port, protocol) in probe_ports(rule, &admin_ports, dst) {
                            let conn = Connection::new(
                                Endpoint::Pod(src.key.clone()),
                                Endpoint::Pod(dst.key.clone()),
                                port,
                                protocol,
                            );
                            let Ok(verdict) = state.verdict(&conn) else {
                                continue;
                            };
                            let d = verdict.direction(direction);
                            let Some(deny) = d
                                .deciding_admin_rule()
                                .filter(|r| r.action == AdminAction::Deny && r.tier == Tier::Admin)
                            else {
                                continue;
                            };
                            // The NetworkPolicy rule would have allowed it.
                            let np_allows = rule.ports.is_empty()
                                || rule.ports.iter().any(|p| {
                                    p.protocol == protocol
                                        && match (&p.port, p.end_port) {
                                            (None, _) => true,
                                            (Some(PortRef::Number(a)), Some(b)) => {
                                                (*a..=b).contains(&port)
                                            }
                                            (Some(PortRef::Number(a)), None) => *a == port,
                                            (Some(PortRef::Name(n)), _) => {
                                                dst.named_port(n, protocol) == Some(port)
                                            }
                                        }
                                });
                            if !np_allows
                                || !seen.insert((
                                    deny.policy.clone(),
                                    direction,
                                    deny.rule,
                                    np.key.clone(),
                                    ri,
                                ))
                            {
                                continue;
                            }
                            out.push(Finding {
                                severity: Severity::Warning,
                                code: "admin-deny-shadows-network-policy",
                                policy: Some(deny.policy.clone()),
                                field: Some(rule_field(direction, deny.rule)),
                                message: format!(
                                    "{deny} denies {direction} traffic that rule {ri} of NetworkPolicy {} \
                                     allows, e.g. {} -> {} {protocol}/{port}: the NetworkPolicy rule never \
                                     applies to it",
                                    np.key, src.key, dst.key
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Admin-tier policies of one priority whose subjects share pods and which
/// have rules in the same direction: upstream leaves their order undefined.
fn check_admin_ties(state: &ClusterState, out: &mut Vec<Finding>) {
    for tier in [Tier::Admin, Tier::Baseline] {
        let policies = state.admin_tier(tier);
        for (i, a) in policies.iter().enumerate() {
            for b in &policies[i + 1..] {
                if a.priority.is_none() || a.priority != b.priority {
                    continue;
                }
                let directions: Vec<&str> = [Direction::Ingress, Direction::Egress]
                    .into_iter()
                    .filter(|d| !a.rules(*d).is_empty() && !b.rules(*d).is_empty())
                    .map(Direction::as_str)
                    .collect();
                if directions.is_empty() {
                    continue;
                }
                let shared: Vec<&std::sync::Arc<Pod>> = state
                    .admin_selected_pods(a)
                    .into_iter()
                    .filter(|p| state.admin_selects(b, p))
                    .collect();
                if shared.is_empty() {
                    continue;
                }
                out.push(Finding {
                    severity: Severity::Warning,
                    code: "admin-priority-tie",
                    policy: Some(a.key.clone()),
                    field: Some("spec.priority".into()),
                    message: format!(
                        "{} and {} share priority {} in the {} and both have {} rules for {}: upstream leaves \
                         their order undefined (implementations may differ); netverdict decides {} first (by name). \
                         Give them distinct priorities",
                        a.key,
                        b.key,
                        a.priority.unwrap_or_default(),
                        tier.title(),
                        directions.join(" and "),
                        pod_list(&shared),
                        a.key
                    ),
                });
            }
        }
    }
}
