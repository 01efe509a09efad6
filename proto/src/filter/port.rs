//! `destination_port`: the destination port (after Service DNAT) is one of
//! the values, each 1 to 65535.

use std::num::NonZeroU16;

use super::{FilterError, Result, each};
use crate::v1 as pb;

/// The ports of the field.
pub(super) fn parse(field: &'static str, values: &[u32]) -> Result<Vec<NonZeroU16>> {
    each(values, |&port| {
        u16::try_from(port)
            .ok()
            .and_then(NonZeroU16::new)
            .ok_or_else(|| FilterError::invalid(field, port.to_string(), "ports are 1 to 65535"))
    })
}

/// Whether the flow has a destination on one of `ports`.
pub(super) fn matches(ports: &[NonZeroU16], flow: &pb::Flow) -> bool {
    ports.is_empty()
        || flow
            .destination
            .as_ref()
            .is_some_and(|d| ports.iter().any(|p| u32::from(p.get()) == d.port))
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
