//! The Admin and Baseline tiers: how AdminNetworkPolicy,
//! BaselineAdminNetworkPolicy and ClusterNetworkPolicy decide one direction
//! of a connection for the pod it is about.
//!
//! A tier's policies are walked in decision order (priority, then name, then
//! kind: see `model::AdminPolicy::order_key`), each policy whose subject
//! selects the pod with its rules of the direction in order; the first rule
//! whose peers (any) and ports (any; none means every port) match decides:
//! Allow (ClusterNetworkPolicy's Accept) and Deny end the evaluation, Pass
//! skips the rest of the tier. No matching rule leaves the tier without an
//! opinion.
//!
//! - peers: `namespaces` and `pods` match pods that are not host-network pods
//!   (by namespace and pod labels); `nodes` the addresses of the nodes whose
//!   labels match (host-network pods use them); `networks` any address in one
//!   of the CIDRs (pod addresses included); `domainNames` a destination one
//!   of whose names (those its source resolved to the address, carried by the
//!   connection) matches a name or `*.` pattern, and when the connection
//!   carries no names, nothing, the rule being reported as not evaluated; a
//!   peer of a newer API version (no known field) fails closed.
//! - ports: a number, a range, every port of a protocol, or a named port,
//!   resolved against the destination pod's container ports (none on a
//!   destination that is not a pod).
//!
//! When a Deny rule decides, the Allow and Pass rules before it in the tier
//! are the ones that could have spared the flow: the nearest of them (fewest
//! failures) is the nearest miss, computed only then.

use super::{DirectionCase, View};
use netverdict_proto::filter::DnsPattern;

use crate::model::{AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, Direction, Tier};
use crate::selector::{Labels, Selector};
use crate::state::ClusterState;
use crate::verdict::{AdminMiss, AdminRuleRef, Failure};

/// What one admin tier says about one direction.
#[derive(Default)]
pub(super) struct AdminOutcome {
    /// The first matching rule.
    pub decided: Option<AdminRuleRef>,
    /// When `decided` denies: the nearest Allow or Pass rule before it.
    pub nearest_miss: Option<AdminMiss>,
    /// Rules before the deciding one (or all, when none decided) whose ports
    /// match and whose domainNames peers could not be evaluated.
    pub not_evaluated: Vec<AdminRuleRef>,
}

/// A rule of a policy, located.
struct Located<'a> {
    policy: &'a AdminPolicy,
    index: usize,
    rule: &'a AdminRule,
}

impl Located<'_> {
    fn reference(&self, action: AdminAction, peer: usize, port: Option<usize>) -> AdminRuleRef {
        AdminRuleRef {
            policy: self.policy.key.clone(),
            tier: self.policy.tier,
            priority: self.policy.priority,
            rule: self.index,
            name: self.rule.name.clone(),
            action,
            peer,
            port,
        }
    }
}

impl ClusterState {
    /// What the policies of an admin tier (Admin or Baseline) say about the case.
    pub(super) fn admin_tier_outcome(&self, tier: Tier, case: &DirectionCase) -> AdminOutcome {
        let policies = case.policies.admin.tier(tier);
        let mut outcome = AdminOutcome::default();
        if policies.is_empty() {
            return outcome;
        }
        let subject_ns: Labels = self.namespace_labels(&case.subject.key.namespace);
        let mut passed: Vec<Located> = Vec::new();
        for policy in policies {
            let rules = policy.rules(case.direction);
            if rules.is_empty() || !policy.selects(case.subject, &subject_ns) {
                continue;
            }
            for (index, rule) in rules.iter().enumerate() {
                let located = Located {
                    policy,
                    index,
                    rule,
                };
                let port = match match_ports(&rule.ports, case) {
                    Some(port) => port,
                    None => {
                        passed.push(located);
                        continue;
                    }
                };
                match self.match_admin_peers(rule, case) {
                    PeerMatch::Matched(peer, action) => {
                        let decided = located.reference(action, peer, port);
                        if action == AdminAction::Deny {
                            outcome.nearest_miss = self.nearest_admin_miss(&passed, case);
                        }
                        outcome.decided = Some(decided);
                        return outcome;
                    }
                    PeerMatch::DomainNames(peer) => {
                        outcome
                            .not_evaluated
                            .push(located.reference(rule.action, peer, port));
                        passed.push(located);
                    }
                    PeerMatch::No => passed.push(located),
                }
            }
        }
        outcome
    }

