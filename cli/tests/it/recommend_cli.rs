//! `netverdict recommend` as a process: offline (a flows file and the seed's
//! manifests), the YAML replayed again through `whatif` to show it keeps
//! the allowed flows and denies the denied one; `-o json`, `--output-dir`;
//! a check that fails naming the Admin-tier policy in the way; bad input
//! named; and against a running `netverdict api` over ClickHouse, flows
//! ingested by a collector's exporter, only the namespace's flows read.

use std::time::Duration;

use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::{free_addr, pod, wait_until, world};

use crate::support::{ApiProcess, netverdict, run, spawn_exporter, stdout};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

/// The default namespace's flows in the seed cluster: DNS through the
/// kube-dns Service address, the frontend to the api, the api out to two
/// addresses (one named), coredns into the api; and a flow seen denied.
const FLOWS: &str = r#"{"src":"default/np-client","dst":"10.96.0.10","port":53,"protocol":"UDP"}
{"src":"default/np-client","dst":"default/api","port":8080,"verdict":"allow"}
{"src":"shop/np-client","dst":"default/api","port":8080,"verdict":"deny"}
{"src":"default/api","dst":"203.0.113.7","port":443,"dst_name":"payments.example.com"}
{"src":"default/api","dst":"2001:db8::7","port":443}
{"src":"kube-system/coredns","dst":"default/api","port":9999}
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn recommend_writes_policies_that_replay_keeps_allowing() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(&flows, FLOWS).unwrap();
    let flows = flows.to_str().unwrap();
    let cluster = format!("{SEED}/cluster.yaml");
    let base = [
        "recommend",
        "-n",
        "default",
        "--cluster",
        &cluster,
        "--flows",
        flows,
    ];

    let out = netverdict(&base);
    let yaml = stdout(&out);
    let report = stderr(&out);
    assert!(
        report.contains("check: 5 of 5 observed flows stay allowed"),
        "{report}"
    );
    assert!(
        report.contains("3 policies and a default deny from 5 observed allowed flows of 6 read (1 denied left out)"),
        "{report}"
    );
    // Four documents, the default deny last; the addresses commented.
    assert_eq!(yaml.matches("\n---\n").count() + 1, 4, "{yaml}");
    for expected in [
        "# default/Pod/api: ingress as observed\n",
        "name: recommended-api-ingress",
        "name: recommended-api-egress",
        "name: recommended-np-client-egress",
        "cidr: 203.0.113.7/32  # payments.example.com\n",
        "cidr: 2001:db8::7/128  # 2001:db8::7\n",
        "kubernetes.io/metadata.name: kube-system",
        "k8s-app: kube-dns",
        "app.kubernetes.io/managed-by: netverdict-recommend",
    ] {
        assert!(yaml.contains(expected), "no {expected:?} in\n{yaml}");
    }
    assert!(
        yaml.trim_end().ends_with("  - Ingress\n  - Egress"),
        "the default deny comes last:\n{yaml}"
    );
    assert!(
        !yaml.contains("np-client-ingress"),
        "no flow into np-client was seen"
    );

    // whatif, with the policies added: the allowed flows keep their verdict
    // (DNS included), the denied one becomes denied. (whatif decides a
    // Service address as it is, without DNAT: it is given the DNS backend.)
    let policies = dir.path().join("recommended.yaml");
    std::fs::write(&policies, &yaml).unwrap();
    let replayed = dir.path().join("replayed.jsonl");
    std::fs::write(&replayed, FLOWS.replace("10.96.0.10", "10.244.0.10")).unwrap();
    let out = netverdict(&[
        "whatif",
        "--cluster",
        &cluster,
        "--flows",
        replayed.to_str().unwrap(),
        "--policies",
        policies.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["src"], "shop/Pod/np-client");
    assert_eq!(lines[0]["dst"], "default/Pod/api");
    assert_eq!(lines[0]["after"], "deny");

    // JSON: one List of the same objects.
    let out = netverdict(&[&base[..], &["-o", "json"]].concat());
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "recommended-api-ingress",
            "recommended-api-egress",
            "recommended-np-client-egress",
            "recommended-default-deny"
        ]
    );

    // One file per policy.
    let out_dir = dir.path().join("out");
    let out = netverdict(&[&base[..], &["--output-dir", out_dir.to_str().unwrap()]].concat());
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let egress = std::fs::read_to_string(out_dir.join("recommended-api-egress.yaml")).unwrap();
    assert!(
        egress.starts_with("# default/Pod/api: egress as observed\n"),
        "{egress}"
    );
    assert!(egress.contains("# payments.example.com"), "{egress}");
    assert!(out_dir.join("recommended-default-deny.yaml").exists());
}

#[test]
fn recommend_fails_its_check_when_an_admin_policy_stands_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.jsonl");
    // The flow to 203.0.113.7 was seen allowed, before the ANP came.
    std::fs::write(
        &flows,
        FLOWS.replace(
            r#""dst_name":"payments.example.com""#,
            r#""dst_name":"payments.example.com","verdict":"allow""#,
        ),
    )
    .unwrap();
    let anp = dir.path().join("anp.yaml");
    std::fs::write(
        &anp,
        r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-exfil}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: default}}}
  egress:
  - name: deny-documentation-net
    action: Deny
    to: [{networks: [203.0.113.0/24]}]
