//! The query commands as processes against a running API server (and a
//! collector's observer): `observe` with hubble's filter flags (`--not`
//! included), `denied`, `dns` and `mismatches` (with `-A`, `-l`, `-f`) and
//! `status` print what the server holds in every `-o` format; `completion`
//! scripts know the commands; `netverdict api` itself serves and stops on
//! SIGTERM; bad flag values fail naming the flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use netverdict_api::store::Store;
use netverdict_api::{ApiConfig, ApiServer};
use netverdict_cluster::SharedState;
use netverdict_collector::observer::ObserverService;
use netverdict_collector::pipeline::FlowRing;
use netverdict_proto::v1 as pb;
use netverdict_testing::flow::EndpointBuilder;
use netverdict_testing::grpc::{batch, push_acked, push_stream};
use netverdict_testing::{api, flow, pod, seed};

use crate::support::{netverdict, run, stdout};

/// A pod `ns/name` (its workload is its name) at `ip` on `port`, labelled as
/// the seed's pods are (np-client `role=frontend`, coredns
/// `k8s-app=kube-dns`, others `app=<name>`).
fn seed_pod(ns: &str, name: &str, ip: &str, port: u32) -> EndpointBuilder {
    let label = match name {
        "np-client" => ("role", "frontend"),
        "coredns" => ("k8s-app", "kube-dns"),
        other => ("app", other),
    };
    pod(ns, name)
        .workload(name)
        .ip(ip)
        .port(port)
        .labels(&[label])
}

