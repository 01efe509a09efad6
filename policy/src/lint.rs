//! Lint: the pitfalls of a policy set, found before any traffic flows.
//!
//! - egress isolation without DNS to the cluster DNS on UDP and TCP 53 (the seed
//!   guide's "default-deny egress often breaks DNS first"): a property of the
//!   policies, checked for the pods the input holds and for a representative
//!   pod of every egress policy (labels that satisfy its podSelector), against
//!   the cluster DNS pods of the input or, when it has none, a stand-in
//!   ([`DnsTarget`]: kube-system pods labelled k8s-app=kube-dns by default), so
//!   policy files alone are checked;
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
//!   order is undefined upstream; netverdict's is by name); a `domainNames`
//!   Allow rule whose pods may reach any outside address anyway (no Deny
//!   after it: it allows nothing extra).
//!
//! Checks that need the cluster's pods (what a selector matches, named ports,
//! the admin-tier overlaps) are not made when the input holds no pod, nor
//! those that need its namespaces' labels when it declares no namespace: one
//! `checks-skipped` finding says which and why. The namespaces every cluster
//! has ([`WELL_KNOWN_NAMESPACES`]) are always known.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1 as core;
use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::manifest::K8sObject;
use crate::model::admin::rules_field;
use crate::model::{
    AdminAction, AdminPolicy, AdminPort, Direction, NamespaceMatch, NetworkPolicy, Peer, Pod,
    PodKey, PolicyKey, PortRef, Protocol, Rule, Tier,
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

/// The namespaces every cluster has, each with its
/// `kubernetes.io/metadata.name` label: known to lint whatever the input holds.
pub const WELL_KNOWN_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The checks that need the cluster's pods (skipped when the input has none).
const POD_CHECKS: [&str; 8] = [
    "selects-no-pod",
    "pod-selector-matches-nothing",
    "peer-and-matches-nothing",
    "named-port-undefined",
    "admin-pass-without-network-policy",
    "admin-deny-shadows-network-policy",
    "admin-priority-tie",
    "admin-domain-names-without-deny",
];

/// An address outside every cluster (TEST-NET-3), which lint asks about
/// as "some address on the internet".
const OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The checks that need the namespaces' labels (skipped when the input
/// declares no namespace).
const NAMESPACE_CHECKS: [&str; 2] = [
    "namespace-selector-matches-nothing",
    "unknown-namespace-label",
];

/// Where the cluster DNS runs, for the DNS check when the input holds no DNS
/// pod: pods of `namespace` with `labels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Default for DnsTarget {
    /// kube-system pods labelled `k8s-app=kube-dns` (CoreDNS and kube-dns alike).
    fn default() -> Self {
        DnsTarget {
            namespace: "kube-system".into(),
            labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
        }
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels = crate::selector::format_labels(&self.labels);
        write!(f, "{} pods labelled {labels}", self.namespace)
    }
}

/// What lint assumes about the cluster.
#[derive(Clone, Debug, Default)]
pub struct LintOptions {
    /// The cluster DNS.
    pub dns: DnsTarget,
}

/// Runs every check with the default options; findings come warnings first,
/// then by policy.
pub fn lint(state: &ClusterState) -> Vec<Finding> {
    lint_with(state, &LintOptions::default())
}

/// Runs every check; findings come warnings first, then by policy. Checks
/// whose input is missing (pods, namespaces) are skipped, said once in a
/// `checks-skipped` finding.
pub fn lint_with(state: &ClusterState, options: &LintOptions) -> Vec<Finding> {
    let scope = Scope {
        pods: state.pod_count() > 0,
        namespaces: !state.namespaces().is_empty(),
    };
    let mut out = Vec::new();
    check_dns(state, &options.dns, &mut out);
    for policy in state.policies() {
        check_policy(state, scope, policy, &mut out);
    }
    if scope.pods {
        check_admin_passes(state, &mut out);
        check_admin_shadows(state, &mut out);
        check_admin_ties(state, &mut out);
        check_admin_domain_names(state, &mut out);
    }
    if let Some(skipped) = scope.skipped() {
        out.push(skipped);
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.policy.cmp(&b.policy))
    });
    out
}

