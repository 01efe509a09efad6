//! Waiting on a condition with a deadline: tests never sleep and hope. The
//! condition is checked every 10 ms; past the deadline the test fails naming
//! what it waited for.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `condition` holds, or panics after `timeout` naming `what`.
/// The condition is an async closure (`async || store.len().await == 3`), so
/// it may query a server.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code off the async runtime (blocks the thread).
pub fn wait_until_blocking(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until("three calls", Duration::from_secs(5), async || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn fails_naming_what_it_waited_for() {
        wait_until("the impossible", Duration::from_millis(30), async || false).await;
    }

    #[test]
    #[should_panic(expected = "timed out after 30ms waiting for nothing")]
    fn blocking_fails_after_the_timeout() {
        wait_until_blocking("nothing", Duration::from_millis(30), || false);
    }
}
