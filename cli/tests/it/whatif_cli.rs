//! `netverdict whatif` as a process: the seed's default-deny rollout replayed
//! from a flows file and from a running API server (in-process, memory store,
//! over loopback gRPC, with more flows than one page and many at one instant),
//! DNS denials first, JSON lines, exit statuses, bad rollouts naming what is
//! wrong.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer, MemoryStore, serve_shared};
use netverdict_cluster::SharedState;
use netverdict_policy::ClusterState;
use netverdict_proto::v1 as pb;

use crate::support::{netverdict, run};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

fn seed(file: &str) -> String {
    format!("{SEED}/{file}")
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const FLOWS: &str = r#"{"src":"default/np-client","dst":"10.244.0.10","port":53,"protocol":"UDP"}
{"src":"default/np-client","dst":"kube-system/coredns","port":53,"protocol":"UDP"}
{"src":"shop/np-client","dst":"default/api","port":8080}
{"src":"default/np-client","dst":"default/api","port":8080}
{"src":"kube-system/coredns","dst":"default/api","port":9999}
"#;

#[test]
fn whatif_replays_a_flows_file() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(&flows, FLOWS).unwrap();
    let flows = flows.to_str().unwrap();
    let cluster = seed("cluster.yaml");
    let deny = seed("policies/default-deny.yaml");
    let api = seed("policies/api-from-web.yaml");
    let base = ["whatif", "--cluster", &cluster, "--flows", flows];

    let out = netverdict(&[&base[..], &["--policies", &deny, &api, "-o", "json"]].concat());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    // DNS first: two lines of np-client's queries in one group.
    assert_eq!(lines[0]["src"], "default/Pod/np-client", "{lines:#?}");
    assert_eq!(lines[0]["dst"], "kube-system/Pod/coredns");
    assert_eq!(lines[0]["port"], 53);
    assert_eq!(lines[0]["protocol"], "UDP");
    assert_eq!(lines[0]["before"], "allow");
    assert_eq!(lines[0]["after"], "deny");
    assert_eq!(lines[0]["count"], 2);
    assert_eq!(lines[0]["dns"], true);
    assert_eq!(
        lines[0]["denied_by"],
        serde_json::json!(["default/default-deny"])
    );
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("default/default-deny"),
        "{}",
        lines[0]
    );
    // Every other change is a denial of a non-DNS flow, and the allowed
    // frontend in default is not among them (api-from-web lets it in, but
    // default-deny stops its egress: it is denied too).
    assert!(
        lines[1..]
            .iter()
            .all(|l| l["dns"] == false && l["after"] == "deny"),
        "{lines:#?}"
    );
    let pairs: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                format!(
                    "{} -> {}",
                    l["src"].as_str().unwrap(),
                    l["dst"].as_str().unwrap()
                ),
                l["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        pairs.contains(&("shop/Pod/np-client -> default/Pod/api".into(), 8080)),
        "{pairs:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:#?}");

    // The text: the DNS heading comes first.
    let out = netverdict(&[&base[..], &["--policies", &deny, &api]].concat());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("After this rollout these pods can no longer resolve names"),
        "{text}"
    );
    assert!(
        text.contains("5 flows replayed: 4 groups change (4 newly denied, 0 newly allowed)"),
        "{text}"
    );

    // With DNS allowed as well, DNS is no longer among the changes.
    let dns = seed("policies/allow-dns-egress.yaml");
    let out = netverdict(&[&base[..], &["--policies", &deny, &api, &dns, "-o", "json"]].concat());
    let lines = json_lines(&out);
    assert!(lines.iter().all(|l| l["dns"] == false), "{lines:#?}");

    // Deleting a policy the cluster does not have, or a non-policy, fails (2).
    let out = netverdict(&[&base[..], &["--delete", "default/nope"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("default/nope: no such policy in the cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = netverdict(&[&base[..], &["--policies", &cluster]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a policy"));
    // Nothing changes: exit 0.
    let cluster_with_deny = [&cluster[..], &deny[..]];
    let out = netverdict(&[
        "whatif",
        "--cluster",
        cluster_with_deny[0],
        "--cluster",
        cluster_with_deny[1],
        "--flows",
        flows,
        "--policies",
        &deny,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 flows replayed: 0 groups change"));
    // Deleting it again is what the rollout undoes: deny -> allow, exit 0.
    let out = netverdict(&[
        "whatif",
        "--cluster",
        &cluster,
        "--cluster",
        &deny,
        "--flows",
        flows,
        "--delete",
        "default/default-deny",
        "-o",
        "jsonl",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out);
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l["before"] == "deny" && l["after"] == "allow"),
        "{lines:#?}"
    );
}

fn endpoint(ns: &str, name: &str, ip: &str, port: u32) -> Option<pb::Endpoint> {
    Some(pb::Endpoint {
        kind: pb::EndpointKind::Pod as i32,
        ip: ip.into(),
        namespace: ns.into(),
        pod_name: name.into(),
        workload: name.into(),
        port,
        ..Default::default()
    })
}

/// 11,000 DNS queries stored at one instant (more than a page), 1,000 flows
/// to the api at distinct later instants, and a second observation that
/// replay must not count twice.
fn stored_flows(now: SystemTime) -> Vec<pb::Flow> {
    let at = |t: SystemTime| Some(netverdict_proto::time::timestamp(t));
    let instant = now - Duration::from_secs(600);
    let base = pb::Flow {
        count: 1,
        node_name: "node-a".into(),
        verdict: pb::Verdict::Allowed as i32,
        outcome: pb::Outcome::Answered as i32,
        ..Default::default()
    };
    let mut flows = Vec::new();
    for i in 0..11_000u32 {
        flows.push(pb::Flow {
            id: format!("node-a/1/{i}"),
            first_seen: at(instant),
            last_seen: at(instant),
            protocol: pb::Protocol::Udp as i32,
            source: endpoint("default", "np-client", "10.244.1.20", 40000 + i % 20000),
            destination: endpoint("kube-system", "coredns", "10.244.0.10", 53),
            ..base.clone()
        });
    }
    for i in 0..1_000u32 {
        let t = instant + Duration::from_millis(u64::from(i) + 1);
        flows.push(pb::Flow {
            id: format!("node-a/2/{i}"),
            first_seen: at(t),
            last_seen: at(t),
            protocol: pb::Protocol::Tcp as i32,
            count: 2,
            source: endpoint("shop", "np-client", "10.244.2.20", 40000),
            destination: endpoint("default", "api", "10.244.1.10", 8080),
            ..base.clone()
        });
    }
    flows.push(pb::Flow {
        id: "node-b/1/1".into(),
        first_seen: at(instant),
        last_seen: at(instant),
        protocol: pb::Protocol::Tcp as i32,
        counted_elsewhere: true,
        observation_point: pb::ObservationPoint::Destination as i32,
        source: endpoint("shop", "np-client", "10.244.2.20", 40000),
        destination: endpoint("default", "api", "10.244.1.10", 8080),
        node_name: "node-b".into(),
        ..base
    });
    flows
}

async fn server(flows: Vec<pb::Flow>) -> (ApiServer, String) {
    let store = Arc::new(MemoryStore::new(Default::default()).unwrap());
    for batch in flows.chunks(2_000) {
        store.insert(batch.to_vec()).await.unwrap();
    }
    let server = serve_shared(
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            ..Default::default()
        },
        store,
        SharedState::new(ClusterState::new()),
    )
    .await
    .unwrap();
    let addr = server.grpc_addr().to_string();
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatif_replays_the_api_servers_flows_page_by_page() {
    let (server, addr) = server(stored_flows(SystemTime::now())).await;
    let cluster = seed("cluster.yaml");
    let deny = seed("policies/default-deny.yaml");
    let args = |extra: &[&str]| -> Vec<String> {
        [
            "whatif",
            "--server",
            &addr,
            "--cluster",
            &cluster,
            "--policies",
            &deny,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let out = run(args(&["--since", "1h", "-o", "json"])).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["src"], "default/np-client");
    assert_eq!(lines[0]["dst"], "kube-system/coredns");
    assert_eq!(lines[0]["dns"], true);
    assert_eq!(
        lines[0]["count"], 11_000,
        "each stored flow once: {}",
        lines[0]
    );
    assert_eq!(
        lines[0]["denied_by"],
        serde_json::json!(["default/default-deny"])
    );
    assert_eq!(lines[1]["src"], "shop/np-client");
    assert_eq!(lines[1]["dst"], "default/api");
    assert_eq!(
        lines[1]["count"], 2_000,
        "the second observation is not counted: {}",
        lines[1]
    );
    assert_eq!(lines[1]["flows"], 1_000);

    let out = run(args(&["--since", "1h"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("After this rollout these pods can no longer resolve names"),
        "{text}"
    );
    assert!(text.contains("12000 flows replayed"), "{text}");
    assert!(text.contains("1 stored flows not replayable"), "{text}");

    // A window that ends before the flows: nothing to replay, exit 0.
    let out = run(args(&["--since", "2h", "--until", "1h"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 flows replayed"));
    drop(server);
}

#[test]
fn whatif_needs_flows_and_a_rollout() {
    let cluster = seed("cluster.yaml");
    let out = netverdict(&["whatif", "--cluster", &cluster, "--delete", "default/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flows FILE, or --server ADDR"));
    let out = netverdict(&["whatif", "--cluster", &cluster, "--flows", "-"]);
    assert_eq!(out.status.code(), Some(2));
}
