//! `outcome`: what the kernel did is one of the values.

use super::{FlowCheck, Result, enum_values};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.outcome.is_empty() {
        return Ok(None);
    }
    let values = enum_values::<pb::Outcome>("outcome", &filter.outcome)?;
    Ok(Some(Box::new(move |flow| values.contains(&flow.outcome))))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[i32]) -> pb::FlowFilter {
        pb::FlowFilter {
            outcome: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(f(&[pb::Outcome::Refused as i32]), &flow()));
        assert!(!check(f(&[pb::Outcome::Established as i32]), &flow()));
    }

    #[test]
    fn unknown_value_is_an_error() {
        assert!(error(f(&[-1])).to_string().contains("outcome"));
    }
}
