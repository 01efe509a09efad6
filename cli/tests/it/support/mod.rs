//! Running the `netverdict` binary from the CLI's tests.

#![allow(
    dead_code,
    clippy::allow_attributes,
    reason = "each test binary uses a different part of this module"
)]

use std::process::{Command, Output, Stdio};

/// Runs `netverdict` with `args`, no stdin, and waits for it.
pub fn netverdict(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("netverdict runs")
}

/// [`netverdict`] off the async runtime's threads.
pub async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netverdict(&args)
    })
    .await
    .unwrap()
}

/// The standard output of a run that must have succeeded (else its status
/// and stderr fail the test).
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
