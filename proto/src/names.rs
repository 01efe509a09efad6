//! One vocabulary for the protobuf enums: each value's name as people, flags
//! and JSON see it, how that name (or the proto name) parses back, and the
//! name ClickHouse stores.
//!
//! The **display form** is the proto name without its type prefix, in
//! lowercase kebab-case: `OUTCOME_NO_ANSWER` is `no-answer`,
//! `ENDPOINT_KIND_HOST_NETWORK_POD` is `host-network-pod`, `PROTOCOL_TCP` is
//! `tcp`. The CLI prints it (tables and JSON), takes it in flags, and the
//! collector's metrics use it as label values.
//!
//! [`EnumName::parse`] accepts, case-insensitively, the display form, the same
//! with `_` for `-` (`no_answer`, `NO_ANSWER`) and the full proto name
//! (`OUTCOME_NO_ANSWER`).
//!
//! The **SQL form** ([`EnumName::sql_name`]) is the proto name: the members of
//! the ClickHouse `Enum8` columns, whose values are the proto numbers.
//!
//! Every mapping is an exhaustive `match`, so a value added to a `.proto` enum
//! does not compile until it has a name here.

use std::borrow::Cow;

use crate::v1 as pb;

/// The names of one protobuf enum's values.
pub trait EnumName: Copy + Eq + Sized + 'static {
    /// What the enum is, for messages ("outcome", "endpoint kind").
    const WHAT: &'static str;
    /// Every value, in proto number order.
    const ALL: &'static [Self];

    /// The display, flag and JSON form: kebab-case without the type prefix.
    fn name(self) -> &'static str;

    /// The proto name (`OUTCOME_NO_ANSWER`), which is also the member name
    /// of the ClickHouse `Enum8` columns.
    fn sql_name(self) -> &'static str;

    /// The proto number.
    fn number(self) -> i32;

    /// The value of a proto number; None for a number this build does not know.
    fn from_number(number: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.number() == number)
    }

    /// The value named `text`: the display form, the proto name, or the proto
    /// name without its prefix, in any case, with `_` and `-` alike.
    fn parse(text: &str) -> Option<Self> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.iter().copied().find(|v| {
            v.name() == wanted || v.sql_name().to_ascii_lowercase().replace('_', "-") == wanted
        })
    }

    /// As [`parse`](Self::parse), with an error listing the display names.
    fn parse_or_list(text: &str) -> Result<Self, String> {
        Self::parse(text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            format!(
                "not a known {}: expected one of {}",
                Self::WHAT,
                names.join(", ")
            )
        })
    }
}

/// The display name of a proto number as a flow carries it: the value's name,
/// or the number itself when this build does not know it (a newer sender).
pub fn name_of<E: EnumName>(number: i32) -> Cow<'static, str> {
    match E::from_number(number) {
        Some(v) => Cow::Borrowed(v.name()),
        None => Cow::Owned(number.to_string()),
    }
}

/// The number a store files a proto number under, and what filters and
/// reports compare: the number itself when this build knows it, else the
/// enum's zero value (`*_UNSPECIFIED`, `MISMATCH_NONE`). A flow from a newer
/// sender keeps its number (the memory store holds the flow as sent, ClickHouse
/// in its `flow` column), so `GetFlows` returns it; its `Enum8` column, the
/// filters of both stores and the reports see the zero value.
pub fn known_or_zero<E: EnumName>(number: i32) -> i32 {
    E::from_number(number).map_or(0, E::number)
}

/// Implements [`EnumName`] for a prost enum: its display names, by variant.
macro_rules! enum_names {
    ($ty:ty, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl EnumName for $ty {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$(<$ty>::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }

            fn sql_name(self) -> &'static str {
                self.as_str_name()
            }

            fn number(self) -> i32 {
                self as i32
            }
        }
    };
}

enum_names!(pb::Verdict, "verdict", {
    Unspecified => "unspecified",
    Allowed => "allowed",
    Denied => "denied",
});

enum_names!(pb::Outcome, "outcome", {
    Unspecified => "unspecified",
    Established => "established",
    Refused => "refused",
    Reset => "reset",
    NoAnswer => "no-answer",
    Dropped => "dropped",
    Answered => "answered",
});

enum_names!(pb::TrafficDirection, "traffic direction", {
    Unspecified => "unspecified",
    Ingress => "ingress",
    Egress => "egress",
});

enum_names!(pb::Protocol, "protocol", {
    Unspecified => "unspecified",
    Tcp => "tcp",
    Udp => "udp",
    Sctp => "sctp",
    Icmp => "icmp",
});

enum_names!(pb::Mismatch, "mismatch", {
    None => "none",
    DroppedThoughAllowed => "dropped-though-allowed",
    AllowedThoughDenied => "allowed-though-denied",
    NoAnswerThoughAllowed => "no-answer-though-allowed",
});

enum_names!(pb::ObservationPoint, "observation point", {
    Unspecified => "unspecified",
    Source => "source",
    Destination => "destination",
    Transit => "transit",
});

