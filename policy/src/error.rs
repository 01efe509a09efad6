//! Errors of the policy crate. Every error about input names where it came from:
//! the file (and document), the object (`Kind namespace/name`) and the field.

use std::fmt;
use std::path::PathBuf;

/// A problem with one field of an object: its path in the object and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path in its object, e.g. `spec.ingress[0].ports[1].port`.
    pub field: String,
    /// What is wrong with it, in words a person can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An object was rejected: which object, and the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {error}")]
pub struct ObjectError {
    /// `Kind namespace/name` (or `Kind name` for cluster-scoped kinds).
    pub object: String,
    /// The field at fault.
    pub error: FieldError,
}

/// Where a manifest document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file, or `-` for standard input.
    pub path: PathBuf,
    /// The document's index in a multi-document file, from 1.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.path.display(), self.document)
    }
}

/// One error found while loading manifests.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or JSON.
    #[error("{origin}: not valid YAML/JSON: {message}")]
    Syntax { origin: Origin, message: String },
    /// A document is not a Kubernetes object of a known shape.
    #[error("{origin}: {object}: {field}: {message}")]
    Shape {
        origin: Origin,
        /// `Kind namespace/name`, as far as it could be read.
        object: String,
        field: String,
        message: String,
    },
    /// An object is well-formed but invalid.
    #[error("{origin}: {error}")]
    Invalid {
        origin: Origin,
        #[source]
        error: ObjectError,
    },
}

/// All the errors found while loading manifests (loading goes on past a bad object
/// so that every problem is reported at once).
#[derive(Debug, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in the cluster manifests", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A connection that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The connection names a pod the cluster state does not hold.
    #[error("unknown pod {0}")]
    UnknownPod(String),
    /// The pod exists but has no IP address of the needed family.
    #[error("pod {0} has no IP address")]
    PodWithoutIp(String),
    /// An endpoint is neither `namespace/pod` nor an IP address.
    #[error("endpoint {0:?} is neither namespace/pod nor an IP address")]
    BadEndpoint(String),
    /// The protocol is not TCP, UDP, SCTP or ICMP.
    #[error("unknown protocol {0:?} (expected TCP, UDP, SCTP or ICMP)")]
    BadProtocol(String),
    /// Port 0 is not a destination port (of TCP, UDP or SCTP).
    #[error("port must be between 1 and 65535")]
    BadPort,
    /// ICMP has no port: its connections are at port 0.
    #[error("ICMP has no port (got {0}): use port 0")]
    IcmpPort(u16),
}
