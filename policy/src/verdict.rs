//! What the engine says about a flow: the verdict, and for each direction
//! (egress of the source, ingress of the destination) the tier that decided;
//! the admin or baseline rule (policy, rule name, action) that decided or
//! passed; whether NetworkPolicy isolates the endpoint, the policies that
//! select it, the rules that allowed the flow, or the policies that isolated
//! it; and when denied the nearest miss.
//!
//! A verdict describes endpoints by their labels, never by pod name, so that one
//! verdict serves every pod of the same identity (the cache shares them); the
//! flow's endpoint names are added when it is rendered (see `explain`).

use std::fmt;

use serde::Serialize;

use crate::model::{AdminAction, Direction, PolicyKey, Tier};

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

    /// The policies that denied a denied flow, with their tier (empty when
    /// allowed): the admin or baseline policy whose Deny rule decided a
    /// direction, or the NetworkPolicies that isolated an endpoint and allow
    /// nothing that matches.
    pub fn denied_by(&self) -> Vec<(&PolicyKey, Tier)> {
        [&self.egress, &self.ingress]
            .into_iter()
            .filter(|d| d.status == Status::Denied)
            .flat_map(|d| d.deciding_policies())
            .collect()
    }

    /// The policies whose rules allowed a direction, with their tier: the
    /// NetworkPolicies of the allowing rules, and the admin or baseline policy
    /// whose Allow rule decided a direction.
    pub fn allowed_by(&self) -> Vec<(&PolicyKey, Tier)> {
        [&self.egress, &self.ingress]
            .into_iter()
            .filter(|d| d.status == Status::Allowed)
            .flat_map(|d| d.deciding_policies())
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
    /// A tier decided, and allows the flow: an admin or baseline Allow rule,
    /// or a rule of a NetworkPolicy isolating the pod.
    Allowed,
    /// A tier decided, and denies the flow: an admin or baseline Deny rule, or
    /// the NetworkPolicies isolating the pod allow nothing that matches.
    Denied,
}

impl Status {
    pub fn allows(self) -> bool {
        self != Status::Denied
    }
}

/// The decision of one direction.
///
/// The NetworkPolicy fields (`isolated`, `selected_by`, `allowed_by`,
/// `without_rules`, `nearest_miss`) say what NetworkPolicy did; the admin
/// fields, present only where admin policies had a say, what the Admin and
/// Baseline tiers did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionVerdict {
    pub direction: Direction,
    pub status: Status,
    /// The tier that decided (None: no tier had an opinion, or the endpoint
    /// is not subject to policy: see `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Whether some NetworkPolicy selects the endpoint for this direction.
    pub isolated: bool,
    /// Every NetworkPolicy selecting the endpoint for this direction, in order.
    pub selected_by: Vec<PolicyKey>,
    /// Every rule that allows the flow.
    pub allowed_by: Vec<RuleRef>,
    /// Selecting policies with no rule at all for this direction (default deny).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_rules: Vec<PolicyKey>,
    /// When NetworkPolicy denied: the rule that came nearest to allowing the flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest_miss: Option<Miss>,
    /// The first Admin-tier rule that matched: its Allow or Deny decided the
    /// direction, its Pass sent it on to NetworkPolicy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_rule: Option<AdminRuleRef>,
    /// The first Baseline-tier rule that matched, for a pod NetworkPolicy does
    /// not isolate: its Allow or Deny decided, its Pass left the default (allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_rule: Option<AdminRuleRef>,
    /// When an admin or baseline Deny rule decided: the Allow or Pass rule
    /// before it (in the same tier) that came nearest to matching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_nearest_miss: Option<AdminMiss>,
    /// Rules before the deciding one whose ports match but whose peers are
    /// domain names, on a connection that carries no destination names (no
    /// DNS answer seen by netverdict named the address for its source): these
    /// rules were not evaluated (had the destination been resolved from one
    /// of those names, the rule may have allowed the flow).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_evaluated: Vec<AdminRuleRef>,
}

impl DirectionVerdict {
    pub(crate) fn unselected(direction: Direction, status: Status) -> Self {
        DirectionVerdict {
            direction,
            status,
            tier: None,
            isolated: false,
            selected_by: Vec::new(),
            allowed_by: Vec::new(),
            without_rules: Vec::new(),
            nearest_miss: None,
            admin_rule: None,
            baseline_rule: None,
            admin_nearest_miss: None,
            not_evaluated: Vec::new(),
        }
    }

    pub fn allowed(&self) -> bool {
        self.status.allows()
    }

    /// The admin or baseline rule that decided the direction, if one did.
    pub fn deciding_admin_rule(&self) -> Option<&AdminRuleRef> {
        match self.tier {
            Some(Tier::Admin) => self.admin_rule.as_ref(),
            Some(Tier::Baseline) => self.baseline_rule.as_ref(),
            _ => None,
        }
    }

