//! The engine's answers in the protobuf vocabulary of `netverdict.v1`: every
//! conversion from this crate's values to protobuf is here, and only here
//! (the collector renders flows with it, the API server its reports). Behind
//! the `proto` feature; the engine itself knows nothing of protobuf.

use netverdict_proto::v1 as pb;

use crate::model::{AdminAction, PolicyKey, PolicyKind, Protocol, Tier};
use crate::verdict::{AdminRuleRef, DirectionVerdict, RuleRef, Status, Verdict};

impl From<Protocol> for pb::Protocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Sctp => pb::Protocol::Sctp,
            Protocol::Icmp => pb::Protocol::Icmp,
        }
    }
}

impl From<PolicyKind> for pb::PolicyKind {
    fn from(kind: PolicyKind) -> Self {
        match kind {
            PolicyKind::NetworkPolicy => pb::PolicyKind::NetworkPolicy,
            PolicyKind::AdminNetworkPolicy => pb::PolicyKind::AdminNetworkPolicy,
            PolicyKind::BaselineAdminNetworkPolicy => pb::PolicyKind::BaselineAdminNetworkPolicy,
            PolicyKind::ClusterNetworkPolicy => pb::PolicyKind::ClusterNetworkPolicy,
        }
    }
}

impl From<Tier> for pb::PolicyTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Admin => pb::PolicyTier::Admin,
            Tier::NetworkPolicy => pb::PolicyTier::NetworkPolicy,
            Tier::Baseline => pb::PolicyTier::Baseline,
        }
    }
}

impl From<AdminAction> for pb::AdminAction {
    fn from(action: AdminAction) -> Self {
        match action {
            AdminAction::Allow => pb::AdminAction::Allow,
            AdminAction::Deny => pb::AdminAction::Deny,
            AdminAction::Pass => pb::AdminAction::Pass,
        }
    }
}

/// A policy of a tier: a cluster-scoped policy has an empty namespace.
pub fn policy_ref(key: &PolicyKey, tier: Option<Tier>) -> pb::PolicyRef {
    pb::PolicyRef {
        namespace: key.namespace().unwrap_or_default().to_string(),
        name: key.name().to_string(),
        kind: pb::PolicyKind::from(key.kind()) as i32,
        tier: tier
            .or(key.kind().tier())
            .map_or(pb::PolicyTier::Unspecified, pb::PolicyTier::from) as i32,
    }
}

/// The tier is the kind's (unspecified for a ClusterNetworkPolicy named
/// without its policy: use [`policy_ref`] where the tier is known).
impl From<&PolicyKey> for pb::PolicyRef {
    fn from(key: &PolicyKey) -> Self {
        policy_ref(key, None)
    }
}

impl From<&AdminRuleRef> for pb::AdminRuleRef {
    fn from(rule: &AdminRuleRef) -> Self {
        pb::AdminRuleRef {
            policy: Some(policy_ref(&rule.policy, Some(rule.tier))),
            rule: rule.rule as u32,
            name: rule.name.clone().unwrap_or_default(),
            action: pb::AdminAction::from(rule.action) as i32,
            priority: rule.priority,
            peer: rule.peer as u32,
            port: rule.port.map(|p| p as u32),
        }
    }
}

impl Verdict {
    /// The policies that allowed (`allowed_by`) and denied (`denied_by`) the
    /// flow, for the protobuf `Flow`'s query fields: sorted, deduplicated.
    pub fn policy_refs(&self) -> (Vec<pb::PolicyRef>, Vec<pb::PolicyRef>) {
        let refs = |mut list: Vec<(&PolicyKey, Tier)>| {
            list.sort();
            list.dedup();
            list.into_iter()
                .map(|(key, tier)| policy_ref(key, Some(tier)))
                .collect()
        };
        (refs(self.allowed_by()), refs(self.denied_by()))
    }
}

