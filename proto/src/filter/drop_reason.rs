//! `drop_reason`: the kernel's drop reason name of the flow is one of the
//! values.
//!
//! Flows carry the name the kernel's BTF gives (`enum skb_drop_reason`) without
//! its `SKB_DROP_REASON_` prefix: `NETFILTER_DROP`, `NO_SOCKET`, or `UNKNOWN`
//! for a reason the kernel did not name. A value is written like the enum
//! names of flags are: any case, `-` for `_`, the kernel's prefix optional
//! (`netfilter-drop`, `SKB_DROP_REASON_NETFILTER_DROP`); it compiles to the
//! flow's form and compares exactly. A flow without drops has no reason and
//! matches no value.

use super::{FilterError, Result, any, each};
use crate::v1 as pb;

/// The kernel's prefix of the enum's member names.
const KERNEL_PREFIX: &str = "SKB_DROP_REASON_";

/// A drop reason name as flows carry it (`NETFILTER_DROP`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropReason(String);

impl DropReason {
    /// Parses a name: letters, digits, `_` and `-`, in any case; the error
    /// names `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        let invalid = |reason| FilterError::invalid(field, value, reason);
        let upper = value.trim().to_ascii_uppercase().replace('-', "_");
        let name = upper.strip_prefix(KERNEL_PREFIX).unwrap_or(&upper);
        if name.is_empty() {
            return Err(invalid("empty drop reason"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "a drop reason has only letters, digits, '_' and '-' (e.g. NETFILTER_DROP)",
            ));
        }
        Ok(DropReason(name.to_string()))
    }

    /// The name as flows carry it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The reasons of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<DropReason>> {
    each(values, |v| DropReason::parse(field, v))
}

/// Whether the flow's drop reason is one of `reasons`.
pub(super) fn matches(reasons: &[DropReason], flow: &pb::Flow) -> bool {
    any(reasons, |r| r.0 == flow.drop_reason)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use super::*;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            drop_reason: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_spelling_compiles_to_the_kernel_name() {
        for v in [
            "NETFILTER_DROP",
            "netfilter_drop",
            "netfilter-drop",
            " SKB_DROP_REASON_NETFILTER_DROP ",
        ] {
            assert_eq!(
                DropReason::parse("drop_reason", v).unwrap().as_str(),
                "NETFILTER_DROP",
                "{v}"
            );
        }
    }

    #[test]
    fn matches_the_flows_reason() {
        let mut flow = flow();
        assert!(!check(f(&["NETFILTER_DROP"]), &flow), "no drops, no reason");
        flow.drop_reason = "NETFILTER_DROP".into();
        assert!(check(f(&["no-socket", "netfilter-drop"]), &flow));
        assert!(!check(f(&["NO_SOCKET"]), &flow));
        flow.drop_reason = "netfilter_drop".into();
        assert!(
            !check(f(&["NETFILTER_DROP"]), &flow),
            "compares with the kernel's form exactly"
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        for bad in [
            "",
            " ",
            "SKB_DROP_REASON_",
            "x' OR 1=1 --",
            "NETFILTER DROP",
        ] {
            let e = error(f(&[bad])).to_string();
            assert!(e.contains("drop_reason"), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