    /// Which peer of a rule matches the case's peer (with the action the
    /// rule then takes), or why none does.
    fn match_admin_peers(&self, rule: &AdminRule, case: &DirectionCase) -> PeerMatch {
        let names = destination_names(case);
        let mut domain_names = None;
        for (i, p) in rule.peers.iter().enumerate() {
            match p {
                AdminPeer::Unrecognized => {
                    // Fail closed: an allow matches nothing, a deny or pass denies all.
                    if rule.action != AdminAction::Allow {
                        return PeerMatch::Matched(i, AdminAction::Deny);
                    }
                }
                AdminPeer::DomainNames(_) if names.is_empty() => {
                    domain_names.get_or_insert(i);
                }
                AdminPeer::DomainNames(patterns) => {
                    if names_match(patterns, names) {
                        return PeerMatch::Matched(i, rule.action);
                    }
                }
                _ => {
                    if self.admin_peer_matches(p, case.peer) {
                        return PeerMatch::Matched(i, rule.action);
                    }
                }
            }
        }
        match domain_names {
            Some(i) => PeerMatch::DomainNames(i),
            None => PeerMatch::No,
        }
    }

    fn admin_peer_matches(&self, peer: &AdminPeer, view: &View) -> bool {
        match peer {
            AdminPeer::Namespaces(_) | AdminPeer::Pods { .. } => view
                .selectable()
                .is_some_and(|pod| self.admin_peer_matches_pod(peer, pod)),
            AdminPeer::Nodes(nodes) => self
                .node_of_ip(view.ip)
                .is_some_and(|node| nodes.matches(&node.labels)),
            AdminPeer::Networks(_) => peer.networks_contain(view.ip),
            AdminPeer::DomainNames(_) | AdminPeer::Unrecognized => false,
        }
    }

    /// The nearest of the Allow and Pass rules that did not match.
    fn nearest_admin_miss(
        &self,
        candidates: &[Located],
        case: &DirectionCase,
    ) -> Option<AdminMiss> {
        let mut nearest: Option<(u32, AdminMiss)> = None;
        for c in candidates
            .iter()
            .filter(|c| c.rule.action != AdminAction::Deny)
        {
            let (peer, mut failures) = self.nearest_admin_peer(c.rule, case);
            if match_ports(&c.rule.ports, case).is_none() {
                failures.push(Failure::Port {
                    allowed: c.rule.ports.iter().map(|p| p.to_string()).collect(),
                    actual: format!("{}/{}", case.protocol, case.port),
                });
            }
            let distance: u32 = failures.iter().map(Failure::distance).sum();
            if nearest.as_ref().is_none_or(|(d, _)| distance < *d) {
                nearest = Some((
                    distance,
                    AdminMiss {
                        rule: c.reference(c.rule.action, peer, None),
                        failures,
                    },
                ));
            }
        }
        nearest.map(|(_, miss)| miss)
    }

    /// The peer of a rule nearest to matching, and what it lacks (nothing when
    /// a peer matches and only the ports failed).
    fn nearest_admin_peer(&self, rule: &AdminRule, case: &DirectionCase) -> (usize, Vec<Failure>) {
        let mut nearest: Option<(u32, usize, Vec<Failure>)> = None;
        for (i, peer) in rule.peers.iter().enumerate() {
            let failures = self.admin_peer_failures(peer, case);
            if failures.is_empty() {
                return (i, failures);
            }
            let distance = failures.iter().map(Failure::distance).sum();
            if nearest.as_ref().is_none_or(|(d, _, _)| distance < *d) {
                nearest = Some((distance, i, failures));
            }
        }
        nearest
            .map(|(_, i, failures)| (i, failures))
            .unwrap_or_default()
    }