    /// The policies that made the decision, with their tier: the admin or
    /// baseline policy of the deciding rule; for NetworkPolicy, the policies of
    /// the allowing rules, or when denied every selecting policy.
    pub fn deciding_policies(&self) -> Vec<(&PolicyKey, Tier)> {
        if let Some(rule) = self.deciding_admin_rule() {
            return vec![(&rule.policy, rule.tier)];
        }
        match (self.tier, self.status) {
            (Some(Tier::NetworkPolicy), Status::Allowed) => self
                .allowed_by
                .iter()
                .map(|r| (&r.policy, Tier::NetworkPolicy))
                .collect(),
            (Some(Tier::NetworkPolicy), Status::Denied) => self
                .selected_by
                .iter()
                .map(|p| (p, Tier::NetworkPolicy))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A rule of an admin policy (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
/// ClusterNetworkPolicy) that matched a flow, or came near.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AdminRuleRef {
    pub policy: PolicyKey,
    /// The tier of the policy (Admin or Baseline).
    pub tier: Tier,
    /// The policy's priority (None for the BaselineAdminNetworkPolicy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// The rule's index in the policy's ingress or egress list.
    pub rule: usize,
    /// The rule's name, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the rule does (a Deny or Pass rule with a peer of a newer API
    /// version denies: see `model::AdminPeer::Unrecognized`).
    pub action: AdminAction,
    /// The index of the matching (or nearest) peer.
    pub peer: usize,
    /// The index of the matching port (None: the rule has no ports, or none matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<usize>,
}

impl AdminRuleRef {
    /// `Deny`, `Allow`, `Accept` or `Pass`, as the policy's kind spells it.
    pub fn action_name(&self) -> &'static str {
        self.action.spelled_for(self.policy.kind())
    }
}

/// `rule 3 "deny-from-slytherin" (Deny) of AdminNetworkPolicy/x (priority 10)`.
impl fmt::Display for AdminRuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.rule)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        write!(f, " ({}) of {}", self.action_name(), self.policy)?;
        match self.priority {
            Some(p) => write!(f, " ({}, priority {p})", self.tier.title()),
            None => write!(f, " ({})", self.tier.title()),
        }
    }
}

/// The admin rule that came nearest to keeping a Deny rule from deciding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminMiss {
    pub rule: AdminRuleRef,
    /// What did not match, each a thing a person can change.
    pub failures: Vec<Failure>,
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
    /// The rule's `nodes` peer needs a node address; the peer is no node's.
    NotANode,
    /// The peer's node lacks a label the `nodes` selector requires.
    NodeLabel {
        requirement: String,
        node: String,
        actual: String,
    },
    /// The peer is domain names (`names`, patterns as written) and none of
    /// the names the source resolved to the destination (`resolved`) matches;
    /// `resolved` is empty when they are not known (the rule was then not
    /// evaluated).
    DomainNames {
        names: Vec<String>,
        resolved: Vec<String>,
    },
    /// The peer has none of the fields this version knows (a newer API's).
    UnrecognizedPeer,
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
            Failure::NotANode => "not_a_node",
            Failure::NodeLabel { .. } => "node_label",
            Failure::DomainNames { .. } => "domain_names",
            Failure::UnrecognizedPeer => "unrecognized_peer",
        }
    }

    /// How far this failure is from a match: label mismatches are the nearest.
    pub(crate) fn distance(&self) -> u32 {
        match self {
            Failure::NamespaceLabel { .. } | Failure::PodLabel { .. } => 1,
            Failure::Port { .. } | Failure::NamedPortUndefined { .. } => 1,
            Failure::OutsideCidr { .. } | Failure::InExcept { .. } => 1,
            Failure::NodeLabel { .. } => 1,
            Failure::OtherNamespace { .. } => 2,
            Failure::NotAPod | Failure::NotANode => 3,
            Failure::DomainNames { .. } | Failure::UnrecognizedPeer => 4,
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
            Failure::NotANode => format!("selects nodes; the {side} {ip} is no node's address"),
            Failure::NodeLabel {
                requirement,
                node,
                actual,
            } => format!("needs {side} node label {requirement}; node {node} has {actual}"),
            Failure::DomainNames { names, resolved } if resolved.is_empty() => format!(
                "names domain names ({}), which netverdict cannot evaluate here: no DNS answer \
                 seen by netverdict gave the source {ip}'s name",
                names.join(", ")
            ),
            Failure::DomainNames { names, resolved } => format!(
                "needs a {side} resolved from {}; {ip} was resolved from {}",
                names.join(", "),
                resolved.join(", ")
            ),
            Failure::UnrecognizedPeer => {
                "has a peer of a newer API version, which matches nothing in an allow rule"
                    .to_string()
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
            Failure::NotANode,
            Failure::NodeLabel {
                requirement: text(),
                node: text(),
                actual: text(),
            },
            Failure::DomainNames {
                names: vec![text()],
                resolved: vec![text()],
            },
            Failure::UnrecognizedPeer,
        ];
        for failure in failures {
            let json = serde_json::to_value(&failure).expect("serializable");
            assert_eq!(json["kind"], failure.kind(), "{failure:?}");
        }
    }
}
