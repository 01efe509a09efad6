//! Time, defined once: moments ([`UnixNanos`]), the conversions between
//! protobuf `Timestamp`s, `SystemTime` and nanoseconds, and the query window
//! ([`TimeWindow`]) that every server and store applies to a flow's
//! `last_seen`.
//!
//! A moment is an `i128` of nanoseconds since the Unix epoch. It holds every
//! protobuf `Timestamp` (any `i64` seconds) and every `SystemTime` exactly, so
//! converting into it never fails, rounds or overflows, and comparing two
//! moments is exact. Converting out of it saturates (to a `Timestamp` or an
//! `i64` of nanoseconds) or says it cannot (`SystemTime`); nothing here panics,
//! whatever the input.
//!
//! The window is half-open, `[since, until)`, on `last_seen`; a flow without
//! `last_seen` is outside any window with a bound. The API server's stores
//! (memory buckets, ClickHouse SQL), its follow streams and the collector's
//! ring all use [`TimeWindow`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

use crate::v1 as pb;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Why a request's time does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// A timestamp's `nanos` is outside `0..1_000_000_000`.
    #[error("{field}: invalid timestamp {seconds}s {nanos}ns: nanos must be 0 to 999999999")]
    InvalidTimestamp {
        /// The request field ("since", "until").
        field: &'static str,
        /// The timestamp's seconds.
        seconds: i64,
        /// The offending nanos.
        nanos: i32,
    },
}

/// A moment: nanoseconds since the Unix epoch, negative before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixNanos(i128);

impl UnixNanos {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixNanos = UnixNanos(0);

    /// The moment a timestamp stands for, `seconds * 10⁹ + nanos`, exactly,
    /// even when `nanos` is outside its range (it then carries into seconds).
    pub fn from_timestamp(t: &Timestamp) -> Self {
        UnixNanos(i128::from(t.seconds) * NANOS_PER_SECOND + i128::from(t.nanos))
    }

    /// As [`from_timestamp`](Self::from_timestamp), for a timestamp a request
    /// sent: its `nanos` must be in range. The error names `field`.
    pub fn from_request(field: &'static str, t: &Timestamp) -> Result<Self, TimeError> {
        if is_normalized(t) {
            Ok(UnixNanos::from_timestamp(t))
        } else {
            Err(TimeError::InvalidTimestamp {
                field,
                seconds: t.seconds,
                nanos: t.nanos,
            })
        }
    }

    /// The moment a `SystemTime` stands for, exactly.
    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UnixNanos(duration_nanos(d)),
            Err(e) => UnixNanos(-duration_nanos(e.duration())),
        }
    }

    /// The system clock's time now.
    pub fn now() -> Self {
        UnixNanos::from_system(SystemTime::now())
    }

    /// The moment `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: i64) -> Self {
        UnixNanos(i128::from(nanos))
    }

    /// The moment `seconds` after the epoch.
    pub fn from_seconds(seconds: i64) -> Self {
        UnixNanos(i128::from(seconds) * NANOS_PER_SECOND)
    }

    /// Nanoseconds since the epoch.
    pub fn as_i128(self) -> i128 {
        self.0
    }

    /// Nanoseconds since the epoch, saturated to `i64` (exact from 1677 to
    /// 2262, which holds every time a store keeps).
    pub fn nanos_saturating(self) -> i64 {
        i64::try_from(self.0).unwrap_or(if self.0 < 0 { i64::MIN } else { i64::MAX })
    }

    /// The whole second it falls in (rounded down), saturated to `i64`.
    pub fn floor_seconds(self) -> i64 {
        let s = self.0.div_euclid(NANOS_PER_SECOND);
        i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })
    }

    /// As a normalized protobuf timestamp, saturated to the first or last
    /// moment a `Timestamp` holds.
    pub fn to_timestamp(self) -> Timestamp {
        let seconds = self.0.div_euclid(NANOS_PER_SECOND);
        let nanos = self.0.rem_euclid(NANOS_PER_SECOND);
        match i64::try_from(seconds) {
            Ok(seconds) => Timestamp {
                seconds,
                // rem_euclid of 10⁹ is below 10⁹: it fits.
                nanos: i32::try_from(nanos).unwrap_or(0),
            },
            Err(_) if seconds < 0 => Timestamp {
                seconds: i64::MIN,
                nanos: 0,
            },
            Err(_) => Timestamp {
                seconds: i64::MAX,
                nanos: 999_999_999,
            },
        }
    }

    /// As a `SystemTime`; None when the platform's clock cannot hold it.
    pub fn to_system(self) -> Option<SystemTime> {
        let magnitude = Duration::new(
            u64::try_from(self.0.unsigned_abs() / NANOS_PER_SECOND.unsigned_abs()).ok()?,
            // The remainder of a division by 10⁹ fits a u32.
            u32::try_from(self.0.unsigned_abs() % NANOS_PER_SECOND.unsigned_abs()).ok()?,
        );
        if self.0 >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// One nanosecond earlier (saturating).
    fn pred(self) -> Self {
        UnixNanos(self.0.saturating_sub(1))
    }
}

