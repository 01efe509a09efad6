//! Privileged lab tests: real namespaces, real nftables, real traffic, compared
//! with the policy engine. They need root, `ip` (iproute2), `nft` (nftables)
//! and `dnsmasq` (dnsmasq-base) and FAIL (never skip) without them.
//!
//! Each test runs its own lab, named after the test process and a counter, and
//! brought down by a guard even when the test panics; tests run in parallel.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netverdict_lab::generate::random_cluster;
use netverdict_lab::lab::{STATE_ROOT, prefix};
use netverdict_lab::{
    DnsAnswer, DownOnDrop, Enforcement, Lab, LabOptions, LabelTarget, Outcome, Unenforced,
};
use netverdict_policy::{PodKey, Protocol};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const SERVER: &str = env!("CARGO_BIN_EXE_nv-lab");
const TIMEOUT: Duration = Duration::from_millis(400);

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed")
}

/// A unique lab name and the guard that brings it down.
fn new_lab(tag: &str) -> (LabOptions, DownOnDrop) {
    if let Err(e) = netverdict_lab::preflight(true) {
        panic!("lab tests need root and iproute2, nftables, dnsmasq-base: {e}");
    }
    let name = format!(
        "t{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let options = LabOptions::new(&name, vec![SERVER.into(), "serve".into()]);
    let guard = DownOnDrop {
        name,
        state_root: PathBuf::from(STATE_ROOT),
    };
    (options, guard)
}

fn key(s: &str) -> PodKey {
    let (ns, name) = s.split_once('/').expect("namespace/name");
    PodKey::new(ns, name)
}

/// Probes the whole matrix on each port and fails with every difference, the
/// policies and both answers.
fn assert_matches_engine(lab: &Lab, ports: &[(u16, Protocol)], context: &str) -> [usize; 2] {
    let mut report = String::new();
    let mut counts = [0, 0];
    for &(port, protocol) in ports {
        let mut matrix = lab.matrix(port, protocol, TIMEOUT).expect("matrix");
        if !lab.differences(&matrix).is_empty() {
            // A short timeout is the "denied" observation; on a busy machine an
            // allowed answer can be late, so differences are confirmed with a
            // long one before they count.
            matrix = lab
                .matrix(port, protocol, Duration::from_secs(3))
                .expect("matrix");
        }
        for cell in matrix.cells.iter().flatten() {
            counts[usize::from(cell.reached())] += 1;
        }
        for d in lab.differences(&matrix) {
            report.push_str(&format!("{d}\n"));
        }
    }
    if !report.is_empty() {
        let policies: Vec<&serde_json::Value> = lab
            .state()
            .objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        panic!(
            "{context}: the kernel and the policy engine disagree:\n{report}\npolicies:\n{}\nnft ruleset:\n{}",
            serde_json::to_string_pretty(&policies).unwrap_or_default(),
            lab.ruleset()
        );
    }
    counts
}

const SEED_PORTS: [(u16, Protocol); 4] = [
    (8080, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (53, Protocol::Udp),
    (53, Protocol::Tcp),
];

#[test]
fn seed_scenario_matches_engine_and_updates_in_place() {
    let (options, _guard) = new_lab("seed");
    let mut lab = Lab::up(&[seed_dir().join("cluster.yaml")], &options).expect("lab up");
    assert_matches_engine(&lab, &SEED_PORTS, "seed, no policies");

    lab.apply(&[seed_dir().join("policies")])
        .expect("apply policies");
    assert_eq!(lab.cluster().policy_count(), 3);
    assert_matches_engine(&lab, &SEED_PORTS, "seed with its three policies");

    let api = lab.pod(&key("default/api")).expect("api").ip;
    // default/np-client's egress is isolated by default-deny: even with
    // api-from-web, 8080 is not reachable (the seed's isolation test).
    let client = key("default/np-client");
    let out = lab
        .probe(&client, api, 8080, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::TimedOut);

    // shop/np-client is not isolated, but shop is not team=web.
    let shop = key("shop/np-client");
    let out = lab
        .probe(&shop, api, 8080, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::TimedOut);
    // Labelling shop team=web admits it, in place.
    lab.label(&LabelTarget::Namespace("shop".into()), &["team=web".into()])
        .expect("label");
    let out = lab
        .probe(&shop, api, 8080, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::Succeeded);
    assert_matches_engine(&lab, &SEED_PORTS, "seed, shop labelled team=web");
    // Relabelling the client out of role=frontend denies it again.
    lab.label(&LabelTarget::Pod(shop.clone()), &["role-".into()])
        .expect("label");
    let out = lab
        .probe(&shop, api, 8080, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::TimedOut);

    // "The CNI does not enforce": leaving default unenforced opens everything
    // there, while the engine (which reads the policies) still denies it.
    lab.set_unenforced(Unenforced {
        namespaces: BTreeSet::from(["default".to_string()]),
        policies: BTreeSet::new(),
    })
    .expect("unenforce");
    let out = lab
        .probe(&client, api, 5432, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::Succeeded);
    let (allowed, _) = lab.verdict("default/np-client", "default/api", 5432, Protocol::Tcp);
    assert!(
        !allowed,
        "the engine still denies what the unenforcing lab lets through"
    );
    lab.set_unenforced(Unenforced::default()).expect("enforce");
    let out = lab
        .probe(&client, api, 5432, Protocol::Tcp, TIMEOUT)
        .expect("probe");
    assert_eq!(out, Outcome::TimedOut);
}

#[test]
fn dns_breaks_under_default_deny_egress_and_recovers() {
    let (options, _guard) = new_lab("dns");
    let mut lab = Lab::up(&[seed_dir().join("cluster.yaml")], &options).expect("lab up");
    let client = key("default/np-client");
    let name = "kubernetes.default.svc.cluster.local";
    let answer = lab.dns(&client, name, TIMEOUT).expect("dns");
    assert_eq!(
        answer,
        DnsAnswer::Addresses(vec!["10.96.0.1".parse().unwrap()])
    );
    let answer = lab
        .dns(&client, "api.default.svc.cluster.local", TIMEOUT)
        .expect("dns");
    assert_eq!(
        answer,
        DnsAnswer::Addresses(vec!["10.96.1.10".parse().unwrap()])
    );
    let answer = lab
        .dns(&client, "nothing.default.svc.cluster.local", TIMEOUT)
        .expect("dns");
    assert_eq!(answer, DnsAnswer::NxDomain);
    let answer = lab
        .dns_with(
            &client,
            "10-244-1-10.default.pod.cluster.local",
            hickory_proto::rr::RecordType::A,
            true,
            TIMEOUT,
        )
        .expect("dns over tcp");
    assert_eq!(
        answer,
        DnsAnswer::Addresses(vec!["10.244.1.10".parse().unwrap()])
    );

    lab.apply(&[seed_dir().join("policies/default-deny.yaml")])
        .expect("default-deny");
    assert_eq!(
        lab.dns(&client, name, TIMEOUT).expect("dns"),
        DnsAnswer::TimedOut
    );
    // The shop namespace has no policy: its DNS still works.
    let shop = key("shop/np-client");
    assert!(matches!(
        lab.dns(&shop, name, TIMEOUT).expect("dns"),
        DnsAnswer::Addresses(_)
    ));
    // Name-based probes fail at DNS, as `nc api.default 8080` would.
    assert!(lab.resolve_target(&client, "api.default", TIMEOUT).is_err());

    lab.apply(&[seed_dir().join("policies/allow-dns-egress.yaml")])
        .expect("allow-dns");
    assert_eq!(
        lab.dns(&client, name, TIMEOUT).expect("dns"),
        DnsAnswer::Addresses(vec!["10.96.0.1".parse().unwrap()])
    );
    let ip = lab
        .resolve_target(&client, "api.default", TIMEOUT)
        .expect("resolves again");
    assert_eq!(ip, "10.96.1.10".parse::<IpAddr>().unwrap());
}

const SERVICE_CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: backend, namespace: app, labels: {app: backend}}
  spec:
    containers:
    - name: c
      image: x
      ports:
      - {name: web, containerPort: 8080, protocol: TCP}
      - {name: admin, containerPort: 9090, protocol: TCP}
- apiVersion: v1
  kind: Pod
  metadata: {name: backend-2, namespace: app, labels: {app: backend}}
  spec:
    containers:
    - name: c
      image: x
      ports:
      - {name: web, containerPort: 8080, protocol: TCP}
      - {name: admin, containerPort: 9090, protocol: TCP}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {containers: [{name: c, image: x}]}
- apiVersion: v1
  kind: Service
  metadata: {name: backend, namespace: app}
  spec:
    clusterIP: 10.96.5.5
    selector: {app: backend}
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: web}
    - {name: admin, port: 81, protocol: TCP, targetPort: 9090}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: backend-web-only, namespace: app}
  spec:
    podSelector: {matchLabels: {app: backend}}
    policyTypes: [Ingress]
    ingress:
    - ports: [{protocol: TCP, port: 8080}]
