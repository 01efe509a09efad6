//! The commands over mutual TLS, as processes: `netverdict certs` makes a PKI
//! that `observe`, `denied`, `dns` and `mismatches` use (flags and
//! `NETVERDICT_TLS_*` variables); certificates made by the `openssl` CLI (RSA
//! and ECDSA keys in PKCS#1, PKCS#8 and SEC1 files) work for `netverdict api`,
//! the collector's exporter and the queries; `observe` reads a collector's
//! Observer by its node name; refusals say why.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer};
use netverdict_cluster::{SharedState, Source};
use netverdict_collector::agent::{Agent, AgentConfig, EventSource};
use netverdict_collector::export::{Exporter, ExporterConfig};
use netverdict_proto::v1 as pb;
use netverdict_testing::flow::ago;
use netverdict_testing::openssl::{self, openssl};
use netverdict_testing::{api, flow, pod};
use netverdict_tls::certs::{PkiOptions, write_pki};
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles};

use crate::support::stdout;

/// A flow denied by default/default-deny and a mismatch, a minute ago.
fn flows() -> Vec<pb::Flow> {
    let at = ago(60);
    let endpoint = |ns: &str, name: &str, port| pod(ns, name).workload(name).port(port);
    vec![
        flow("node-a/1/1")
            .at(at)
            .from(endpoint("shop", "np-client", 42000))
            .to(endpoint("default", "api", 8080))
            .denied()
            .outcome(pb::Outcome::Dropped)
            .denied_by(["default/default-deny"])
            .build(),
        flow("node-a/1/2")
            .at(at)
            .from(endpoint("default", "np-client", 41000))
            .to(endpoint("default", "api", 9999))
            .outcome(pb::Outcome::Dropped)
            .mismatch(pb::Mismatch::DroppedThoughAllowed)
            .build(),
    ]
}

/// Runs `netverdict` with `args` and extra environment variables.
fn netverdict(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_netverdict"));
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("netverdict runs")
}

async fn run(args: Vec<String>, env: Vec<(&'static str, PathBuf)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        netverdict(&args, &env)
    })
    .await
    .unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A failed run's stderr (it must have failed with status 2).
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

async fn api_with(tls: ServerTlsFiles) -> ApiServer {
    let store = api::memory(10_000);
    store.insert(flows()).await.unwrap();
    let config = ApiConfig {
        metrics_listen: None,
        tls: Some(tls),
        ..api::config()
    };
    api::serve_with(config, store, SharedState::default()).await
}

