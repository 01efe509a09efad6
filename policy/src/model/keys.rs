//! The names of the objects the engine holds and verdicts refer to: a pod's
//! namespace and name, and a policy's kind, namespace (for namespaced kinds) and
//! name. Verdicts name policies by [`PolicyKey`], which can also name the
//! cluster-scoped kinds of the AdminNetworkPolicy API, whose tiers come next.

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

/// The kinds of policy a verdict can name. The engine evaluates NetworkPolicy;
/// the cluster-scoped kinds of the network-policy-api project
/// (policy.networking.k8s.io) are named so that keys, verdicts and
/// explanations can carry them when their tiers are added (see
/// `engine::Tier`): AdminNetworkPolicy is decided before NetworkPolicy,
/// BaselineAdminNetworkPolicy after it, and ClusterNetworkPolicy (v1alpha2)
/// holds both tiers in one kind.
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
