//! `verdict`, `outcome`, `protocol` and `mismatch`: the flow's enum field is
//! one of the values (`MISMATCH_NONE` selects flows where the verdict and the
//! outcome agree). A number the enum does not know is an error in a filter;
//! in a flow (from a newer sender) it matches as the enum's zero value, as
//! the stores file it (`names::known_or_zero`).

use super::{FilterError, Result, any, each};
use crate::names::{EnumName, known_or_zero};

/// The values of an enum field, each a number the enum knows.
pub(super) fn parse<E: EnumName>(field: &'static str, values: &[i32]) -> Result<Vec<E>> {
    each(values, |&v| {
        E::from_number(v).ok_or_else(|| {
            FilterError::invalid(field, v.to_string(), format!("not a known {}", E::WHAT))
        })
    })
}

/// Whether the flow's number (an unknown one read as the zero value) is one
/// of the values.
pub(super) fn matches<E: EnumName>(values: &[E], number: i32) -> bool {
    let number = known_or_zero::<E>(number);
    any(values, |v| v.number() == number)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    #[test]
    fn verdict() {
        let f = |v: &[i32]| pb::FlowFilter {
            verdict: v.to_vec(),
            ..Default::default()
        };
        assert!(check(f(&[pb::Verdict::Denied as i32]), &flow()));
        assert!(check(
            f(&[pb::Verdict::Allowed as i32, pb::Verdict::Denied as i32]),
            &flow()
        ));
        assert!(!check(f(&[pb::Verdict::Allowed as i32]), &flow()));
        let e = error(f(&[42])).to_string();
        assert_eq!(
            e,
            "filter field verdict: invalid value \"42\": not a known verdict"
        );
        // A flow's unknown verdict (a newer collector) matches as unspecified.
        let mut newer = flow();
        newer.verdict = 99;
        assert!(check(f(&[pb::Verdict::Unspecified as i32]), &newer));
        assert!(!check(f(&[pb::Verdict::Denied as i32]), &newer));
    }

    #[test]
    fn outcome() {
        let f = |v: &[i32]| pb::FlowFilter {
            outcome: v.to_vec(),
            ..Default::default()
        };
        assert!(check(f(&[pb::Outcome::Refused as i32]), &flow()));
        assert!(!check(f(&[pb::Outcome::Established as i32]), &flow()));
        assert!(error(f(&[-1])).to_string().contains("outcome"));
    }

    #[test]
    fn protocol() {
        let f = |v: &[i32]| pb::FlowFilter {
            protocol: v.to_vec(),
            ..Default::default()
        };
        assert!(check(
            f(&[pb::Protocol::Udp as i32, pb::Protocol::Tcp as i32]),
            &flow()
        ));
        assert!(!check(f(&[pb::Protocol::Udp as i32]), &flow()));
        assert!(error(f(&[99])).to_string().contains("protocol"));
    }

    #[test]
    fn mismatch() {
        let f = |v: &[i32]| pb::FlowFilter {
            mismatch: v.to_vec(),
            ..Default::default()
        };
        assert!(check(f(&[pb::Mismatch::None as i32]), &flow()));
        assert!(!check(
            f(&[pb::Mismatch::AllowedThoughDenied as i32]),
            &flow()
        ));
        assert!(error(f(&[7])).to_string().contains("mismatch"));
    }
}
