//! `netverdict demo` end to end (as root): the seed's lab, the real eBPF probes,
//! the collector and the API server in one process, through the embedded store
//! (over mutual TLS) and through ClickHouse (plaintext). The JSON report of
//! every step must hold exactly the denied flows, policies and DNS names the
//! seed's rollout produces.

use std::collections::BTreeSet;
use std::process::Command;

use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::lab::TestLab;
use netverdict_testing::require_root;
use serde_json::Value;

use crate::dashboards_support;

use dashboards_support::{
    ALL_VALUE, Context, VarValue, check_dashboard, expand, query, referenced_vars,
};

/// A denied group as (source, destination, port/protocol, denying policies,
/// sides), for pod sources. Other sources are replies of connections made
/// before a rollout, dropped by the kernel afterwards (see the closing note).
type Group = (String, String, String, Vec<String>, &'static str);

/// `namespace/name` of a group's workload: the seed's pods are bare pods,
/// each its own workload (`Pod/<name>`).
fn workload(v: &Value) -> String {
    let workload = v["workload"].as_str().unwrap_or("");
    let name = match v["kind"].as_str() {
        Some("pod") => workload
            .strip_prefix("Pod/")
            .unwrap_or_else(|| panic!("a bare pod's workload is Pod/<name>: {v}")),
        _ => workload,
    };
    format!("{}/{name}", v["namespace"].as_str().unwrap_or(""))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn denied(step: &Value) -> BTreeSet<Group> {
    step["denied"]
        .as_array()
        .expect("denied groups")
        .iter()
        .filter(|g| g["source"]["kind"] == "pod")
        .map(|g| {
            let sides = match (g["egress_denied"] == true, g["ingress_denied"] == true) {
                (true, true) => "egress+ingress",
                (true, false) => "egress",
                (false, true) => "ingress",
                (false, false) => "none",
            };
            (
                workload(&g["source"]),
                workload(&g["destination"]),
                format!(
                    "{}/{}",
                    g["destination_port"],
                    g["protocol"].as_str().unwrap_or("")
                ),
                strings(&g["denied_by"]),
                sides,
            )
        })
        .collect()
}

fn group(src: &str, dst: &str, port: &str, by: &[&str], sides: &'static str) -> Group {
    (
        src.into(),
        dst.into(),
        port.into(),
        by.iter().map(|s| s.to_string()).collect(),
        sides,
    )
}

fn gaps(step: &Value) -> BTreeSet<(String, Vec<String>)> {
    step["dns"]["policy_gaps"]
        .as_array()
        .expect("policy gaps")
        .iter()
        .map(|g| {
            (
                format!(
                    "{}/{}",
                    g["namespace"].as_str().unwrap(),
                    g["pod"].as_str().unwrap()
                ),
                strings(&g["egress_policies"]),
            )
        })
        .collect()
}

fn failures(step: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    step["dns"]["failures"]
        .as_array()
        .expect("dns failures")
        .iter()
        .map(|f| {
            (
                format!(
                    "{}/{}",
                    f["namespace"].as_str().unwrap(),
                    f["pod"].as_str().unwrap()
                ),
                f["query"].as_str().unwrap().to_string(),
                f["outcome"].as_str().unwrap().to_string(),
                strings(&f["denied_by"]),
            )
        })
        .collect()
}

fn oks(step: &Value) -> Vec<(String, String, bool)> {
    step["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_string(),
                c["command"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Runs the demo and returns its JSON report.
fn run_demo(name: &str, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args(["demo", "-o", "json", "--name", name])
        .args(extra)
        .output()
        .expect("running netverdict demo");
    assert!(
        out.status.success(),
        "netverdict demo failed ({}); it needs root, iproute2, nftables and dnsmasq-base \
         (scripts/install-deps.sh):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the demo prints JSON")
}

fn check(report: &Value) {
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{report:#}");
    let client = "default/np-client";
    let shop = "shop/np-client";
    let lookup = "nslookup kubernetes.default.svc.cluster.local";
    let nc = |port: u16| format!("nc -vz api.default.svc.cluster.local {port}");
    let dd = "default/default-deny";
    let dns = "default/allow-dns-egress";
    let web = "default/api-from-web";

    // 1. No policy: everything works, nothing is denied.
    let s = &steps[0];
    assert!(oks(s).iter().all(|c| c.2), "{:?}", oks(s));
    assert_eq!(denied(s), BTreeSet::new());
    assert_eq!(gaps(s), BTreeSet::new());
    assert_eq!(failures(s), BTreeSet::new());

    // 2. default-deny: DNS breaks first, then names do not resolve.
    let s = &steps[1];
    assert_eq!(
        oks(s),
        vec![
            (client.into(), lookup.into(), false),
            (client.into(), nc(8080), false),
            (client.into(), nc(5432), false),
            (shop.into(), nc(8080), false),
        ]
    );
    assert_eq!(
        denied(s),
        BTreeSet::from([
            group(client, "kube-system/coredns", "53/udp", &[dd], "egress"),
            group(shop, "default/api", "8080/tcp", &[dd], "ingress"),
        ])
    );
    assert_eq!(
        gaps(s),
        BTreeSet::from([
            ("default/api".to_string(), vec![dd.to_string()]),
            (client.to_string(), vec![dd.to_string()]),
        ])
    );
    assert_eq!(
        failures(s),
        BTreeSet::from([
            (
                client.to_string(),
                "kubernetes.default.svc.cluster.local".to_string(),
                "dropped".to_string(),
                vec![dd.to_string()]
            ),
            (
                client.to_string(),
                "api.default.svc.cluster.local".to_string(),
                "dropped".to_string(),
                vec![dd.to_string()]
            ),
        ])
    );

    // 3. allow-dns-egress: DNS recovers; the API stays closed.
    let s = &steps[2];
    assert_eq!(
        oks(s),
        vec![
            (client.into(), lookup.into(), true),
            (client.into(), nc(8080), false),
            (client.into(), nc(5432), false),
            (shop.into(), nc(8080), false),
        ]
    );
    assert_eq!(gaps(s), BTreeSet::new());
    assert_eq!(failures(s), BTreeSet::new());
    assert_eq!(
        denied(s),
        BTreeSet::from([
            group(
                client,
                "default/api",
                "8080/tcp",
                &[dns, dd],
                "egress+ingress"
            ),
            group(
                client,
                "default/api",
                "5432/tcp",
                &[dns, dd],
                "egress+ingress"
            ),
            group(shop, "default/api", "8080/tcp", &[dd], "ingress"),
        ])
    );

    // 4. api-from-web: shop is team=payments, and default's egress is still closed.
    let s = &steps[3];
    assert!(oks(s).iter().skip(1).all(|c| !c.2), "{:?}", oks(s));
    assert_eq!(
        denied(s),
        BTreeSet::from([
            group(client, "default/api", "8080/tcp", &[dns, dd], "egress"),
            group(
                client,
                "default/api",
                "5432/tcp",
                &[dns, web, dd],
                "egress+ingress"
            ),
            group(shop, "default/api", "8080/tcp", &[web, dd], "ingress"),
        ])
    );
    let shop_reason = s["denied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| workload(&g["source"]) == shop)
        .and_then(|g| g["reason"].as_str())
        .unwrap()
        .to_string();
    assert!(
        shop_reason.contains(
            "rule 0 of default/api-from-web needs source namespace label team=web; namespace shop has team=payments"
        ),
        "{shop_reason}"
    );
    assert_eq!(report["exported"]["dropped"], 0, "{:#}", report["exported"]);

    // diagnose on the flow left denied: the steps, the observed flows, the fix.
    let d = &report["diagnose"];
    assert_eq!(d["allowed"], false, "{d:#}");
    assert_eq!(d["destination"]["kind"], "service", "{d:#}");
    assert!(
        d["observed_flows"].as_array().is_some_and(
            |f| !f.is_empty() && f.iter().all(|f| f["destination"]["pod_name"] == "api")
        ),
        "the pair's flows: {:#}",
        d["observed_flows"]
    );
    let fix = d["fix"].as_array().expect("fix");
    assert_eq!(fix.len(), 1, "{d:#}");
    assert_eq!(fix[0]["metadata"]["namespace"], "default");
    assert_eq!(
        fix[0]["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
}

/// The embedded store, with every gRPC connection over mutual TLS
/// (certificates made by the demo in a fresh directory).
#[test]
fn the_demo_through_the_embedded_store_over_mutual_tls() {
    if !require_root() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_str().unwrap();
    let lab = TestLab::new("demo");
    let report = run_demo(lab.name(), &["--tls-dir", dir]);
    assert_eq!(report["store"], "memory");
    assert_eq!(report["tls"], true);
    let node = report["nodes"][0]["name"].as_str().expect("the lab's node");
    assert!(
        certs
            .path()
            .join(format!("collector-{node}/tls.crt"))
            .exists()
    );
    check(&report);
}

/// The same rollout on two nodes enforcing with tc: the same reports, each
/// connection counted once although both nodes' collectors see it.
#[test]
fn the_demo_on_two_nodes_with_tc_enforcement() {
    if !require_root() {
        return;
    }
    let lab = TestLab::new("demo-2n");
    let report = run_demo(lab.name(), &["--nodes", "2", "--enforcement", "tc"]);
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{:#}", report["nodes"]);
    assert_eq!(nodes[1]["name"], "node-1");
    check(&report);
    // One `nc` from shop/np-client per step: one denied attempt, not two.
    for step in &report["steps"].as_array().unwrap()[1..] {
        for g in step["denied"].as_array().unwrap() {
            if workload(&g["source"]) == "shop/np-client" {
                assert_eq!(g["count"], 1, "{g:#}");
            }
        }
    }
}

#[test]
fn the_demo_through_clickhouse() {
    if !require_root() {
        return;
    }
    let db = TestDb::shared();
    let url = format!("http://{}", db.addr);
    let database = &db.name;
    let lab = TestLab::new("demo-ch");
    let report = run_demo(
        lab.name(),
        &["--clickhouse", &url, "--clickhouse-database", database],
    );
    assert_eq!(report["store"], "clickhouse");
    assert_eq!(report["tls"], false);
    check(&report);
    // Every acknowledged flow is in ClickHouse, once.
    let text = db.sql(&format!(
        "SELECT count(), uniqExact(id) FROM {database}.flows"
    ));
    let counts: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("a count"))
        .collect();
    let acked = report["exported"]["acked"].as_u64().unwrap();
    assert_eq!(counts, vec![acked, acked], "flows stored vs acknowledged");
    dashboards_on_the_demo_flows(&db.addr, database);
}

/// Every ClickHouse query of every dashboard, with the plugin's macros and
/// every variable set to All, over the demo's flows: each runs, and the panels
/// about what the demo produced (denied flows, dropped DNS queries, pods whose
/// egress blocks DNS, kernel drops) have rows.
fn dashboards_on_the_demo_flows(addr: &str, database: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut empty = Vec::new();
    for name in [
        "denied-flows",
        "dns-health",
        "enforcement",
        "netverdict-self",
    ] {
        let path = root.join(format!("{name}.json"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let queries = check_dashboard(name, &json).unwrap_or_else(|p| panic!("{}", p.join("\n")));
        for q in queries.iter().filter(|q| q.kind != "promql") {
            let ctx = Context {
                from: now - 3600,
                to: now + 60,
                interval_s: 60,
                vars: referenced_vars(&q.text)
                    .into_iter()
                    .map(|v| (v, VarValue::All(ALL_VALUE.into())))
                    .collect(),
            };
            let sql = expand(&q.text, &ctx).unwrap_or_else(|e| panic!("{name} {}: {e}", q.what));
            let rows = query(addr, database, &sql).unwrap_or_else(|e| {
                panic!("{name} {} failed on the demo's flows:\n{sql}\n{e}", q.what)
            });
            if rows.rows.is_empty() {
                empty.push(format!("{name} {}", q.what));
            }
        }
    }
    // The demo has no error rcode (its failed queries were dropped), no
    // mismatch (every namespace is enforced) and no flow to an outside
    // address: only those panels are empty.
    let expected = vec![
        "denied-flows panel 7 (Denied outside destinations by name) A",
        "dns-health panel 2 (DNS failures by rcode) A",
        "enforcement panel 1 (Mismatches by kind) A",
        "enforcement panel 3 (Mismatched pairs) A",
        "enforcement panel 5 (Latest mismatched flows) A",
    ];
    if empty != expected {
        // Every flow, to tell what the kernel saw from what was judged.
        let flows = query(
            addr,
            database,
            "SELECT first_seen_ns, node, src_namespace, src_pod, dst_namespace, dst_pod, \
             dst_port, protocol, outcome, drop_reason, drop_count, verdict, mismatch, \
             dns_query, count FROM flows ORDER BY first_seen_ns",
        )
        .map(|r| format!("{:#?}", r.rows))
        .unwrap_or_else(|e| e.to_string());
        panic!(
            "dashboard queries with no rows over the demo's flows:\n{empty:#?}\n\
             expected:\n{expected:#?}\nthe demo's flows:\n{flows}"
        );
    }
}