fn duration_nanos(d: Duration) -> i128 {
    // A Duration's nanoseconds are below 2⁶⁴·10⁹ < 2¹²⁷: they fit.
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

/// Whether a timestamp's `nanos` is in `0..1_000_000_000`, as protobuf requires.
pub fn is_normalized(t: &Timestamp) -> bool {
    (0..1_000_000_000).contains(&t.nanos)
}

/// A `SystemTime` as a protobuf timestamp (saturating, never panicking).
pub fn timestamp(t: SystemTime) -> Timestamp {
    UnixNanos::from_system(t).to_timestamp()
}

/// A protobuf timestamp as a `SystemTime`; None when the platform's clock
/// cannot hold it.
pub fn system_time(t: &Timestamp) -> Option<SystemTime> {
    UnixNanos::from_timestamp(t).to_system()
}

/// The whole seconds a window's moments fall in, both ends inclusive; an end
/// is None when the window is unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondRange {
    /// The second of `since`.
    pub first: Option<i64>,
    /// The second of the last nanosecond before `until`.
    pub last: Option<i64>,
}

/// Flows last seen at or after `since` and before `until`: `[since, until)`.
/// A missing bound is unbounded; a flow without `last_seen` is outside any
/// window with a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeWindow {
    since: Option<UnixNanos>,
    until: Option<UnixNanos>,
}

impl TimeWindow {
    /// Every moment.
    pub const ALL: TimeWindow = TimeWindow {
        since: None,
        until: None,
    };

    /// `[since, until)`.
    pub fn new(since: Option<UnixNanos>, until: Option<UnixNanos>) -> Self {
        TimeWindow { since, until }
    }

    /// The window of a request's `since` and `until`; an invalid timestamp is
    /// an error naming its field.
    pub fn from_request(
        since: Option<&Timestamp>,
        until: Option<&Timestamp>,
    ) -> Result<Self, TimeError> {
        Ok(TimeWindow {
            since: since
                .map(|t| UnixNanos::from_request("since", t))
                .transpose()?,
            until: until
                .map(|t| UnixNanos::from_request("until", t))
                .transpose()?,
        })
    }

    /// The window `[since, until)` of two `SystemTime`s.
    pub fn from_system(since: Option<SystemTime>, until: Option<SystemTime>) -> Self {
        TimeWindow {
            since: since.map(UnixNanos::from_system),
            until: until.map(UnixNanos::from_system),
        }
    }

    /// The first moment in the window, if bounded.
    pub fn since(&self) -> Option<UnixNanos> {
        self.since
    }

    /// The first moment after the window, if bounded.
    pub fn until(&self) -> Option<UnixNanos> {
        self.until
    }

    /// Whether no moment can be in the window (`since >= until`).
    pub fn is_empty(&self) -> bool {
        matches!((self.since, self.until), (Some(s), Some(u)) if s >= u)
    }

    /// Whether `t` is in `[since, until)`.
    pub fn contains(&self, t: UnixNanos) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Whether a `last_seen` is in the window; a missing one is only in an
    /// unbounded window.
    pub fn contains_last_seen(&self, last_seen: Option<&Timestamp>) -> bool {
        match last_seen {
            Some(t) => self.contains(UnixNanos::from_timestamp(t)),
            None => self.since.is_none() && self.until.is_none(),
        }
    }

    /// Whether `flow`'s `last_seen` is in the window.
    pub fn contains_flow(&self, flow: &pb::Flow) -> bool {
        self.contains_last_seen(flow.last_seen.as_ref())
    }

