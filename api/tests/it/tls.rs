//! The API server with mutual TLS, over real TLS handshakes on loopback
//! sockets: who is refused (plaintext, no client certificate, another CA, an
//! expired certificate, a reader pushing, a collector querying, a collector
//! pushing another node's flows) and how certificate rotation behaves (new
//! connections get the new files, open streams go on, a broken rotation keeps
//! the old files).

use std::path::Path;
use std::time::{Duration, SystemTime};

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer, serve_shared};
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::api::{config_on, memory, stored_ids};
use netverdict_testing::tls::TestPki;
use netverdict_testing::{flow, scrape, wait_until};
use netverdict_tls::authz::COLLECTORS;
use netverdict_tls::certs::{Bundle, Usage, Validity};
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles, Target};
use pb::ingest_client::IngestClient;
use pb::observer_client::ObserverClient;
use pb::query_client::QueryClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower_service::Service;

const WAIT: Duration = Duration::from_secs(20);

async fn tls_server(
    pki: &TestPki,
    server: &Bundle,
) -> (ApiServer, std::sync::Arc<netverdict_api::MemoryStore>) {
    let store = memory(10_000);
    // The server's own copy of the CA, so that tests can rotate it alone.
    let client_ca = pki.dir.path().join("client-ca.crt");
    std::fs::write(&client_ca, pki.ca.cert_pem()).unwrap();
    let config = ApiConfig {
        tls: Some(ServerTlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(client_ca),
        }),
        tls_reload_interval: Duration::from_millis(50),
        ..config_on("127.0.0.1:0".parse().unwrap())
    };
    let api = serve_shared(config, store.clone(), SharedState::default())
        .await
        .unwrap();
    (api, store)
}

fn target(server: &ApiServer, ca: &Path, client: Option<&Bundle>) -> Target {
    Target::new(
        &server.grpc_addr().to_string(),
        0,
        Some(ClientTlsFiles {
            ca: ca.to_path_buf(),
            cert: client.map(|b| b.cert.clone()),
            key: client.map(|b| b.key.clone()),
            server_name: None,
        }),
        false,
    )
    .unwrap()
}

