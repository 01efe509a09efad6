//! `destination_port`: the destination port (after Service DNAT) is one of the values.

use super::{FilterError, FlowCheck, Result};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.destination_port.is_empty() {
        return Ok(None);
    }
    for &port in &filter.destination_port {
        if port == 0 || port > u32::from(u16::MAX) {
            return Err(FilterError::invalid(
                "destination_port",
                port.to_string(),
                "ports are 1 to 65535",
            ));
        }
    }
    let values = filter.destination_port.clone();
    Ok(Some(Box::new(move |flow| {
        flow.destination
            .as_ref()
            .is_some_and(|d| values.contains(&d.port))
    })))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[u32]) -> pb::FlowFilter {
        pb::FlowFilter {
            destination_port: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(f(&[53, 8080]), &flow()));
        assert!(
            !check(f(&[40000]), &flow()),
            "source port is not the destination's"
        );
    }

    #[test]
    fn out_of_range_is_an_error() {
        let e = error(f(&[70000]));
        assert!(e.to_string().contains("destination_port") && e.to_string().contains("70000"));
        error(f(&[0]));
    }
}
