//! Flow validation, defined once: what every store can store.
//!
//! The API server's ingest runs [`validate`] on every flow and refuses (and
//! counts, and reports in the batch's `Ack.refused`) the ones it finds
//! [`Validity::Invalid`]; the stores may then assume their flows pass
//! [`check_storable`] (the memory store and the ClickHouse row conversion
//! check again with the same function, so a direct caller gets the same
//! answer). A flow is storable when:
//!
//! - `id` is not empty (it is the deduplication key);
//! - `last_seen` is set, and it and `first_seen` (when set) are normalized
//!   timestamps within [`STORABLE_SECONDS`] (1970 to 2106: ClickHouse's
//!   `DateTime`);
//! - each endpoint's `port` fits 16 bits.
//!
//! Enum numbers this build does not know (sent by a newer collector during a
//! rolling upgrade) do not make a flow invalid: [`validate`] reports them as
//! [`Validity::UnknownEnums`] so ingest can count them, and the stores keep
//! the number in the flow and file it under the enum's zero value
//! (`names::known_or_zero`).
//!
//! Ingest also refuses flows whose `last_seen` is far from its own clock
//! ([`check_received`] with [`TimeBounds`]): older than the store keeps or
//! further ahead than clocks drift. So one batch spans a few days, and an
//! INSERT a few day partitions, however wrong a sender's clock is.

use std::ops::RangeInclusive;
use std::time::Duration;

use prost_types::Timestamp;

use crate::names::EnumName;
use crate::time::{UnixNanos, is_normalized};
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
    /// A time older than the receiver keeps ([`TimeBounds::max_age`]).
    #[error("{seconds}s is more than {max_age:?} before the receiver's clock")]
    TooOld {
        /// The time, in seconds since the epoch.
        seconds: i64,
        /// The bound it is past.
        max_age: Duration,
    },
    /// A time further ahead of the receiver's clock than
    /// [`TimeBounds::max_ahead`].
    #[error("{seconds}s is more than {max_ahead:?} after the receiver's clock")]
    TooFarAhead {
        /// The time, in seconds since the epoch.
        seconds: i64,
        /// The bound it is past.
        max_ahead: Duration,
    },
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
    /// Storable, with enum numbers this build does not know, as a newer
    /// sender would send (kept as sent, filed under the zero value).
    UnknownEnums(Vec<UnknownEnum>),
    /// No store can store the flow: the first problem found.
    Invalid(FlowError),
}

impl Validity {
    /// Whether a store can take the flow.
    pub fn is_storable(&self) -> bool {
        !matches!(self, Validity::Invalid(_))
    }
}

/// How far from the receiver's clock a flow's `last_seen` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// At most this long before the receiver's clock (older flows would be
    /// expired by the store's retention at once); None: no bound.
    pub max_age: Option<Duration>,
    /// At most this long after it (clocks drift; a flow dated in the future
    /// would sit in a partition retention never reaches).
    pub max_ahead: Duration,
}

impl Default for TimeBounds {
    /// No age bound, one hour ahead.
    fn default() -> Self {
        TimeBounds {
            max_age: None,
            max_ahead: Duration::from_secs(3600),
        }
    }
}

/// Whether `flow`'s `last_seen` is within `bounds` of `now` (the receiver's
/// clock). A flow without `last_seen` passes: [`validate`] refuses it.
pub fn check_received(
    flow: &pb::Flow,
    now: UnixNanos,
    bounds: &TimeBounds,
) -> Result<(), FlowError> {
    let Some(t) = &flow.last_seen else {
        return Ok(());
    };
    let at = UnixNanos::from_timestamp(t).as_i128();
    let error = |problem| FlowError {
        id: flow.id.clone(),
        field: "last_seen",
        problem,
    };
    let now = now.as_i128();
    if at > now.saturating_add(bounds.max_ahead.as_nanos() as i128) {
        return Err(error(Problem::TooFarAhead {
            seconds: t.seconds,
            max_ahead: bounds.max_ahead,
        }));
    }
    if let Some(max_age) = bounds.max_age
        && at < now.saturating_sub(max_age.as_nanos() as i128)
    {
        return Err(error(Problem::TooOld {
            seconds: t.seconds,
            max_age,
        }));
    }
    Ok(())
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

/// Whether a store can take `flow` ([`Validity::Valid`] or
/// [`Validity::UnknownEnums`]); otherwise the first problem.
pub fn check_storable(flow: &pb::Flow) -> Result<(), FlowError> {
    match validate(flow) {
        Validity::Valid | Validity::UnknownEnums(_) => Ok(()),
        Validity::Invalid(e) => Err(e),
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
        self.enumeration::<pb::ObservationPoint>("observation_point", flow.observation_point);
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
        // Storable: the stores keep the numbers.
        assert!(validate(&f).is_storable());
        assert_eq!(check_storable(&f), Ok(()));
        // A real problem wins over unknown enums.
        let mut f = flow();
        f.verdict = 9;
        f.last_seen = None;
        assert!(matches!(validate(&f), Validity::Invalid(_)));
    }

    #[test]
    fn received_times_are_bounded_around_the_receivers_clock() {
        let now = UnixNanos::from_seconds(1_700_000_000);
        let bounds = TimeBounds {
            max_age: Some(Duration::from_secs(7 * 86_400)),
            max_ahead: Duration::from_secs(3600),
        };
        let at = |seconds: i64| {
            let mut f = flow();
            f.last_seen = Some(Timestamp { seconds, nanos: 0 });
            check_received(&f, now, &bounds).map_err(|e| e.to_string())
        };
        assert_eq!(at(1_700_000_000), Ok(()));
        assert_eq!(at(1_700_000_000 + 3600), Ok(()));
        assert_eq!(at(1_700_000_000 - 7 * 86_400), Ok(()));
        assert_eq!(
            at(1_700_000_000 + 3601),
            Err("flow node-a/1/7: last_seen: 1700003601s is more than 3600s after the receiver's clock".into())
        );
        assert!(
            at(1_700_000_000 - 7 * 86_400 - 1)
                .unwrap_err()
                .contains("before the receiver's clock")
        );
        // 200 years ahead, and the extremes: refused, never an overflow.
        assert!(at(1_700_000_000 + 200 * 365 * 86_400).is_err());
        assert!(at(i64::MAX).is_err());
        assert!(at(i64::MIN).is_err());
        let mut f = flow();
        f.last_seen = None;
        assert_eq!(check_received(&f, now, &bounds), Ok(()));
        let open = TimeBounds::default();
        assert_eq!(
            check_received(&flow(), UnixNanos::from_seconds(i64::MAX), &open),
            Ok(())
        );
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
