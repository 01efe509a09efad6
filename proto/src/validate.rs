//! Flow validation, defined once: what every store can store.
//!
//! The API server's ingest runs [`check_storable`] on every flow and drops
//! (and counts) the ones it refuses; the stores may then assume their flows
//! pass it (the memory store and the ClickHouse row conversion check again
//! with the same function, so a direct caller gets the same answer). A flow is
//! storable when:
//!
//! - `id` is not empty (it is the deduplication key);
//! - `last_seen` is set, and it and `first_seen` (when set) are normalized
//!   timestamps within [`STORABLE_SECONDS`] (1970 to 2106: ClickHouse's
//!   `DateTime`);
//! - each endpoint's `port` fits 16 bits;
//! - every enum field holds a number this build knows.
//!
//! [`validate`] tells these apart: a flow whose only fault is enum numbers this
//! build does not know (sent by a newer collector) is
//! [`Validity::UnknownEnums`], not [`Validity::Invalid`], so that a later
//! version can choose to store such flows; today [`check_storable`] refuses
//! them too.

use std::ops::RangeInclusive;

use prost_types::Timestamp;

use crate::names::EnumName;
use crate::time::is_normalized;
use crate::v1 as pb;

/// The seconds since the epoch a stored time may have (ClickHouse's `DateTime`).
pub const STORABLE_SECONDS: RangeInclusive<i64> = 0..=u32::MAX as i64;

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required text is empty.
    #[error("empty")]
    Empty,
    /// A required field is not set.
    #[error("missing")]
    Missing,
    /// A timestamp's nanos are outside `0..1_000_000_000`.
    #[error("nanos {0} out of range")]
    InvalidNanos(i32),
    /// A time outside [`STORABLE_SECONDS`].
    #[error("{0}s is outside 1970..2106")]
    TimeOutOfRange(i64),
    /// A port above 65535.
    #[error("port {0} above 65535")]
    PortOutOfRange(u32),
    /// An enum number this build does not know.
    #[error("unknown enum value {0}")]
    UnknownEnum(i32),
}

/// A flow no store can store: its id, the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flow {id}: {field}: {problem}")]
pub struct FlowError {
    /// The flow's id (empty when that is the problem).
    pub id: String,
    /// The field, as a path in `flow.proto` (`destination.port`, `egress.status`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

/// An enum field holding a number this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEnum {
    /// The field, as a path in `flow.proto`.
    pub field: &'static str,
    /// The number.
    pub number: i32,
}

/// What [`validate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Validity {
    /// Every store can store the flow.
    Valid,
    /// Valid but for enum numbers this build does not know, as a newer sender
    /// would send: storable once the stores keep unknown numbers.
    UnknownEnums(Vec<UnknownEnum>),
    /// No store can store the flow: the first problem found.
    Invalid(FlowError),
}

/// Checks `flow` against what every store can store.
pub fn validate(flow: &pb::Flow) -> Validity {
    let mut check = Check {
        flow,
        unknown: Vec::new(),
    };
    match check.run() {
        Err(e) => Validity::Invalid(e),
        Ok(()) if check.unknown.is_empty() => Validity::Valid,
        Ok(()) => Validity::UnknownEnums(check.unknown),
    }
}

/// Whether a store may take `flow` today: [`Validity::Valid`] only; otherwise
/// the first problem (an unknown enum number included).
pub fn check_storable(flow: &pb::Flow) -> Result<(), FlowError> {
    match validate(flow) {
        Validity::Valid => Ok(()),
        Validity::Invalid(e) => Err(e),
        Validity::UnknownEnums(unknown) => {
            let first = unknown.first().copied().unwrap_or(UnknownEnum {
                field: "flow",
                number: 0,
            });
            Err(FlowError {
                id: flow.id.clone(),
                field: first.field,
                problem: Problem::UnknownEnum(first.number),
            })
        }
    }
}

struct Check<'a> {
    flow: &'a pb::Flow,
    unknown: Vec<UnknownEnum>,
}