fn tls_flags(ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        ca.display().to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_command_works_over_mutual_tls_with_certs_made_by_netverdict_certs() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().display().to_string();
    let out = stdout(&netverdict(
        &["certs", "--out", &out_dir, "--nodes", "node-a,node-b"],
        &[],
    ));
    assert!(out.starts_with("new CA: "), "{out}");
    assert!(out.contains("collector node-b: "), "{out}");
    let pki = write_pki(
        dir.path(),
        &PkiOptions {
            nodes: vec!["node-a".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(pki.ca_reused, "the second run reuses the CA");
    let server = api_with(ServerTlsFiles {
        cert: pki.api.cert.clone(),
        key: pki.api.key.clone(),
        client_ca: Some(pki.api.ca.clone()),
    })
    .await;
    let addr = server.grpc_addr().to_string();
    let reader = tls_flags(&pki.reader.ca, &pki.reader.cert, &pki.reader.key);
    let query = |command: &[&str]| {
        let mut args = strings(command);
        args.extend(["--server".into(), addr.clone(), "-o".into(), "json".into()]);
        args.extend(reader.clone());
        args
    };

    let observed: serde_json::Value = serde_json::from_str(&stdout(
        &run(query(&["observe", "--verdict", "denied"]), vec![]).await,
    ))
    .unwrap();
    assert_eq!(observed[0]["id"], "node-a/1/1", "{observed:#}");
    let mismatches: serde_json::Value =
        serde_json::from_str(&stdout(&run(query(&["mismatches"]), vec![]).await)).unwrap();
    assert_eq!(mismatches.as_array().unwrap().len(), 1, "{mismatches:#}");
    assert_eq!(mismatches[0]["id"], "node-a/1/2");
    let denied: serde_json::Value =
        serde_json::from_str(&stdout(&run(query(&["denied"]), vec![]).await)).unwrap();
    assert_eq!(denied.as_array().unwrap().len(), 1, "{denied:#}");
    let dns: serde_json::Value =
        serde_json::from_str(&stdout(&run(query(&["dns"]), vec![]).await)).unwrap();
    assert!(dns.get("policy_gaps").is_some(), "{dns:#}");

    // The same from the environment, as kubectl users expect.
    let env = vec![
        ("NETVERDICT_TLS_CA", pki.reader.ca.clone()),
        ("NETVERDICT_TLS_CERT", pki.reader.cert.clone()),
        ("NETVERDICT_TLS_KEY", pki.reader.key.clone()),
        ("NETVERDICT_SERVER", PathBuf::from(&addr)),
    ];
    let out = stdout(&run(strings(&["denied"]), env).await);
    assert!(out.contains("shop/np-client"), "{out}");

    // A collector's certificate may not query; no certificate, no TLS and a
    // plaintext address off loopback are refused, each saying why.
    let collector = &pki.collectors[0].1;
    let mut as_collector = strings(&["denied", "--server", &addr]);
    as_collector.extend(tls_flags(&collector.ca, &collector.cert, &collector.key));
    let err = failure(&run(as_collector, vec![]).await);
    assert!(
        err.contains("Query: the client certificate CN=\"node-a\" (groups: netverdict:collectors) is not in group netverdict:readers"),
        "{err}"
    );
    let err = failure(
        &run(
            strings(&[
                "dns",
                "--server",
                &addr,
                "--tls-ca",
                &pki.reader.ca.display().to_string(),
            ]),
            vec![],
        )
        .await,
    );
    assert!(err.contains("give --tls-cert and --tls-key"), "{err}");
    failure(&run(strings(&["dns", "--server", &addr]), vec![]).await);
    let err = failure(&run(strings(&["dns", "--server", "10.0.0.1:4255"]), vec![]).await);
    assert!(
        err.contains("10.0.0.1 is not a loopback address, so the connection must use TLS"),
        "{err}"
    );
    let err = failure(
        &run(
            strings(&["dns", "--server", &addr, "--tls-cert", "x.pem"]),
            vec![],
        )
        .await,
    );
    assert!(err.contains("--tls-ca"), "{err}");
    server.shutdown().await.unwrap();
}

/// A CA and certificates made by the openssl CLI, with the key formats other
/// PKIs write: an RSA CA key in PKCS#1, the server's ECDSA key in SEC1 (as
/// cert-manager writes), the collector's RSA key and the reader's ECDSA key
/// in PKCS#8; the reader has two O values.
fn openssl_pki(dir: &Path) {
    openssl::ca(dir, "/CN=openssl test CA", true);
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "server.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=netverdict-api",
            "-out",
            "server.csr",
        ],
    );
    openssl::sign(
        dir,
        "server",
        "1001",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "node.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "node.key",
            "-subj",
            "/O=netverdict:collectors/CN=node-a",
            "-out",
            "node.csr",
        ],
    );
    openssl::sign(
        dir,
        "node",
        "1002",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=DNS:node-a\n",
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "reader.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "reader.key",
            "-subj",
            "/CN=bob/O=dev/O=netverdict:readers",
            "-out",
            "reader.csr",
        ],
    );
    openssl::sign(
        dir,
        "reader",
        "1003",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let key = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert!(key("ca.key").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(key("server.key").starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(key("node.key").starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_made_by_openssl_work_for_the_api_server_the_exporter_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_pki(d);
    let file = |name: &str| d.join(name).display().to_string();

    // `netverdict api` as a process, with the openssl files.
    let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args([
            "api",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            &file("server.crt"),
            "--tls-key",
            &file("server.key"),
        ])
        .args(["--tls-client-ca", &file("ca.crt")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut security = None;
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "api exited early");
        if let Some(rest) = line.strip_prefix("netverdict api: gRPC security: ") {
            security = Some(rest.trim_end().to_string());
        }
        if let Some(rest) = line.strip_prefix("netverdict api: gRPC on ") {
            break rest.split(',').next().unwrap().to_string();
        }
    };
    assert_eq!(security.as_deref(), Some("mutual TLS"));

    // The collector's exporter with the openssl node certificate.
    let mut config = ExporterConfig::new(addr.clone(), "node-a");
    config.batch_delay = Duration::from_millis(20);
    config.tls = Some(ClientTlsFiles {
        ca: d.join("ca.crt"),
        cert: Some(d.join("node.crt")),
        key: Some(d.join("node.key")),
        server_name: None,
    });
    let exporter = Exporter::new(config).unwrap();
    let counters = exporter.counters();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(exporter.run(rx));
    for flow in flows() {
        tx.send(flow).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), counters.wait_done(2))
        .await
        .expect("the exporter's flows acknowledged over TLS");
    assert_eq!(counters.snapshot().flows_acked, 2);
    task.await.unwrap();

    // The reader (two O values, one of them netverdict:readers) reads them.
    let mut args = strings(&["observe", "--server", &addr, "-o", "json"]);
    args.extend(tls_flags(
        &d.join("ca.crt"),
        &d.join("reader.crt"),
        &d.join("reader.key"),
    ));
    let observed: serde_json::Value =
        serde_json::from_str(&stdout(&run(args, vec![]).await)).unwrap();
    let mut ids: Vec<&str> = observed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["node-a/1/1", "node-a/1/2"]);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reads_a_collectors_observer_by_its_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(
        dir.path(),
        &PkiOptions {
            nodes: vec!["node-a".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let node = &pki.collectors[0].1;
    let (_events, rx) = tokio::sync::mpsc::channel(1);
    let mut config = AgentConfig::new("node-a", Source::Shared(SharedState::default()));
    config.events = EventSource::Channel(rx);
    config.metrics_listen = None;
    config.observer_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(ServerTlsFiles {
        cert: node.cert.clone(),
        key: node.key.clone(),
        client_ca: Some(node.ca.clone()),
    });
    let agent = Agent::start(config).await.unwrap();
    let addr = agent.observer_addr().unwrap().to_string();

    // The collector's certificate names its node, not 127.0.0.1.
    let mut args = strings(&["observe", "--server", &addr]);
    args.extend(tls_flags(&pki.reader.ca, &pki.reader.cert, &pki.reader.key));
    failure(&run(args.clone(), vec![]).await);
    args.extend(strings(&["--tls-server-name", "node-a"]));
    assert_eq!(stdout(&run(args, vec![]).await), "");
    agent.shutdown().await.unwrap();
}