"#,
    )
    .unwrap();
    let cluster = format!("{SEED}/cluster.yaml");
    let out = netverdict(&[
        "recommend",
        "-n",
        "default",
        "--cluster",
        &cluster,
        "--cluster",
        anp.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stderr(&out);
    assert!(
        report.contains("check: 4 of 5 observed flows stay allowed"),
        "{report}"
    );
    assert!(report.contains("check FAILED"), "{report}");
    assert!(
        report.contains("default/api -> 203.0.113.7 443/tcp (egress of default; 1 flows)"),
        "{report}"
    );
    assert!(report.contains("AdminNetworkPolicy/no-exfil"), "{report}");
    // The policies are printed all the same.
    assert!(String::from_utf8_lossy(&out.stdout).contains("recommended-api-egress"));
}

#[test]
fn recommend_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("{SEED}/cluster.yaml");
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(
        &flows,
        "{\"src\":\"default/np-client\",\"dst\":\"default/api\",\"port\":8080}\n{\"src\":\"default/np-client\",\"dst\":\"default/api\",\"port\":8080,\"verdict\":\"maybe\"}\n",
    )
    .unwrap();
    let flows = flows.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["-n", "nope", "--cluster", &cluster, "--flows", flows],
            "namespace \"nope\": not in the cluster",
        ),
        (
            vec!["-n", "default", "--cluster", &cluster, "--flows", flows],
            "flows.jsonl line 2: invalid flow: verdict: \"maybe\" is not allow or deny",
        ),
        (
            vec!["-n", "default", "--cluster", &cluster],
            "--flows FILE, or --server ADDR",
        ),
    ] {
        let out = netverdict(&[&["recommend"][..], &args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

const SHOP: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: v1
  kind: Namespace
  metadata: {name: kube-system}
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-7d9
    namespace: shop
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]
  spec: {selector: {matchLabels: {app: web}}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d9-a
    namespace: shop
    labels: {app: web, pod-template-hash: 7d9}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9, uid: rs-1, controller: true}]
  status: {podIP: 10.1.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: db-1, namespace: shop, labels: {app: db}}
  status: {podIP: 10.1.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns}}
  status: {podIP: 10.1.0.53}
- apiVersion: v1
  kind: Pod
  metadata: {name: scraper-1, namespace: kube-system, labels: {app: scraper}}
  status: {podIP: 10.1.0.9}
"#;

/// The flows the collector saw: shop's web resolving names (many records),
/// to its db and to an outside address; shop's db denied on its way out; a
/// second observation; and kube-system's own DNS, which is not shop's.
fn collected() -> Vec<pb::Flow> {
    let web = || {
        pod("shop", "web-7d9-a")
            .workload("Deployment/web")
            .ip("10.1.0.1")
            .port(40000)
    };
    let db = || pod("shop", "db-1").workload("Pod/db-1").ip("10.1.0.3");
    let dns = || {
        pod("kube-system", "coredns-1")
            .workload("Pod/coredns-1")
            .ip("10.1.0.53")
            .port(53)
    };
    let mut flows = Vec::new();
    let mut id = 0;
    let mut next = || {
        id += 1;
        format!("node-a/1/{id:05}")
    };
    for _ in 0..30 {
        flows.push(
            netverdict_testing::flow(next())
                .udp()
                .from(web())
                .to(dns())
                .build(),
        );
    }
    flows.push(
        netverdict_testing::flow(next())
            .from(web())
            .to(db().port(5432))
            .build(),
    );
    flows.push(
        netverdict_testing::flow(next())
            .from(web())
            .to(world("203.0.113.7").port(443))
            .build(),
    );
    flows.push(
        netverdict_testing::flow(next())
            .from(db().port(41000))
            .to(world("198.51.100.9").port(8080))
            .denied()
            .build(),
    );
    flows.push(
        netverdict_testing::flow(next())
            .from(web())
            .to(db().port(5432))
            .observation_point(pb::ObservationPoint::Destination)
            .counted_elsewhere()
            .build(),
    );
    flows.push(
        netverdict_testing::flow(next())
            .udp()
            .from(
                pod("kube-system", "scraper-1")
                    .workload("Pod/scraper-1")
                    .ip("10.1.0.9")
                    .port(40001),
            )
            .to(dns())
            .build(),
    );
    flows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_reads_the_namespaces_flows_from_an_api_server_over_clickhouse() {
    let db = TestDb::shared();
    let api = ApiProcess::start(&db, free_addr());
    let (tx, counters) = spawn_exporter(format!("http://{}", api.grpc), 10);
    let flows = collected();
    let total = flows.len() as u64;
    for flow in flows {
        tx.send(flow).await.unwrap();
    }
    wait_until(
        "every flow acknowledged",
        Duration::from_secs(60),
        async || counters.snapshot().flows_acked == total,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, SHOP).unwrap();
    let out = run([
        "recommend",
        "-n",
        "shop",
        "--server",
        &api.grpc.to_string(),
        "--since",
        "1h",
        "--cluster",
        cluster.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec())
    .await;
    let yaml = stdout(&out);
    let report = stderr(&out);
    // kube-system's flow is not read at all; the second observation is
    // read and set aside.
    assert!(
        report.contains(
            "2 policies and a default deny from 32 observed allowed flows of 33 read (1 denied left out, 1 stored flows not usable"
        ),
        "{report}"
    );
    assert!(
        report.contains("check: 32 of 32 observed flows stay allowed"),
        "{report}"
    );
    for expected in [
        "# shop/Deployment/web: egress as observed\n",
        "name: recommended-web-egress",
        "name: recommended-db-1-ingress",
        "cidr: 203.0.113.7/32  # 203.0.113.7\n",
        "k8s-app: kube-dns",
        "port: 5432",
    ] {
        assert!(yaml.contains(expected), "no {expected:?} in\n{yaml}");
    }
    assert!(
        !yaml.contains("198.51.100.9"),
        "the denied flow is left out:\n{yaml}"
    );
    drop(api);
}