"#;

#[test]
fn service_dnat_is_policed_at_the_backend_target_port() {
    let (options, _guard) = new_lab("svc");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, SERVICE_CLUSTER).expect("write");
    let lab = Lab::up(&[path], &options).expect("lab up");
    let client = key("app/client");
    let svc: IpAddr = "10.96.5.5".parse().unwrap();
    // Port 80 → named targetPort web (8080), which the policy allows.
    assert_eq!(
        lab.probe(&client, svc, 80, Protocol::Tcp, TIMEOUT)
            .expect("probe"),
        Outcome::Succeeded
    );
    // Port 81 → 9090, which the policy does not allow: dropped at the backend.
    assert_eq!(
        lab.probe(&client, svc, 81, Protocol::Tcp, TIMEOUT)
            .expect("probe"),
        Outcome::TimedOut
    );
    // By name through the cluster DNS, like `nc backend.app 80`.
    let ip = lab
        .resolve_target(&client, "backend.app", TIMEOUT)
        .expect("resolve");
    assert_eq!(ip, svc);
    assert_matches_engine(
        &lab,
        &[(8080, Protocol::Tcp), (9090, Protocol::Tcp)],
        "service cluster",
    );
}

#[test]
fn two_labs_with_the_same_addresses_coexist() {
    let (a_opts, _a) = new_lab("twin-a");
    let (b_opts, _b) = new_lab("twin-b");
    let cluster = [seed_dir().join("cluster.yaml")];
    let mut a = Lab::up(&cluster, &a_opts).expect("lab a up");
    let b = Lab::up(&cluster, &b_opts).expect("lab b up");
    a.apply(&[seed_dir().join("policies/default-deny.yaml")])
        .expect("deny in a");
    let api: IpAddr = "10.244.1.10".parse().unwrap();
    let client = key("default/np-client");
    assert_eq!(
        a.probe(&client, api, 8080, Protocol::Tcp, TIMEOUT).unwrap(),
        Outcome::TimedOut
    );
    assert_eq!(
        b.probe(&client, api, 8080, Protocol::Tcp, TIMEOUT).unwrap(),
        Outcome::Succeeded
    );
}

