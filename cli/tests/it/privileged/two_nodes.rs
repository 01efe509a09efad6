//! Two-node labs end to end (as root): one collector agent per node, each
//! keeping only its node's network namespaces (as a real node's collector
//! sees only its node), all exporting to one API server over gRPC, with real
//! eBPF probes and real traffic. A connection seen at both ends counts once in
//! the reports and the ClickHouse rollups; the kernel's contradictions of the
//! policy (all three mismatches) show under nftables and under tc
//! enforcement; Service traffic is judged at the backend it reached. Skipped
//! without root (one line says so); as root, fails (never skips) without the
//! lab's tools or ClickHouse.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer, MemoryConfig, MemoryStore};
use netverdict_cluster::{SharedState, Source};
use netverdict_collector::agent::{Agent, AgentConfig, AgentHandle};
use netverdict_collector::aggregate::Windows;
use netverdict_lab::lab::NODE_IP;
use netverdict_lab::{Enforcement, Lab, Outcome};
use netverdict_policy::{ClusterState, LoadOptions, Manifests, PodKey, Protocol};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::flow::{describe, describe_all, who};
use netverdict_testing::grpc::get_flows;
use netverdict_testing::lab::TestLab;
use netverdict_testing::{require_root, wait_until};

/// `client` on node-0; `server` (8080, 9090) and `silent` (8080) on node-1.
const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: node-0, containers: [{name: c, image: x}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: app, labels: {app: server}}
  spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: silent, namespace: app, labels: {app: silent}}
  spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
"#;

/// The server admits the client on 8080 only: enforced at the server's node.
const SERVER_8080_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-8080-only, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 8080}]
"#;

/// The client may send to 8080 only: enforced at the client's node.
const CLIENT_EGRESS_8080: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-8080, namespace: app}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 8080}]
"#;

/// The server admits the client on 9090 only (the collector's view in the
/// mismatch test, which the lab does not enforce).
const SERVER_9090_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-9090-only, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 9090}]
"#;

/// A Service of three backends over both nodes, only `api-2` admitting the
/// client.
const THREE_BACKENDS: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: node-0, containers: [{name: c, image: x}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-0, namespace: app, labels: {app: api, slot: "0"}}
  spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-1, namespace: app, labels: {app: api, slot: "1"}}
  spec: {nodeName: node-0, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-2, namespace: app, labels: {app: api, slot: "2"}}
  spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: app}
  spec:
    clusterIP: 10.96.7.7
    selector: {app: api}
    ports: [{port: 80, protocol: TCP, targetPort: 8080}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: only-slot-2, namespace: app}
  spec:
    podSelector: {matchLabels: {app: api, slot: "2"}}
    policyTypes: [Ingress]
    ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{port: 8080}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-slots-0-1, namespace: app}
  spec:
    podSelector: {matchExpressions: [{key: slot, operator: In, values: ["0", "1"]}]}
    policyTypes: [Ingress]
"#;

const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A two-node lab of `yaml` (and `policies`), with its cleanup guard.
fn lab_up(tag: &str, enforcement: Enforcement, yaml: &str, policies: &[&str]) -> (Lab, TestLab) {
    let guard = TestLab::new(tag);
    let mut options = guard.options(&[env!("CARGO_BIN_EXE_netverdict"), "lab", "serve"]);
    options.nodes = 2;
    options.enforcement = enforcement;
    options.dns = false;
    let started = Instant::now();
    let mut objects = netverdict_lab::objects::parse_objects(yaml).expect("cluster");
    for p in policies {
        objects.extend(netverdict_lab::objects::parse_objects(p).expect("policy"));
    }
    let lab = Lab::up_objects(objects, &options).expect("lab up");
    eprintln!(
        "two-node lab {} up ({}) in {:.2} s",
        lab.name(),
        enforcement.as_str(),
        started.elapsed().as_secs_f64()
    );
    (lab, guard)
}

