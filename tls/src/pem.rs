//! Reading PEM files: certificate chains, private keys and CA bundles. Every
//! error names the file and what it was expected to hold, so that a wrong
//! mount (a key where the certificate should be, an empty Secret) is plain.
//!
//! Keys may be PKCS#8 (`BEGIN PRIVATE KEY`, what `netverdict certs` and
//! `openssl genpkey` write), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
//! (`BEGIN EC PRIVATE KEY`, what cert-manager writes for ECDSA keys).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors reading PEM files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{what} {}: {source}", path.display())]
    Read {
        /// What the file holds ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{what} {}: no {expected} PEM block in the file", path.display())]
    Missing {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM block expected, e.g. "CERTIFICATE".
        expected: &'static str,
    },
    /// A PEM block or certificate could not be decoded or used.
    #[error("{what} {}: {reason}", path.display())]
    Invalid {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One PEM file and what it should hold, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// What the file holds ("certificate", "private key", "CA").
    pub what: &'static str,
    /// The file.
    pub path: &'a Path,
}

impl Source<'_> {
    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: self.what,
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn missing(&self, expected: &'static str) -> Error {
        Error::Missing {
            what: self.what,
            path: self.path.to_path_buf(),
            expected,
        }
    }
}

/// Reads a whole file (certificates and keys are small).
pub async fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// As [`read`], blocking (for start-up code outside a runtime).
pub fn read_blocking(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file, in order (the leaf first for a chain).
pub fn certificates(source: Source<'_>, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| source.invalid(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(source.missing("CERTIFICATE"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(source: Source<'_>, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => source.missing("PRIVATE KEY"),
        e => source.invalid(format!("invalid PEM: {e}")),
    })
}

/// The trust anchors of a CA bundle (every certificate in the file).
pub fn roots(source: Source<'_>, pem: &[u8]) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for (n, cert) in certificates(source, pem)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            source.invalid(format!("certificate {} is not a usable CA: {e}", n + 1))
        })?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source<'static> {
        Source {
            what: "certificate",
            path: Path::new("/etc/tls/tls.crt"),
        }
    }

    #[test]
    fn a_file_without_the_block_names_file_and_block() {
        let key_only =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let err = certificates(source(), key_only).unwrap_err().to_string();
        assert_eq!(
            err,
            "certificate /etc/tls/tls.crt: no CERTIFICATE PEM block in the file"
        );
        let err = private_key(
            Source {
                what: "private key",
                path: Path::new("k.pem"),
            },
            b"",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "private key k.pem: no PRIVATE KEY PEM block in the file"
        );
    }

    #[test]
    fn broken_base64_is_invalid_not_missing() {
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = certificates(source(), broken).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }
}
