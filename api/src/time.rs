//! Conversions between protobuf timestamps and `SystemTime`, and the ordering
//! key both stores use for `last_seen` windows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// A timestamp as a totally ordered `(seconds, nanos)` pair.
pub fn key(t: &Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

/// The ordering key of a `SystemTime` (before the epoch counts as negative).
pub fn system_key(t: SystemTime) -> (i64, i32) {
    key(&to_timestamp(t))
}

/// A `SystemTime` as a protobuf timestamp.
pub fn to_timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        },
        Err(e) => {
            let d = e.duration();
            let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nanos = -(d.subsec_nanos() as i32);
            if nanos < 0 {
                seconds -= 1;
                nanos += 1_000_000_000;
            }
            Timestamp { seconds, nanos }
        }
    }
}

/// A protobuf timestamp as a `SystemTime`; None when out of range or invalid.
pub fn to_system(t: &Timestamp) -> Option<SystemTime> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.seconds as u64, t.nanos as u32))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))?
            .checked_add(Duration::from_nanos(t.nanos as u64))
    }
}

/// Whether `last_seen` lies in `[since, until)`; a flow without `last_seen` is
/// outside any set bound.
pub fn in_window(
    last_seen: Option<&Timestamp>,
    since: Option<(i64, i32)>,
    until: Option<(i64, i32)>,
) -> bool {
    if since.is_none() && until.is_none() {
        return true;
    }
    let Some(last) = last_seen.map(key) else {
        return false;
    };
    since.is_none_or(|s| last >= s) && until.is_none_or(|u| last < u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH,
        ] {
            let ts = to_timestamp(t);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ts:?}");
            assert_eq!(to_system(&ts), Some(t));
        }
        assert_eq!(
            to_system(&Timestamp {
                seconds: 1,
                nanos: -1
            }),
            None
        );
    }

    #[test]
    fn window_is_half_open() {
        let t = Timestamp {
            seconds: 10,
            nanos: 0,
        };
        assert!(in_window(Some(&t), Some((10, 0)), Some((10, 1))));
        assert!(!in_window(Some(&t), Some((10, 1)), None));
        assert!(!in_window(Some(&t), None, Some((10, 0))));
        assert!(!in_window(None, Some((0, 0)), None));
        assert!(in_window(None, None, None));
    }
}