/// The collectors' view: the lab's objects (nodes, pods on them) without the
/// policies named in `drop`, with `extra` added.
fn collector_state(lab: &Lab, drop: &[&str], extra: &[&str]) -> ClusterState {
    let items: Vec<&serde_json::Value> = lab
        .state()
        .objects
        .iter()
        .filter(|o| {
            !(o["kind"] == "NetworkPolicy" && drop.iter().any(|d| o["metadata"]["name"] == *d))
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let mut manifests = Manifests::default();
    manifests.read_str(std::path::Path::new("<lab>"), &list.to_string());
    for (i, e) in extra.iter().enumerate() {
        manifests.read_str(std::path::Path::new(&format!("<extra {i}>")), e);
    }
    let (mut state, errors) = ClusterState::from_manifests(manifests, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    state.set_local_node_ips([IpAddr::V4(NODE_IP)]);
    state
}

/// One collector per lab node and the API server they export to.
struct Cluster {
    api: ApiServer,
    server: String,
    agents: Vec<AgentHandle>,
}

async fn collectors<S: Store>(lab: &Lab, state: ClusterState, store: S) -> Cluster {
    let shared = SharedState::new(state);
    let api = netverdict_api::serve(
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            ..ApiConfig::default()
        },
        store,
        shared.clone(),
    )
    .await
    .expect("API server");
    let server = format!("http://{}", api.grpc_addr());
    let mut agents = Vec::new();
    for (node, names) in lab.namespaces_by_node() {
        let mut config = AgentConfig::new(&node.name, Source::Shared(shared.clone()));
        config.export_to(server.clone());
        config.observer_listen = None;
        config.metrics_listen = None;
        config.cluster.local_node_ips = vec![IpAddr::V4(NODE_IP), node.ip];
        config.pipeline.windows = Windows {
            allowed: Duration::from_secs(3600),
            denied: Duration::from_secs(3600),
        };
        config.pipeline.netns = Some(
            names
                .iter()
                .map(|n| {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::metadata(format!("/run/netns/{n}"))
                        .unwrap_or_else(|e| panic!("netns {n}: {e}"))
                        .ino() as u32
                })
                .collect(),
        );
        agents.push(Agent::start(config).await.expect("collector"));
    }
    Cluster {
        api,
        server,
        agents,
    }
}

impl Cluster {
    /// Every flow the API server stores.
    async fn stored(&self) -> Vec<pb::Flow> {
        get_flows(&self.server, pb::GetFlowsRequest::default())
            .await
            .expect("GetFlows")
    }

    /// Flushes every collector until the stored flows satisfy `done`, or
    /// fails after 60 s listing them.
    async fn flush_until(&self, what: &str, done: impl Fn(&[pb::Flow]) -> bool) -> Vec<pb::Flow> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for agent in &self.agents {
                agent.flush().await.expect("flush");
            }
            let flows = self.stored().await;
            if done(&flows) {
                return flows;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 60 s; flows:\n{}",
                describe_all(&flows)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn denied(&self) -> Vec<pb::DeniedGroup> {
        let mut query = pb::query_client::QueryClient::connect(self.server.clone())
            .await
            .expect("query");
        query
            .denied(pb::ReportRequest::default())
            .await
            .expect("Denied")
            .into_inner()
            .groups
    }

    async fn stop(self) {
        for agent in self.agents {
            agent.shutdown().await.expect("collector shutdown");
        }
        self.api.shutdown().await.expect("API shutdown");
    }
}

fn probe(lab: &Lab, from: &str, to: IpAddr, port: u16) -> Outcome {
    let (ns, name) = from.split_once('/').unwrap();
    tokio::task::block_in_place(|| {
        lab.probe(
            &PodKey::new(ns, name),
            to,
            port,
            Protocol::Tcp,
            PROBE_TIMEOUT,
        )
    })
    .expect("probe")
}

fn pod_ip(lab: &Lab, pod: &str) -> IpAddr {
    let (ns, name) = pod.split_once('/').unwrap();
    lab.pod(&PodKey::new(ns, name)).expect("pod").ip
}

/// Records of account from `src` to `dst:port`.
fn counted<'a>(flows: &'a [pb::Flow], dst: &str, port: u32) -> impl Iterator<Item = &'a pb::Flow> {
    let dst = dst.to_string();
    flows.iter().filter(move |f| {
        !f.counted_elsewhere
            && who(&f.destination) == dst
            && f.destination.as_ref().is_some_and(|d| d.port == port)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_connections_across_two_nodes_count_n_in_denied_and_in_the_rollups() {
    if !require_root() {
        return;
    }
    const N: u64 = 5;
    let (lab, _guard) = lab_up("count", Enforcement::Nftables, CLUSTER, &[SERVER_8080_ONLY]);
    let state = collector_state(&lab, &[], &[]);
    let db = TestDb::shared();
    let store = db.connect().await;
    let cluster = collectors(&lab, state, store).await;
    let server = pod_ip(&lab, "app/server");
    for _ in 0..N {
        assert_eq!(probe(&lab, "app/client", server, 8080), Outcome::Succeeded);
        assert_eq!(probe(&lab, "app/client", server, 9090), Outcome::TimedOut);
    }
    // Both ends of each connection are stored: the client's node saw the
    // connects, the server's node the accepted connections and the drops.
    let flows = cluster
        .flush_until("both ends of every connection", |flows| {
            let sum = |port, elsewhere: bool, outcome: pb::Outcome| -> u64 {
                flows
                    .iter()
                    .filter(|f| {
                        who(&f.destination) == "app/server"
                            && f.destination.as_ref().is_some_and(|d| d.port == port)
                            && f.counted_elsewhere == elsewhere
                            && f.outcome() == outcome
                    })
                    .map(|f| f.count)
                    .sum()
            };
            sum(8080, false, pb::Outcome::Established) == N
                && sum(8080, true, pb::Outcome::Established) == N
                && sum(9090, false, pb::Outcome::NoAnswer) == N
                && sum(9090, true, pb::Outcome::Dropped) == N
        })
        .await;
    // (Replies dropped after a connection closed are records too, of the
    // server's packets: only the client's connections are checked here.)
    for f in flows.iter().filter(|f| who(&f.source) == "app/client") {
        let expected = if f.node_name == "node-0" {
            pb::ObservationPoint::Source
        } else {
            pb::ObservationPoint::Destination
        };
        assert_eq!(f.observation_point(), expected, "{}", describe(f));
    }
    let drops_on_node_1: u64 = flows
        .iter()
        .filter(|f| f.node_name == "node-1")
        .map(|f| f.drop_count)
        .sum();
    assert!(drops_on_node_1 >= N, "every SYN to 9090 dropped on node-1");

    // The denied report counts each connection once.
    let denied = cluster.denied().await;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!((denied[0].count, denied[0].destination_port), (N, 9090));
    assert_eq!(
        denied[0].outcome,
        pb::Outcome::NoAnswer as i32,
        "the client's view"
    );

    // So do the rollups; drops are counted on the node that dropped.
    let sql = format!(
        "SELECT (SELECT sum(attempts) FROM {d}.flows_by_minute WHERE dst_port = 8080), \
         (SELECT sum(attempts) FROM {d}.flows_by_minute WHERE dst_port = 9090), \
         (SELECT sum(attempts) FROM {d}.denied_by_minute), \
         (SELECT sum(drops) FROM {d}.flows_by_minute WHERE node = 'node-1')",
        d = db.name
    );
    let want = format!("{N}\t{N}\t{N}\t{drops_on_node_1}\n");
    let what = format!("the rollups to hold {want:?}");
    wait_until(&what, Duration::from_secs(30), async || {
        db.sql(&sql) == want
    })
    .await;
    cluster.stop().await;
}

/// The three mismatches across two nodes, the lab enforcing with
/// `enforcement`. The collectors judge by a view of the cluster that differs
/// from what the lab enforces: the lab enforces client-egress-8080 (which the
/// collectors do not know), the collectors know server-9090-only (which the
/// lab does not enforce).
async fn mismatches_under(enforcement: Enforcement, drop_reason: &str) {
    let (lab, _guard) = lab_up("mis", enforcement, CLUSTER, &[CLIENT_EGRESS_8080]);
    let state = collector_state(&lab, &["client-egress-8080"], &[SERVER_9090_ONLY]);
    let cluster = collectors(
        &lab,
        state,
        MemoryStore::new(MemoryConfig::default()).unwrap(),
    )
    .await;
    let (server, silent) = (pod_ip(&lab, "app/server"), pod_ip(&lab, "app/silent"));
    // The silent pod exists but lost its address: what reaches it is dropped
    // by its stack, never answered.
    let silent_netns = lab
        .pod(&PodKey::new("app", "silent"))
        .unwrap()
        .netns
        .clone();
    netverdict_lab::sys::ip_batch(
        Some(&silent_netns),
        &format!("addr del {silent}/32 dev eth0\n"),
        false,
    )
    .expect("silence the pod");

    // Denied by the collectors' policies, let through by the kernel.
    assert_eq!(probe(&lab, "app/client", server, 8080), Outcome::Succeeded);
    // Allowed by the collectors' policies, dropped on the client's node.
    assert_eq!(probe(&lab, "app/client", server, 9090), Outcome::TimedOut);
    // Allowed, the peer exists, no answer and no enforcing drop.
    assert_eq!(probe(&lab, "app/client", silent, 8080), Outcome::TimedOut);

    let flows = cluster
        .flush_until("the three mismatches", |flows| {
            counted(flows, "app/server", 8080)
                .any(|f| f.mismatch() == pb::Mismatch::AllowedThoughDenied)
                && counted(flows, "app/server", 9090)
                    .any(|f| f.mismatch() == pb::Mismatch::DroppedThoughAllowed)
                && counted(flows, "app/silent", 8080)
                    .any(|f| f.mismatch() == pb::Mismatch::NoAnswerThoughAllowed)
        })
        .await;
    let dropped = counted(&flows, "app/server", 9090).next().unwrap();
    assert_eq!(dropped.drop_reason, drop_reason, "{}", describe(dropped));
    assert_eq!(
        dropped.node_name, "node-0",
        "egress is enforced on the client's node"
    );
    // Each connection has one mismatch, on its record of account.
    let mismatched: Vec<&pb::Flow> = flows
        .iter()
        .filter(|f| f.mismatch() != pb::Mismatch::None)
        .collect();
    assert_eq!(
        mismatched.len(),
        3,
        "{:#?}",
        mismatched.iter().map(|f| describe(f)).collect::<Vec<_>>()
    );
    assert!(
        mismatched
            .iter()
            .all(|f| !f.counted_elsewhere && f.count == 1)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mismatches_across_two_nodes_under_nftables() {
    if !require_root() {
        return;
    }
    mismatches_under(Enforcement::Nftables, "NETFILTER_DROP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mismatches_across_two_nodes_under_tc() {
    if !require_root() {
        return;
    }
    mismatches_under(Enforcement::Tc, "TC_EGRESS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_traffic_is_judged_at_the_backend_the_kernel_chose() {
    if !require_root() {
        return;
    }
    const CONNECTIONS: usize = 30;
    let (lab, _guard) = lab_up("svc", Enforcement::Tc, THREE_BACKENDS, &[]);
    let state = collector_state(&lab, &[], &[]);
    let cluster = collectors(
        &lab,
        state,
        MemoryStore::new(MemoryConfig::default()).unwrap(),
    )
    .await;
    let service: IpAddr = "10.96.7.7".parse().unwrap();
    let started = SystemTime::now();
    let mut succeeded = 0;
    for _ in 0..CONNECTIONS {
        if probe(&lab, "app/client", service, 80) == Outcome::Succeeded {
            succeeded += 1;
        }
    }
    assert!(
        (1..CONNECTIONS).contains(&succeeded),
        "random backends: some connections reach api-2, some not ({succeeded})"
    );
    let through_service = |flows: &[pb::Flow]| -> Vec<pb::Flow> {
        flows
            .iter()
            .filter(|f| !f.counted_elsewhere && f.service == "app/api")
            .cloned()
            .collect()
    };
    let flows = cluster
        .flush_until(
            "a record of every connection through the Service",
            |flows| {
                through_service(flows).iter().map(|f| f.count).sum::<u64>() == CONNECTIONS as u64
            },
        )
        .await;
    let records = through_service(&flows);
    let mut by_backend = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for f in &records {
        let backend = who(&f.destination);
        assert!(
            ["app/api-0", "app/api-1", "app/api-2"].contains(&backend.as_str()),
            "the backend is known: {}",
            describe(f)
        );
        let allowed = backend == "app/api-2";
        let want = if allowed {
            pb::Verdict::Allowed
        } else {
            pb::Verdict::Denied
        };
        assert_eq!(f.verdict(), want, "{}", describe(f));
        assert_eq!(f.mismatch(), pb::Mismatch::None, "{}", describe(f));
        let e = by_backend.entry(backend).or_default();
        if f.outcome() == pb::Outcome::Established {
            assert!(allowed, "{}", describe(f));
            e.0 += f.count;
        } else {
            e.1 += f.count;
        }
    }
    assert_eq!(
        by_backend.get("app/api-2").map_or(0, |e| e.0),
        succeeded as u64,
        "every established connection reached api-2: {by_backend:?}"
    );
    eprintln!(
        "{CONNECTIONS} connections through the Service since {started:?}: {by_backend:?} (established, not)"
    );
    cluster.stop().await;
}
