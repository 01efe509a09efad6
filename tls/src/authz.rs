//! Authorization by group, Kubernetes-style: a client certificate's O values
//! are its groups.
//!
//! - [`COLLECTORS`] may call `Ingest` (and, checked by the API server, push
//!   only flows of the node its CN names);
//! - [`READERS`] may call `Observer` and `Query`;
//! - every other certificate is refused with `PERMISSION_DENIED`.
//!
//! Connections without a client certificate (plaintext on loopback or with
//! `--insecure`, TLS on a server without a client CA) are not authenticated,
//! so nothing is checked: the listening rules of [`crate::policy`] decide
//! where such connections can exist at all. A request that did not come
//! through [`crate::server::incoming`] (no [`Peer`]) is refused: a wiring
//! mistake must not open a server.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::identity::{Authentication, Peer};

/// The group of collectors (the O of a collector's certificate).
pub const COLLECTORS: &str = "netverdict:collectors";

/// The group of readers: people and tools that query flows.
pub const READERS: &str = "netverdict:readers";

/// A tonic interceptor admitting only members of one group to a service.
#[derive(Clone, Copy, Debug)]
pub struct RequireGroup {
    /// The group.
    pub group: &'static str,
    /// The service, for the refusal's message ("Ingest", "Observer", "Query").
    pub service: &'static str,
}

impl RequireGroup {
    /// Members of `group` only, for `service`.
    pub fn new(group: &'static str, service: &'static str) -> Self {
        RequireGroup { group, service }
    }
}

impl Interceptor for RequireGroup {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        authorize(Peer::of(&request), self.group, self.service)?;
        Ok(request)
    }
}

/// Whether `peer` may call `service`, which needs `group`.
pub fn authorize(peer: Option<&Peer>, group: &str, service: &str) -> Result<(), Status> {
    let Some(peer) = peer else {
        return Err(Status::permission_denied(format!(
            "{service}: the connection carries no authentication information"
        )));
    };
    match &peer.authentication {
        Authentication::Plaintext | Authentication::ServerTls => Ok(()),
        Authentication::Certificate(identity) if identity.in_group(group) => Ok(()),
        Authentication::Certificate(identity) => Err(Status::permission_denied(format!(
            "{service}: the client certificate {identity} is not in group {group}, which {service} requires"
        ))),
    }
}

/// The node a collector's certificate binds it to (its CN), when the
/// connection is authenticated by certificate; None on an unauthenticated
/// connection, where nothing binds the node.
pub fn bound_node(peer: Option<&Peer>) -> Option<&str> {
    peer.and_then(Peer::identity).map(|id| id.name.as_str())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Identity;

    fn peer(authentication: Authentication) -> Peer {
        Peer {
            addr: "10.0.0.1:5000".parse().unwrap(),
            authentication,
        }
    }

    fn cert(name: &str, groups: &[&str]) -> Authentication {
        Authentication::Certificate(Arc::new(Identity {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }))
    }

    #[test]
    fn groups_decide_for_certificates() {
        let collector = peer(cert("node-a", &[COLLECTORS]));
        let reader = peer(cert("alice", &["dev", READERS]));
        assert!(authorize(Some(&collector), COLLECTORS, "Ingest").is_ok());
        assert!(authorize(Some(&reader), READERS, "Query").is_ok());
        let refused = authorize(Some(&reader), COLLECTORS, "Ingest").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            "Ingest: the client certificate CN=\"alice\" (groups: dev, netverdict:readers) is not \
             in group netverdict:collectors, which Ingest requires"
        );
        let nobody = peer(cert("mallory", &[]));
        assert!(authorize(Some(&nobody), READERS, "Observer").is_err());
        assert_eq!(bound_node(Some(&collector)), Some("node-a"));
    }

    #[test]
    fn unauthenticated_connections_pass_and_missing_peers_fail() {
        assert!(authorize(Some(&peer(Authentication::Plaintext)), READERS, "Query").is_ok());
        assert!(authorize(Some(&peer(Authentication::ServerTls)), COLLECTORS, "Ingest").is_ok());
        assert_eq!(bound_node(Some(&peer(Authentication::Plaintext))), None);
        let e = authorize(None, READERS, "Query").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
}
