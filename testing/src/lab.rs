//! The test lab: a lab name of the test's own (`t<pid>-<n>-<tag>`, so tests
//! run in parallel and two test processes never share one) and the guard that
//! brings the lab down when the test ends, even when it panics. The test
//! brings the lab up itself (`Lab::up(files, &test_lab.options(server))`, or
//! a `netverdict lab`/`demo` process given [`TestLab::name`]); the guard
//! removes whatever exists of it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use netverdict_lab::lab::STATE_ROOT;
use netverdict_lab::{DownOnDrop, LabOptions};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A lab name and the guard that brings the lab down when dropped. Keep it
/// alive for as long as the lab is used (declare it before the `Lab`).
pub struct TestLab {
    guard: DownOnDrop,
}

impl TestLab {
    /// A lab name for the test tagged `tag` (lowercase letters, digits and
    /// `-`). Fails (never skips) naming what to install when the lab cannot
    /// run here: it needs root, iproute2, nftables and dnsmasq-base. Call
    /// [`crate::require_root`] first.
    pub fn new(tag: &str) -> TestLab {
        if let Err(e) = netverdict_lab::preflight(true) {
            panic!(
                "the lab needs root and iproute2, nftables, dnsmasq-base \
                 (scripts/install-deps.sh): {e}"
            );
        }
        let name = format!(
            "t{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        TestLab {
            guard: DownOnDrop {
                name,
                state_root: PathBuf::from(STATE_ROOT),
            },
        }
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.guard.name
    }

    /// Options for `Lab::up` under this name (DNS on, everything enforced),
    /// whose pods' servers run `server` (program and leading arguments, e.g.
    /// the test's `nv-lab serve` or `netverdict lab serve`).
    pub fn options<S: Into<OsString> + Clone>(&self, server: &[S]) -> LabOptions {
        LabOptions::new(
            self.name(),
            server.iter().cloned().map(Into::into).collect(),
        )
    }
}
