//! The server side: a rustls configuration from files that follows the files
//! as they change, and the accept loop that turns a TCP listener into
//! authenticated connections for tonic.
//!
//! How it works:
//!
//! ```text
//! files (cert, key, client CA) ──poll every reload interval, compare bytes──> ServerTls
//!                                  (new content parsed and checked; on success the
//!                                   current Arc<ServerConfig> is swapped)
//! TcpListener ─accept─> handshake task per connection (timeout) ─> Connection{io, Peer} ─> tonic
//!                         └─ uses the config current at accept time
//! ```
//!
//! Rotation never touches an established connection: each connection keeps
//! the rustls state of its handshake, so streams opened before a rotation go
//! on, and connections accepted after it use the new certificate and client
//! CA. A half-written rotation (a new certificate with the old key, a file
//! mid-write) fails the check; the old configuration stays and the files are
//! read again at the next poll. Polling content rather than watching inotify
//! events works the same with plain files, cert-manager's Secret volumes
//! (updated through a symlink swap) and editors that replace files.
//!
//! A failed handshake (plaintext to a TLS port, no client certificate, a
//! certificate from another CA or out of its validity) ends that connection
//! only; it is counted ([`TlsStats`]) and logged at debug.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;

use crate::accept::accept_with_backoff;
use crate::identity::{Authentication, Identity, Peer};
use crate::pem::{self, Source};

/// How often the files are checked for new content by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection (after its TLS handshake, if any) has to send the
/// HTTP/2 connection preface; a client that connects and stalls is then
/// disconnected (counted) rather than holding a connection for ever. After
/// the preface, HTTP/2 keepalive pings find dead peers.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 client connection preface's length (RFC 9113, 3.4).
const PREFACE_LEN: usize = 24;

/// What a server's accept loop counts.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Accepts that failed (out of file descriptors...).
    pub accept_errors: AtomicU64,
    /// Connections closed for not sending the HTTP/2 preface within
    /// [`PREFACE_TIMEOUT`].
    pub preface_timeouts: AtomicU64,
}

/// Errors of the server side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or decoded.
    #[error(transparent)]
    Pem(#[from] pem::Error),
    /// The certificate, key and client CA do not make a TLS configuration
    /// (e.g. the key is not the certificate's).
    #[error("TLS settings ({cert}, {key}): {reason}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls objected to.
        reason: String,
    },
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a server's certificate, key and (optionally) client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The certificate chain (PEM, the server's certificate first).
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// The CA bundle client certificates must chain to (PEM). With it,
    /// clients must present a certificate; without it, none is asked for.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }
}

/// Counters of a TLS server, shared by its clones.
#[derive(Debug, Default)]
pub struct TlsStats {
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// A snapshot of [`TlsStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStatsSnapshot {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes failed or timed out (each ended its connection).
    pub handshake_failures: u64,
    /// Times new file content was loaded.
    pub reloads: u64,
    /// Times changed files could not be loaded (the previous settings stayed).
    pub reload_failures: u64,
}

impl TlsStats {
    /// The counters now.
    pub fn snapshot(&self) -> TlsStatsSnapshot {
        TlsStatsSnapshot {
            handshakes: self.handshakes.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.reload_failures.load(Ordering::Relaxed),
        }
    }
}

/// The bytes of the files, to tell when they change.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

struct Inner {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    seen: Mutex<Contents>,
    stats: Arc<TlsStats>,
    generation: watch::Sender<u64>,
}

/// A server's TLS configuration, kept equal to its files. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

/// The rustls crypto provider netverdict uses everywhere (ring).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol of gRPC.
pub(crate) const ALPN_H2: &[u8] = b"h2";