#[test]
fn a_killed_lab_is_cleaned_up_by_down() {
    let (options, guard) = new_lab("kill");
    let mut child = std::process::Command::new(SERVER)
        .arg("up")
        .arg(&options.name)
        .arg(seed_dir().join("cluster.yaml"))
        .arg(seed_dir().join("policies"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nv-lab up");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    assert_eq!(line.trim(), "up", "nv-lab up did not come up");
    let netns = netverdict_lab::sys::netns_with_prefix(&prefix(&options.name));
    assert_eq!(netns.len(), 5, "node + 4 pods: {netns:?}");
    let processes = netverdict_lab::sys::processes_in(&netns);
    assert!(
        processes.len() >= 2,
        "servers and dnsmasq run: {processes:?}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");

    let report = netverdict_lab::down(&options.name, Path::new(STATE_ROOT)).expect("down");
    assert_eq!(report.namespaces, 5);
    assert!(netverdict_lab::sys::netns_with_prefix(&prefix(&options.name)).is_empty());
    for pid in processes {
        // Gone or a zombie awaiting its (killed) parent's reaper.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "process {pid} of the lab survived: {status}"
        );
    }
    assert!(!Path::new(STATE_ROOT).join(&options.name).exists());
    let etc_left: Vec<String> = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix(&options.name)))
        .collect();
    assert!(etc_left.is_empty(), "/etc/netns entries left: {etc_left:?}");
    drop(guard);
}

