//! `protocol`: the transport protocol is one of the values.

use super::{FlowCheck, Result, enum_values};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.protocol.is_empty() {
        return Ok(None);
    }
    let values = enum_values::<pb::Protocol>("protocol", &filter.protocol)?;
    Ok(Some(Box::new(move |flow| values.contains(&flow.protocol))))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[i32]) -> pb::FlowFilter {
        pb::FlowFilter {
            protocol: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(
            f(&[pb::Protocol::Udp as i32, pb::Protocol::Tcp as i32]),
            &flow()
        ));
        assert!(!check(f(&[pb::Protocol::Udp as i32]), &flow()));
    }

    #[test]
    fn unknown_value_is_an_error() {
        assert!(error(f(&[99])).to_string().contains("protocol"));
    }
}
