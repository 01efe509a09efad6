//! `policy`: a `"namespace/name"` policy is in the flow's `allowed_by` or
//! `denied_by`.

use super::{FilterError, Result, any, each};
use crate::v1 as pb;

/// A NetworkPolicy by namespace and name, both non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyName {
    namespace: String,
    name: String,
}

impl PolicyName {
    /// Parses `"namespace/name"`; the error names `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        match value.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(PolicyName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(FilterError::invalid(
                field,
                value,
                "expected \"namespace/name\"",
            )),
        }
    }

    /// The policy's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `policy` is this one.
    pub fn is(&self, policy: &pb::PolicyRef) -> bool {
        self.namespace == policy.namespace && self.name == policy.name
    }
}

impl std::fmt::Display for PolicyName {
    /// `namespace/name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
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
        });
        assert!(check(f(&["x/y", "shop/allow-web"]), &flow));
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
