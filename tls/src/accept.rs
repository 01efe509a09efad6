//! Accepting connections without spinning: a failed accept (out of file
//! descriptors: EMFILE, ENFILE, ENOMEM...) leaves the pending connection
//! ready, so retrying at once would spin a core. Every server of the project
//! (gRPC here in [`crate::server`], the collector's `/metrics`) accepts
//! through [`accept_with_backoff`]: failures are counted and logged, and the
//! next try waits a pause that doubles while accepts keep failing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

/// The pause after the first failed accept of a run of failures.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where a server's connections come from: a [`TcpListener`], or in tests
/// one whose accepts fail.
pub trait Accept: Send + 'static {
    /// A connection.
    type Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer's address, or why there is none now.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Conn, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Conn = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Conn, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// The next connection from `listener`. Each failed accept is counted in
/// `errors`, logged as `server`'s, and followed by a pause that doubles from
/// [`BACKOFF_MIN`] to [`BACKOFF_MAX`] until an accept succeeds.
pub async fn accept_with_backoff<L: Accept>(
    listener: &mut L,
    errors: &AtomicU64,
    server: &str,
) -> (L::Conn, SocketAddr) {
    let mut pause = BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, ?pause, "{server}: accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A listener out of file descriptors for its first `failures` accepts,
    /// recording when each was tried; then it connects to `addr`.
    struct OutOfFds {
        failures: usize,
        tried: Vec<Instant>,
        addr: SocketAddr,
    }

    impl Accept for OutOfFds {
        type Conn = tokio::net::TcpStream;

        async fn accept(&mut self) -> std::io::Result<(Self::Conn, SocketAddr)> {
            self.tried.push(Instant::now());
            if self.tried.len() <= self.failures {
                return Err(std::io::Error::from_raw_os_error(24));
            }
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            Ok((stream, self.addr))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_accepts_pause_doubling_up_to_the_longest_pause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut failing = OutOfFds {
            failures: 9,
            tried: Vec::new(),
            addr: listener.local_addr().unwrap(),
        };
        let errors = AtomicU64::new(0);
        let (_conn, addr) = accept_with_backoff(&mut failing, &errors, "test").await;
        assert_eq!(addr, failing.addr);
        assert_eq!(errors.load(Ordering::Relaxed), 9);
        let pauses: Vec<u128> = failing
            .tried
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // Virtual time: the pauses are exactly the backoff's.
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