fn build(files: &ServerTlsFiles, contents: &Contents) -> Result<ServerConfig> {
    let chain = pem::certificates(
        Source {
            what: "certificate",
            path: &files.cert,
        },
        &contents.cert,
    )?;
    let key = pem::private_key(
        Source {
            what: "private key",
            path: &files.key,
        },
        &contents.key,
    )?;
    let config_error = |reason: String| Error::Config {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(ca)) => {
            let roots = pem::roots(
                Source {
                    what: "client CA",
                    path,
                },
                ca,
            )?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| config_error(format!("client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

async fn read_contents(files: &ServerTlsFiles) -> Result<Contents> {
    Ok(Contents {
        cert: pem::read("certificate", &files.cert).await?,
        key: pem::read("private key", &files.key).await?,
        client_ca: match &files.client_ca {
            Some(path) => Some(pem::read("client CA", path).await?),
            None => None,
        },
    })
}

impl ServerTls {
    /// Loads the files and, with `reload_interval`, checks them for new
    /// content at that interval for as long as a clone of the result lives.
    /// Must be called inside a tokio runtime.
    pub async fn load(files: ServerTlsFiles, reload_interval: Option<Duration>) -> Result<Self> {
        let contents = read_contents(&files).await?;
        let config = build(&files, &contents)?;
        let (generation, _) = watch::channel(0);
        let tls = ServerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(config)),
                seen: Mutex::new(contents),
                stats: Arc::default(),
                generation,
            }),
        };
        if let Some(interval) = reload_interval {
            tokio::spawn(poll(Arc::downgrade(&tls.inner), interval));
        }
        Ok(tls)
    }

    /// The files.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.inner.files.mutual()
    }

    /// The configuration new connections get now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<TlsStats> {
        self.inner.stats.clone()
    }

    /// How many times new content was loaded; changes on each reload (wait on
    /// it rather than sleeping).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Reads the files; when their content changed, builds and switches to
    /// the new configuration. Ok(true) when it switched; Err (and the old
    /// configuration kept) when the new content is unusable.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        reload(&self.inner).await
    }
}

async fn reload(inner: &Inner) -> Result<bool> {
    let mut seen = inner.seen.lock().await;
    let contents = read_contents(&inner.files).await?;
    if contents == *seen {
        return Ok(false);
    }
    let config = build(&inner.files, &contents)?;
    *inner.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    *seen = contents;
    inner.stats.reloads.fetch_add(1, Ordering::Relaxed);
    inner.generation.send_modify(|g| *g += 1);
    tracing::info!(
        cert = %inner.files.cert.display(),
        "TLS certificate files changed: new connections use the new ones"
    );
    Ok(true)
}

/// Checks the files every `interval` until the configuration is dropped. An
/// unusable change is logged once per distinct error and tried again.
async fn poll(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_error = None::<String>;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match reload(&inner).await {
            Ok(_) => last_error = None,
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    inner.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %message, "TLS files changed but cannot be used yet; keeping the previous ones");
                    last_error = Some(message);
                }
            }
        }
    }
}

/// One accepted connection: plaintext or TLS, with who is on the other end.
pub struct Connection {
    io: Io,
    peer: Peer,
    /// Until the preface is read: its deadline.
    preface: Option<PrefaceDeadline>,
}

/// The deadline of a connection's HTTP/2 preface, and how much of it is
/// still to come.
struct PrefaceDeadline {
    deadline: Pin<Box<tokio::time::Sleep>>,
    missing: usize,
    counters: Arc<ConnectionCounters>,
}