/// Flows of the seed scenario a few minutes ago.
fn flows() -> Vec<pb::Flow> {
    let at = SystemTime::now() - Duration::from_secs(120);
    let seed_flow = |id: &str| flow(id).node("lab-node").at(at);
    vec![
        seed_flow("lab/1/1")
            .from(seed_pod("shop", "np-client", "10.0.1.5", 42000))
            .to(seed_pod("default", "api", "10.0.2.7", 8080))
            .denied()
            .outcome(pb::Outcome::Dropped)
            .drop_reason("NETFILTER_DROP")
            .drop_count(3)
            .ingress_status(pb::PolicyStatus::Denied)
            .denied_by(["default/api-from-web", "default/default-deny"])
            .reason("needs source namespace label team=web")
            .count(3)
            .build(),
        seed_flow("lab/1/2")
            .node("node-b")
            .from(seed_pod("default", "np-client", "10.0.2.5", 41000))
            .to(seed_pod("default", "api", "10.0.2.7", 8080))
            .allowed_by(["default/api-from-web"])
            .build(),
        seed_flow("lab/1/3")
            .from(seed_pod("default", "np-client", "10.0.2.5", 41001))
            .to(seed_pod("kube-system", "coredns", "10.0.3.10", 53))
            .udp()
            .denied()
            .outcome(pb::Outcome::Dropped)
            .drop_reason("NETFILTER_DROP")
            .drop_count(1)
            .egress_status(pb::PolicyStatus::Denied)
            .denied_by(["default/default-deny"])
            .reason("egress isolated by default/default-deny")
            .dns("kubernetes.default.svc.cluster.local", "A")
            .build(),
        seed_flow("lab/1/4")
            .from(seed_pod("x' OR 1=1 --", "evil", "10.0.9.9", 1))
            .to(seed_pod("default", "api", "10.0.2.7", 9999))
            .outcome(pb::Outcome::Dropped)
            .drop_reason("NO_SOCKET")
            .drop_count(1)
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
    assert_eq!(first.len(), 7, "no reason without -o wide: {out}");
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

/// The flow ids of `observe ... -o jsonl` output.
fn ids(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_takes_hubbles_filter_flags() {
    let (server, addr) = server().await;
    // The fixture: 1 shop/np-client -> default/api denied, dropped (NETFILTER_DROP);
    // 2 default/np-client -> default/api allowed on node-b; 3 default/np-client ->
    // kube-system/coredns DNS denied, dropped (NETFILTER_DROP); 4 evil -> default/api
    // allowed though dropped (NO_SOCKET).
    for (flags, expected) in [
        (&["--ip", "10.0.2.5"][..], &[2, 3][..]),
        (&["--ip", "10.0.2.7"], &[1, 2, 4]),
        (&["--ip", "10.0.2.5", "--ip", "10.0.9.9"], &[2, 3, 4]),
        (&["--from-ip", "10.0.2.0/24"], &[2, 3]),
        (&["--to-ip", "10.0.2.7"], &[1, 2, 4]),
        (&["--to-ip", "10.0.2.5"], &[]),
        (&["--from-namespace", "default"], &[2, 3]),
        (&["--to-namespace", "default"], &[1, 2, 4]),
        (
            &[
                "--from-namespace",
                "default",
                "--to-namespace",
                "kube-system",
            ],
            &[3],
        ),
        (&["--from-label", "role=frontend"], &[1, 2, 3]),
        (&["--to-label", "k8s-app=kube-dns"], &[3]),
        (&["-l", "app=api"], &[1, 2, 4]),
        (&["--type", "dns"], &[3]),
        (&["--type", "mismatch"], &[4]),
        (&["-t", "dropped"], &[1, 3, 4]),
        (&["--type", "allowed", "--type", "denied"], &[1, 2, 3, 4]),
        (&["--drop-reason", "netfilter_drop"], &[1, 3]),
        (&["--drop-reason", "SKB_DROP_REASON_NO_SOCKET"], &[4]),
        // --not excludes the next filter flag only.
        (&["--not", "--type", "dns"], &[1, 2, 4]),
        (
            &["--to-ip", "10.0.2.7", "--not", "--from-namespace", "shop"],
            &[2, 4],
        ),
        (
            &["--not", "--from-namespace", "shop", "--to-ip", "10.0.2.7"],
            &[2, 4],
        ),
        // Either-end flags exclude either end.
        (&["--ip", "10.0.2.5", "--not", "--ip", "10.0.3.10"], &[2]),
        // Excluded flags narrow each other, as in hubble: only flows from
        // default AND of type dns go.
        (&["--not", "--from-namespace", "default"], &[1, 4]),
        (
            &[
                "--not",
                "--from-namespace",
                "default",
                "--not",
                "--type",
                "dns",
            ],
            &[1, 2, 4],
        ),
        (
            &["--not", "-n", "x' OR 1=1 --", "--not", "--mismatch"],
            &[1, 2, 3],
        ),
    ] {
        let mut a = args(&["observe", "--server", &addr, "-o", "jsonl"]);
        a.extend(args(flags));
        let want: Vec<String> = expected.iter().map(|i| format!("lab/1/{i}")).collect();
        assert_eq!(ids(&stdout(&run(a).await)), want, "{flags:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_prints_compact_table_and_wide() {
    let (server, addr) = server().await;
    let observe = |extra: &[&str]| {
        let mut a = args(&["observe", "--server", &addr]);
        a.extend(args(extra));
        run(a)
    };
    let out = stdout(&observe(&["--verdict", "allowed", "--print-node-name"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains(" [node-b]  default/np-client:41000 -> "),
        "{out}"
    );
    assert!(
        lines[1].contains(" [lab-node]  x' OR 1=1 --/evil:1 -> "),
        "{out}"
    );
    let compact = stdout(&observe(&[]).await);
    assert!(!compact.contains("node-b"), "{compact}");
    assert!(
        !compact.contains("needs source namespace label"),
        "compact leaves the reason out: {compact}"
    );

    let table = stdout(&observe(&["-o", "table", "--type", "denied"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TIME "), "{table}");
    assert!(lines[0].ends_with(" DETAILS"), "{table}");
    let column = |line: &str, header: &str| line[lines[0].find(header).unwrap()..].to_string();
    assert!(
        column(lines[1], "SOURCE").starts_with("shop/np-client:42000 "),
        "{table}"
    );
    assert!(column(lines[2], "PROTOCOL").starts_with("udp "), "{table}");

    let wide = stdout(&observe(&["-o", "wide", "--type", "denied"]).await);
    let lines: Vec<&str> = wide.lines().collect();
    assert!(
        lines[0].contains(" NODE ") && lines[0].ends_with(" REASON"),
        "{wide}"
    );
    assert!(
        lines[1].ends_with("needs source namespace label team=web"),
        "{wide}"
    );
    assert!(
        lines[2].ends_with("egress isolated by default/default-deny"),
        "{wide}"
    );
    assert!(lines[1].len() > table.lines().nth(1).unwrap().len());

    let out = observe(&["-o", "table", "-f"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-o table: a table is aligned over the whole answer"),
        "{stderr}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_take_all_namespaces_and_label_selectors() {
    let (server, addr) = server().await;
    // `netverdict COMMAND --server ADDR FLAGS...`, JSON unless FLAGS say otherwise.
    let report = |flags: &[&str]| {
        let mut a = args(&[flags[0], "--server", &addr]);
        if !flags.contains(&"-o") {
            a.extend(args(&["-o", "json"]));
        }
        a.extend(args(&flags[1..]));
        run(a)
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_str(&stdout(out)).unwrap()
    };
    let all = json(&report(&["denied", "-A"]).await);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let api = json(&report(&["denied", "-l", "app=api"]).await);
    assert_eq!(api.as_array().unwrap().len(), 1, "{api}");
    assert_eq!(api[0]["source"]["namespace"], "shop");
    let dns = json(&report(&["denied", "-l", "k8s-app in (kube-dns)", "-n", "default"]).await);
    assert_eq!(dns[0]["destination"]["workload"], "coredns", "{dns}");
    assert_eq!(dns.as_array().unwrap().len(), 1);
    let none = json(&report(&["denied", "-l", "app=nope"]).await);
    assert_eq!(none, serde_json::json!([]));

    let gaps = |v: &serde_json::Value| -> Vec<String> {
        v["policy_gaps"]
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
            .collect()
    };
    let frontend = json(&report(&["dns", "-A", "-l", "role=frontend"]).await);
    assert_eq!(gaps(&frontend), ["default/np-client"]);
    assert_eq!(
        frontend["failures"].as_array().unwrap().len(),
        1,
        "{frontend}"
    );
    let api = json(&report(&["dns", "-l", "app=api"]).await);
    assert_eq!(gaps(&api), ["default/api"]);
    assert_eq!(api["failures"], serde_json::json!([]));

    // Wide shows the reason the table leaves out.
    let table = stdout(&run(args(&["dns", "--server", &addr])).await);
    let wide = stdout(&run(args(&["dns", "--server", &addr, "-o", "wide"])).await);
    assert!(
        !table.contains("REASON") && wide.contains("REASON"),
        "{wide}"
    );
    assert!(
        wide.contains("egress isolated by default/default-deny"),
        "{wide}"
    );

    for (flags, expected) in [
        (&["denied", "-A", "-n", "shop"][..], "cannot be used with"),
        (
            &["dns", "-l", "app in ("][..],
            "-l/--selector: filter field labels",
        ),
        (
            &["denied", "-o", "jsonl"][..],
            "[possible values: table, wide, json]",
        ),
    ] {
        let out = report(flags).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    server.shutdown().await.unwrap();
}

/// The next line of a child's stdout, within a deadline.
fn next_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_follow_new_flows() {
    let (server, addr) = server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args([
            "mismatches",
            "--server",
            &addr,
            "-f",
            // Follow starts from now unless history is asked for.
            "--last",
            "10",
            "-o",
            "jsonl",
            "-n",
            "default",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let id = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].clone();
    // The stored mismatch first: the follower subscribed before it was read.
    assert_eq!(id(&next_line(&lines)), "lab/1/4");
    let fresh = |id: &str, mismatch: pb::Mismatch, ns: &str| {
        flow(id)
            .node("lab-node")
            .from(seed_pod(ns, "web", "10.0.2.9", 40000))
            .to(seed_pod(ns, "api", "10.0.2.7", 8080))
            .denied()
            .mismatch(mismatch)
            .build()
    };
    let (batches, mut acks) = push_stream(&format!("http://{addr}")).await;
    let flows = vec![
        fresh("new/agrees", pb::Mismatch::None, "default"),
        fresh("new/elsewhere", pb::Mismatch::AllowedThoughDenied, "other"),
        fresh("new/mismatch", pb::Mismatch::AllowedThoughDenied, "default"),
    ];
    push_acked(&batches, &mut acks, batch("lab-node", 1, flows)).await;
    assert_eq!(id(&next_line(&lines)), "new/mismatch");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.is_empty(), "only the mismatch in default: {rest:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_the_api_server_and_of_a_collector() {
    let (server, addr) = server().await;
    let out = stdout(&run(args(&["status", "--server", &addr])).await);
    assert!(out.contains(&format!("Server:      {addr}\n")), "{out}");
    assert!(out.contains("Flows held:  4\n"), "{out}");
    assert!(out.contains("Flows lost:  0\n"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &run(args(&["status", "--server", &addr, "-o", "json"])).await,
    ))
    .unwrap();
    assert_eq!(json["flows_stored"], 4);
    assert_eq!(
        json["newest"], json["oldest"],
        "the fixture's flows share one time"
    );
    server.shutdown().await.unwrap();

    // A collector's observer over a ring of 3 that was given 5 flows.
    let mut ring = FlowRing::new(3);
    for (i, mut flow) in flows()
        .into_iter()
        .chain(flows().into_iter().take(1))
        .enumerate()
    {
        flow.id = format!("ring/{i}");
        ring.push(flow);
    }
    ring.publish();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap().to_string();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ObserverService::new(ring.reader()).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &run(args(&["status", "--server", &collector, "-o", "json"])).await,
    ))
    .unwrap();
    assert_eq!(
        (
            json["flows_stored"].as_u64(),
            json["flows_dropped"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(json["server"], collector.as_str());
    // And observe's filters work on the ring as on the API server.
    let out = stdout(
        &run(args(&[
            "observe", "--server", &collector, "--not", "--type", "dns", "-o", "jsonl",
        ]))
        .await,
    );
    assert_eq!(ids(&out), ["ring/3", "ring/4"]);
    serving.abort();
}

#[test]
fn completion_scripts_know_the_commands_and_flags() {
    for (shell, marker) in [
        ("bash", "complete "),
        ("zsh", "#compdef netverdict"),
        ("fish", "complete -c netverdict"),
    ] {
        let script = stdout(&netverdict(&["completion", shell]));
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in [
            "observe",
            "from-ip",
            "drop-reason",
            "no-answer",
            "mismatches",
            "status",
            "wide",
            "whatif",
            "recommend",
            "output-dir",
        ] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = netverdict(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
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
            "invalid value 'maybe' for '--verdict <VERDICT>'",
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
            &["observe", "--ip", "10.0.0.1", "--not"][..],
            "--not at the end",
        ),
        (
            &["observe", "--ip", "1.2.3.4", "--from-ip", "1.2.3.5"][..],
            "--ip and --from-ip cannot be combined",
        ),
        (
            &["observe", "--type", "trace"][..],
            "[possible values: allowed, denied, dropped, dns, mismatch]",
        ),
        (
            &["observe", "--from-ip", "10.0.0.0/33"][..],
            "--from-ip: filter field source_ip",
        ),
        (
            &["capture", "-o", "json"][..],
            "[possible values: compact, jsonl]",
        ),
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
            &[
                "api",
                "--clickhouse",
                "http://127.0.0.1:1",
                "--clickhouse-cluster",
                "my-cluster",
            ][..],
            "config field cluster: \"my-cluster\" is not letters, digits and '_'",
        ),
        (
            &["api", "--clickhouse-cluster", "c1"][..],
            "--clickhouse <CLICKHOUSE>",
        ),
        (
            &["api", "--spool-dir", "/tmp/spool"][..],
            "--clickhouse <CLICKHOUSE>",
        ),
        (
            &["api", "--max-in-flight-bytes", "0"][..],
            "--max-in-flight-bytes: must be between 1 and 4294967295",
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
        .args(["--memory-flows", "1000", "--memory-max-bytes", "16000000"])
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

/// `diagnose` with an API server: the pair's observed flows, the mismatches
/// on the flow's node as evidence of enforcement, the source's failed DNS
/// queries; one JSON object whose `fix` is an array of Kubernetes objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_reads_the_steps_that_need_flows_from_the_api_server() {
    let (server, addr) = server().await;
    let seed_dir = netverdict_testing::seed::dir();
    let seed = seed_dir.to_str().expect("a UTF-8 path");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("an array: {v}"))
            .iter()
            .map(|f| f["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let out = run(args(&[
        "diagnose",
        "--cluster",
        seed,
        "--from",
        "shop/np-client",
        "--to",
        "default/api",
        "--port",
        "8080",
        "--server",
        &addr,
        "-o",
        "json",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "denied: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&d["observed_flows"]), ["lab/1/1"]);
    assert_eq!(
        ids(&d["enforcement_evidence"]),
        ["lab/1/4"],
        "the mismatch on lab-node"
    );
    assert_eq!(ids(&d["dns_failures"]), Vec::<String>::new());
    let fix = d["fix"].as_array().expect("fix is an array");
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0]["kind"], "NetworkPolicy");
    assert_eq!(fix[0]["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(fix[0]["metadata"]["namespace"], "default");

    // DNS that policy allows but that failed: the failure is shown, no fix.
    let out = run(args(&[
        "diagnose",
        "--cluster",
        seed,
        "--from",
        "default/np-client",
        "--to",
        "kube-system/kube-dns",
        "--protocol",
        "UDP",
        "--server",
        &addr,
    ]))
    .await;
    let text = stdout(&out);
    assert!(text.contains("5. DNS of the source"), "{text}");
    assert!(
        text.contains("dns A kubernetes.default.svc.cluster.local"),
        "{text}"
    );
    assert!(text.contains("Fix: none needed"), "{text}");

    // Without a server, each of those steps says what it needs.
    let out = run(args(&[
        "diagnose",
        "--cluster",
        seed,
        "--from",
        "shop/np-client",
        "--to",
        "default/api",
        "--port",
        "8080",
    ]))
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("needs an API server (--server)").count(),
        3,
        "{text}"
    );
    assert!(text.contains("kind: NetworkPolicy"), "{text}");
    server.shutdown().await.unwrap();
}