    /// The whole seconds the window's moments fall in (what a store indexed
    /// by second, bucket or `DateTime` scans); None when the window is empty.
    pub fn seconds(&self) -> Option<SecondRange> {
        if self.is_empty() {
            return None;
        }
        Some(SecondRange {
            first: self.since.map(UnixNanos::floor_seconds),
            last: self.until.map(|u| u.pred().floor_seconds()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn round_trips() {
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH,
        ] {
            let stamp = timestamp(t);
            assert!(is_normalized(&stamp), "{stamp:?}");
            assert_eq!(system_time(&stamp), Some(t));
            assert_eq!(UnixNanos::from_timestamp(&stamp), UnixNanos::from_system(t));
        }
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::new(5, 250_000_000)),
            ts(-6, 750_000_000)
        );
    }

    #[test]
    fn extreme_values_saturate_and_never_panic() {
        let extremes = [
            ts(i64::MIN, 0),
            ts(i64::MIN, -1),
            ts(i64::MIN, i32::MIN),
            ts(i64::MAX, 999_999_999),
            ts(i64::MAX, i32::MAX),
            ts(0, i32::MIN),
        ];
        for t in extremes {
            let n = UnixNanos::from_timestamp(&t);
            let back = n.to_timestamp();
            assert!(is_normalized(&back), "{t:?} -> {back:?}");
            let _ = n.to_system();
            let _ = n.nanos_saturating();
            let _ = n.floor_seconds();
            let w = TimeWindow::new(Some(n), Some(n));
            assert!(w.is_empty());
            assert_eq!(w.seconds(), None);
            let w = TimeWindow::new(Some(n), None);
            let _ = w.seconds();
            let w = TimeWindow::new(None, Some(n));
            let _ = w.seconds();
        }
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MAX, i32::MAX)).to_timestamp(),
            ts(i64::MAX, 999_999_999),
            "saturates above"
        );
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MIN, -1)).to_timestamp(),
            ts(i64::MIN, 0),
            "saturates below"
        );
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MAX, 0)).nanos_saturating(),
            i64::MAX
        );
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MIN, 0)).nanos_saturating(),
            i64::MIN
        );
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MIN, 0)).floor_seconds(),
            i64::MIN
        );
        assert_eq!(
            UnixNanos::from_timestamp(&ts(i64::MIN, -1)).floor_seconds(),
            i64::MIN
        );
    }

    #[test]
    fn unnormalized_nanos_carry() {
        assert_eq!(
            UnixNanos::from_timestamp(&ts(1, -1)),
            UnixNanos::from_timestamp(&ts(0, 999_999_999))
        );
        assert!(UnixNanos::from_request("since", &ts(1, -1)).is_err());
        let e = TimeWindow::from_request(None, Some(&ts(3, 1_000_000_000))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "until: invalid timestamp 3s 1000000000ns: nanos must be 0 to 999999999"
        );
    }

    #[test]
    fn window_is_half_open_on_last_seen() {
        let t = ts(10, 0);
        let at = |s, n| Some(UnixNanos::from_timestamp(&ts(s, n)));
        assert!(TimeWindow::new(at(10, 0), at(10, 1)).contains_last_seen(Some(&t)));
        assert!(!TimeWindow::new(at(10, 1), None).contains_last_seen(Some(&t)));
        assert!(!TimeWindow::new(None, at(10, 0)).contains_last_seen(Some(&t)));
        assert!(!TimeWindow::new(at(0, 0), None).contains_last_seen(None));
        assert!(!TimeWindow::new(None, at(0, 0)).contains_last_seen(None));
        assert!(TimeWindow::ALL.contains_last_seen(None));
        let flow = pb::Flow {
            first_seen: Some(ts(10, 0)),
            last_seen: Some(ts(20, 0)),
            ..Default::default()
        };
        assert!(
            !TimeWindow::new(at(0, 0), at(11, 0)).contains_flow(&flow),
            "first seen in the window, last seen after it"
        );
    }

    #[test]
    fn seconds_cover_exactly_the_window() {
        let at = |s, n| Some(UnixNanos::from_timestamp(&ts(s, n)));
        let w = TimeWindow::new(at(10, 500), at(20, 0));
        assert_eq!(
            w.seconds(),
            Some(SecondRange {
                first: Some(10),
                last: Some(19)
            })
        );
        let w = TimeWindow::new(at(-1, 999_999_999), at(20, 1));
        assert_eq!(
            w.seconds(),
            Some(SecondRange {
                first: Some(-1),
                last: Some(20)
            })
        );
        assert_eq!(TimeWindow::new(at(20, 0), at(20, 0)).seconds(), None);
        assert_eq!(
            TimeWindow::ALL.seconds(),
            Some(SecondRange {
                first: None,
                last: None
            })
        );
    }
}
