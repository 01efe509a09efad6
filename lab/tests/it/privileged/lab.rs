//! Privileged lab tests: real namespaces, real nftables, real traffic, compared
//! with the policy engine. Without root they are skipped, one line saying so
//! (`netverdict_testing::require_root`); as root they need `ip` (iproute2),
//! `nft` (nftables) and `dnsmasq` (dnsmasq-base) and FAIL (never skip)
//! without them.
//!
//! Each test runs its own lab, named after the test process and a counter, and
//! brought down by a guard even when the test panics; tests run in parallel.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netverdict_lab::generate::{random_admin_cluster, random_cluster};
use netverdict_lab::lab::{STATE_ROOT, prefix};
use netverdict_lab::{DnsAnswer, Enforcement, Lab, LabOptions, LabelTarget, Outcome, Unenforced};
use netverdict_policy::model::Tier;
use netverdict_policy::{Connection, Endpoint, PodKey, Protocol};
use netverdict_testing::lab::TestLab;
use netverdict_testing::require_root;

const SERVER: &str = env!("CARGO_BIN_EXE_nv-lab");
const TIMEOUT: Duration = Duration::from_millis(400);

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed")
}

/// Options for a lab of the test's own whose servers are `nv-lab serve`, and
/// the guard that brings it down.
fn new_lab(tag: &str) -> (LabOptions, TestLab) {
    let lab = TestLab::new(tag);
    (lab.options(&[SERVER, "serve"]), lab)
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
            .filter(|o| {
                [
                    "NetworkPolicy",
                    "AdminNetworkPolicy",
                    "BaselineAdminNetworkPolicy",
                    "ClusterNetworkPolicy",
                ]
                .iter()
                .any(|k| o["kind"] == *k)
            })
            .collect();
        panic!(
            "{context}: the kernel and the policy engine disagree:\n{report}\npolicies:\n{}\nnft ruleset:\n{}",
            serde_json::to_string_pretty(&policies).unwrap_or_default(),
            lab.ruleset()
        );
    }
    counts
}

/// The seed's ports, and ping (ICMP has no port: rules with ports never
/// match it, rules without match it as every protocol).
const SEED_PORTS: [(u16, Protocol); 5] = [
    (8080, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (53, Protocol::Udp),
    (53, Protocol::Tcp),
    (0, Protocol::Icmp),
];

#[test]
fn seed_scenario_matches_engine_and_updates_in_place() {
    if !require_root() {
        return;
    }
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
    if !require_root() {
        return;
    }
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
    if !require_root() {
        return;
    }
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
    if !require_root() {
        return;
    }
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
    if !require_root() {
        return;
    }
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
    if !require_root() {
        return;
    }
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
    assert_eq!((blocked, reached), (0, 80));
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
    let admin_decided = random_clusters_of(random_cluster, "rnd", seeds, nodes, enforcement);
    assert_eq!(admin_decided, 0, "no admin policy, no admin tier");
}

/// Brings up the cluster `generate(seed)` for each seed (one lab, replaced
/// each time) and fails with every pair where the kernel and the engine
/// disagree on TCP 80, TCP 81, UDP 80 or ICMP (ping).
const RANDOM_PORTS: [(u16, Protocol); 4] = [
    (80, Protocol::Tcp),
    (81, Protocol::Tcp),
    (80, Protocol::Udp),
    (0, Protocol::Icmp),
];

/// How many directions of the matrix cells an admin tier (Admin or
/// Baseline) decides, by the engine.
fn decided_by_admin_tiers(lab: &Lab) -> usize {
    let pods: Vec<PodKey> = lab.pods().iter().map(|p| p.key()).collect();
    let mut decided = 0;
    for from in &pods {
        for to in &pods {
            for &(port, protocol) in &RANDOM_PORTS {
                let conn = Connection::new(
                    Endpoint::Pod(from.clone()),
                    Endpoint::Pod(to.clone()),
                    port,
                    protocol,
                );
                let verdict = lab.cluster().verdict(&conn).expect("verdict");
                decided += [&verdict.egress, &verdict.ingress]
                    .iter()
                    .filter(|d| matches!(d.tier, Some(Tier::Admin | Tier::Baseline)))
                    .count();
            }
        }
    }
    decided
}

/// Brings up the cluster `generate(seed)` for each seed (one lab, replaced
/// each time) and fails with every pair where the kernel and the engine
/// disagree on TCP 80, TCP 81, UDP 80 or ICMP; returns how many cell
/// directions the admin tiers decided.
fn random_clusters_of(
    generate: fn(u64) -> Vec<netverdict_policy::K8sObject>,
    tag: &str,
    seeds: std::ops::Range<u64>,
    nodes: usize,
    enforcement: Enforcement,
) -> usize {
    let (mut options, _guard) = new_lab(&format!("{tag}{}", seeds.start));
    options.dns = false;
    options.nodes = nodes;
    options.enforcement = enforcement;
    let mut counts = [0, 0];
    let mut admin_decided = 0;
    let started = std::time::Instant::now();
    let seed_count = seeds.end - seeds.start;
    for seed in seeds {
        let lab = Lab::up_objects(generate(seed), &options).expect("lab up");
        let [blocked, reached] =
            assert_matches_engine(&lab, &RANDOM_PORTS, &format!("random cluster seed {seed}"));
        admin_decided += decided_by_admin_tiers(&lab);
        counts[0] += blocked;
        counts[1] += reached;
    }
    eprintln!(
        "{seed_count} clusters, pairs blocked: {}, reached: {}, all agreeing with the engine, \
         in {:.1?}; directions decided by an admin tier: {admin_decided}",
        counts[0],
        counts[1],
        started.elapsed()
    );
    // The generated policies must exercise both answers.
    assert!(
        counts[0] > 50 && counts[1] > 50,
        "degenerate clusters: {counts:?}"
    );
    admin_decided
}

#[test]
fn random_clusters_0_to_12_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters(0..13);
}

