//! `policy`: a policy is in the flow's `allowed_by` or `denied_by`, named
//! `"namespace/name"` (a NetworkPolicy) or `"Kind/name"` (a cluster-scoped
//! `AdminNetworkPolicy`, `BaselineAdminNetworkPolicy` or
//! `ClusterNetworkPolicy`). Kinds are capitalised and namespace names never
//! are, so the two spellings cannot be confused; [`PolicyName`] is the one
//! definition of them (stores keep policies as these strings).

use super::{FilterError, Result, any, each};
use crate::v1 as pb;

/// The cluster-scoped policy kinds, as the API (and `"Kind/name"`) spells them.
const CLUSTER_SCOPED: [(pb::PolicyKind, &str); 3] = [
    (pb::PolicyKind::AdminNetworkPolicy, "AdminNetworkPolicy"),
    (
        pb::PolicyKind::BaselineAdminNetworkPolicy,
        "BaselineAdminNetworkPolicy",
    ),
    (pb::PolicyKind::ClusterNetworkPolicy, "ClusterNetworkPolicy"),
];

/// A policy by kind and name: a NetworkPolicy by namespace and name, or a
/// cluster-scoped policy by kind and name (all parts non-empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyName {
    kind: pb::PolicyKind,
    /// Empty for cluster-scoped kinds.
    namespace: String,
    name: String,
}

impl PolicyName {
    /// Parses `"namespace/name"` or `"Kind/name"`; the error names `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        match value.split_once('/') {
            Some((scope, name)) if !scope.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(match CLUSTER_SCOPED.iter().find(|(_, k)| *k == scope) {
                    Some((kind, _)) => PolicyName {
                        kind: *kind,
                        namespace: String::new(),
                        name: name.to_string(),
                    },
                    None => PolicyName {
                        kind: pb::PolicyKind::NetworkPolicy,
                        namespace: scope.to_string(),
                        name: name.to_string(),
                    },
                })
            }
            _ => Err(FilterError::invalid(
                field,
                value,
                "expected \"namespace/name\" (NetworkPolicy) or \"Kind/name\" (AdminNetworkPolicy, \
                 BaselineAdminNetworkPolicy, ClusterNetworkPolicy)",
            )),
        }
    }

    /// The name of a policy reference (`namespace/name` or `Kind/name`).
    pub fn of(policy: &pb::PolicyRef) -> PolicyName {
        PolicyName {
            kind: kind_of(policy),
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
        }
    }

    /// The policy's kind.
    pub fn kind(&self) -> pb::PolicyKind {
        self.kind
    }

    /// The policy's namespace (empty for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reference this name stands for; the tier is the kind's (unspecified
    /// for ClusterNetworkPolicy, whose objects say theirs).
    pub fn to_ref(&self) -> pb::PolicyRef {
        let tier = match self.kind {
            pb::PolicyKind::NetworkPolicy => pb::PolicyTier::NetworkPolicy,
            pb::PolicyKind::AdminNetworkPolicy => pb::PolicyTier::Admin,
            pb::PolicyKind::BaselineAdminNetworkPolicy => pb::PolicyTier::Baseline,
            pb::PolicyKind::ClusterNetworkPolicy | pb::PolicyKind::Unspecified => {
                pb::PolicyTier::Unspecified
            }
        };
        pb::PolicyRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            kind: self.kind as i32,
            tier: tier as i32,
        }
    }

    /// Whether `policy` is this one.
    pub fn is(&self, policy: &pb::PolicyRef) -> bool {
        self.kind == kind_of(policy)
            && self.namespace == policy.namespace
            && self.name == policy.name
    }
}

/// A reference's kind; unspecified (flows written before kinds) is NetworkPolicy.
fn kind_of(policy: &pb::PolicyRef) -> pb::PolicyKind {
    match pb::PolicyKind::try_from(policy.kind) {
        Ok(pb::PolicyKind::Unspecified) | Err(_) => pb::PolicyKind::NetworkPolicy,
        Ok(kind) => kind,
    }
}

/// Ordered as the names are spelled (`"namespace/name"`, `"Kind/name"`), as
/// stores that keep them as strings sort them.
impl Ord for PolicyName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for PolicyName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for PolicyName {
    /// `namespace/name` or `Kind/name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match CLUSTER_SCOPED.iter().find(|(k, _)| *k == self.kind) {
            Some((_, kind)) => write!(f, "{kind}/{}", self.name),
            None => write!(f, "{}/{}", self.namespace, self.name),
        }
    }
}

/// The policies of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<PolicyName>> {
    each(values, |v| PolicyName::parse(field, v))
}

/// Whether one of `policies` allowed or denied the flow.
pub(super) fn matches(policies: &[PolicyName], flow: &pb::Flow) -> bool {
    policies.is_empty()
        || flow
            .allowed_by
            .iter()
            .chain(&flow.denied_by)
            .any(|p| any(policies, |name| name.is(p)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            policy: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn allowed_or_denied_by() {
        let mut flow = flow();
        assert!(check(f(&["shop/api-ingress"]), &flow));
        assert!(!check(f(&["other/api-ingress"]), &flow));
        flow.allowed_by.push(pb::PolicyRef {
            namespace: "shop".into(),
            name: "allow-web".into(),
            ..Default::default()
        });
        assert!(check(f(&["x/y", "shop/allow-web"]), &flow));
    }

    #[test]
    fn cluster_scoped_names() {
        let mut flow = flow();
        flow.denied_by.push(pb::PolicyRef {
            namespace: String::new(),
            name: "deny-tenant".into(),
            kind: pb::PolicyKind::AdminNetworkPolicy as i32,
            tier: pb::PolicyTier::Admin as i32,
        });
        assert!(check(f(&["AdminNetworkPolicy/deny-tenant"]), &flow));
        assert!(!check(f(&["ClusterNetworkPolicy/deny-tenant"]), &flow));
        // A namespace spelled like the kind would be a NetworkPolicy's.
        let name = super::PolicyName::parse("policy", "AdminNetworkPolicy/deny-tenant").unwrap();
        assert_eq!(name.to_string(), "AdminNetworkPolicy/deny-tenant");
        assert_eq!(name.namespace(), "");
        assert!(name.is(&name.to_ref()));
        let np = super::PolicyName::parse("policy", "shop/web").unwrap();
        assert_eq!(np.to_string(), "shop/web");
        // A reference without a kind (older flows) is a NetworkPolicy.
        let old = pb::PolicyRef {
            namespace: "shop".into(),
            name: "web".into(),
            ..Default::default()
        };
        assert!(np.is(&old));
        assert_eq!(super::PolicyName::of(&old).to_string(), "shop/web");
    }

    #[test]
    fn hostile_value_matches_nothing() {
        assert!(!check(f(&["shop/x' OR 1=1 --"]), &flow()));
    }

    #[test]
    fn needs_namespace_and_name() {
        for bad in ["api-ingress", "/x", "shop/", "a/b/c"] {
            let e = error(f(&[bad]));
            assert!(e.to_string().contains("policy"), "{e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
