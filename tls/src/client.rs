//! The client side: where a client connects and how ([`Target`]), and the
//! connector tonic dials through, doing TLS with rustls.
//!
//! The rules, checked once by [`Target::new`]:
//! - `https://host:port`, or `host:port` with a CA, is TLS: the server's
//!   certificate must chain to the CA file and name the host (or
//!   [`ClientTlsFiles::server_name`]); with a certificate and key the client
//!   authenticates too (mutual TLS);
//! - `http://host:port` or `host:port` without a CA is plaintext, allowed
//!   only to a loopback address (`127.0.0.0/8`, `::1`, `localhost`) unless
//!   the caller says `insecure`;
//! - `https://` without a CA, a CA with `http://`, or a certificate without
//!   its key are errors.
//!
//! The files are read again for every new connection, so a client that
//! reconnects (the collector's exporter) picks up rotated files without a
//! restart; a connection already open keeps its session.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pem::{self, Source};
use crate::policy::is_loopback_host;
use crate::server::{ALPN_H2, provider};

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address cannot be parsed.
    #[error("invalid address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// Plaintext to an address that is not loopback, without `insecure`.
    #[error(
        "{address}: {host} is not a loopback address, so the connection must use TLS: give the CA \
         (--tls-ca, and --tls-cert/--tls-key where the server wants a client certificate), or \
         --insecure for plaintext"
    )]
    PlaintextToRemote {
        /// The address as given.
        address: String,
        /// Its host.
        host: String,
    },
    /// `https://` without a CA to check the server with.
    #[error("{address}: https:// needs the CA that signed the server's certificate (--tls-ca)")]
    HttpsWithoutCa {
        /// The address as given.
        address: String,
    },
    /// A CA with an `http://` address.
    #[error(
        "{address}: a CA (--tls-ca) is given but the address says http://; use https:// or host:port"
    )]
    TlsWithHttp {
        /// The address as given.
        address: String,
    },
    /// A client certificate without its key, or a key without a certificate.
    #[error("a client certificate needs both --tls-cert and --tls-key; {missing} is missing")]
    IncompleteIdentity {
        /// The flag missing.
        missing: &'static str,
    },
    /// The name to check the server's certificate against is not a DNS name
    /// or IP address.
    #[error("TLS server name {name:?} is not a DNS name or IP address")]
    ServerName {
        /// The name.
        name: String,
    },
    /// A file could not be read or decoded.
    #[error(transparent)]
    Pem(#[from] pem::Error),
    /// The files do not make a TLS client configuration.
    #[error("TLS client settings: {0}")]
    Config(String),
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client's TLS files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA bundle the server's certificate must chain to (PEM).
    pub ca: PathBuf,
    /// The client's certificate (PEM), for servers that want one.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// The name the server's certificate must hold, when it is not the
    /// address's host (e.g. connecting by IP to a certificate with DNS names).
    pub server_name: Option<String>,
}

/// Builds the rustls configuration from the files (read now, blocking).
pub fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig> {
    match (&files.cert, &files.key) {
        (Some(_), None) => {
            return Err(Error::IncompleteIdentity {
                missing: "--tls-key",
            });
        }
        (None, Some(_)) => {
            return Err(Error::IncompleteIdentity {
                missing: "--tls-cert",
            });
        }
        _ => {}
    }
    let ca = pem::read_blocking("CA", &files.ca)?;
    let identity = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some((
            (cert, pem::read_blocking("certificate", cert)?),
            (key, pem::read_blocking("private key", key)?),
        )),
        _ => None,
    };
    let roots = pem::roots(
        Source {
            what: "CA",
            path: &files.ca,
        },
        &ca,
    )?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(((cert_path, cert), (key_path, key))) => {
            let chain = pem::certificates(
                Source {
                    what: "certificate",
                    path: cert_path,
                },
                &cert,
            )?;
            let key = pem::private_key(
                Source {
                    what: "private key",
                    path: key_path,
                },
                &key,
            )?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Config(format!(
                    "{} with {}: {e}",
                    cert_path.display(),
                    key_path.display()
                ))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Where a gRPC client connects, and whether with TLS.
#[derive(Clone, Debug)]
pub struct Target {
    address: String,
    host: String,
    port: u16,
    tls: Option<Arc<TlsTarget>>,
    endpoint: Endpoint,
}

#[derive(Debug)]
struct TlsTarget {
    files: ClientTlsFiles,
    server_name: ServerName<'static>,
}

impl Target {
    /// Checks `address` (`host:port`, `http://host:port` or
    /// `https://host:port`; `default_port` when it has none) against the
    /// rules of this module, and the TLS files by loading them once.
    pub fn new(
        address: &str,
        default_port: u16,
        tls: Option<ClientTlsFiles>,
        insecure: bool,
    ) -> Result<Target> {
        let bad = |reason: &str| Error::Address {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = match address.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, address),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad(
                "expected host:port, http://host:port or https://host:port",
            ));
        }
        let uri: Uri = format!("http://{rest}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        match (scheme, &tls) {
            (Some("https"), None) => {
                return Err(Error::HttpsWithoutCa {
                    address: address.to_string(),
                });
            }
            (Some("http"), Some(_)) => {
                return Err(Error::TlsWithHttp {
                    address: address.to_string(),
                });
            }
            (Some("http" | "https") | None, _) => {}
            (Some(other), _) => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}: expected http or https"
                )));
            }
        }
        if tls.is_none() && !insecure && !is_loopback_host(&host) {
            return Err(Error::PlaintextToRemote {
                address: address.to_string(),
                host,
            });
        }
        let tls = match tls {
            Some(files) => {
                // Fail now, naming the file, rather than at each reconnect.
                client_config(&files)?;
                let name = files.server_name.clone().unwrap_or_else(|| host.clone());
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| Error::ServerName { name })?;
                Some(Arc::new(TlsTarget { files, server_name }))
            }
            None => None,
        };
        // tonic sees plain http: the TLS is ours, in the connector.
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Target {
            address: address.to_string(),
            host,
            port,
            tls,
            endpoint,
        })
    }

    /// The address as given.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The tonic endpoint, to tune (timeouts, keepalive) before
    /// [`connect`](Self::connect).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The connector that dials this target (TCP, then TLS if configured).
    pub fn connector(&self) -> Connector {
        Connector {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.clone(),
        }
    }

    /// Connects with `endpoint`'s settings (from [`endpoint`](Self::endpoint)).
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    /// Connects with the endpoint's defaults and a connect timeout.
    pub async fn connect_default(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Channel, tonic::transport::Error> {
        self.connect(self.endpoint().connect_timeout(timeout)).await
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.is_tls() { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}",
            self.endpoint.uri().authority().map_or("", |a| a.as_str())
        )
    }
}

