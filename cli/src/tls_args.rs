//! The TLS flags of the servers (`api`, `collector`'s Observer) and of the
//! clients (the query commands, `collector --export`), each also read from
//! an environment variable as kubectl users expect, validated into
//! `netverdict_tls` settings with errors naming the flags.
//!
//! | flag | environment | for |
//! | --- | --- | --- |
//! | `--tls-cert FILE` | `NETVERDICT_TLS_CERT` | a server's certificate; a client's certificate |
//! | `--tls-key FILE` | `NETVERDICT_TLS_KEY` | its key |
//! | `--tls-client-ca FILE` | `NETVERDICT_TLS_CLIENT_CA` | servers: require client certificates signed by this CA |
//! | `--tls-ca FILE` | `NETVERDICT_TLS_CA` | clients: the CA of the server's certificate (turns TLS on) |
//! | `--tls-server-name NAME` | `NETVERDICT_TLS_SERVER_NAME` | clients: the name the server's certificate must hold |
//! | `--insecure` | `NETVERDICT_INSECURE` | allow plaintext or unauthenticated serving off loopback |

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles};

/// A server's TLS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerTlsArgs {
    /// Serve TLS with this certificate chain (PEM; reloaded when it changes).
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); clients are then
    /// authorized by their certificate's O (netverdict:collectors may push,
    /// netverdict:readers may query).
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow serving without mutual TLS on an address that is not loopback.
    #[arg(long, env = "NETVERDICT_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

impl ServerTlsArgs {
    /// The validated files, or None for plaintext.
    pub fn files(&self) -> Result<Option<ServerTlsFiles>> {
        server_files(&self.tls_cert, &self.tls_key, &self.tls_client_ca)
    }

    /// `--listen` when given, else `port` on every address with mutual TLS
    /// and on 127.0.0.1 without.
    pub fn listen(&self, listen: Option<SocketAddr>, port: u16) -> Result<SocketAddr> {
        Ok(default_listen(listen, port, self.files()?.as_ref()))
    }
}

fn server_files(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    client_ca: &Option<PathBuf>,
) -> Result<Option<ServerTlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        })),
        (None, None) if client_ca.is_some() => {
            bail!("--tls-client-ca needs --tls-cert and --tls-key (the server's own certificate)")
        }
        (None, None) => Ok(None),
        (Some(_), None) => bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
    }
}

