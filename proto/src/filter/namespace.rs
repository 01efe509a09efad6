//! `namespace`: either endpoint's namespace is one of the values. An endpoint
//! that is not a pod (empty namespace) never matches, not even `""`.

use super::any;
use crate::v1 as pb;

/// Whether either endpoint's non-empty namespace is one of `values`.
pub(crate) fn matches(values: &[String], flow: &pb::Flow) -> bool {
    values.is_empty()
        || [&flow.source, &flow.destination]
            .into_iter()
            .flatten()
            .any(|ep| !ep.namespace.is_empty() && any(values, |v| *v == ep.namespace))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, flow};
    use crate::v1 as pb;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            namespace: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn either_endpoint() {
        let mut flow = flow();
        flow.destination.as_mut().unwrap().namespace = "db".into();
        assert!(check(f(&["shop"]), &flow));
        assert!(check(f(&["db"]), &flow));
        assert!(check(f(&["x", "db"]), &flow));
        assert!(!check(f(&["other"]), &flow));
    }

    #[test]
    fn empty_namespace_never_matches_non_pods() {
        let mut flow = flow();
        flow.source.as_mut().unwrap().namespace.clear();
        flow.destination.as_mut().unwrap().namespace.clear();
        assert!(!check(f(&[""]), &flow));
    }

    #[test]
    fn hostile_value_is_just_a_name() {
        assert!(!check(f(&["x' OR 1=1 --"]), &flow()));
    }
}