/// What the input holds, which decides the checks that can be made.
#[derive(Clone, Copy, Debug)]
struct Scope {
    /// Some pod.
    pods: bool,
    /// Some declared namespace (with its labels).
    namespaces: bool,
}

impl Scope {
    /// The one finding that says which checks were not made, and why.
    fn skipped(self) -> Option<Finding> {
        let mut reasons = Vec::new();
        if !self.pods {
            reasons.push(format!(
                "the input holds no pod, so {} were not checked (add the cluster's pods: \
                 kubectl get pods -A -o yaml)",
                POD_CHECKS.join(", ")
            ));
        }
        if !self.namespaces {
            reasons.push(format!(
                "the input declares no namespace, so {} were not checked beyond the namespaces every \
                 cluster has ({}; add kubectl get namespaces -o yaml)",
                NAMESPACE_CHECKS.join(", "),
                WELL_KNOWN_NAMESPACES.join(", ")
            ));
        }
        (!reasons.is_empty()).then(|| Finding {
            severity: Severity::Info,
            code: "checks-skipped",
            policy: None,
            field: None,
            message: reasons.join("; "),
        })
    }
}

/// The namespaces lint knows: the input's and the well-known ones.
fn known_namespaces(state: &ClusterState) -> Vec<String> {
    let mut names = state.namespace_names();
    for n in WELL_KNOWN_NAMESPACES {
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    names.sort();
    names
}

/// The known namespaces a namespace selector matches.
fn namespaces_matching(state: &ClusterState, selector: &Selector) -> Vec<String> {
    known_namespaces(state)
        .into_iter()
        .filter(|n| selector.matches(&state.namespace_labels(n)))
        .collect()
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
    /// The input's pods (empty when only representatives were found).
    pods: Vec<String>,
}

/// Name prefix of the stand-in pods the DNS check adds to its copy of the state.
const STAND_IN_PREFIX: &str = "netverdict-lint-stand-in-";

/// A pod of the DNS check: one of the input's, or a stand-in.
struct DnsSubject {
    key: PodKey,
    /// Whether the input holds it (else it represents a policy's pods).
    real: bool,
}

/// Egress isolation that leaves no UDP or TCP 53 to the cluster DNS: for each
/// pod of the input, and for a representative pod of each egress
/// NetworkPolicy (policy files alone). The DNS pods are the input's
/// ([`cluster_dns_pods`], or those of `target` when it is not the default),
/// else a stand-in for `target`. Verdicts come from the engine, on a copy of
/// the state holding the stand-ins, so every tier has its say.
fn check_dns(state: &ClusterState, target: &DnsTarget, out: &mut Vec<Finding>) {
    let mut scratch = state.clone();
    let mut next_ip = 0u32;
    let mut stand_in = |scratch: &mut ClusterState,
                        namespace: &str,
                        labels: &BTreeMap<String, String>,
                        dns_ports: bool|
     -> Option<PodKey> {
        next_ip += 1;
        // 10.255/16 for the stand-ins: inside the private range pod networks
        // use, so ipBlocks of "everything but private addresses" exclude them
        // as they would the real pods.
        let ip = IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 255, 0, 0)) + next_ip,
        ));
        let key = PodKey::new(namespace, format!("{STAND_IN_PREFIX}{next_ip}"));
        let object = stand_in_pod(&key, labels, ip, dns_ports)?;
        scratch.apply(&object).ok()?;
        Some(key)
    };
    let mut dns: Vec<PodKey> = if *target == DnsTarget::default() {
        cluster_dns_pods(state)
            .into_iter()
            .map(|p| p.key.clone())
            .collect()
    } else {
        state
            .pods_in(&target.namespace)
            .filter(|p| {
                target
                    .labels
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .map(|p| p.key.clone())
            .collect()
    };
    let dns_stand_in = dns.is_empty();
    if dns_stand_in {
        dns.extend(stand_in(
            &mut scratch,
            &target.namespace,
            &target.labels,
            true,
        ));
    }
    let mut subjects: Vec<DnsSubject> = state
        .pods()
        .into_iter()
        .filter(|p| !p.host_network && !dns.contains(&p.key))
        .map(|p| DnsSubject {
            key: p.key.clone(),
            real: true,
        })
        .collect();
    for policy in state.policies() {
        if policy.rules(Direction::Egress).is_none() {
            continue;
        }
        let Some(labels) = satisfying_labels(&policy.pod_selector) else {
            continue;
        };
        if let Some(key) = stand_in(&mut scratch, policy.namespace(), &labels, false) {
            subjects.push(DnsSubject { key, real: false });
        }
    }
    // One finding per namespace and set of isolating policies.
    let mut groups: Vec<DnsGroup> = Vec::new();
    for subject in &subjects {
        let Some(pod) = scratch.pod(&subject.key) else {
            continue;
        };
        let isolating: Vec<PolicyKey> = scratch
            .policies_selecting(pod, Direction::Egress)
            .iter()
            .map(|p| p.key.clone())
            .collect();
        if isolating.is_empty() {
            continue;
        }
        let denied: Vec<Protocol> = [Protocol::Udp, Protocol::Tcp]
            .into_iter()
            .filter(|protocol| {
                !dns.iter().filter(|d| **d != subject.key).any(|d| {
                    let conn = Connection::new(
                        Endpoint::Pod(subject.key.clone()),
                        Endpoint::Pod(d.clone()),
                        53,
                        *protocol,
                    );
                    scratch.verdict(&conn).is_ok_and(|v| v.egress.allowed())
                })
            })
            .collect();
        if denied.is_empty() {
            continue;
        }
        let name = subject.real.then(|| pod.key.name.clone());
        match groups.iter_mut().find(|g| {
            g.namespace == pod.key.namespace && g.policies == isolating && g.denied == denied
        }) {
            Some(g) => g.pods.extend(name),
            None => groups.push(DnsGroup {
                namespace: pod.key.namespace.clone(),
                policies: isolating,
                denied,
                pods: name.into_iter().collect(),
            }),
        }
    }
    let dns_name = if dns_stand_in {
        format!("the cluster DNS ({target}; the input holds none)")
    } else {
        "the cluster DNS".to_string()
    };
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
        let protos = denied
            .iter()
            .map(|p| format!("{p}/53"))
            .collect::<Vec<_>>()
            .join(" and ");
        let whom = if pods.is_empty() {
            format!("the pods it selects in namespace {namespace}")
        } else {
            format!("pods {} in namespace {namespace}", pods.join(", "))
        };
        out.push(Finding {
            severity: Severity::Warning,
            code: "dns-egress-blocked",
            policy: policies.first().cloned(),
            field: None,
            message: format!(
                "egress isolation by {names} blocks DNS ({protos}) to {dns_name} for {whom}: allow egress to \
                 the cluster DNS pods on UDP and TCP 53 (see allow-dns-egress)"
            ),
        });
    }
}