fn default_listen(
    listen: Option<SocketAddr>,
    port: u16,
    tls: Option<&ServerTlsFiles>,
) -> SocketAddr {
    listen.unwrap_or_else(|| match tls {
        Some(files) if files.mutual() => SocketAddr::from(([0, 0, 0, 0], port)),
        _ => SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

/// A client's TLS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// Connect with TLS, trusting this CA (PEM) for the server's certificate.
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM), for servers that require one.
    #[arg(
        long,
        value_name = "FILE",
        env = "NETVERDICT_TLS_CERT",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "NETVERDICT_TLS_KEY",
        requires = "tls_ca"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must hold, when it is not the
    /// server address's host (e.g. a collector's node name when connecting by IP).
    #[arg(
        long,
        value_name = "NAME",
        env = "NETVERDICT_TLS_SERVER_NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
    /// Allow plaintext to a server that is not on a loopback address.
    #[arg(long, env = "NETVERDICT_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

impl ClientTlsArgs {
    /// The TLS files, or None for plaintext.
    pub fn files(&self) -> Result<Option<ClientTlsFiles>> {
        client_files(
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
            &self.tls_server_name,
        )
    }
}

fn client_files(
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    server_name: &Option<String>,
) -> Result<Option<ClientTlsFiles>> {
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() || server_name.is_some() {
            bail!("--tls-cert, --tls-key and --tls-server-name need --tls-ca (the server's CA)");
        }
        return Ok(None);
    };
    match (cert, key) {
        (Some(_), None) => bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        _ => {}
    }
    Ok(Some(ClientTlsFiles {
        ca: ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
        server_name: server_name.clone(),
    }))
}

/// The collector's TLS flags: it serves the Observer and is the API server's
/// client, with one certificate (CN = the node name, O = netverdict:collectors).
#[derive(Args, Debug, Clone, Default)]
pub struct CollectorTlsArgs {
    /// The collector's certificate (PEM): served by the Observer and
    /// presented to the API server. Its CN must be the node name.
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The Observer requires client certificates signed by this CA (PEM),
    /// and admits the group netverdict:readers only.
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Export with TLS, trusting this CA (PEM) for the API server's certificate.
    #[arg(long, value_name = "FILE", env = "NETVERDICT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The name the API server's certificate must hold, when it is not the
    /// --export host.
    #[arg(
        long,
        value_name = "NAME",
        env = "NETVERDICT_TLS_SERVER_NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
    /// Allow the Observer off loopback without mutual TLS, and plaintext
    /// export to a non-loopback API server.
    #[arg(long, env = "NETVERDICT_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

impl CollectorTlsArgs {
    /// The Observer's TLS files, or None for plaintext.
    pub fn observer(&self) -> Result<Option<ServerTlsFiles>> {
        server_files(&self.tls_cert, &self.tls_key, &self.tls_client_ca)
    }

    /// The exporter's TLS files (the certificate is presented when given),
    /// or None for plaintext.
    pub fn export(&self) -> Result<Option<ClientTlsFiles>> {
        if self.tls_ca.is_none() {
            if self.tls_server_name.is_some() {
                bail!("--tls-server-name needs --tls-ca (the API server's CA)");
            }
            return Ok(None);
        }
        client_files(
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
            &self.tls_server_name,
        )
    }

    /// `--observer-listen` when given, else `port` on every address with
    /// mutual TLS and on 127.0.0.1 without.
    pub fn observer_listen(&self, listen: Option<SocketAddr>, port: u16) -> Result<SocketAddr> {
        Ok(default_listen(listen, port, self.observer()?.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn server_flags_go_in_pairs_and_pick_the_default_address() {
        let none = ServerTlsArgs::default();
        assert_eq!(none.files().unwrap(), None);
        assert_eq!(
            none.listen(None, 4255).unwrap(),
            "127.0.0.1:4255".parse().unwrap()
        );
        let mutual = ServerTlsArgs {
            tls_cert: p("c"),
            tls_key: p("k"),
            tls_client_ca: p("ca"),
            insecure: false,
        };
        assert_eq!(
            mutual.listen(None, 4255).unwrap(),
            "0.0.0.0:4255".parse().unwrap()
        );
        assert_eq!(
            mutual
                .listen(Some("10.0.0.1:1".parse().unwrap()), 4255)
                .unwrap(),
            "10.0.0.1:1".parse().unwrap()
        );
        let server_only = ServerTlsArgs {
            tls_client_ca: None,
            ..mutual.clone()
        };
        assert_eq!(
            server_only.listen(None, 4255).unwrap(),
            "127.0.0.1:4255".parse().unwrap()
        );
        let half = ServerTlsArgs {
            tls_key: None,
            ..mutual
        };
        assert_eq!(
            half.files().unwrap_err().to_string(),
            "--tls-cert needs --tls-key"
        );
        let ca_only = ServerTlsArgs {
            tls_client_ca: p("ca"),
            ..Default::default()
        };
        assert!(
            ca_only
                .files()
                .unwrap_err()
                .to_string()
                .starts_with("--tls-client-ca needs")
        );
    }

    #[test]
    fn client_flags_need_a_ca() {
        assert_eq!(ClientTlsArgs::default().files().unwrap(), None);
        let no_ca = ClientTlsArgs {
            tls_cert: p("c"),
            tls_key: p("k"),
            ..Default::default()
        };
        assert!(
            no_ca
                .files()
                .unwrap_err()
                .to_string()
                .contains("need --tls-ca")
        );
        let mutual = ClientTlsArgs {
            tls_ca: p("ca"),
            ..no_ca
        };
        let files = mutual.files().unwrap().unwrap();
        assert_eq!(files.cert, p("c"));
        // The collector exports in plaintext without --tls-ca, even with a
        // certificate for its Observer.
        let collector = CollectorTlsArgs {
            tls_cert: p("c"),
            tls_key: p("k"),
            tls_client_ca: p("ca"),
            ..Default::default()
        };
        assert_eq!(collector.export().unwrap(), None);
        assert!(collector.observer().unwrap().unwrap().mutual());
    }
}
