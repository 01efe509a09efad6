//! The collector's Observer with mutual TLS over real handshakes on loopback
//! sockets: readers read, collectors and clients without a trusted
//! certificate are refused; without mutual TLS the Observer stays on
//! loopback; the exporter's certificate must be its own node's.

use std::net::SocketAddr;
use std::time::Duration;

use netverdict_cluster::{SharedState, Source};
use netverdict_collector::agent::{Agent, AgentConfig, AgentHandle, Error, EventSource};
use netverdict_proto::v1 as pb;
use netverdict_testing::tls::TestPki;
use netverdict_testing::{scrape, wait_until};
use netverdict_tls::certs::Bundle;
use netverdict_tls::{ClientTlsFiles, ServerTlsFiles, Target};
use pb::observer_client::ObserverClient;

fn observer_tls(node: &Bundle) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: node.cert.clone(),
        key: node.key.clone(),
        client_ca: Some(node.ca.clone()),
    }
}

async fn agent(config: AgentConfig) -> Result<AgentHandle, Error> {
    Agent::start(config).await
}

/// The sender that keeps an agent's replayed event stream open.
type Events =
    tokio::sync::mpsc::Sender<Result<netverdict_ebpf::StreamItem, netverdict_ebpf::StreamError>>;

fn config(node: &str) -> (AgentConfig, Events) {
    let (events, rx) = tokio::sync::mpsc::channel(16);
    let mut config = AgentConfig::new(node, Source::Shared(SharedState::default()));
    config.events = EventSource::Channel(rx);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    (config, events)
}

/// Asks the Observer for flows; the number returned, or the error.
async fn get_flows(addr: SocketAddr, tls: Option<ClientTlsFiles>) -> Result<usize, String> {
    let target = Target::new(&format!("127.0.0.1:{}", addr.port()), 0, tls, false)
        .map_err(|e| e.to_string())?;
    let channel = target
        .connect_default(Duration::from_secs(5))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let mut stream = ObserverClient::new(channel)
        .get_flows(pb::GetFlowsRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    let mut n = 0;
    while stream.message().await.map_err(status)?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn client(ca: &Bundle, who: Option<&Bundle>) -> Option<ClientTlsFiles> {
    Some(ClientTlsFiles {
        ca: ca.ca.clone(),
        cert: who.map(|b| b.cert.clone()),
        key: who.map(|b| b.key.clone()),
        // The collector's certificate names its node, not an address.
        server_name: Some("node-a".into()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_on_the_node_address_admits_readers_only() {
    let pki = TestPki::new("test CA");
    let node = pki.collector("node-a");
    let reader = pki.reader();
    let (mut config, _events) = config("node-a");
    config.observer_listen = Some("0.0.0.0:0".parse().unwrap());
    config.tls = Some(observer_tls(&node));
    let agent = agent(config)
        .await
        .expect("mutual TLS may listen on every address");
    let addr = agent.observer_addr().unwrap();
    assert!(addr.ip().is_unspecified());

    assert_eq!(get_flows(addr, client(&node, Some(&reader))).await, Ok(0));
    let err = get_flows(addr, client(&node, Some(&node)))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("PermissionDenied: Observer: the client certificate CN=\"node-a\" (groups: netverdict:collectors) is not in group netverdict:readers"),
        "{err}"
    );
    // No client certificate, and plaintext: refused at the handshake.
    get_flows(addr, client(&node, None)).await.unwrap_err();
    get_flows(addr, None).await.unwrap_err();
    let metrics = agent.metrics_addr().unwrap();
    wait_until(
        "two handshake failures counted",
        Duration::from_secs(20),
        async || {
            scrape(metrics)
                .await
                .value("netverdict_collector_observer_tls_handshake_failures_total")
                >= 2.0
        },
    )
    .await;
    assert!(
        scrape(metrics)
            .await
            .value("netverdict_collector_observer_tls_handshakes_total")
            >= 2.0
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_mutual_tls_the_observer_stays_on_loopback() {
    let (config_default, _e) = config("node-a");
    assert_eq!(
        config_default.observer_listen,
        Some("127.0.0.1:4254".parse().unwrap())
    );
    let (mut plaintext, _e) = config("node-a");
    plaintext.observer_listen = Some("0.0.0.0:0".parse().unwrap());
    let err = agent(plaintext).await.unwrap_err().to_string();
    assert!(
        err.starts_with("the collector's Observer would listen on 0.0.0.0:0, which is not a loopback address, in plaintext"),
        "{err}"
    );
    let (mut insecure, _e) = config("node-a");
    insecure.insecure = true;
    insecure.observer_listen = Some("0.0.0.0:0".parse().unwrap());
    let agent = agent(insecure).await.expect("--insecure allows it");
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_exporter_certificate_must_name_this_node() {
    let pki = TestPki::new("test CA");
    let other = pki.collector("node-b");
    let (mut config, _e) = config("node-a");
    config.observer_listen = None;
    config.export_to("https://localhost:4255");
    if let Some(export) = &mut config.export {
        export.tls = client(&other, Some(&other));
    }
    let err = agent(config).await.unwrap_err().to_string();
    assert!(
        err.contains("is node \"node-b\"'s but this collector is node \"node-a\""),
        "{err}"
    );
}