    fn admin_peer_failures(&self, peer: &AdminPeer, case: &DirectionCase) -> Vec<Failure> {
        let view = case.peer;
        let pod_failures = |namespaces: &Selector, pods: Option<&Selector>| {
            let Some(pod) = view.selectable() else {
                return vec![Failure::NotAPod];
            };
            let labels = self.namespace_labels(&pod.key.namespace);
            let mut failures: Vec<Failure> = namespaces
                .failures(&labels)
                .into_iter()
                .map(|req| Failure::NamespaceLabel {
                    requirement: req.to_string(),
                    namespace: pod.key.namespace.clone(),
                    actual: req.describe_actual(&labels),
                })
                .collect();
            if let Some(pods) = pods {
                failures.extend(pods.failures(&pod.labels).into_iter().map(|req| {
                    Failure::PodLabel {
                        requirement: req.to_string(),
                        actual: req.describe_actual(&pod.labels),
                    }
                }));
            }
            failures
        };
        match peer {
            AdminPeer::Namespaces(ns) => pod_failures(ns, None),
            AdminPeer::Pods { namespaces, pods } => pod_failures(namespaces, Some(pods)),
            AdminPeer::Nodes(selector) => match self.node_of_ip(view.ip) {
                None => vec![Failure::NotANode],
                Some(node) => selector
                    .failures(&node.labels)
                    .into_iter()
                    .map(|req| Failure::NodeLabel {
                        requirement: req.to_string(),
                        node: node.name.clone(),
                        actual: req.describe_actual(&node.labels),
                    })
                    .collect(),
            },
            AdminPeer::Networks(nets) => {
                if peer.networks_contain(view.ip) {
                    Vec::new()
                } else {
                    let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
                    vec![Failure::OutsideCidr {
                        cidr: nets.join(", "),
                    }]
                }
            }
            AdminPeer::DomainNames(patterns) => {
                let resolved = destination_names(case);
                if names_match(patterns, resolved) {
                    Vec::new()
                } else {
                    vec![Failure::DomainNames {
                        names: patterns.iter().map(ToString::to_string).collect(),
                        resolved: resolved.to_vec(),
                    }]
                }
            }
            AdminPeer::Unrecognized => vec![Failure::UnrecognizedPeer],
        }
    }
}

/// The names the source resolved to the destination, when the peer is the
/// destination (egress); `domainNames` peers are egress-only.
fn destination_names<'a>(case: &DirectionCase<'a>) -> &'a [String] {
    match case.direction {
        Direction::Egress => case.destination_names,
        Direction::Ingress => &[],
    }
}

/// Whether one of the names (normalized) matches one of the patterns.
fn names_match(patterns: &[DnsPattern], names: &[String]) -> bool {
    names
        .iter()
        .any(|name| patterns.iter().any(|p| p.matches_normalized(name)))
}

/// How a rule's peers met the connection's peer.
enum PeerMatch {
    /// This peer matches; the rule takes this action.
    Matched(usize, AdminAction),
    /// No peer matches, and this one is a domainNames peer that could not be
    /// evaluated (the connection carries no destination names).
    DomainNames(usize),
    No,
}

/// Some(index of the first matching port, None when the rule has no ports),
/// or None when no port matches.
fn match_ports(ports: &[AdminPort], case: &DirectionCase) -> Option<Option<usize>> {
    if ports.is_empty() {
        return Some(None);
    }
    let dst = case.dst.selectable().map(|p| &**p);
    ports
        .iter()
        .position(|p| p.matches(dst, case.port, case.protocol))
        .map(Some)
}