impl From<Status> for pb::PolicyStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::NotAPod => pb::PolicyStatus::NotAPod,
            Status::HostNetwork => pb::PolicyStatus::HostNetwork,
            Status::SelfTraffic => pb::PolicyStatus::Self_,
            Status::NodeLocal => pb::PolicyStatus::NodeLocal,
            Status::NotIsolated => pb::PolicyStatus::NotIsolated,
            Status::Allowed => pb::PolicyStatus::Allowed,
            Status::Denied => pb::PolicyStatus::Denied,
        }
    }
}

impl From<&RuleRef> for pb::RuleRef {
    fn from(rule: &RuleRef) -> Self {
        pb::RuleRef {
            policy: Some((&rule.policy).into()),
            rule: rule.rule as u32,
            peer: rule.peer.map(|p| p as u32),
            port: rule.port.map(|p| p as u32),
        }
    }
}

impl DirectionVerdict {
    /// The direction's decision as protobuf; `peer_ip` is the connection's
    /// address on the peer side (the destination for egress, the source for
    /// ingress), which the failures' descriptions name.
    pub fn to_proto(&self, peer_ip: &str) -> pb::DirectionVerdict {
        pb::DirectionVerdict {
            status: pb::PolicyStatus::from(self.status) as i32,
            isolated: self.isolated,
            selected_by: self.selected_by.iter().map(Into::into).collect(),
            allowed_by: self.allowed_by.iter().map(Into::into).collect(),
            without_rules: self.without_rules.iter().map(Into::into).collect(),
            nearest_miss: self.nearest_miss.as_ref().map(|m| pb::RuleRef {
                policy: Some((&m.policy).into()),
                rule: m.rule as u32,
                peer: m.peer.map(|p| p as u32),
                port: None,
            }),
            failures: self
                .nearest_miss
                .iter()
                .flat_map(|m| &m.failures)
                .chain(self.admin_nearest_miss.iter().flat_map(|m| &m.failures))
                .map(|f| pb::Failure {
                    kind: f.kind().to_string(),
                    description: f.describe(self.direction, peer_ip),
                })
                .collect(),
            tier: self
                .tier
                .map_or(pb::PolicyTier::Unspecified, pb::PolicyTier::from) as i32,
            admin_rule: self.admin_rule.as_ref().map(Into::into),
            baseline_rule: self.baseline_rule.as_ref().map(Into::into),
            admin_nearest_miss: self.admin_nearest_miss.as_ref().map(|m| (&m.rule).into()),
            not_evaluated: self.not_evaluated.iter().map(Into::into).collect(),
        }
    }
}

