//! Where plaintext and unauthenticated serving are allowed: on a loopback
//! address always (the lab, the demo, tests, a port-forward); anywhere else
//! a gRPC server needs mutual TLS (a certificate, its key and a client CA),
//! or an explicit `insecure`. The client-side rule is in
//! [`crate::client::Target::new`].
//!
//! The servers that call [`check_listen`] also default to a loopback address
//! when they have no TLS settings, so that a server started without flags is
//! reachable only from its own machine.

use std::net::{IpAddr, SocketAddr};

use crate::server::ServerTlsFiles;

/// Why a server may not listen where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A non-loopback listener without mutual TLS and without `insecure`.
    #[error(
        "the {what} would listen on {addr}, which is not a loopback address, {without}: give \
         --tls-cert, --tls-key and --tls-client-ca (mutual TLS), listen on 127.0.0.1, or pass \
         --insecure to serve unauthenticated"
    )]
    Unauthenticated {
        /// Which server ("API server", "collector's Observer").
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What is missing ("in plaintext", "without client certificates").
        without: &'static str,
    },
}

/// Whether a host name or IP literal is this machine's loopback
/// (`127.0.0.0/8`, `::1`, `localhost`; IPv6 literals with or without brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks that a gRPC server may listen on `addr` with `tls`: anything on a
/// loopback address; elsewhere mutual TLS, or `insecure`.
pub fn check_listen(
    what: &'static str,
    addr: SocketAddr,
    tls: Option<&ServerTlsFiles>,
    insecure: bool,
) -> Result<(), Error> {
    if addr.ip().is_loopback() || insecure {
        return Ok(());
    }
    let without = match tls {
        Some(files) if files.mutual() => return Ok(()),
        Some(_) => "without client certificates",
        None => "in plaintext",
    };
    Err(Error::Unauthenticated {
        what,
        addr,
        without,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "10.0.0.1",
            "netverdict-api",
            "localhost.example",
            "::",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn non_loopback_listeners_need_mutual_tls_or_insecure() {
        let any: SocketAddr = "0.0.0.0:4255".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4255".parse().unwrap();
        let server_only = ServerTlsFiles {
            cert: "c".into(),
            key: "k".into(),
            client_ca: None,
        };
        let mutual = ServerTlsFiles {
            client_ca: Some("ca".into()),
            ..server_only.clone()
        };
        assert!(check_listen("API server", local, None, false).is_ok());
        assert!(check_listen("API server", any, Some(&mutual), false).is_ok());
        assert!(check_listen("API server", any, None, true).is_ok());
        let e = check_listen("API server", any, None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the API server would listen on 0.0.0.0:4255, which is not a loopback address, in plaintext"),
            "{e}"
        );
        let e = check_listen("API server", any, Some(&server_only), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without client certificates"), "{e}");
    }
}
