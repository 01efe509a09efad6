//! `flow_type`: the flow is of one of the kinds (a flow can be of several):
//!
//! | kind | holds when |
//! | --- | --- |
//! | `FLOW_TYPE_ALLOWED` | the verdict is allowed |
//! | `FLOW_TYPE_DENIED` | the verdict is denied |
//! | `FLOW_TYPE_DROPPED` | the outcome is dropped |
//! | `FLOW_TYPE_DNS` | the flow carries DNS |
//! | `FLOW_TYPE_MISMATCH` | the mismatch is not `MISMATCH_NONE` |
//!
//! `FLOW_TYPE_UNSPECIFIED` and numbers the enum does not know are errors.

use super::{FilterError, Result, any, each};
use crate::names::EnumName;
use crate::v1 as pb;

/// The kinds of the field: known, and not the unspecified zero.
pub(super) fn parse(field: &'static str, values: &[i32]) -> Result<Vec<pb::FlowType>> {
    each(values, |&v| match pb::FlowType::from_number(v) {
        Some(pb::FlowType::Unspecified) | None => Err(FilterError::invalid(
            field,
            v.to_string(),
            format!("not a {}", pb::FlowType::WHAT),
        )),
        Some(kind) => Ok(kind),
    })
}

/// Whether the flow is of `kind`.
fn is_of(kind: pb::FlowType, flow: &pb::Flow) -> bool {
    match kind {
        pb::FlowType::Unspecified => false,
        pb::FlowType::Allowed => flow.verdict == pb::Verdict::Allowed as i32,
        pb::FlowType::Denied => flow.verdict == pb::Verdict::Denied as i32,
        pb::FlowType::Dropped => flow.outcome == pb::Outcome::Dropped as i32,
        pb::FlowType::Dns => flow.dns.is_some(),
        pb::FlowType::Mismatch => flow.mismatch != pb::Mismatch::None as i32,
    }
}

/// Whether the flow is of one of `kinds`.
pub(super) fn matches(kinds: &[pb::FlowType], flow: &pb::Flow) -> bool {
    any(kinds, |k| is_of(*k, flow))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[pb::FlowType]) -> pb::FlowFilter {
        pb::FlowFilter {
            flow_type: v.iter().map(|k| *k as i32).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn each_kind() {
        use pb::FlowType::*;
        // A denied, refused TCP flow without DNS whose outcome agrees.
        let mut flow = flow();
        assert!(check(f(&[Denied]), &flow));
        for kind in [Allowed, Dropped, Dns, Mismatch] {
            assert!(!check(f(&[kind]), &flow), "{kind:?}");
        }
        assert!(check(f(&[Allowed, Denied]), &flow), "any of the kinds");
        flow.verdict = pb::Verdict::Allowed as i32;
        flow.outcome = pb::Outcome::Dropped as i32;
        flow.mismatch = pb::Mismatch::DroppedThoughAllowed as i32;
        flow.dns = Some(pb::Dns::default());
        for kind in [Allowed, Dropped, Dns, Mismatch] {
            assert!(check(f(&[kind]), &flow), "{kind:?}");
        }
        assert!(!check(f(&[Denied]), &flow));
    }

    #[test]
    fn unspecified_and_unknown_are_errors() {
        let e = error(f(&[pb::FlowType::Unspecified])).to_string();
        assert_eq!(
            e,
            "filter field flow_type: invalid value \"0\": not a flow type"
        );
        let e = error(pb::FlowFilter {
            flow_type: vec![99],
            ..Default::default()
        });
        assert_eq!(e.field(), "flow_type");
    }
}
