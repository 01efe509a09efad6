//! `namespace`, `source_namespace` and `destination_namespace`: an endpoint's
//! namespace is one of the values (either endpoint's for `namespace`). An
//! endpoint that is not a pod (empty namespace) never matches, not even `""`.

use super::any;
use crate::v1 as pb;

/// Whether either endpoint's non-empty namespace is one of `values`.
pub(super) fn matches_either(values: &[String], flow: &pb::Flow) -> bool {
    values.is_empty()
        || [&flow.source, &flow.destination]
            .into_iter()
            .any(|ep| in_one_of(values, ep.as_ref()))
}

/// Whether the endpoint's non-empty namespace is one of `values`.
pub(super) fn matches(values: &[String], endpoint: Option<&pb::Endpoint>) -> bool {
    values.is_empty() || in_one_of(values, endpoint)
}

fn in_one_of(values: &[String], endpoint: Option<&pb::Endpoint>) -> bool {
    endpoint.is_some_and(|ep| !ep.namespace.is_empty() && any(values, |v| *v == ep.namespace))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, flow};
    use crate::v1 as pb;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            namespace: strings(v),
            ..Default::default()
        }
    }

    fn src(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            source_namespace: strings(v),
            ..Default::default()
        }
    }

    fn dst(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            destination_namespace: strings(v),
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
    fn one_endpoint() {
        let mut flow = flow();
        flow.destination.as_mut().unwrap().namespace = "db".into();
        assert!(check(src(&["shop"]), &flow));
        assert!(!check(src(&["db"]), &flow));
        assert!(check(dst(&["x", "db"]), &flow));
        assert!(!check(dst(&["shop"]), &flow));
        flow.destination = None;
        assert!(!check(dst(&["db"]), &flow), "an absent endpoint has none");
    }

    #[test]
    fn empty_namespace_never_matches_non_pods() {
        let mut flow = flow();
        flow.source.as_mut().unwrap().namespace.clear();
        flow.destination.as_mut().unwrap().namespace.clear();
        assert!(!check(f(&[""]), &flow));
        assert!(!check(src(&[""]), &flow));
        assert!(!check(dst(&[""]), &flow));
    }

    #[test]
    fn hostile_value_is_just_a_name() {
        assert!(!check(f(&["x' OR 1=1 --"]), &flow()));
        assert!(!check(src(&["x' OR 1=1 --"]), &flow()));
    }
}
