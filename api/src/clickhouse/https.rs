//! ClickHouse over HTTPS, for managed ClickHouse services and servers with
//! `https_port`: an `https://` URL gets an HTTP client whose TLS (rustls, the
//! ring provider) trusts the CA file of [`ClickHouseConfig::ca_file`], or the
//! system's roots without one. `http://` URLs keep the `clickhouse` crate's
//! own client.

use std::time::Duration;

use clickhouse::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use netverdict_tls::pem::{self, Source};

use super::ClickHouseConfig;
use crate::store::{Result, StoreError};

/// As the `clickhouse` crate's own client: TCP keepalive, and idle
/// connections closed before ClickHouse's 3 s keep-alive timeout.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

fn config_error(field: &str, message: String) -> StoreError {
    StoreError::Backend {
        backend: "clickhouse",
        message: format!("config field {field}: {message}"),
    }
}

/// The client for `config.url`: plain for `http://`, rustls for `https://`.
pub(super) fn client(config: &ClickHouseConfig) -> Result<Client> {
    let https = config.url.starts_with("https://");
    if !https {
        if let Some(ca) = &config.ca_file {
            return Err(config_error(
                "ca_file",
                format!(
                    "{} is set but the url {} is not https://",
                    ca.display(),
                    config.url
                ),
            ));
        }
        return Ok(Client::default());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = match &config.ca_file {
        Some(path) => {
            let source = Source {
                what: "ClickHouse CA",
                path,
            };
            let bytes = pem::read_blocking(source.what, path)
                .and_then(|b| pem::roots(source, &b))
                .map_err(|e| config_error("ca_file", e.to_string()))?;
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| config_error("ca_file", e.to_string()))?
                .with_root_certificates(bytes)
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
        None => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| config_error("url", format!("no system CA certificates: {e}")))?,
    };
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = builder.https_only().enable_http1().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    Ok(Client::with_http_client(hyper))
}