#[test]
fn random_clusters_13_to_25_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters(13..26);
}

#[test]
fn random_clusters_26_to_38_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters(26..39);
}

#[test]
fn random_clusters_39_to_51_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters(39..52);
}

#[test]
fn random_clusters_52_to_59_on_three_nodes_with_tc_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters_on(52..60, 3, Enforcement::Tc);
}

#[test]
fn random_clusters_60_to_67_on_two_nodes_with_nftables_match_engine() {
    if !require_root() {
        return;
    }
    random_clusters_on(60..68, 2, Enforcement::Nftables);
}

fn random_admin_clusters(seeds: std::ops::Range<u64>, nodes: usize, enforcement: Enforcement) {
    let cells = (seeds.end - seeds.start) as usize * 6 * 6 * RANDOM_PORTS.len();
    let admin_decided = random_clusters_of(random_admin_cluster, "adm", seeds, nodes, enforcement);
    // The admin tiers must decide a good share of the 2 directions per cell.
    assert!(
        admin_decided * 5 > cells * 2,
        "admin tiers decided only {admin_decided} directions of {cells} cells"
    );
}

#[test]
fn random_admin_clusters_0_to_9_match_engine() {
    if !require_root() {
        return;
    }
    random_admin_clusters(0..10, 1, Enforcement::Nftables);
}

#[test]
fn random_admin_clusters_10_to_15_on_two_nodes_with_tc_match_engine() {
    if !require_root() {
        return;
    }
    random_admin_clusters(10..16, 2, Enforcement::Tc);
}