/// Dials a [`Target`] for tonic: TCP (no Nagle), then the TLS handshake
/// with the files as they are now.
#[derive(Clone, Debug)]
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<Arc<TlsTarget>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<ClientIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect((this.host.as_str(), this.port)).await?;
            tcp.set_nodelay(true)?;
            let Some(tls) = &this.tls else {
                return Ok(TokioIo::new(ClientIo::Plain(tcp)));
            };
            let files = tls.files.clone();
            let config = tokio::task::spawn_blocking(move || client_config(&files))
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
            let stream = TlsConnector::from(Arc::new(config))
                .connect(tls.server_name.clone(), tcp)
                .await?;
            Ok(TokioIo::new(ClientIo::Tls(Box::new(stream))))
        })
    }
}

/// A client connection: plaintext or TLS.
pub enum ClientIo {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ClientIo {
    /// The server's certificate chain (TLS only), e.g. to check which
    /// certificate a server presents.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            ClientIo::Plain(_) => None,
            ClientIo::Tls(s) => s.get_ref().1.peer_certificates(),
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(s) => s.is_write_vectored(),
            ClientIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(address: &str, tls: Option<ClientTlsFiles>, insecure: bool) -> String {
        Target::new(address, 4255, tls, insecure)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn plaintext_is_for_loopback_unless_insecure() {
        for ok in [
            "localhost:4255",
            "127.0.0.1:1",
            "http://[::1]:9",
            "127.9.9.9",
        ] {
            let target = Target::new(ok, 4255, None, false).unwrap();
            assert!(!target.is_tls(), "{ok}");
        }
        let e = err("netverdict-api:4255", None, false);
        assert!(
            e.starts_with("netverdict-api:4255: netverdict-api is not a loopback address"),
            "{e}"
        );
        assert!(e.contains("--tls-ca") && e.contains("--insecure"), "{e}");
        let e = err("http://10.0.0.1:4255", None, false);
        assert!(e.contains("10.0.0.1 is not a loopback address"), "{e}");
        let target = Target::new("10.0.0.1:4255", 4255, None, true).unwrap();
        assert_eq!(target.to_string(), "http://10.0.0.1:4255");
    }

    #[test]
    fn schemes_and_cas_must_agree() {
        let e = err("https://netverdict-api:4255", None, false);
        assert!(e.contains("https:// needs the CA"), "{e}");
        let files = ClientTlsFiles {
            ca: "/nonexistent/ca.crt".into(),
            ..Default::default()
        };
        let e = err("http://localhost:4255", Some(files.clone()), false);
        assert!(e.contains("says http://"), "{e}");
        let e = err("localhost:4255", Some(files.clone()), false);
        assert!(e.starts_with("CA /nonexistent/ca.crt:"), "{e}");
        let e = err(
            "localhost:4255",
            Some(ClientTlsFiles {
                cert: Some("c.pem".into()),
                ..files
            }),
            false,
        );
        assert!(e.contains("--tls-key is missing"), "{e}");
        let e = err("ftp://x:1", None, true);
        assert!(e.contains("unknown scheme \"ftp\""), "{e}");
        let e = err("x:1/path", None, true);
        assert!(e.contains("expected host:port"), "{e}");
    }

    #[test]
    fn default_port_applies_without_one() {
        let target = Target::new("localhost", 4255, None, false).unwrap();
        assert_eq!(target.to_string(), "http://localhost:4255");
        let target = Target::new("[::1]:7", 4255, None, false).unwrap();
        assert_eq!(target.to_string(), "http://[::1]:7");
    }
}
