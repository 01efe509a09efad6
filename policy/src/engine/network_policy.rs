//! The NetworkPolicy tier: how networking.k8s.io/v1 NetworkPolicy decides one
//! direction of a connection for the pod it is about.
//!
//! - a pod no policy selects for the direction is not isolated for it: the tier
//!   has no opinion, and the next tier (or the default, allow) decides;
//! - an isolated pod admits the connection when any rule of any selecting
//!   policy matches both the peer and the port (policies are additive; there is
//!   no deny rule), and is denied otherwise, with the rule that came nearest.
//!
//! Choices where the API leaves behaviour to the implementation, as the upstream
//! conformance tests (e2e `netpol` suite) expect them:
//! - ipBlock matches pod IPs as well as external ones (the suite's CIDR tests use
//!   pod IPs);
//! - named ports resolve against the destination pod's container ports, for
//!   egress rules as for ingress rules; a named port on a non-pod destination
//!   matches nothing.

use std::sync::Arc;

use super::{DirectionCase, Selection, View};
use crate::model::{NamespaceMatch, NetworkPolicy, Peer, Pod, PortRef, PortRule, Protocol};
use crate::state::ClusterState;
use crate::verdict::{DirectionVerdict, Failure, Miss, RuleRef, Status};

impl ClusterState {
    /// The NetworkPolicies selecting the case's subject for its direction.
    pub(super) fn selecting(&self, case: &DirectionCase) -> Vec<Arc<NetworkPolicy>> {
        match case.selection {
            Selection::Indexed => case
                .policies
                .network
                .selecting(case.subject, case.direction),
            Selection::Scan => case
                .policies
                .network
                .selecting_by_scan(case.subject, case.direction),
        }
    }

    /// What the NetworkPolicies selecting the case's subject say about it:
    /// None when none selects it (the tier has no opinion).
    pub(super) fn network_policy_tier(&self, case: &DirectionCase) -> Option<DirectionVerdict> {
        let direction = case.direction;
        let policies = self.selecting(case);
        if policies.is_empty() {
            return None;
        }
        let mut allowed_by = Vec::new();
        let mut nearest: Option<(u32, Miss)> = None;
        for policy in &policies {
            let rules = policy.rules(direction).unwrap_or_default();
            for (rule_index, rule) in rules.iter().enumerate() {
                let port_result =
                    match_ports(&rule.ports, case.dst.selectable(), case.port, case.protocol);
                let peer_result = self.match_peers(policy, &rule.peers, case.peer);
                match (peer_result, port_result) {
                    (Ok(peer_index), Ok(port_index)) => allowed_by.push(RuleRef {
                        policy: policy.key.clone(),
                        rule: rule_index,
                        peer: peer_index,
                        port: port_index,
                    }),
                    (peer_result, port_result) => {
                        let (peer_index, mut failures) = match peer_result {
                            Ok(index) => (index, Vec::new()),
                            Err((index, failures)) => (Some(index), failures),
                        };
                        if let Err(failure) = port_result {
                            failures.push(failure);
                        }
                        let distance: u32 = failures.iter().map(Failure::distance).sum();
                        if nearest.as_ref().is_none_or(|(d, _)| distance < *d) {
                            nearest = Some((
                                distance,
                                Miss {
                                    policy: policy.key.clone(),
                                    rule: rule_index,
                                    peer: peer_index,
                                    failures,
                                },
                            ));
                        }
                    }
                }
            }
        }
        let status = if allowed_by.is_empty() {
            Status::Denied
        } else {
            Status::Allowed
        };
        Some(DirectionVerdict {
            isolated: true,
            selected_by: policies.iter().map(|p| p.key.clone()).collect(),
            without_rules: policies
                .iter()
                .filter(|p| p.rules(direction).is_some_and(|r| r.is_empty()))
                .map(|p| p.key.clone())
                .collect(),
            nearest_miss: if status == Status::Denied {
                nearest.map(|(_, miss)| miss)
            } else {
                None
            },
            allowed_by,
            ..DirectionVerdict::unselected(direction, status)
        })
    }