/// Labels that satisfy a selector (the first value of each `In`, a made-up
/// value for `Exists`), or None when none do.
fn satisfying_labels(selector: &Selector) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for r in selector.requirements() {
        match &r.operator {
            crate::selector::Operator::In(values) => {
                labels.insert(r.key.clone(), values.first()?.clone());
            }
            crate::selector::Operator::Exists => {
                labels
                    .entry(r.key.clone())
                    .or_insert_with(|| "netverdict-lint".to_string());
            }
            crate::selector::Operator::NotIn(_) | crate::selector::Operator::DoesNotExist => {}
        }
    }
    selector.matches(&labels).then_some(labels)
}

/// A stand-in pod as the API would serve it; a DNS one has CoreDNS's named
/// ports (`dns` UDP 53, `dns-tcp` TCP 53).
fn stand_in_pod(
    key: &PodKey,
    labels: &BTreeMap<String, String>,
    ip: IpAddr,
    dns_ports: bool,
) -> Option<K8sObject> {
    let ports = if dns_ports {
        serde_json::json!([
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ])
    } else {
        serde_json::json!([])
    };
    let pod: core::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": ip.to_string()},
    }))
    .ok()?;
    Some(K8sObject::Pod(Box::new(pod)))
}

fn check_policy(
    state: &ClusterState,
    scope: Scope,
    policy: &NetworkPolicy,
    out: &mut Vec<Finding>,
) {
    let finding = |severity, code, field: Option<String>, message: String| Finding {
        severity,
        code,
        policy: Some(policy.key.clone()),
        field,
        message,
    };
    let selected = state.selected_pods(policy);
    if scope.pods && selected.is_empty() {
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
            check_peer_split(
                state,
                scope,
                policy,
                rule,
                &format!("{at}.{peers_field}"),
                out,
            );
            for (j, peer) in rule.peers.iter().enumerate() {
                check_peer(
                    state,
                    scope,
                    policy,
                    peer,
                    &format!("{at}.{peers_field}[{j}]"),
                    out,
                );
            }
            if scope.pods {
                check_named_ports(state, policy, direction, rule, &selected, &at, out);
            }
        }
    }
}

