//! The ClickHouse store over HTTPS against a real ClickHouse serving TLS
//! itself (its own `https_port`, with a certificate made by the `openssl`
//! CLI): flows go in and come back with `--clickhouse-ca`; a server whose
//! certificate another CA signed is refused; a CA file with an `http://`
//! URL is a configuration error naming the field.

use std::path::Path;

use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};
use netverdict_api::store::{FlowQuery, Store};
use netverdict_testing::clickhouse::{OwnServer, TestDb};
use netverdict_testing::flow;
use netverdict_testing::flow::now_nanos;
use netverdict_testing::openssl::{self, openssl};

/// An openssl CA and a server certificate for 127.0.0.1 in `dir`.
fn openssl_server_cert(dir: &Path) {
    openssl::ca(dir, "/CN=ClickHouse test CA", false);
    openssl(dir, &["genrsa", "-out", "server.key", "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=localhost",
            "-out",
            "server.csr",
        ],
    );
    openssl::sign(
        dir,
        "server",
        "77",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_go_to_clickhouse_over_https_with_the_given_ca() {
    let certs = tempfile::tempdir().unwrap();
    openssl_server_cert(certs.path());
    let server = OwnServer::start_https(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let https = format!("https://127.0.0.1:{}", server.https_port.unwrap());
    let db = TestDb::new(&server.addr());
    let config = ClickHouseConfig {
        url: https.clone(),
        ca_file: Some(certs.path().join("ca.crt")),
        ..db.config()
    };
    let store = ClickHouseStore::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connect over {https}: {e}"));
    let now = now_nanos();
    store
        .insert(vec![
            flow("node-a/1/1").at_nanos(now - 2_000_000).build(),
            flow("node-a/1/2").at_nanos(now - 1_000_000).build(),
        ])
        .await
        .unwrap();
    let mut ids: Vec<String> = store
        .flows(&FlowQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["node-a/1/1", "node-a/1/2"]);
    // The rows are in this server, read back over its plain HTTP port.
    assert_eq!(
        db.sql(&format!("SELECT count() FROM {}.flows", db.name))
            .trim(),
        "2"
    );
    drop(store);

    // A CA that did not sign the server's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    openssl::ca(other.path(), "/CN=another CA", false);
    let err = ClickHouseStore::connect(ClickHouseConfig {
        ca_file: Some(other.path().join("ca.crt")),
        ..config.clone()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("UnknownIssuer"),
        "the refusal should say the certificate is not trusted: {err}"
    );

    // A CA file with a plaintext URL is a configuration error.
    let err = ClickHouseStore::connect(ClickHouseConfig {
        url: format!("http://{}", server.addr()),
        ..config
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config field ca_file") && err.contains("is not https://"),
        "{err}"
    );
}
