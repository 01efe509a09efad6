//! The gate of the privileged tests: those that need root (eBPF probes,
//! network namespaces, nftables). They live in a `privileged` module of their
//! crate's test binary (`cargo test -- privileged::` runs only them) and each
//! starts with
//!
//! ```text
//! if !require_root() {
//!     return;
//! }
//! ```
//!
//! As root the test runs (and fails, never skips, when a tool or a kernel
//! feature is missing). Without root it returns at once, and the first such
//! test of the process prints one line saying that the privileged tests are
//! skipped and how to run them: `cargo test` as a user is green and says so,
//! `sudo scripts/test.sh` runs everything.

use std::io::Write;
use std::sync::Once;

/// Whether the test may run: true as root; false (after one line on stderr
/// per test process) otherwise.
#[must_use = "a privileged test returns when this is false"]
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let binary = std::env::args().next().unwrap_or_default();
        // Straight to the process's stderr: the test harness captures what
        // `eprintln!` writes from a test that passes.
        let _ = writeln!(
            std::io::stderr(),
            "netverdict-testing: not root: the privileged tests (eBPF, network namespaces, \
             nftables; `privileged::` in the test names) of {binary} are skipped; \
             run `sudo scripts/test.sh` to run every test"
        );
    });
    false
}
