//! `node_name`: the observing node is one of the values.

use super::any;
use crate::v1 as pb;

/// Whether the flow's node is one of `values`.
pub(super) fn matches(values: &[String], flow: &pb::Flow) -> bool {
    any(values, |v| *v == flow.node_name)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, flow};
    use crate::v1 as pb;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            node_name: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(f(&["node-b", "node-a"]), &flow()));
        assert!(!check(f(&["node-b"]), &flow()));
        assert!(!check(f(&["x' OR 1=1 --"]), &flow()));
    }
}