#[test]
fn two_nodes_with_tc_enforcement_route_across_nodes_and_match_the_engine() {
    let (mut options, _guard) = new_lab("nodes");
    options.nodes = 2;
    options.enforcement = Enforcement::Tc;
    let mut lab = Lab::up(&[seed_dir().join("cluster.yaml")], &options).expect("lab up");
    // Placed in turn, in the manifests' order; Node objects for the engine.
    let nodes: Vec<(String, String)> = lab
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.ip.to_string()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node-0".to_string(), "10.249.0.1".to_string()),
            ("node-1".to_string(), "10.249.0.2".to_string())
        ]
    );
    let on = |pod: &str| lab.pod(&key(pod)).expect("pod").node;
    assert_eq!(
        [
            on("kube-system/coredns"),
            on("default/api"),
            on("default/np-client"),
            on("shop/np-client")
        ],
        [0, 1, 0, 1]
    );
    let engine_nodes: Vec<String> = lab
        .cluster()
        .nodes()
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(engine_nodes, ["node-0", "node-1"]);
    let by_node = lab.namespaces_by_node();
    assert_eq!(by_node.len(), 2);
    assert_eq!(by_node[1].1[0], format!("{}node1", prefix(&options.name)));
    assert_eq!(by_node[0].1.len() + by_node[1].1.len(), 6, "{by_node:?}");

    // No policy: every pair reaches every other, across nodes too, and the
    // cluster DNS (on node-0) answers the pods of node-1.
    let [blocked, reached] = assert_matches_engine(&lab, &SEED_PORTS, "two nodes, no policy");
    assert_eq!((blocked, reached), (0, 64));
    assert!(matches!(
        lab.dns(
            &key("shop/np-client"),
            "api.default.svc.cluster.local",
            TIMEOUT
        )
        .expect("dns"),
        DnsAnswer::Addresses(_)
    ));
    assert_eq!(lab.dropped_packets().expect("counters"), 0);

    // The seed's policies: egress checked on the source's node, ingress on
    // the destination's; what they deny is dropped by tc.
    lab.apply(&[seed_dir().join("policies")]).expect("policies");
    assert_matches_engine(&lab, &SEED_PORTS, "two nodes, the seed's policies");
    let api = lab.pod(&key("default/api")).expect("api").ip;
    assert_eq!(
        lab.probe(&key("shop/np-client"), api, 8080, Protocol::Tcp, TIMEOUT)
            .expect("probe"),
        Outcome::TimedOut
    );
    assert!(lab.dropped_packets().expect("counters") > 0);
    assert!(!lab.node_ruleset(1).contains(" drop"), "tc mode marks only");

    // A pod applied later is placed in turn and reached across nodes.
    lab.apply_objects(
        netverdict_lab::objects::parse_objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: shop, labels: {role: frontend}}\nspec: {containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}\n",
        )
        .expect("late pod"),
    )
    .expect("apply a pod");
    assert_eq!(on_late(&lab), 0);
    assert_matches_engine(&lab, &[(8080, Protocol::Tcp)], "two nodes, a pod added");
}

fn on_late(lab: &Lab) -> usize {
    lab.pod(&key("shop/late")).expect("late").node
}

fn random_clusters(seeds: std::ops::Range<u64>) {
    random_clusters_on(seeds, 1, Enforcement::Nftables);
}

fn random_clusters_on(seeds: std::ops::Range<u64>, nodes: usize, enforcement: Enforcement) {
    let (mut options, _guard) = new_lab(&format!("rnd{}", seeds.start));
    options.dns = false;
    options.nodes = nodes;
    options.enforcement = enforcement;
    let mut counts = [0, 0];
    for seed in seeds {
        let lab = Lab::up_objects(random_cluster(seed), &options).expect("lab up");
        let [blocked, reached] = assert_matches_engine(
            &lab,
            &[
                (80, Protocol::Tcp),
                (81, Protocol::Tcp),
                (80, Protocol::Udp),
            ],
            &format!("random cluster seed {seed}"),
        );
        counts[0] += blocked;
        counts[1] += reached;
    }
    eprintln!("pairs blocked: {}, reached: {}", counts[0], counts[1]);
    // The generated policies must exercise both answers.
    assert!(
        counts[0] > 50 && counts[1] > 50,
        "degenerate clusters: {counts:?}"
    );
}

#[test]
fn random_clusters_0_to_12_match_engine() {
    random_clusters(0..13);
}

#[test]
fn random_clusters_13_to_25_match_engine() {
    random_clusters(13..26);
}

#[test]
fn random_clusters_26_to_38_match_engine() {
    random_clusters(26..39);
}

#[test]
fn random_clusters_39_to_51_match_engine() {
    random_clusters(39..52);
}

#[test]
fn random_clusters_52_to_59_on_three_nodes_with_tc_match_engine() {
    random_clusters_on(52..60, 3, Enforcement::Tc);
}

#[test]
fn random_clusters_60_to_67_on_two_nodes_with_nftables_match_engine() {
    random_clusters_on(60..68, 2, Enforcement::Nftables);
}
