//! Clock helpers: the probes stamp events with CLOCK_MONOTONIC
//! (`bpf_ktime_get_ns`); user space converts them to wall time.

/// Reads a clock in ns.
fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, ns (the probes' time base).
pub fn monotonic_ns() -> u64 {
    u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns: add to a probe stamp for wall time.
pub fn wall_minus_monotonic_ns() -> i128 {
    let m1 = now_ns(libc::CLOCK_MONOTONIC);
    let r = now_ns(libc::CLOCK_REALTIME);
    let m2 = now_ns(libc::CLOCK_MONOTONIC);
    r - (m1 + (m2 - m1) / 2)
}