/// Separate namespaceSelector-only and podSelector-only peers in one rule (OR)
/// where one peer with both (AND) was likely meant; and one peer with both
/// whose AND matches no pod while each selector alone matches some.
fn check_peer_split(
    state: &ClusterState,
    scope: Scope,
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
    if !scope.pods || !scope.namespaces {
        return;
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
        let ns_match = !namespaces_matching(state, ns_sel).is_empty();
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
    scope: Scope,
    policy: &NetworkPolicy,
    peer: &Peer,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let Peer::Pods { namespaces, pods } = peer else {
        return;
    };
    if let NamespaceMatch::Selector(sel) = namespaces
        && scope.namespaces
    {
        let matched = namespaces_matching(state, sel);
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
    // Which pods a namespaceSelector reaches needs the namespaces' labels.
    let namespaces_known = scope.namespaces
        || matches!(namespaces, NamespaceMatch::Selector(s) if s.is_empty())
        || matches!(namespaces, NamespaceMatch::PolicyNamespace);
    if scope.pods
        && namespaces_known
        && pods.is_some()
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
    let names = known_namespaces(state);
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

/// Admin `domainNames` Allow rules whose subject pods may reach outside
/// addresses anyway (nothing after the rule denies their egress to an
/// address no name was resolved to): the rule then allows nothing extra.
/// Upstream's advice is an allowlist: the names allowed, then a Deny of the
/// rest (a later rule, or a lower-priority policy, denying `networks`).
fn check_admin_domain_names(state: &ClusterState, out: &mut Vec<Finding>) {
    for policy in state.admin_policies() {
        for (i, rule) in policy.egress.iter().enumerate() {
            if rule.action != AdminAction::Allow
                || !rule
                    .peers
                    .iter()
                    .any(|p| matches!(p, crate::model::AdminPeer::DomainNames(_)))
            {
                continue;
            }
            let (port, protocol) = rule
                .ports
                .iter()
                .find_map(|p| match p {
                    AdminPort::Number { protocol, port } => Some((*port, *protocol)),
                    AdminPort::Range {
                        protocol, start, ..
                    } => Some((*start, *protocol)),
                    _ => None,
                })
                .unwrap_or((443, Protocol::Tcp));
            let open: Vec<&std::sync::Arc<Pod>> = state
                .admin_selected_pods(policy)
                .into_iter()
                .filter(|pod| {
                    let conn = Connection::new(
                        Endpoint::Pod(pod.key.clone()),
                        Endpoint::Ip(IpAddr::V4(OUTSIDE_ADDRESS)),
                        port,
                        protocol,
                    );
                    state.verdict(&conn).is_ok_and(|v| v.egress.allowed())
                })
                .collect();
            if open.is_empty() {
                continue;
            }
            out.push(Finding {
                severity: Severity::Warning,
                code: "admin-domain-names-without-deny",
                policy: Some(policy.key.clone()),
                field: Some(rule_field(Direction::Egress, i)),
                message: format!(
                    "{} allows destinations by name, but {} may reach any outside address on \
                     {protocol}/{port} anyway ({OUTSIDE_ADDRESS}, resolved from no name, is allowed): \
                     the rule allows nothing extra; deny the rest after it (a later rule or a \
                     lower-priority policy denying networks 0.0.0.0/0 and ::/0)",
                    rule_label(policy, Direction::Egress, i),
                    pod_list(&open)
                ),
            });
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
