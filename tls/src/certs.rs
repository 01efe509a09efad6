//! Certificates for try-outs and tests (`netverdict certs`): a CA, the API
//! server's certificate with its Service DNS names, one certificate per
//! collector node (CN = the node's name, O = `netverdict:collectors`) and a
//! reader's (O = `netverdict:readers`). Keys are ECDSA P-256.
//!
//! Each certificate is written as a directory shaped like a cert-manager
//! Secret (`tls.crt`, `tls.key`, `ca.crt`), so that
//! `kubectl create secret generic NAME --from-file=DIR/api` gives the same
//! keys cert-manager would:
//!
//! ```text
//! OUT/ca.crt  OUT/ca.key                (the CA; reused when already there)
//! OUT/api/{tls.crt,tls.key,ca.crt}
//! OUT/collector-NODE/{tls.crt,tls.key,ca.crt}
//! OUT/reader/{tls.crt,tls.key,ca.crt}
//! ```
//!
//! Keys are written with mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::authz::{COLLECTORS, READERS};

/// The certificate file of a bundle directory.
pub const CERT_FILE: &str = "tls.crt";
/// The key file of a bundle directory.
pub const KEY_FILE: &str = "tls.key";
/// The CA file of a bundle directory (and of the output directory).
pub const CA_FILE: &str = "ca.crt";
/// The CA's key in the output directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The API server's Service name.
pub const API_SERVICE: &str = "netverdict-api";

/// Errors making certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or could not sign.
    #[error("certificate {name}: {source}")]
    Generate {
        /// The certificate's CN.
        name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A name cannot be a certificate name (a node name must be a DNS name).
    #[error("{field} {value:?}: {reason}")]
    InvalidName {
        /// Which setting ("node", "reader", "namespace").
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Only one of the CA's certificate and key is in the output directory.
    #[error("{} exists without {}: give both or neither", present.display(), missing.display())]
    HalfCa {
        /// The file present.
        present: PathBuf,
        /// The file missing.
        missing: PathBuf,
    },
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks differ) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// What a leaf certificate may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client.
    Client,
    /// Both (a collector serves the Observer and is the exporter's client).
    ServerAndClient,
}

/// A leaf certificate to issue.
#[derive(Clone, Debug)]
pub struct CertSpec {
    /// The subject's CN: the identity.
    pub common_name: String,
    /// The subject's O: the group, if any.
    pub group: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Server, client or both.
    pub usage: Usage,
    /// When it is valid.
    pub validity: Validity,
}

/// An issued certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority that issues certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn generate_error(name: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Generate {
        name: name.to_string(),
        source,
    }
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Authority> {
        let error = generate_error(common_name);
        let key = KeyPair::generate().map_err(error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params
            .self_signed(&key)
            .map_err(generate_error(common_name))?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(generate_error("CA"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(generate_error("CA"))?;
        Ok(Authority {
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA's certificate (PEM): what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate with a new key.
    pub fn issue(&self, spec: &CertSpec) -> Result<Issued> {
        let error = || generate_error(&spec.common_name);
        let key = KeyPair::generate().map_err(error())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        if let Some(group) = &spec.group {
            dn.push(DnType::OrganizationName, group.as_str());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|name| Ok(SanType::DnsName(name.clone().try_into().map_err(error())?)))
            .chain(
                spec.ip_addresses
                    .iter()
                    .map(|ip| Ok(SanType::IpAddress(*ip))),
            )
            .collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.validity.not_before.into();
        params.not_after = spec.validity.not_after.into();
        let cert = params.signed_by(&key, &self.issuer).map_err(error())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where one certificate's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The directory.
    pub dir: PathBuf,
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `ca.crt`.
    pub ca: PathBuf,
}

impl Bundle {
    /// The files of a bundle directory.
    pub fn at(dir: impl Into<PathBuf>) -> Bundle {
        let dir = dir.into();
        Bundle {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            ca: dir.join(CA_FILE),
            dir,
        }
    }
}

/// Writes `contents` to `path` (mode 0600 for keys), replacing it.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Written beside and renamed, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Issued {
    /// Writes `tls.crt`, `tls.key` and the CA's `ca.crt` into `dir`.
    pub fn write(&self, dir: &Path, ca_pem: &str) -> Result<Bundle> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let bundle = Bundle::at(dir);
        write_file(&bundle.key, &self.key_pem, true)?;
        write_file(&bundle.cert, &self.cert_pem, false)?;
        write_file(&bundle.ca, ca_pem, false)?;
        Ok(bundle)
    }
}

/// What `netverdict certs` makes.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// The collector nodes, one certificate each.
    pub nodes: Vec<String>,
    /// The namespace of the API server's Service (for its DNS names).
    pub namespace: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The reader certificate's CN.
    pub reader: String,
    /// Days the leaf certificates are valid (the CA: ten times as long).
    pub days: u32,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            nodes: Vec::new(),
            namespace: "netverdict".into(),
            cluster_domain: "cluster.local".into(),
            reader: "netverdict-reader".into(),
            days: 365,
        }
    }
}

/// What [`write_pki`] wrote.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA's certificate.
    pub ca_cert: PathBuf,
    /// Whether the CA already existed in the output directory (and was
    /// reused to issue the other certificates).
    pub ca_reused: bool,
    /// The API server's certificate.
    pub api: Bundle,
    /// Each collector node's certificate.
    pub collectors: Vec<(String, Bundle)>,
    /// The reader's certificate.
    pub reader: Bundle,
}

