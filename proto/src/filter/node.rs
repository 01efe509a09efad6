//! `node_name`: the observing node is one of the values.

use super::{FlowCheck, Result};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.node_name.is_empty() {
        return Ok(None);
    }
    let values = filter.node_name.clone();
    Ok(Some(Box::new(move |flow| values.contains(&flow.node_name))))
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
