//! `verdict`: the flow's policy verdict is one of the values.

use super::{FlowCheck, Result, enum_values};
use crate::v1 as pb;

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.verdict.is_empty() {
        return Ok(None);
    }
    let values = enum_values::<pb::Verdict>("verdict", &filter.verdict)?;
    Ok(Some(Box::new(move |flow| values.contains(&flow.verdict))))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[i32]) -> pb::FlowFilter {
        pb::FlowFilter {
            verdict: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_any_value() {
        assert!(check(f(&[pb::Verdict::Denied as i32]), &flow()));
        assert!(check(
            f(&[pb::Verdict::Allowed as i32, pb::Verdict::Denied as i32]),
            &flow()
        ));
        assert!(!check(f(&[pb::Verdict::Allowed as i32]), &flow()));
    }

    #[test]
    fn unknown_value_is_an_error() {
        assert!(error(f(&[42])).to_string().contains("verdict"));
    }
}
