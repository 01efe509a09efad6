//! The engine's answers in the protobuf vocabulary of `netverdict.v1`: every
//! conversion from this crate's values to protobuf is here, and only here
//! (the collector renders flows with it, the API server its reports). Behind
//! the `proto` feature; the engine itself knows nothing of protobuf.

use netverdict_proto::v1 as pb;

use crate::model::{PolicyKey, Protocol};
use crate::verdict::{DirectionVerdict, RuleRef, Status};

impl From<Protocol> for pb::Protocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Sctp => pb::Protocol::Sctp,
        }
    }
}

/// A cluster-scoped policy has an empty namespace. (`PolicyRef` has no kind
/// yet: it gains one with the first cluster-scoped kind the engine evaluates.)
impl From<&PolicyKey> for pb::PolicyRef {
    fn from(key: &PolicyKey) -> Self {
        pb::PolicyRef {
            namespace: key.namespace().unwrap_or_default().to_string(),
            name: key.name().to_string(),
        }
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
                .map(|f| pb::Failure {
                    kind: f.kind().to_string(),
                    description: f.describe(self.direction, peer_ip),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PolicyKind;

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
    }

    #[test]
    fn every_protocol_has_its_protobuf_value() {
        let names: Vec<&str> = Protocol::ALL
            .into_iter()
            .map(|p| pb::Protocol::from(p).as_str_name())
            .collect();
        assert_eq!(names, ["PROTOCOL_TCP", "PROTOCOL_UDP", "PROTOCOL_SCTP"]);
    }
}