enum_names!(pb::EndpointKind, "endpoint kind", {
    Unspecified => "unspecified",
    Pod => "pod",
    HostNetworkPod => "host-network-pod",
    Node => "node",
    World => "world",
});

enum_names!(pb::PolicyStatus, "policy status", {
    Unspecified => "unspecified",
    NotAPod => "not-a-pod",
    HostNetwork => "host-network",
    Self_ => "self",
    NodeLocal => "node-local",
    NotIsolated => "not-isolated",
    Allowed => "allowed",
    Denied => "denied",
});

enum_names!(pb::FlowType, "flow type", {
    Unspecified => "unspecified",
    Allowed => "allowed",
    Denied => "denied",
    Dropped => "dropped",
    Dns => "dns",
    Mismatch => "mismatch",
});

enum_names!(pb::PolicyKind, "policy kind", {
    Unspecified => "unspecified",
    NetworkPolicy => "network-policy",
    AdminNetworkPolicy => "admin-network-policy",
    BaselineAdminNetworkPolicy => "baseline-admin-network-policy",
    ClusterNetworkPolicy => "cluster-network-policy",
});

enum_names!(pb::PolicyTier, "policy tier", {
    Unspecified => "unspecified",
    Admin => "admin",
    NetworkPolicy => "network-policy",
    Baseline => "baseline",
});

enum_names!(pb::AdminAction, "admin action", {
    Unspecified => "unspecified",
    Allow => "allow",
    Deny => "deny",
    Pass => "pass",
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The display form is derived from the proto name by one rule, and every
    /// number the enum knows is listed, in order.
    fn check<E: EnumName + TryFrom<i32> + std::fmt::Debug>(prefix: &str) {
        for (i, v) in E::ALL.iter().enumerate() {
            assert_eq!(v.number(), i32::try_from(i).unwrap(), "{v:?} out of order");
            let derived = v
                .sql_name()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{} lacks {prefix}", v.sql_name()))
                .to_ascii_lowercase()
                .replace('_', "-");
            assert_eq!(v.name(), derived, "{v:?}");
            assert_eq!(E::parse(v.name()), Some(*v));
            assert_eq!(E::parse(v.sql_name()), Some(*v));
            assert_eq!(E::parse(&v.name().to_ascii_uppercase()), Some(*v));
            assert_eq!(E::from_number(v.number()), Some(*v));
        }
        let next = i32::try_from(E::ALL.len()).unwrap();
        assert!(E::try_from(next).is_err(), "{prefix}: ALL misses {next}");
        assert!(E::from_number(next).is_none());
        assert!(E::parse("no such name").is_none());
    }

    #[test]
    fn every_enum_follows_the_rule() {
        check::<pb::Verdict>("VERDICT_");
        check::<pb::Outcome>("OUTCOME_");
        check::<pb::TrafficDirection>("TRAFFIC_DIRECTION_");
        check::<pb::Protocol>("PROTOCOL_");
        check::<pb::Mismatch>("MISMATCH_");
        check::<pb::ObservationPoint>("OBSERVATION_POINT_");
        check::<pb::EndpointKind>("ENDPOINT_KIND_");
        check::<pb::PolicyStatus>("POLICY_STATUS_");
        check::<pb::FlowType>("FLOW_TYPE_");
        check::<pb::PolicyKind>("POLICY_KIND_");
        check::<pb::PolicyTier>("POLICY_TIER_");
        check::<pb::AdminAction>("ADMIN_ACTION_");
    }

    #[test]
    fn the_four_old_spellings_of_no_answer_parse() {
        for s in ["no_answer", "no-answer", "NO_ANSWER", "OUTCOME_NO_ANSWER"] {
            assert_eq!(pb::Outcome::parse(s), Some(pb::Outcome::NoAnswer), "{s}");
        }
        assert_eq!(pb::Outcome::NoAnswer.name(), "no-answer");
        assert_eq!(pb::Outcome::NoAnswer.sql_name(), "OUTCOME_NO_ANSWER");
    }

    #[test]
    fn unknown_numbers_are_filed_under_the_zero_value() {
        assert_eq!(known_or_zero::<pb::Verdict>(2), 2);
        assert_eq!(known_or_zero::<pb::Verdict>(99), 0);
        assert_eq!(known_or_zero::<pb::Mismatch>(-1), 0);
        assert_eq!(known_or_zero::<pb::PolicyStatus>(i32::MAX), 0);
    }

    #[test]
    fn unknown_numbers_show_as_numbers() {
        assert_eq!(name_of::<pb::Verdict>(2), "denied");
        assert_eq!(name_of::<pb::Verdict>(42), "42");
        let e = pb::Protocol::parse_or_list("quic").unwrap_err();
        assert_eq!(
            e,
            "not a known protocol: expected one of unspecified, tcp, udp, sctp, icmp"
        );
        assert_eq!(pb::Protocol::parse("ICMP"), Some(pb::Protocol::Icmp));
    }
}
