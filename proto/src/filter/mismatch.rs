//! `mismatch`: the verdict/outcome contradiction is one of the values
//! (`MISMATCH_NONE` selects flows where they agree).

use super::{FlowCheck, Result, enum_values};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.mismatch.is_empty() {
        return Ok(None);
    }
    let values = enum_values::<pb::Mismatch>("mismatch", &filter.mismatch)?;
    Ok(Some(Box::new(move |flow| values.contains(&flow.mismatch))))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[i32]) -> pb::FlowFilter {
        pb::FlowFilter {
            mismatch: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(f(&[pb::Mismatch::None as i32]), &flow()));
        assert!(!check(
            f(&[pb::Mismatch::AllowedThoughDenied as i32]),
            &flow()
        ));
    }

    #[test]
    fn unknown_value_is_an_error() {
        assert!(error(f(&[7])).to_string().contains("mismatch"));
    }
}