    /// Ok(index of the first matching peer, None when the rule allows every peer),
    /// or Err(the nearest peer and what it lacks).
    fn match_peers(
        &self,
        policy: &NetworkPolicy,
        peers: &[Peer],
        view: &View,
    ) -> Result<Option<usize>, (usize, Vec<Failure>)> {
        if peers.is_empty() {
            return Ok(None);
        }
        let mut nearest: Option<(u32, usize, Vec<Failure>)> = None;
        for (i, peer) in peers.iter().enumerate() {
            let failures = self.peer_failures(policy.namespace(), peer, view);
            if failures.is_empty() {
                return Ok(Some(i));
            }
            let distance = failures.iter().map(Failure::distance).sum();
            if nearest.as_ref().is_none_or(|(d, _, _)| distance < *d) {
                nearest = Some((distance, i, failures));
            }
        }
        let (_, i, failures) = nearest.expect("peers is not empty");
        Err((i, failures))
    }

    /// What keeps `peer` (of a policy in `policy_namespace`) from matching `view`.
    fn peer_failures(&self, policy_namespace: &str, peer: &Peer, view: &View) -> Vec<Failure> {
        match peer {
            Peer::IpBlock(block) => {
                if !block.cidr.contains(&view.ip) {
                    vec![Failure::OutsideCidr {
                        cidr: block.cidr.to_string(),
                    }]
                } else if let Some(except) = block.except.iter().find(|e| e.contains(&view.ip)) {
                    vec![Failure::InExcept {
                        except: except.to_string(),
                    }]
                } else {
                    Vec::new()
                }
            }
            Peer::Pods { namespaces, pods } => {
                let Some(pod) = view.selectable() else {
                    return vec![Failure::NotAPod];
                };
                let mut failures = Vec::new();
                match namespaces {
                    NamespaceMatch::PolicyNamespace => {
                        if pod.key.namespace != policy_namespace {
                            failures.push(Failure::OtherNamespace {
                                policy_namespace: policy_namespace.to_string(),
                                namespace: pod.key.namespace.clone(),
                            });
                        }
                    }
                    NamespaceMatch::Selector(selector) => {
                        let labels = self.namespace_labels(&pod.key.namespace);
                        for req in selector.failures(&labels) {
                            failures.push(Failure::NamespaceLabel {
                                requirement: req.to_string(),
                                namespace: pod.key.namespace.clone(),
                                actual: req.describe_actual(&labels),
                            });
                        }
                    }
                }
                if let Some(selector) = pods {
                    for req in selector.failures(&pod.labels) {
                        failures.push(Failure::PodLabel {
                            requirement: req.to_string(),
                            actual: req.describe_actual(&pod.labels),
                        });
                    }
                }
                failures
            }
        }
    }
}
/// Ok(index of the first matching port, None when the rule allows every port), or
/// Err(why none matched). Named ports resolve against the destination pod.
fn match_ports(
    ports: &[PortRule],
    dst_pod: Option<&Arc<Pod>>,
    port: u16,
    protocol: Protocol,
) -> Result<Option<usize>, Failure> {
    if ports.is_empty() {
        return Ok(None);
    }
    let mut unresolved_name = None;
    for (i, rule) in ports.iter().enumerate() {
        if rule.protocol != protocol {
            continue;
        }
        let matched = match (&rule.port, rule.end_port) {
            (None, _) => true,
            (Some(PortRef::Number(start)), Some(end)) => (*start..=end).contains(&port),
            (Some(PortRef::Number(n)), None) => *n == port,
            (Some(PortRef::Name(name)), _) => {
                match dst_pod.and_then(|p| p.named_port(name, protocol)) {
                    Some(resolved) => resolved == port,
                    None => {
                        unresolved_name.get_or_insert(name);
                        false
                    }
                }
            }
        };
        if matched {
            return Ok(Some(i));
        }
    }
    let only_names_failed = ports
        .iter()
        .filter(|r| r.protocol == protocol)
        .all(|r| matches!(r.port, Some(PortRef::Name(_))));
    match unresolved_name {
        Some(name) if only_names_failed => Err(Failure::NamedPortUndefined {
            name: name.clone(),
            protocol: protocol.to_string(),
        }),
        _ => Err(Failure::Port {
            allowed: ports
                .iter()
                .map(|r| describe_port_rule(r, dst_pod))
                .collect(),
            actual: format!("{protocol}/{port}"),
        }),
    }
}

/// `TCP/8080`, `TCP/8000-8100`, `TCP/http (8080 on the destination)`, `any UDP port`.
fn describe_port_rule(rule: &PortRule, dst_pod: Option<&Arc<Pod>>) -> String {
    match &rule.port {
        Some(PortRef::Name(name)) => {
            match dst_pod.and_then(|p| p.named_port(name, rule.protocol)) {
                Some(n) => format!("{}/{name} ({n} on the destination)", rule.protocol),
                None => format!("{}/{name}", rule.protocol),
            }
        }
        _ => rule.to_string(),
    }
}