/// A stored flow as what-if replay and `recommend` take it: the connection (each end the
/// pod by name when the cluster still has it, else its address; the
/// destination port after Service DNAT), grouped by the workloads the flow
/// names. None for a flow replay cannot decide: a second observation
/// (`counted_elsewhere`: its connection is counted on its record of account),
/// a protocol policy does not cover, no port, or an end with neither a pod
/// nor an address.
pub fn replay_flow(
    state: &crate::state::ClusterState,
    flow: &pb::Flow,
) -> Option<crate::whatif::ReplayFlow> {
    use crate::whatif::{Party, ReplayFlow, endpoint_for_replay};
    if flow.counted_elsewhere {
        return None;
    }
    let protocol = match pb::Protocol::try_from(flow.protocol).ok()? {
        pb::Protocol::Tcp => Protocol::Tcp,
        pb::Protocol::Udp => Protocol::Udp,
        pb::Protocol::Sctp => Protocol::Sctp,
        // ICMP has no port: replays and recommendations are per port.
        _ => return None,
    };
    let src = flow.source.as_ref()?;
    let dst = flow.destination.as_ref()?;
    let port = u16::try_from(dst.port).ok().filter(|p| *p != 0)?;
    let end = |e: &pb::Endpoint| {
        let is_pod = matches!(
            pb::EndpointKind::try_from(e.kind),
            Ok(pb::EndpointKind::Pod | pb::EndpointKind::HostNetworkPod)
        ) && !e.pod_name.is_empty();
        let pod = is_pod.then(|| crate::model::PodKey::new(&e.namespace, &e.pod_name));
        let endpoint = endpoint_for_replay(state, pod, e.ip.parse().ok())?;
        let party = match pb::EndpointKind::try_from(e.kind).unwrap_or_default() {
            pb::EndpointKind::Pod | pb::EndpointKind::HostNetworkPod => Party::Workload {
                namespace: e.namespace.clone(),
                workload: if e.workload.is_empty() {
                    e.pod_name.clone()
                } else {
                    e.workload.clone()
                },
            },
            pb::EndpointKind::Node => Party::Node {
                name: e.node_name.clone(),
                ip: e.ip.clone(),
            },
            pb::EndpointKind::World | pb::EndpointKind::Unspecified => Party::Address(e.ip.clone()),
        };
        Some((endpoint, party))
    };
    let (src_endpoint, src_party) = end(src)?;
    let (dst_endpoint, dst_party) = end(dst)?;
    let observed_allowed = match pb::Verdict::try_from(flow.verdict) {
        Ok(pb::Verdict::Allowed) => Some(true),
        Ok(pb::Verdict::Denied) => Some(false),
        _ => None,
    };
    Some(ReplayFlow {
        connection: crate::engine::Connection::new(src_endpoint, dst_endpoint, port, protocol)
            .with_destination_names(&flow.destination_names),
        src: src_party,
        dst: dst_party,
        count: flow.count.max(1),
        observed_allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refs_of_both_scopes() {
        let np = pb::PolicyRef::from(&PolicyKey::network_policy("shop", "web"));
        assert_eq!((np.namespace.as_str(), np.name.as_str()), ("shop", "web"));
        let anp = PolicyKey::cluster_scoped(PolicyKind::AdminNetworkPolicy, "deny-all")
            .expect("cluster-scoped");
        let anp = pb::PolicyRef::from(&anp);
        assert_eq!(
            (anp.namespace.as_str(), anp.name.as_str()),
            ("", "deny-all")
        );
        assert_eq!(anp.kind, pb::PolicyKind::AdminNetworkPolicy as i32);
        assert_eq!(anp.tier, pb::PolicyTier::Admin as i32);
        assert_eq!(np.tier, pb::PolicyTier::NetworkPolicy as i32);
        // Stores spell it as the key displays it.
        assert_eq!(
            netverdict_proto::filter::PolicyName::of(&anp).to_string(),
            "AdminNetworkPolicy/deny-all"
        );
        let cnp = PolicyKey::cluster_scoped(PolicyKind::ClusterNetworkPolicy, "c").unwrap();
        let cnp = policy_ref(&cnp, Some(Tier::Baseline));
        assert_eq!(cnp.tier, pb::PolicyTier::Baseline as i32);
    }

    #[test]
    fn every_protocol_has_its_protobuf_value() {
        let names: Vec<&str> = Protocol::ALL
            .into_iter()
            .map(|p| pb::Protocol::from(p).as_str_name())
            .collect();
        assert_eq!(names, ["PROTOCOL_TCP", "PROTOCOL_UDP", "PROTOCOL_SCTP"]);
    }

    #[test]
    fn a_replayed_flow_keeps_the_name_its_source_resolved() {
        let end = |ip: &str, port, kind: pb::EndpointKind| pb::Endpoint {
            ip: ip.into(),
            port,
            kind: kind as i32,
            ..Default::default()
        };
        let flow = pb::Flow {
            source: Some(end("10.0.0.5", 40000, pb::EndpointKind::Unspecified)),
            destination: Some(end("203.0.113.7", 443, pb::EndpointKind::World)),
            protocol: pb::Protocol::Tcp as i32,
            destination_names: vec!["api.example.com".into(), "other.test".into()],
            ..Default::default()
        };
        let state = crate::state::ClusterState::default();
        let replayed = replay_flow(&state, &flow).expect("replayable");
        assert_eq!(
            replayed.connection.destination_names,
            ["api.example.com", "other.test"]
        );
        let unnamed = pb::Flow {
            destination_names: Vec::new(),
            ..flow
        };
        let replayed = replay_flow(&state, &unnamed).expect("replayable");
        assert!(replayed.connection.destination_names.is_empty());
    }
}
