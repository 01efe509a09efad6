//! What the engine says about a flow: the verdict, and for each direction
//! (egress of the source, ingress of the destination) whether the endpoint is
//! isolated, the policies that select it, the rules that allowed the flow, or the
//! policies that isolated it and the nearest miss when it is denied.
//!
//! A verdict describes endpoints by their labels, never by pod name, so that one
//! verdict serves every pod of the same identity (the cache shares them); the
//! flow's endpoint names are added when it is rendered (see `explain`).

use std::fmt;

use serde::Serialize;

use crate::model::{Direction, PolicyKey};

/// The verdict on a flow and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Both directions allow the flow.
    pub allowed: bool,
    /// The source's egress.
    pub egress: DirectionVerdict,
    /// The destination's ingress.
    pub ingress: DirectionVerdict,
}

impl Verdict {
    pub fn direction(&self, direction: Direction) -> &DirectionVerdict {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// `allow` or `deny`.
    pub fn as_str(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }

    /// Every policy that isolated an endpoint of a denied flow (empty when allowed).
    pub fn denied_by(&self) -> Vec<&PolicyKey> {
        [&self.egress, &self.ingress]
            .into_iter()
            .filter(|d| d.status == Status::Denied)
            .flat_map(|d| d.selected_by.iter())
            .collect()
    }
}

/// How one direction decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The endpoint is not a pod of the cluster (an external IP or a node):
    /// NetworkPolicy does not apply to it.
    NotAPod,
    /// The endpoint is a host-network pod: policies never select it.
    HostNetwork,
    /// A pod talking to itself: always allowed.
    SelfTraffic,
    /// Traffic between a pod and its own node: always allowed.
    NodeLocal,
    /// No policy selects the pod for this direction: allowed by default.
    NotIsolated,
    /// Isolated, and at least one rule allows the flow.
    Allowed,
    /// Isolated, and no rule allows the flow.
    Denied,
}

impl Status {
    pub fn allows(self) -> bool {
        self != Status::Denied
    }
}

/// The decision of one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionVerdict {
    pub direction: Direction,
    pub status: Status,
    /// Whether some policy selects the endpoint for this direction.
    pub isolated: bool,
    /// Every policy selecting the endpoint for this direction, in order.
    pub selected_by: Vec<PolicyKey>,
    /// Every rule that allows the flow.
    pub allowed_by: Vec<RuleRef>,
    /// Selecting policies with no rule at all for this direction (default deny).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_rules: Vec<PolicyKey>,
    /// When denied: the rule that came nearest to allowing the flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest_miss: Option<Miss>,
}

impl DirectionVerdict {
    pub(crate) fn unselected(direction: Direction, status: Status) -> Self {
        DirectionVerdict {
            direction,
            status,
            isolated: false,
            selected_by: Vec::new(),
            allowed_by: Vec::new(),
            without_rules: Vec::new(),
            nearest_miss: None,
        }
    }

    pub fn allowed(&self) -> bool {
        self.status.allows()
    }
}

/// A rule that allowed a flow: policy, rule index, peer index (None: the rule
/// allows every peer) and port index (None: every port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub rule: usize,
    pub peer: Option<usize>,
    pub port: Option<usize>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} of {}", self.rule, self.policy)?;
        if let Some(peer) = self.peer {
            write!(f, " (peer {peer}")?;
            match self.port {
                Some(port) => write!(f, ", port {port})"),
                None => write!(f, ")"),
            }
        } else if let Some(port) = self.port {
            write!(f, " (port {port})")
        } else {
            Ok(())
        }
    }
}

/// The rule that came nearest to allowing a denied flow, and what did not match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Miss {
    pub policy: PolicyKey,
    pub rule: usize,
    /// The peer that came nearest (None: the rule allows every peer).
    pub peer: Option<usize>,
    /// What did not match, each a thing a person can change.
    pub failures: Vec<Failure>,
}

/// Which side of the flow a rule's peer is: the source for ingress rules, the
/// destination for egress rules.
pub(crate) fn peer_side(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "source",
        Direction::Egress => "destination",
    }
}

