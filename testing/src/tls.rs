//! Certificates for the mutual TLS tests: [`TestPki`], a CA made with
//! `netverdict-tls`'s own generator in a temporary directory, issuing the
//! roles netverdict knows (the API server, a node's collector, a reader) or
//! any other certificate into it.

use std::path::PathBuf;

use netverdict_tls::authz::{COLLECTORS, READERS};
use netverdict_tls::certs::{Authority, Bundle, CertSpec, Usage, Validity};

/// A CA in a temporary directory (removed with it) that issues certificates
/// into subdirectories of it, cert-manager style (`tls.crt`, `tls.key`,
/// `ca.crt`). Every certificate names `localhost` and `127.0.0.1`, so that
/// loopback servers verify without a server name.
pub struct TestPki {
    /// Where the CA file and the issued bundles are written.
    pub dir: tempfile::TempDir,
    /// The CA.
    pub ca: Authority,
}

impl TestPki {
    /// A new CA with this common name, valid 30 days.
    pub fn new(ca_name: &str) -> TestPki {
        TestPki {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}")),
            ca: Authority::generate(ca_name, Validity::days(30))
                .unwrap_or_else(|e| panic!("CA {ca_name:?}: {e}")),
        }
    }

    /// The CA certificate, written as `ca.crt`.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, self.ca.cert_pem())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A certificate for `name` (CN) in `group` (O), written under `dir`.
    pub fn issue_with(
        &self,
        dir: &str,
        name: &str,
        group: Option<&str>,
        usage: Usage,
        validity: Validity,
    ) -> Bundle {
        let spec = CertSpec {
            common_name: name.into(),
            group: group.map(str::to_string),
            dns_names: vec![name.into(), "localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().expect("an address")],
            usage,
            validity,
        };
        self.ca
            .issue(&spec)
            .unwrap_or_else(|e| panic!("issuing {name:?}: {e}"))
            .write(&self.dir.path().join(dir), self.ca.cert_pem())
            .unwrap_or_else(|e| panic!("writing {name:?}'s bundle: {e}"))
    }

    /// [`TestPki::issue_with`], valid 30 days.
    pub fn issue(&self, dir: &str, name: &str, group: Option<&str>, usage: Usage) -> Bundle {
        self.issue_with(dir, name, group, usage, Validity::days(30))
    }

    /// The API server's certificate (CN `netverdict-api`, server use).
    pub fn server(&self) -> Bundle {
        self.issue("server", "netverdict-api", None, Usage::Server)
    }

    /// A node's collector: CN the node, group `netverdict:collectors`,
    /// server (its Observer) and client (its exporter) use.
    pub fn collector(&self, node: &str) -> Bundle {
        self.issue(node, node, Some(COLLECTORS), Usage::ServerAndClient)
    }

    /// A reader: CN `alice`, group `netverdict:readers`, client use.
    pub fn reader(&self) -> Bundle {
        self.issue("reader", "alice", Some(READERS), Usage::Client)
    }
}
