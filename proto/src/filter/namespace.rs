//! `namespace`: either endpoint's namespace is one of the values.

use super::{FlowCheck, Result};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.namespace.is_empty() {
        return Ok(None);
    }
    let values = filter.namespace.clone();
    Ok(Some(Box::new(move |flow| {
        [&flow.source, &flow.destination]
            .into_iter()
            .flatten()
            .any(|ep| !ep.namespace.is_empty() && values.contains(&ep.namespace))
    })))
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