/// The API server Service's DNS names, plus `localhost` (for port-forwards
/// and tests).
pub fn api_dns_names(namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        API_SERVICE.to_string(),
        format!("{API_SERVICE}.{namespace}"),
        format!("{API_SERVICE}.{namespace}.svc"),
        format!("{API_SERVICE}.{namespace}.svc.{cluster_domain}"),
        "localhost".to_string(),
    ]
}

/// The directory name of a collector node's bundle.
pub fn collector_dir(node: &str) -> String {
    format!("collector-{node}")
}

/// Checks a name is a DNS name (RFC 1123 subdomain, as Kubernetes names
/// nodes): lowercase letters, digits, '-' and '.', at most 253 characters.
pub fn check_dns_name(field: &'static str, value: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        field,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() || value.len() > 253 {
        return Err(invalid("must be 1 to 253 characters"));
    }
    for label in value.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(invalid(
                "must be a DNS name: lowercase letters, digits, '-' and '.', each label 1-63 characters not starting or ending with '-'",
            ));
        }
    }
    Ok(())
}

/// Makes (or reuses) the CA in `out` and writes the API server's, each
/// node's and the reader's certificates.
pub fn write_pki(out: &Path, options: &PkiOptions) -> Result<Pki> {
    for node in &options.nodes {
        check_dns_name("node", node)?;
    }
    check_dns_name("namespace", &options.namespace)?;
    check_dns_name("cluster domain", &options.cluster_domain)?;
    if options.reader.is_empty() || options.reader.contains('/') {
        return Err(Error::InvalidName {
            field: "reader",
            value: options.reader.clone(),
            reason: "must be a non-empty name without '/'",
        });
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let ca_cert = out.join(CA_FILE);
    let ca_key = out.join(CA_KEY_FILE);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let (authority, ca_reused) = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => (
            Authority::from_pem(&read(&ca_cert)?, &read(&ca_key)?)?,
            true,
        ),
        (false, false) => {
            let days = options.days.saturating_mul(10);
            let ca = Authority::generate("netverdict CA", Validity::days(days))?;
            write_file(&ca_key, &ca.key_pem(), true)?;
            write_file(&ca_cert, ca.cert_pem(), false)?;
            (ca, false)
        }
        (true, false) => {
            return Err(Error::HalfCa {
                present: ca_cert,
                missing: ca_key,
            });
        }
        (false, true) => {
            return Err(Error::HalfCa {
                present: ca_key,
                missing: ca_cert,
            });
        }
    };
    let validity = Validity::days(options.days);
    let ca_pem = authority.cert_pem().to_string();
    let api = authority
        .issue(&CertSpec {
            common_name: API_SERVICE.into(),
            group: None,
            dns_names: api_dns_names(&options.namespace, &options.cluster_domain),
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1]), "::1".parse().expect("IPv6")],
            usage: Usage::Server,
            validity,
        })?
        .write(&out.join("api"), &ca_pem)?;
    let collectors = options
        .nodes
        .iter()
        .map(|node| {
            let bundle = authority
                .issue(&CertSpec {
                    common_name: node.clone(),
                    group: Some(COLLECTORS.into()),
                    dns_names: vec![node.clone()],
                    ip_addresses: Vec::new(),
                    usage: Usage::ServerAndClient,
                    validity,
                })?
                .write(&out.join(collector_dir(node)), &ca_pem)?;
            Ok((node.clone(), bundle))
        })
        .collect::<Result<_>>()?;
    let reader = authority
        .issue(&CertSpec {
            common_name: options.reader.clone(),
            group: Some(READERS.into()),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: Usage::Client,
            validity,
        })?
        .write(&out.join("reader"), &ca_pem)?;
    Ok(Pki {
        ca_cert,
        ca_reused,
        api,
        collectors,
        reader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    fn identity(pem: &str) -> Identity {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        Identity::from_der(&der).unwrap()
    }

    #[test]
    fn pki_has_the_identities_and_reuses_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let options = PkiOptions {
            nodes: vec!["node-a".into(), "node-b".into()],
            ..Default::default()
        };
        let pki = write_pki(dir.path(), &options).unwrap();
        assert!(!pki.ca_reused);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let a = identity(&read(&pki.collectors[0].1.cert));
        assert_eq!(a.name, "node-a");
        assert_eq!(a.groups, [COLLECTORS]);
        let reader = identity(&read(&pki.reader.cert));
        assert_eq!(
            (reader.name.as_str(), reader.groups.as_slice()),
            ("netverdict-reader", [READERS.to_string()].as_slice())
        );
        assert_eq!(identity(&read(&pki.api.cert)).name, API_SERVICE);
        let mode = std::fs::metadata(&pki.api.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // Run again for another node: the same CA signs it.
        let ca_before = read(&pki.ca_cert);
        let again = write_pki(
            dir.path(),
            &PkiOptions {
                nodes: vec!["node-c".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(again.ca_reused);
        assert_eq!(read(&again.ca_cert), ca_before);
        assert_eq!(read(&again.collectors[0].1.ca), ca_before);
    }

    #[test]
    fn bad_node_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_pki(
            dir.path(),
            &PkiOptions {
                nodes: vec!["Node_A".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("node \"Node_A\": must be a DNS name"),
            "{err}"
        );
        std::fs::write(dir.path().join(CA_FILE), "x").unwrap();
        let err = write_pki(dir.path(), &PkiOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists without"), "{err}");
    }
}
