//! The query commands as processes against a running API server: `observe`,
//! `denied`, `dns` and `mismatches` print what the server holds (tables and
//! JSON); `netverdict api` itself serves and stops on SIGTERM; bad flag values
//! fail naming the flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer};
use netverdict_cluster::SharedState;
use netverdict_proto::v1 as pb;
use netverdict_testing::{api, flow, pod, seed};

use crate::support::{netverdict, run, stdout};

/// Flows of the seed scenario a few minutes ago.
fn flows() -> Vec<pb::Flow> {
    let at = SystemTime::now() - Duration::from_secs(120);
    // A pod of the seed cluster (its workload is its name) on `port`.
    let pod = |ns: &str, name: &str, port| pod(ns, name).workload(name).port(port);
    let seed_flow = |id: &str| flow(id).node("lab-node").at(at);
    vec![
        seed_flow("lab/1/1")
            .from(pod("shop", "np-client", 42000))
            .to(pod("default", "api", 8080))
            .denied()
            .outcome(pb::Outcome::Dropped)
            .ingress_status(pb::PolicyStatus::Denied)
            .denied_by(["default/api-from-web", "default/default-deny"])
            .reason("needs source namespace label team=web")
            .count(3)
            .build(),
        seed_flow("lab/1/2")
            .from(pod("default", "np-client", 41000))
            .to(pod("default", "api", 8080))
            .allowed_by(["default/api-from-web"])
            .build(),
        seed_flow("lab/1/3")
            .from(pod("default", "np-client", 41001))
            .to(pod("kube-system", "coredns", 53))
            .udp()
            .denied()
            .outcome(pb::Outcome::Dropped)
            .egress_status(pb::PolicyStatus::Denied)
            .denied_by(["default/default-deny"])
            .reason("egress isolated by default/default-deny")
            .dns("kubernetes.default.svc.cluster.local", "A")
            .build(),
        seed_flow("lab/1/4")
            .from(pod("x' OR 1=1 --", "evil", 1))
            .to(pod("default", "api", 9999))
            .outcome(pb::Outcome::Dropped)
            .mismatch(pb::Mismatch::DroppedThoughAllowed)
            .build(),
    ]
}