impl Check<'_> {
    fn error(&self, field: &'static str, problem: Problem) -> FlowError {
        FlowError {
            id: self.flow.id.clone(),
            field,
            problem,
        }
    }

    fn time(&self, field: &'static str, t: &Timestamp) -> Result<(), FlowError> {
        if !is_normalized(t) {
            return Err(self.error(field, Problem::InvalidNanos(t.nanos)));
        }
        if !STORABLE_SECONDS.contains(&t.seconds) {
            return Err(self.error(field, Problem::TimeOutOfRange(t.seconds)));
        }
        Ok(())
    }

    fn enumeration<E: EnumName>(&mut self, field: &'static str, number: i32) {
        if E::from_number(number).is_none() {
            self.unknown.push(UnknownEnum { field, number });
        }
    }

    fn endpoint(
        &mut self,
        ep: Option<&pb::Endpoint>,
        port_field: &'static str,
        kind_field: &'static str,
    ) -> Result<(), FlowError> {
        let Some(ep) = ep else { return Ok(()) };
        if u16::try_from(ep.port).is_err() {
            return Err(self.error(port_field, Problem::PortOutOfRange(ep.port)));
        }
        self.enumeration::<pb::EndpointKind>(kind_field, ep.kind);
        Ok(())
    }

    fn run(&mut self) -> Result<(), FlowError> {
        let flow = self.flow;
        if flow.id.is_empty() {
            return Err(self.error("id", Problem::Empty));
        }
        match &flow.last_seen {
            Some(t) => self.time("last_seen", t)?,
            None => return Err(self.error("last_seen", Problem::Missing)),
        }
        if let Some(t) = &flow.first_seen {
            self.time("first_seen", t)?;
        }
        self.endpoint(flow.source.as_ref(), "source.port", "source.kind")?;
        self.endpoint(
            flow.destination.as_ref(),
            "destination.port",
            "destination.kind",
        )?;
        self.enumeration::<pb::Verdict>("verdict", flow.verdict);
        self.enumeration::<pb::Outcome>("outcome", flow.outcome);
        self.enumeration::<pb::Mismatch>("mismatch", flow.mismatch);
        self.enumeration::<pb::Protocol>("protocol", flow.protocol);
        self.enumeration::<pb::TrafficDirection>("traffic_direction", flow.traffic_direction);
        if let Some(d) = &flow.egress {
            self.enumeration::<pb::PolicyStatus>("egress.status", d.status);
            self.enumeration::<pb::PolicyTier>("egress.tier", d.tier);
        }
        if let Some(d) = &flow.ingress {
            self.enumeration::<pb::PolicyStatus>("ingress.status", d.status);
            self.enumeration::<pb::PolicyTier>("ingress.tier", d.tier);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> pb::Flow {
        pb::Flow {
            id: "node-a/1/7".into(),
            last_seen: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            source: Some(pb::Endpoint {
                port: 40000,
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn error(f: pb::Flow) -> String {
        check_storable(&f).unwrap_err().to_string()
    }

    #[test]
    fn a_plain_flow_is_valid() {
        assert_eq!(validate(&flow()), Validity::Valid);
        assert_eq!(check_storable(&flow()), Ok(()));
    }

    #[test]
    fn errors_name_the_flow_and_the_field() {
        let mut f = flow();
        f.id.clear();
        assert_eq!(error(f), "flow : id: empty");
        let mut f = flow();
        f.last_seen = None;
        assert_eq!(error(f), "flow node-a/1/7: last_seen: missing");
        let mut f = flow();
        f.last_seen.as_mut().unwrap().nanos = -1;
        assert_eq!(
            error(f),
            "flow node-a/1/7: last_seen: nanos -1 out of range"
        );
        let mut f = flow();
        f.first_seen = Some(Timestamp {
            seconds: -1,
            nanos: 0,
        });
        assert_eq!(
            error(f),
            "flow node-a/1/7: first_seen: -1s is outside 1970..2106"
        );
        let mut f = flow();
        f.last_seen.as_mut().unwrap().seconds = i64::from(u32::MAX) + 1;
        assert!(error(f).contains("last_seen"));
        let mut f = flow();
        f.destination.as_mut().unwrap().port = 70000;
        assert_eq!(
            error(f),
            "flow node-a/1/7: destination.port: port 70000 above 65535"
        );
    }

    #[test]
    fn unknown_enum_numbers_are_told_apart() {
        let mut f = flow();
        f.outcome = 42;
        f.source.as_mut().unwrap().kind = 9;
        f.ingress = Some(pb::DirectionVerdict {
            status: -3,
            ..Default::default()
        });
        assert_eq!(
            validate(&f),
            Validity::UnknownEnums(vec![
                UnknownEnum {
                    field: "source.kind",
                    number: 9
                },
                UnknownEnum {
                    field: "outcome",
                    number: 42
                },
                UnknownEnum {
                    field: "ingress.status",
                    number: -3
                },
            ])
        );
        assert_eq!(
            error(f),
            "flow node-a/1/7: source.kind: unknown enum value 9"
        );
        // A real problem wins over unknown enums.
        let mut f = flow();
        f.verdict = 9;
        f.last_seen = None;
        assert!(matches!(validate(&f), Validity::Invalid(_)));
    }

    #[test]
    fn the_storable_range_ends_are_storable() {
        for seconds in [*STORABLE_SECONDS.start(), *STORABLE_SECONDS.end()] {
            let mut f = flow();
            f.last_seen = Some(Timestamp {
                seconds,
                nanos: 999_999_999,
            });
            assert_eq!(validate(&f), Validity::Valid, "{seconds}");
        }
    }
}