impl PrefaceDeadline {
    fn new(counters: Arc<ConnectionCounters>) -> Self {
        PrefaceDeadline {
            deadline: Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)),
            missing: PREFACE_LEN,
            counters,
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connection {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let Some(preface) = &mut this.preface else {
            return read;
        };
        match &read {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                preface.missing = preface.missing.saturating_sub(n);
                // Read whole, or the end of the stream: no deadline left.
                if preface.missing == 0 || n == 0 {
                    this.preface = None;
                }
            }
            Poll::Ready(Err(_)) => this.preface = None,
            Poll::Pending => {
                if preface.deadline.as_mut().poll(cx).is_ready() {
                    preface
                        .counters
                        .preface_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    this.preface = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{}: no HTTP/2 preface within {PREFACE_TIMEOUT:?}",
                            this.peer.addr
                        ),
                    )));
                }
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of a listener, for tonic's `serve_with_incoming*`. The
/// accept loop runs in its own task and ends when this stream is dropped.
pub struct Incoming {
    rx: mpsc::Receiver<Connection>,
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Accepts connections on `listener`: plaintext without `tls`, else TLS
/// handshakes (each in its own task, within [`HANDSHAKE_TIMEOUT`]) with the
/// configuration current at accept time. Must be called inside a tokio
/// runtime.
pub fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> Incoming {
    incoming_counted(listener, tls, Arc::default())
}

/// [`incoming`], counting failed accepts (out of file descriptors and the
/// like; they back off rather than spin, see [`accept_with_backoff`]) and
/// connections closed for not sending the HTTP/2 preface in time.
pub fn incoming_counted(
    listener: TcpListener,
    tls: Option<ServerTls>,
    counters: Arc<ConnectionCounters>,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, tx, counters));
    Incoming { rx }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    tx: mpsc::Sender<Connection>,
    counters: Arc<ConnectionCounters>,
) {
    let mut listener = listener;
    let server = match listener.local_addr() {
        Ok(addr) => format!("gRPC server on {addr}"),
        Err(_) => "gRPC server".to_string(),
    };
    loop {
        let (stream, addr) = tokio::select! {
            accepted = accept_with_backoff(&mut listener, &counters.accept_errors, &server) => accepted,
            () = tx.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &tls else {
            let connection = Connection {
                io: Io::Plain(stream),
                peer: Peer {
                    addr,
                    authentication: Authentication::Plaintext,
                },
                preface: Some(PrefaceDeadline::new(counters.clone())),
            };
            if tx.send(connection).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let stats = tls.stats();
        let tx = tx.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let handshake = handshake(acceptor, stream, addr, counters);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(connection)) => {
                    stats.handshakes.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(connection).await;
                }
                Ok(Err(e)) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                }
            }
        });
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    counters: Arc<ConnectionCounters>,
) -> io::Result<Connection> {
    let tls = acceptor.accept(stream).await?;
    let authentication = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => {
            let identity = Identity::from_der(leaf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Authentication::Certificate(Arc::new(identity))
        }
        None => Authentication::ServerTls,
    };
    Ok(Connection {
        io: Io::Tls(Box::new(tls)),
        peer: Peer {
            addr,
            authentication,
        },
        preface: Some(PrefaceDeadline::new(counters)),
    })
}

/// The certificate files' identity, for a daemon that checks at start that
/// its certificate names what it expects (a collector's node name).
pub fn identity_of_file(path: &Path) -> Result<Identity> {
    let pem_bytes = pem::read_blocking("certificate", path)?;
    let source = Source {
        what: "certificate",
        path,
    };
    let chain = pem::certificates(source, &pem_bytes)?;
    Identity::from_der(&chain[0]).map_err(|e| {
        Error::Pem(pem::Error::Invalid {
            what: "certificate",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    const PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A plaintext server's next connection, from a client that connected.
    async fn accepted(incoming: &mut Incoming, addr: SocketAddr) -> (Connection, TcpStream) {
        let client = TcpStream::connect(addr).await.unwrap();
        let connection = incoming.next().await.unwrap().unwrap();
        (connection, client)
    }

    /// Virtual time: the 10 s deadline passes as soon as nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_preface_is_disconnected_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(ConnectionCounters::default());
        let mut incoming = incoming_counted(listener, None, counters.clone());

        // Silent: the read fails once the deadline passes.
        let (mut silent, _client) = accepted(&mut incoming, addr).await;
        let mut buf = [0u8; 64];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(counters.preface_timeouts.load(Ordering::Relaxed), 1);

        // Half a preface is not enough either.
        let (mut slow, mut client) = accepted(&mut incoming, addr).await;
        client.write_all(&PREFACE[..10]).await.unwrap();
        assert_eq!(slow.read(&mut buf).await.unwrap(), 10);
        let err = slow.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(counters.preface_timeouts.load(Ordering::Relaxed), 2);

        // A whole preface: then the connection may stay idle.
        let (mut good, mut client) = accepted(&mut incoming, addr).await;
        client.write_all(PREFACE).await.unwrap();
        let mut preface = [0u8; PREFACE_LEN];
        good.read_exact(&mut preface).await.unwrap();
        let idle = tokio::time::timeout(10 * PREFACE_TIMEOUT, good.read(&mut buf)).await;
        assert!(
            idle.is_err(),
            "an idle connection after its preface: {idle:?}"
        );
        assert_eq!(counters.preface_timeouts.load(Ordering::Relaxed), 2);
    }
}