/// Three namespaces of one pod each, serving TCP 80: the admin tier
/// scenarios' cluster.
const TIERS_CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: tenant, labels: {kind: tenant}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: other, labels: {kind: tenant}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: monitoring, labels: {kind: infra}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: tenant, labels: {app: web}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
  status: {podIP: 10.1.0.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: other, labels: {app: client}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
  status: {podIP: 10.1.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: prom, namespace: monitoring, labels: {app: prom}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
  status: {podIP: 10.1.2.10}
"#;

fn objects(yaml: &str) -> Vec<netverdict_policy::K8sObject> {
    netverdict_lab::objects::parse_objects(yaml).expect("objects")
}

/// Whether `from` reaches `to` on TCP 80 (a short timeout, confirmed with a
/// long one when nothing came back, as a busy machine can be late).
fn reaches(lab: &Lab, from: &str, to: &str) -> bool {
    let ip = lab.pod(&key(to)).expect("destination").ip;
    let probe = |timeout| {
        lab.probe(&key(from), ip, 80, Protocol::Tcp, timeout)
            .expect("probe")
    };
    probe(TIMEOUT).reached() || probe(Duration::from_secs(3)).reached()
}

/// Checks one step of a scenario: each (from, to, reached) by a real probe,
/// the engine's verdict on it, which names `decided_by`, and the whole
/// matrix against the engine.
fn check_step(lab: &Lab, step: &str, cells: &[(&str, &str, bool)], decided_by: &str) {
    for &(from, to, expected) in cells {
        assert_eq!(
            reaches(lab, from, to),
            expected,
            "{step}: {from} -> {to} should be {}\nnft ruleset:\n{}",
            if expected { "reached" } else { "blocked" },
            lab.ruleset()
        );
        let (allowed, why) = lab.verdict(from, to, 80, Protocol::Tcp);
        assert_eq!(
            allowed, expected,
            "{step}: the engine on {from} -> {to}: {why}"
        );
    }
    let (_, why) = lab.verdict(cells[0].0, cells[0].1, 80, Protocol::Tcp);
    assert!(why.contains(decided_by), "{step}: {why}");
    assert_matches_engine(lab, &[(80, Protocol::Tcp)], step);
}

#[test]
fn admin_tiers_decide_before_and_after_network_policy_in_the_kernel() {
    if !require_root() {
        return;
    }
    let (mut options, _guard) = new_lab("tiers");
    options.dns = false;
    let mut lab = Lab::up_objects(objects(TIERS_CLUSTER), &options).expect("lab up");

    // An ANP Deny wins over a NetworkPolicy allow.
    lab.apply_objects(objects(
        r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: web-ingress, namespace: tenant}
  spec:
    podSelector: {matchLabels: {app: web}}
    policyTypes: [Ingress]
    ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 80}]}]
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: deny-other}
  spec:
    priority: 10
    subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: tenant}}}
    ingress:
    - name: deny-from-other
      action: Deny
      from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: other}}}]
"#,
    ))
    .expect("apply");
    check_step(
        &lab,
        "ANP Deny over a NetworkPolicy allow",
        &[
            ("other/client", "tenant/web", false),
            ("monitoring/prom", "tenant/web", true),
        ],
        "deny-from-other",
    );

    // A Pass at a lower priority number is decided first and falls through
    // to the NetworkPolicy, which allows.
    lab.apply_objects(objects(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: pass-other}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {kind: tenant}}}
  ingress:
  - name: pass-from-other
    action: Pass
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: other}}}]
"#,
    ))
    .expect("apply");
    check_step(
        &lab,
        "Pass falls through to a NetworkPolicy allow",
        &[
            ("other/client", "tenant/web", true),
            ("monitoring/prom", "tenant/web", true),
        ],
        "pass-from-other",
    );

    // The same Pass, with a NetworkPolicy that admits monitoring only.
    lab.apply_objects(objects(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: tenant}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {kind: infra}}}]}]
"#,
    ))
    .expect("apply");
    check_step(
        &lab,
        "Pass falls through to a NetworkPolicy deny",
        &[
            ("other/client", "tenant/web", false),
            ("monitoring/prom", "tenant/web", true),
        ],
        "web-ingress",
    );

    // The BANP denies other for the pods no NetworkPolicy isolates (prom)
    // and allows the rest; the web pod, isolated, is decided by its
    // NetworkPolicy.
    lab.apply_objects(objects(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - name: baseline-deny-other
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: other}}}]
  - name: baseline-allow-rest
    action: Allow
    from: [{namespaces: {}}]
"#,
    ))
    .expect("apply");
    check_step(
        &lab,
        "BANP deny for pods NetworkPolicy does not isolate",
        &[
            ("other/client", "monitoring/prom", false),
            ("tenant/web", "monitoring/prom", true),
            ("monitoring/prom", "tenant/web", true),
            ("other/client", "tenant/web", false),
        ],
        "baseline-deny-other",
    );

    // Priority order: an Allow at priority 3 is decided before the Pass (5)
    // and the Deny (10), so it wins over the NetworkPolicy's deny; moved to
    // priority 20, it comes after the Pass and the NetworkPolicy denies again.
    let allow_at = |priority: u32| {
        objects(&format!(
            r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: accept-other}}
spec:
  tier: Admin
  priority: {priority}
  subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: web}}}}}}}}
  ingress:
  - name: accept-from-other
    action: Accept
    from: [{{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: other}}}}}}]
    protocols: [{{destinationNamedPort: http}}]
