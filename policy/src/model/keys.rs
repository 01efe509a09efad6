//! The names of the objects the engine holds and verdicts refer to: a pod's
//! namespace and name, and a policy's kind, namespace (for namespaced kinds) and
//! name. Verdicts name policies by [`PolicyKey`], which also names the
//! cluster-scoped kinds of the AdminNetworkPolicy API, and tiers by [`Tier`].

use std::fmt;

use serde::Serialize;

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Serialized as `namespace/name`.
impl Serialize for PodKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds of policy the engine evaluates: NetworkPolicy and the
/// cluster-scoped kinds of the network-policy-api project
/// (policy.networking.k8s.io): AdminNetworkPolicy is decided before
/// NetworkPolicy, BaselineAdminNetworkPolicy after it, and
/// ClusterNetworkPolicy (v1alpha2) holds both tiers in one kind (see [`Tier`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PolicyKind {
    /// networking.k8s.io/v1 NetworkPolicy: namespaced.
    NetworkPolicy,
    /// policy.networking.k8s.io AdminNetworkPolicy: cluster-scoped.
    AdminNetworkPolicy,
    /// policy.networking.k8s.io BaselineAdminNetworkPolicy: cluster-scoped.
    BaselineAdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy: cluster-scoped.
    ClusterNetworkPolicy,
}

impl PolicyKind {
    /// The kind as the API writes it (`NetworkPolicy`).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            PolicyKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
            PolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    /// The tier policies of this kind are decided in; None for
    /// ClusterNetworkPolicy, whose objects say theirs.
    pub fn tier(self) -> Option<Tier> {
        match self {
            PolicyKind::NetworkPolicy => Some(Tier::NetworkPolicy),
            PolicyKind::AdminNetworkPolicy => Some(Tier::Admin),
            PolicyKind::BaselineAdminNetworkPolicy => Some(Tier::Baseline),
            PolicyKind::ClusterNetworkPolicy => None,
        }
    }

    /// Every kind.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::NetworkPolicy,
        PolicyKind::AdminNetworkPolicy,
        PolicyKind::BaselineAdminNetworkPolicy,
        PolicyKind::ClusterNetworkPolicy,
    ];

    /// The kind named as the API writes it.
    pub fn parse(name: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        match self {
            PolicyKind::NetworkPolicy => true,
            PolicyKind::AdminNetworkPolicy
            | PolicyKind::BaselineAdminNetworkPolicy
            | PolicyKind::ClusterNetworkPolicy => false,
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tiers a direction of a connection is decided in, in this order: the
/// first tier with an opinion decides, and none means allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// AdminNetworkPolicy and `tier: Admin` ClusterNetworkPolicy: Allow and
    /// Deny decide, Pass goes on to NetworkPolicy.
    Admin,
    /// networking.k8s.io/v1 NetworkPolicy: decides for the pods it isolates.
    NetworkPolicy,
    /// BaselineAdminNetworkPolicy and `tier: Baseline` ClusterNetworkPolicy:
    /// decide for pods NetworkPolicy does not isolate.
    Baseline,
}

impl Tier {
    /// Every tier, in decision order.
    pub const ALL: [Tier; 3] = [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline];

    /// `admin`, `network_policy`, `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::NetworkPolicy => "network_policy",
            Tier::Baseline => "baseline",
        }
    }

    /// For people: `Admin tier`, `NetworkPolicy tier`, `Baseline tier`.
    pub fn title(self) -> &'static str {
        match self {
            Tier::Admin => "Admin tier",
            Tier::NetworkPolicy => "NetworkPolicy tier",
            Tier::Baseline => "Baseline tier",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy's kind, namespace (namespaced kinds only) and name: how verdicts,
/// explanations and lint findings name a policy. Built only by the
/// constructors, so a namespaced kind always has a namespace and a
/// cluster-scoped one never does. Ordered by kind, then namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    kind: PolicyKind,
    namespace: Option<String>,
    name: String,
}

impl PolicyKey {
    /// A NetworkPolicy's key.
    pub fn network_policy(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PolicyKey {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped policy; None when `kind` is namespaced.
    pub fn cluster_scoped(kind: PolicyKind, name: impl Into<String>) -> Option<Self> {
        (!kind.is_namespaced()).then(|| PolicyKey {
            kind,
            namespace: None,
            name: name.into(),
        })
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The namespace of a namespaced policy; None for a cluster-scoped one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Serialized as it is displayed.
impl Serialize for PolicyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `namespace/name` for a namespaced policy, `Kind/name` for a cluster-scoped
/// one (`AdminNetworkPolicy/deny-all`): kinds are capitalised and namespace
/// names never are, so the two cannot be confused.
impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_scope() {
        let np = PolicyKey::network_policy("shop", "allow-web");
        assert_eq!(np.to_string(), "shop/allow-web");
        assert_eq!(np.namespace(), Some("shop"));
        assert_eq!(np.kind(), PolicyKind::NetworkPolicy);
        let anp = PolicyKey::cluster_scoped(PolicyKind::AdminNetworkPolicy, "deny-all")
            .expect("cluster-scoped");
        assert_eq!(anp.to_string(), "AdminNetworkPolicy/deny-all");
        assert_eq!(anp.namespace(), None);
        assert_eq!(
            serde_json::to_value(&anp).unwrap(),
            "AdminNetworkPolicy/deny-all"
        );
        assert!(PolicyKey::cluster_scoped(PolicyKind::NetworkPolicy, "x").is_none());
        // NetworkPolicy keys sort by namespace, then name.
        let mut keys = [
            PolicyKey::network_policy("b", "a"),
            PolicyKey::network_policy("a", "z"),
        ];
        keys.sort();
        assert_eq!(keys[0].to_string(), "a/z");
    }
}