/// The API server over a memory store holding [`flows`], with the seed
/// cluster's state (default-deny and api-from-web); and its address.
async fn server() -> (ApiServer, String) {
    let store = api::memory(10_000);
    store.insert(flows()).await.unwrap();
    let config = ApiConfig {
        metrics_listen: None,
        ..api::config()
    };
    let cluster = seed::cluster(&["default-deny", "api-from-web"]);
    let server = api::serve_with(config, store, SharedState::new(cluster)).await;
    let addr = server.grpc_addr().to_string();
    (server, addr)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_filters_and_formats() {
    let (server, addr) = server().await;
    let out = stdout(&run(args(&["observe", "--server", &addr, "--verdict", "denied"])).await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("shop/np-client:42000 -> default/api:8080  tcp  denied  dropped x3"),
        "{out}"
    );
    assert!(
        lines[0].contains("denied by default/api-from-web,default/default-deny"),
        "{out}"
    );
    assert!(
        lines[1].contains("dns A kubernetes.default.svc.cluster.local"),
        "{out}"
    );

    let out = stdout(
        &run(args(&[
            "observe", "--server", &addr, "-n", "default", "--to-pod", "api", "--port", "8080",
            "-o", "jsonl",
        ]))
        .await,
    );
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["lab/1/1", "lab/1/2"]);

    // A hostile namespace value is just a name.
    let out = stdout(
        &run(args(&[
            "observe",
            "--server",
            &addr,
            "-n",
            "x' OR 1=1 --",
            "-o",
            "json",
        ]))
        .await,
    );
    let flows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(flows.as_array().unwrap().len(), 1);
    assert_eq!(flows[0]["source"]["pod_name"], "evil");
    let out = stdout(&run(args(&["observe", "--server", &addr, "-n", "' OR ''='"])).await);
    assert_eq!(out, "");

    let out = stdout(
        &run(args(&[
            "observe", "--server", &addr, "--first", "1", "-o", "jsonl",
        ]))
        .await,
    );
    assert_eq!(out.lines().count(), 1);
    let out = stdout(
        &run(args(&[
            "observe",
            "--server",
            &addr,
            "--dns",
            "*.svc.cluster.local",
            "-o",
            "jsonl",
        ]))
        .await,
    );
    assert!(
        out.contains("\"lab/1/3\"") && out.lines().count() == 1,
        "{out}"
    );
    let out = stdout(&run(args(&["observe", "--server", &addr, "--since", "1m"])).await);
    assert_eq!(out, "", "flows are two minutes old");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_dns_and_mismatches_reports() {
    let (server, addr) = server().await;
    let out = stdout(&run(args(&["denied", "--server", &addr])).await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("SOURCE"), "{out}");
    let cells = |l: &str| {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let first = cells(lines[1]);
    assert_eq!(
        first[..6],
        [
            "shop/np-client",
            "default/api",
            "8080/tcp",
            "default/api-from-web,default/default-deny",
            "ingress",
            "3"
        ]
    );
    assert_eq!(
        first.last().unwrap(),
        "needs source namespace label team=web"
    );
    let second = cells(lines[2]);
    assert_eq!(
        second[..6],
        [
            "default/np-client",
            "kube-system/coredns",
            "53/udp",
            "default/default-deny",
            "egress",
            "1"
        ]
    );

    let out = stdout(
        &run(args(&[
            "denied", "--server", &addr, "-n", "shop", "-o", "json",
        ]))
        .await,
    );
    let groups: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["destination"]["workload"], "api");
    assert_eq!(groups[0]["count"], 3);
    let out = stdout(&run(args(&["denied", "--server", &addr, "--since", "1m"])).await);
    assert_eq!(out, "No denied flows.\n");

    let out = stdout(&run(args(&["dns", "--server", &addr])).await);
    assert!(
        out.contains("default/api        udp/53,tcp/53  default/default-deny"),
        "{out}"
    );
    assert!(
        out.contains("default/np-client  udp/53,tcp/53  default/default-deny"),
        "{out}"
    );
    assert!(
        out.contains("default/np-client  kubernetes.default.svc.cluster.local  A     dropped"),
        "{out}"
    );
    let out = stdout(
        &run(args(&[
            "dns", "--server", &addr, "-n", "shop", "-o", "json",
        ]))
        .await,
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["policy_gaps"], serde_json::json!([]));
    assert_eq!(report["failures"], serde_json::json!([]));

    let out = stdout(&run(args(&["mismatches", "--server", &addr, "-o", "jsonl"])).await);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["mismatch"], "dropped-though-allowed");
    assert_eq!(lines[0]["verdict"], "allowed");
    assert_eq!(lines[0]["outcome"], "dropped");
    server.shutdown().await.unwrap();
}

#[test]
fn bad_flag_values_fail_naming_the_flag() {
    for (args, expected) in [
        (
            &["observe", "--since", "yesterday"][..],
            "--since: invalid value \"yesterday\"",
        ),
        (
            &["observe", "--verdict", "maybe"][..],
            "--verdict: invalid value \"maybe\"",
        ),
        (
            &["observe", "--port", "http"][..],
            "--port: invalid value \"http\"",
        ),
        (
            &["observe", "--pod", "api"][..],
            "--pod: \"api\" needs a namespace",
        ),
        (&["observe", "-l", "app in ("][..], "-l/--selector:"),
        (
            &["denied", "--until", "soon"][..],
            "--until: invalid value \"soon\"",
        ),
        (
            &["observe", "--server", "http://[::1"][..],
            "--server: invalid address",
        ),
        (
            &[
                "api",
                "--clickhouse",
                "http://127.0.0.1:1",
                "--clickhouse-database",
                "a-b",
            ][..],
            "config field database: \"a-b\" is not letters, digits and '_'",
        ),
        (
            &["api", "--spool-dir", "/tmp/spool"][..],
            "--clickhouse <CLICKHOUSE>",
        ),
        (
            &["api", "--max-in-flight-flows", "0"][..],
            "--max-in-flight-flows: must be between 1 and 4294967295",
        ),
    ] {
        let out = netverdict(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = netverdict(&["observe", "--server", "127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the netverdict server at http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn the_api_command_serves_the_cluster_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args([
            "api",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--cluster",
        ])
        .args(seed::paths(&["default-deny"]))
        .args(["--memory-flows", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "api exited early");
        if let Some(rest) = line.strip_prefix("netverdict api: gRPC on ") {
            break rest.split(',').next().unwrap().to_string();
        }
    };
    let out = netverdict(&["dns", "--server", &addr, "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let gaps: Vec<String> = report["policy_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{}/{}",
                g["namespace"].as_str().unwrap(),
                g["pod"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(gaps, ["default/api", "default/np-client"]);
    assert_eq!(stdout(&netverdict(&["observe", "--server", &addr])), "");
    nix_kill(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