async fn channel(target: &Target) -> Result<tonic::transport::Channel, String> {
    target
        .connect_default(Duration::from_secs(5))
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// Pushes one batch on a new stream; the acknowledged sequence or the error.
async fn push(target: &Target, batch: pb::FlowBatch) -> Result<u64, String> {
    let mut client = IngestClient::new(channel(target).await?);
    let (tx, rx) = mpsc::channel(1);
    tx.send(batch).await.unwrap();
    let mut acks = client
        .push(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match acks.message().await {
        Ok(Some(ack)) => Ok(ack.sequence),
        Ok(None) => Err("stream ended".into()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The server status over Observer, or the error.
async fn status(target: &Target) -> Result<u64, String> {
    let mut client = ObserverClient::new(channel(target).await?);
    client
        .server_status(pb::ServerStatusRequest::default())
        .await
        .map(|r| r.into_inner().flows_stored)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn batch(node: &str, sequence: u64, ids: &[&str]) -> pb::FlowBatch {
    pb::FlowBatch {
        node_name: node.into(),
        sequence,
        flows: ids.iter().map(|id| flow(*id).node(node).build()).collect(),
    }
}

fn handshake_failures(server: &ApiServer) -> u64 {
    server.tls().unwrap().stats().snapshot().handshake_failures
}

/// Waits until the server has counted `n` failed handshakes in all.
async fn wait_handshake_failures(server: &ApiServer, n: u64) {
    wait_until(&format!("{n} failed handshakes"), WAIT, async || {
        handshake_failures(server) >= n
    })
    .await;
}

#[tokio::test]
async fn collectors_push_their_own_flows_and_readers_read_them() {
    let pki = TestPki::new("test CA");
    let (server, store) = tls_server(&pki, &pki.server()).await;
    let ca = pki.ca_file();
    let collector = target(&server, &ca, Some(&pki.collector("node-a")));
    let reader = target(&server, &ca, Some(&pki.reader()));
    assert!(collector.is_tls());

    assert_eq!(
        push(
            &collector,
            batch("node-a", 1, &["node-a/1/1", "node-a/1/2"])
        )
        .await,
        Ok(1)
    );
    assert_eq!(stored_ids(&*store).await, ["node-a/1/1", "node-a/1/2"]);
    assert_eq!(status(&reader).await, Ok(2));
    let mut query = QueryClient::new(channel(&reader).await.unwrap());
    query
        .denied(pb::ReportRequest::default())
        .await
        .expect("a reader may query");

    // The TLS counters are in /metrics under the server's prefix.
    let metrics = scrape(server.metrics_addr().unwrap()).await;
    assert!(
        metrics.value("netverdict_api_tls_handshakes_total") >= 3.0,
        "{metrics:?}"
    );
    assert_eq!(
        metrics.value("netverdict_api_tls_handshake_failures_total"),
        0.0
    );
    // Every client sent its HTTP/2 preface in time; nothing failed to accept.
    assert_eq!(metrics.value("netverdict_api_preface_timeouts_total"), 0.0);
    assert_eq!(metrics.value("netverdict_api_accept_errors_total"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_without_a_trusted_valid_certificate_are_refused_at_the_handshake() {
    let pki = TestPki::new("test CA");
    let (server, store) = tls_server(&pki, &pki.server()).await;
    let ca = pki.ca_file();
    let one = batch("node-a", 1, &["node-a/1/1"]);

    // Plaintext to the TLS port.
    let plaintext = Target::new(&server.grpc_addr().to_string(), 0, None, false).unwrap();
    assert!(!plaintext.is_tls());
    let err = push(&plaintext, one.clone()).await.unwrap_err();
    wait_handshake_failures(&server, 1).await;
    eprintln!("plaintext: {err}");

    // TLS without a client certificate.
    let anonymous = target(&server, &ca, None);
    let err = push(&anonymous, one.clone()).await.unwrap_err();
    wait_handshake_failures(&server, 2).await;
    eprintln!("no client certificate: {err}");

    // A collector certificate from another CA (the client trusts the server).
    let other = TestPki::new("another CA");
    let foreign = target(&server, &ca, Some(&other.collector("node-a")));
    let err = push(&foreign, one.clone()).await.unwrap_err();
    wait_handshake_failures(&server, 3).await;
    eprintln!("another CA: {err}");

    // An expired certificate from the right CA.
    let expired = pki.issue_with(
        "expired",
        "node-a",
        Some(COLLECTORS),
        Usage::ServerAndClient,
        Validity {
            not_before: SystemTime::now() - Duration::from_secs(10 * 86_400),
            not_after: SystemTime::now() - Duration::from_secs(86_400),
        },
    );
    let err = push(&target(&server, &ca, Some(&expired)), one.clone())
        .await
        .unwrap_err();
    wait_handshake_failures(&server, 4).await;
    eprintln!("expired: {err}");

    // A server certificate used as a client's (no clientAuth usage).
    let server_only = pki.issue("server-only", "node-a", Some(COLLECTORS), Usage::Server);
    push(&target(&server, &ca, Some(&server_only)), one.clone())
        .await
        .unwrap_err();
    wait_handshake_failures(&server, 5).await;

    assert!(stored_ids(&*store).await.is_empty());
    // The server is still fine for a good client.
    let good = target(&server, &ca, Some(&pki.collector("node-a")));
    assert_eq!(push(&good, one).await, Ok(1));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn groups_decide_who_pushes_and_who_reads() {
    let pki = TestPki::new("test CA");
    let (server, store) = tls_server(&pki, &pki.server()).await;
    let ca = pki.ca_file();
    let reader = target(&server, &ca, Some(&pki.reader()));
    let collector = target(&server, &ca, Some(&pki.collector("node-a")));
    let nobody = target(
        &server,
        &ca,
        Some(&pki.issue("nobody", "mallory", Some("dev"), Usage::Client)),
    );

    let err = push(&reader, batch("node-a", 1, &["node-a/1/1"]))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("PermissionDenied: Ingest: the client certificate CN=\"alice\" (groups: netverdict:readers) is not in group netverdict:collectors"),
        "{err}"
    );
    let err = status(&collector).await.unwrap_err();
    assert!(
        err.starts_with("PermissionDenied: Observer:") && err.contains("netverdict:readers"),
        "{err}"
    );
    let mut query = QueryClient::new(channel(&collector).await.unwrap());
    let refused = query
        .dns_report(pb::ReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().starts_with("Query:"), "{refused:?}");
    for err in [
        status(&nobody).await.unwrap_err(),
        push(&nobody, batch("mallory", 1, &["mallory/1/1"]))
            .await
            .unwrap_err(),
    ] {
        assert!(err.starts_with("PermissionDenied:"), "{err}");
    }
    assert!(stored_ids(&*store).await.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_collector_cannot_push_or_shadow_another_nodes_flows() {
    let pki = TestPki::new("test CA");
    let (server, store) = tls_server(&pki, &pki.server()).await;
    let ca = pki.ca_file();
    let a = target(&server, &ca, Some(&pki.collector("node-a")));
    let b = target(&server, &ca, Some(&pki.collector("node-b")));

    // node a claims to be node b.
    let err = push(&a, batch("node-b", 1, &["node-b/1/1"]))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("PermissionDenied: the client certificate is node \"node-a\"'s, but batch 1 is from node \"node-b\""),
        "{err}"
    );
    // node a's batch carrying a flow with node b's id, to be stored first so
    // that node b's real flow would be dropped as a duplicate.
    let mut shadow = batch("node-a", 2, &["node-a/1/1"]);
    shadow.flows.push(flow("node-b/1/1").node("node-a").build());
    let err = push(&a, shadow).await.unwrap_err();
    assert!(
        err.contains("flow \"node-b/1/1\" of batch 2") && err.contains("id scope \"node-b\""),
        "{err}"
    );
    assert!(
        stored_ids(&*store).await.is_empty(),
        "nothing of a refused batch is stored"
    );
    // node b's own flow is stored as node b's.
    assert_eq!(push(&b, batch("node-b", 1, &["node-b/1/1"])).await, Ok(1));
    let flows = store
        .flows(&netverdict_api::store::FlowQuery::default())
        .await
        .unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].node_name, "node-b");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn authorization_ends_the_stream_after_the_batches_before_and_malformed_flows_are_refused_one_by_one()
 {
    let pki = TestPki::new("test CA");
    let (server, store) = tls_server(&pki, &pki.server()).await;
    let a = target(&server, &pki.ca_file(), Some(&pki.collector("node-a")));
    let mut client = IngestClient::new(channel(&a).await.unwrap());
    // Batch 1 is node a's, with one malformed flow (no id: it claims no
    // node's scope); batch 2 claims node b; batch 3 is node a's again. All
    // three are on the wire before the first acknowledgement.
    let mut first = batch("node-a", 1, &["node-a/1/1"]);
    first.flows.push(flow("").node("node-a").build());
    let (tx, rx) = mpsc::channel(3);
    for b in [
        first,
        batch("node-b", 2, &["node-b/1/1"]),
        batch("node-a", 3, &["node-a/1/2"]),
    ] {
        tx.send(b).await.unwrap();
    }
    let mut acks = client
        .push(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The malformed flow is refused on its own; its batch is acknowledged.
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.sequence, ack.refused), (1, 1));
    // Then the foreign batch ends the stream: it is the first unacknowledged.
    let err = acks.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("batch 2 is from node \"node-b\""),
        "{err:?}"
    );
    assert_eq!(server.metrics().ingest_batches_denied.get(), 1);
    assert_eq!(server.metrics().ingest_invalid_flows.get(), 1);
    // Nothing of batch 2 is stored, nor of batch 3 (never read).
    assert_eq!(stored_ids(&*store).await, vec!["node-a/1/1".to_string()]);
    server.shutdown().await.unwrap();
}

/// Writes `contents` beside `path` and renames it over, as cert-manager's
/// Secret volumes swap files.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The certificate a new TLS connection to `target` is served.
async fn served_certificate(target: &Target) -> Vec<u8> {
    let mut connector = target.connector();
    let io = connector
        .call(tonic::transport::Uri::from_static("http://unused"))
        .await
        .unwrap();
    io.inner().peer_certificates().unwrap()[0].to_vec()
}

fn der(pem_file: &Path) -> Vec<u8> {
    let bytes = std::fs::read(pem_file).unwrap();
    netverdict_tls::pem::certificates(
        netverdict_tls::pem::Source {
            what: "certificate",
            path: pem_file,
        },
        &bytes,
    )
    .unwrap()[0]
        .to_vec()
}

#[tokio::test]
async fn rotated_files_serve_new_connections_while_open_streams_go_on() {
    let pki = TestPki::new("test CA");
    let served = pki.server();
    let (server, store) = tls_server(&pki, &served).await;
    let ca = pki.ca_file();
    let collector = target(&server, &ca, Some(&pki.collector("node-a")));
    let first = der(&served.cert);
    assert_eq!(served_certificate(&collector).await, first);

    // A push stream and a follow stream opened before the rotation.
    let mut ingest = IngestClient::new(channel(&collector).await.unwrap());
    let (tx, rx) = mpsc::channel(4);
    let mut acks = ingest
        .push(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch("node-a", 1, &["node-a/1/1"])).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 1);
    let reader = target(&server, &ca, Some(&pki.reader()));
    let mut observer = ObserverClient::new(channel(&reader).await.unwrap());
    let mut follow = observer
        .get_flows(pb::GetFlowsRequest {
            // The stored flow first (a follow alone starts from now).
            number: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        follow.message().await.unwrap().unwrap().flow.unwrap().id,
        "node-a/1/1"
    );

    // Rotate the server's certificate and key (a new key, same CA).
    let mut generation = server.tls().unwrap().generation();
    let rotated = pki.issue("rotated", "netverdict-api", None, Usage::Server);
    replace(&served.key, &std::fs::read(&rotated.key).unwrap());
    replace(&served.cert, &std::fs::read(&rotated.cert).unwrap());
    tokio::time::timeout(Duration::from_secs(20), generation.wait_for(|g| *g >= 1))
        .await
        .expect("the server reloads its files")
        .unwrap();
    // A reload may have caught the key before the certificate (a failed
    // reload, retried); either way the new certificate is now served.
    let second = der(&rotated.cert);
    assert_ne!(first, second);
    assert_eq!(served_certificate(&collector).await, second);

    // The streams opened before the rotation go on.
    tx.send(batch("node-a", 2, &["node-a/1/2"])).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 2);
    assert_eq!(
        follow.message().await.unwrap().unwrap().flow.unwrap().id,
        "node-a/1/2"
    );
    // New connections work with the new certificate.
    assert_eq!(
        push(&collector, batch("node-a", 3, &["node-a/1/3"])).await,
        Ok(3)
    );
    assert_eq!(stored_ids(&*store).await.len(), 3);

    // A rotation half done (a certificate without its key) is not taken:
    // the previous files stay in use and the failure is counted.
    let half = pki.issue("half", "netverdict-api", None, Usage::Server);
    replace(&served.cert, &std::fs::read(&half.cert).unwrap());
    let tls = server.tls().unwrap().clone();
    wait_until("a counted reload failure", WAIT, async || {
        tls.stats().snapshot().reload_failures >= 1
    })
    .await;
    assert_eq!(served_certificate(&collector).await, second);
    // ... until the key arrives.
    let before = *server.tls().unwrap().generation().borrow();
    replace(&served.key, &std::fs::read(&half.key).unwrap());
    let mut generation = server.tls().unwrap().generation();
    tokio::time::timeout(
        Duration::from_secs(20),
        generation.wait_for(|g| *g > before),
    )
    .await
    .expect("the server reloads the completed rotation")
    .unwrap();
    assert_eq!(served_certificate(&collector).await, der(&half.cert));
    drop(tx);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rotated_client_ca_admits_the_new_ca_on_new_connections_only() {
    let old = TestPki::new("old CA");
    let server_bundle = old.server();
    let (server, _store) = tls_server(&old, &server_bundle).await;
    let client_ca = server.tls().unwrap().files().client_ca.clone().unwrap();
    let trust = old.ca_file();
    let old_collector = target(&server, &trust, Some(&old.collector("node-a")));

    // A stream from a client of the old CA, open across the rotation.
    let mut ingest = IngestClient::new(channel(&old_collector).await.unwrap());
    let (tx, rx) = mpsc::channel(4);
    let mut acks = ingest
        .push(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch("node-a", 1, &["node-a/1/1"])).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 1);

    let new = TestPki::new("new CA");
    let mut generation = server.tls().unwrap().generation();
    replace(&client_ca, new.ca.cert_pem().as_bytes());
    tokio::time::timeout(Duration::from_secs(20), generation.wait_for(|g| *g >= 1))
        .await
        .expect("the server reloads its client CA")
        .unwrap();

    let new_collector = target(&server, &trust, Some(&new.collector("node-b")));
    assert_eq!(
        push(&new_collector, batch("node-b", 1, &["node-b/1/1"])).await,
        Ok(1)
    );
    let failures = handshake_failures(&server);
    push(&old_collector, batch("node-a", 5, &["node-a/2/1"]))
        .await
        .unwrap_err();
    wait_handshake_failures(&server, failures + 1).await;
    // The old stream still works.
    tx.send(batch("node-a", 2, &["node-a/1/2"])).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 2);
    drop(tx);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_server_refuses_to_start_unauthenticated_off_loopback() {
    let err = serve_shared(
        config_on("0.0.0.0:0".parse().unwrap()),
        memory(10),
        SharedState::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("the API server would listen on 0.0.0.0:0, which is not a loopback address, in plaintext"),
        "{err}"
    );
    let pki = TestPki::new("test CA");
    let served = pki.server();
    let server_only = ApiConfig {
        tls: Some(ServerTlsFiles {
            cert: served.cert.clone(),
            key: served.key.clone(),
            client_ca: None,
        }),
        ..config_on("0.0.0.0:0".parse().unwrap())
    };
    let err = serve_shared(server_only.clone(), memory(10), SharedState::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without client certificates"), "{err}");
    // --insecure allows it.
    let server = serve_shared(
        ApiConfig {
            insecure: true,
            ..server_only
        },
        memory(10),
        SharedState::default(),
    )
    .await
    .unwrap();
    server.shutdown().await.unwrap();
    // A key that is not the certificate's is named at start.
    let other = pki.issue("other", "x", None, Usage::Server);
    let err = serve_shared(
        ApiConfig {
            tls: Some(ServerTlsFiles {
                cert: served.cert.clone(),
                key: other.key.clone(),
                client_ca: None,
            }),
            ..config_on("127.0.0.1:0".parse().unwrap())
        },
        memory(10),
        SharedState::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&served.cert.display().to_string()), "{err}");
}
