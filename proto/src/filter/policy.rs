//! `policy`: a `"namespace/name"` policy is in the flow's `allowed_by` or `denied_by`.

use super::{FlowCheck, Result, namespaced};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.policy.is_empty() {
        return Ok(None);
    }
    let values = filter
        .policy
        .iter()
        .map(|v| namespaced("policy", v).map(|(ns, n)| (ns.to_string(), n.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Box::new(move |flow| {
        flow.allowed_by.iter().chain(&flow.denied_by).any(|p| {
            values
                .iter()
                .any(|(ns, n)| *ns == p.namespace && *n == p.name)
        })
    })))
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