/// One thing that kept a rule from allowing a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The peer's namespace lacks a label the namespaceSelector requires.
    NamespaceLabel {
        requirement: String,
        namespace: String,
        actual: String,
    },
    /// The peer pod lacks a label the podSelector requires.
    PodLabel { requirement: String, actual: String },
    /// A podSelector without namespaceSelector admits only the policy's namespace.
    OtherNamespace {
        policy_namespace: String,
        namespace: String,
    },
    /// The rule selects pods; the peer is not a (selectable) pod.
    NotAPod,
    /// The peer's IP is outside the ipBlock's CIDR.
    OutsideCidr { cidr: String },
    /// The peer's IP is in an ipBlock exception.
    InExcept { except: String },
    /// The flow's port or protocol is none of the rule's ports.
    Port {
        allowed: Vec<String>,
        actual: String,
    },
    /// A named port the destination pod does not define for the protocol.
    NamedPortUndefined { name: String, protocol: String },
}

impl Failure {
    /// The kind of failure, as its `kind` field in JSON (`namespace_label`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::NamespaceLabel { .. } => "namespace_label",
            Failure::PodLabel { .. } => "pod_label",
            Failure::OtherNamespace { .. } => "other_namespace",
            Failure::NotAPod => "not_a_pod",
            Failure::OutsideCidr { .. } => "outside_cidr",
            Failure::InExcept { .. } => "in_except",
            Failure::Port { .. } => "port",
            Failure::NamedPortUndefined { .. } => "named_port_undefined",
        }
    }

    /// How far this failure is from a match: label mismatches are the nearest.
    pub(crate) fn distance(&self) -> u32 {
        match self {
            Failure::NamespaceLabel { .. } | Failure::PodLabel { .. } => 1,
            Failure::Port { .. } | Failure::NamedPortUndefined { .. } => 1,
            Failure::OutsideCidr { .. } | Failure::InExcept { .. } => 1,
            Failure::OtherNamespace { .. } => 2,
            Failure::NotAPod => 3,
        }
    }

    /// Renders the failure for a rule of `direction`; `peer_ip` is the flow's
    /// address on the rule's peer side (failures are shared by every flow of the
    /// same identities, so the address comes from the flow).
    pub fn describe(&self, direction: Direction, peer_ip: &str) -> String {
        let ip = peer_ip;
        let side = peer_side(direction);
        match self {
            Failure::NamespaceLabel {
                requirement,
                namespace,
                actual,
            } => format!(
                "needs {side} namespace label {requirement}; namespace {namespace} has {actual}"
            ),
            Failure::PodLabel {
                requirement,
                actual,
            } => {
                format!("needs {side} pod label {requirement}; the {side} pod has {actual}")
            }
            Failure::OtherNamespace {
                policy_namespace,
                namespace,
            } => format!(
                "admits only {side} pods in namespace {policy_namespace} (podSelector without namespaceSelector); the {side} is in {namespace}"
            ),
            Failure::NotAPod => {
                format!("selects pods; the {side} {ip} is not a pod policies can select")
            }
            Failure::OutsideCidr { cidr } => {
                format!("needs {side} IP in {cidr}; {ip} is outside it")
            }
            Failure::InExcept { except } => {
                format!("excepts {except}, which holds the {side} IP {ip}")
            }
            Failure::Port { allowed, actual } => {
                format!(
                    "allows only port(s) {}; the flow is {actual}",
                    allowed.join(", ")
                )
            }
            Failure::NamedPortUndefined { name, protocol } => {
                format!(
                    "names port {name:?}, which the destination pod does not define for {protocol}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kind_is_its_json_tag() {
        let text = || "x".to_string();
        let failures = [
            Failure::NamespaceLabel {
                requirement: text(),
                namespace: text(),
                actual: text(),
            },
            Failure::PodLabel {
                requirement: text(),
                actual: text(),
            },
            Failure::OtherNamespace {
                policy_namespace: text(),
                namespace: text(),
            },
            Failure::NotAPod,
            Failure::OutsideCidr { cidr: text() },
            Failure::InExcept { except: text() },
            Failure::Port {
                allowed: vec![text()],
                actual: text(),
            },
            Failure::NamedPortUndefined {
                name: text(),
                protocol: text(),
            },
        ];
        for failure in failures {
            let json = serde_json::to_value(&failure).expect("serializable");
            assert_eq!(json["kind"], failure.kind(), "{failure:?}");
        }
    }
}
