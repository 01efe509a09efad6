//! Who is on the other end of a connection, Kubernetes-style: the client
//! certificate's subject Common Name (CN) is the identity's name and its
//! Organization (O) values are its groups, as the Kubernetes API server reads
//! client certificates.
//!
//! Every connection a netverdict server accepts carries a [`Peer`] (the
//! remote address and how it authenticated), which tonic puts in each
//! request's extensions; [`Peer::of`] reads it back.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Errors reading an identity from a certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate is not valid DER X.509.
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    /// The subject has no Common Name, so there is no identity.
    #[error("the client certificate's subject has no Common Name (CN): it names no identity")]
    NoCommonName,
    /// A CN or O value is not text.
    #[error("the client certificate's subject {field} is not a text value")]
    NotText {
        /// "CN" or "O".
        field: &'static str,
    },
}

/// An authenticated identity: the certificate's CN and O values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The subject's Common Name (for a collector: its node name).
    pub name: String,
    /// The subject's Organization values, in order.
    pub groups: Vec<String>,
}

impl Identity {
    /// Reads the identity of a DER certificate (the first CN; every O).
    pub fn from_der(der: &[u8]) -> Result<Identity, Error> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .ok_or(Error::NoCommonName)?
            .as_str()
            .map_err(|_| Error::NotText { field: "CN" })?
            .to_string();
        if name.is_empty() {
            return Err(Error::NoCommonName);
        }
        let groups = subject
            .iter_organization()
            .map(|o| {
                o.as_str()
                    .map(str::to_string)
                    .map_err(|_| Error::NotText { field: "O" })
            })
            .collect::<Result<_, _>>()?;
        Ok(Identity { name, groups })
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl fmt::Display for Identity {
    /// `CN=node-a (groups: netverdict:collectors)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={:?}", self.name)?;
        if self.groups.is_empty() {
            write!(f, " (no groups)")
        } else {
            write!(f, " (groups: {})", self.groups.join(", "))
        }
    }
}

/// How a connection's client authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// No TLS (only on a loopback address, or with `--insecure`).
    Plaintext,
    /// TLS without a client certificate (the server has no client CA).
    ServerTls,
    /// TLS with a client certificate the server's client CA verified.
    Certificate(Arc<Identity>),
}

/// The client of one connection: its address and how it authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// How it authenticated.
    pub authentication: Authentication,
}

impl Peer {
    /// The peer of the connection a request came on (None when the service
    /// is not served through [`crate::server::incoming`]).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Peer> {
        request.extensions().get::<Peer>()
    }

    /// The verified identity, if the client presented a certificate.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.authentication {
            Authentication::Certificate(identity) => Some(identity),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.authentication {
            Authentication::Plaintext => write!(f, "{} (plaintext)", self.addr),
            Authentication::ServerTls => write!(f, "{} (TLS, no client certificate)", self.addr),
            Authentication::Certificate(id) => write!(f, "{} {id}", self.addr),
        }
    }
}