"#
        ))
    };
    lab.apply_objects(allow_at(3)).expect("apply");
    check_step(
        &lab,
        "a lower priority number decides first",
        &[
            ("other/client", "tenant/web", true),
            ("other/client", "monitoring/prom", false),
        ],
        "accept-from-other",
    );
    lab.apply_objects(allow_at(20)).expect("apply");
    check_step(
        &lab,
        "a higher priority number decides later",
        &[("other/client", "tenant/web", false)],
        "pass-from-other",
    );

    // Egress: an ANP denies monitoring's egress to the client's network; a
    // Baseline ClusterNetworkPolicy denying all egress of tenant is not
    // reached for the web pod when an Admin Allow decides first.
    lab.apply_objects(objects(
        r#"
apiVersion: v1
kind: List
items:
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: monitoring-egress}
  spec:
    priority: 1
    subject: {namespaces: {matchLabels: {kind: infra}}}
    egress:
    - name: deny-client-network
      action: Deny
      to: [{networks: [10.1.1.0/24]}]
- apiVersion: policy.networking.k8s.io/v1alpha2
  kind: ClusterNetworkPolicy
  metadata: {name: tenant-egress}
  spec:
    tier: Baseline
    priority: 1
    subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: tenant}}}
    egress:
    - name: baseline-deny-egress
      action: Deny
      to: [{networks: [0.0.0.0/0]}]
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: web-to-monitoring}
  spec:
    priority: 2
    subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: tenant}}}
    egress:
    - name: allow-to-monitoring
      action: Allow
      to: [{pods: {namespaceSelector: {matchLabels: {kind: infra}}, podSelector: {}}}]
      ports: [{portRange: {protocol: TCP, start: 79, end: 81}}]
"#,
    ))
    .expect("apply");
    check_step(
        &lab,
        "egress networks and a Baseline ClusterNetworkPolicy",
        &[
            ("monitoring/prom", "other/client", false),
            ("monitoring/prom", "tenant/web", true),
            ("tenant/web", "monitoring/prom", true),
            ("tenant/web", "other/client", false),
        ],
        "deny-client-network",
    );
    assert!(lab.dropped_packets().expect("counters") > 0);
}

#[test]
fn admin_nodes_peers_deny_other_nodes_but_never_a_pod_s_own_node() {
    if !require_root() {
        return;
    }
    let (mut options, _guard) = new_lab("adnodes");
    options.dns = false;
    options.nodes = 2;
    let mut objects = objects(TIERS_CLUSTER);
    objects.extend(
        netverdict_lab::objects::parse_objects(
            r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-nodes}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress:
  - name: deny-nodes
    action: Deny
    to: [{nodes: {matchExpressions: [{key: kubernetes.io/hostname, operator: Exists}]}}]
"#,
        )
        .expect("anp"),
    );
    let lab = Lab::up_objects(objects, &options).expect("lab up");
    let nodes: Vec<(usize, IpAddr)> = lab.nodes().iter().map(|n| (n.index, n.ip)).collect();
    assert_eq!(nodes.len(), 2);
    let mut checked = 0;
    for pod in ["tenant/web", "other/client", "monitoring/prom"] {
        let on = lab.pod(&key(pod)).expect("pod").node;
        for &(node, ip) in &nodes {
            // Nothing listens on the node's port 80: a refusal is an answer.
            let out = lab
                .probe(&key(pod), ip, 80, Protocol::Tcp, Duration::from_secs(1))
                .expect("probe");
            let verdict = lab
                .cluster()
                .verdict(&Connection::new(
                    Endpoint::Pod(key(pod)),
                    Endpoint::Ip(ip),
                    80,
                    Protocol::Tcp,
                ))
                .expect("verdict");
            assert_eq!(
                out.reached(),
                node == on,
                "{pod} (on node {on}) -> node {node} {ip}: {out}\n{}",
                lab.node_ruleset(on)
            );
            assert_eq!(verdict.allowed, out.reached(), "{pod} -> {ip}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // Pods still reach each other across nodes.
    assert_matches_engine(&lab, &[(80, Protocol::Tcp)], "nodes peers");
}
