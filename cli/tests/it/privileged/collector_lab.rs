//! The collector end to end on the lab (as root): the seed guide's scenario with
//! default-deny, api-from-web and allow-dns-egress enforced by nftables, real
//! traffic from the seed's lab commands, the real eBPF probes, and the
//! collector's pipeline. Its flows must name the right pods, policies, verdicts,
//! outcomes and DNS names (an admin `domainNames` allowlist matched by them),
//! and pings (ICMP echo) be flows too: answered,
//! dropped by a policy, or unanswered. Skipped without root (one line says so); as root,
//! fails (never skips) without the lab's tools.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netverdict_cluster::manifests::ManifestOptions;
use netverdict_cluster::{SharedState, Source};
use netverdict_collector::agent::{Agent, AgentConfig, AgentHandle};
use netverdict_collector::aggregate::Windows;
use netverdict_collector::correlate::Timeouts;
use netverdict_collector::pipeline::{self, Pipeline, PipelineConfig};
use netverdict_lab::Lab;
use netverdict_policy::{ClusterState, PodKey, Protocol};
use netverdict_proto::v1 as pb;
use netverdict_testing::flow::{describe_all, who};
use netverdict_testing::grpc::get_flows;
use netverdict_testing::lab::TestLab;
use netverdict_testing::require_root;
use netverdict_testing::{scrape, seed};

/// The command that runs the lab's servers: `netverdict lab serve`.
const SERVER: [&str; 3] = [env!("CARGO_BIN_EXE_netverdict"), "lab", "serve"];

/// The inode numbers of the lab's network namespaces (pods and node).
fn lab_netns(lab: &Lab) -> rustc_hash::FxHashSet<u32> {
    use std::os::unix::fs::MetadataExt;
    let node = netverdict_lab::lab::node_netns(&lab.state().name);
    lab.state()
        .pods
        .values()
        .map(|p| p.netns.clone())
        .chain([node])
        .map(|name| {
            let meta = std::fs::metadata(Path::new("/run/netns").join(&name))
                .unwrap_or_else(|e| panic!("netns {name}: {e}"));
            meta.ino() as u32
        })
        .collect()
}

fn policies(refs: &[pb::PolicyRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect()
}

/// Waits until `found` holds for the flows collected so far, or fails after the
/// deadline with every flow collected.
async fn wait_for(
    flows: &tokio::sync::Mutex<Vec<pb::Flow>>,
    what: &str,
    found: impl Fn(&pb::Flow) -> bool,
) -> pb::Flow {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(f) = flows.lock().await.iter().find(|f| found(f)) {
            return f.clone();
        }
        if Instant::now() > deadline {
            let all = describe_all(&flows.lock().await);
            panic!("no flow {what} within 30 s; flows seen:\n{all}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The collector's pipeline on a lab: real probes, the cluster of `files`
/// with the lab's node address, only the lab's network namespaces, short
/// windows. The flows it exports are gathered in `flows`.
struct LabPipeline {
    pipeline: Arc<tokio::sync::Mutex<Pipeline>>,
    flows: Arc<tokio::sync::Mutex<Vec<pb::Flow>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LabPipeline {
    fn start(lab: &Lab, files: &[std::path::PathBuf], timeouts: Timeouts) -> LabPipeline {
        let mut state = ClusterState::load_paths(files).expect("manifests");
        state.set_local_node_ips(["169.254.1.1".parse::<IpAddr>().unwrap()]);
        let probes = netverdict_ebpf::Probes::load(&netverdict_ebpf::Config::default())
            .expect("load the eBPF probes");
        let (events, _reader) = probes.into_stream().expect("event stream").spawn(65_536);
        let config = PipelineConfig {
            node_name: "lab-node".into(),
            timeouts,
            windows: Windows {
                allowed: Duration::from_millis(500),
                denied: Duration::from_millis(500),
            },
            tick: Duration::from_millis(100),
            // Only this lab: other labs on the machine may use the same addresses.
            netns: Some(lab_netns(lab)),
            ..PipelineConfig::default()
        };
        let pipeline = Arc::new(tokio::sync::Mutex::new(Pipeline::new(
            config,
            SharedState::new(state),
        )));
        let (export, mut exported) = tokio::sync::mpsc::channel(1024);
        let runner = {
            let pipeline = pipeline.clone();
            tokio::spawn(async move {
                let _ = pipeline::run(&pipeline, events, Some(export)).await;
            })
        };
        let flows = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let collector = {
            let flows = flows.clone();
            tokio::spawn(async move {
                while let Some(f) = exported.recv().await {
                    flows.lock().await.push(f);
                }
            })
        };
        LabPipeline {
            pipeline,
            flows,
            tasks: vec![runner, collector],
        }
    }

    /// Stops the pipeline and the gathering.
    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_flows_name_pods_policies_verdicts_outcomes_and_dns() {
    if !require_root() {
        return;
    }
    let test_lab = TestLab::new("collector");
    let options = test_lab.options(&SERVER);
    let files = seed::paths(&["default-deny", "api-from-web", "allow-dns-egress"]);
    let lab = Lab::up(&files, &options).expect("lab up");

    // The collector's view of the same cluster, with the lab's node address.
    let running = LabPipeline::start(
        &lab,
        &files,
        Timeouts {
            dns: Duration::from_secs(2),
            ..Timeouts::default()
        },
    );
    let (pipeline, flows) = (running.pipeline.clone(), running.flows.clone());

    // The seed's lab commands, from inside the pods.
    let shop = PodKey::new("shop", "np-client");
    let client = PodKey::new("default", "np-client");
    let api_service: IpAddr = "10.96.1.10".parse().unwrap();
    let probe = |lab: &Lab, from: &PodKey, port| {
        tokio::task::block_in_place(|| {
            lab.probe(
                from,
                api_service,
                port,
                Protocol::Tcp,
                Duration::from_secs(2),
            )
        })
    };
    let shop_to_api = probe(&lab, &shop, 8080).expect("probe");
    assert_eq!(shop_to_api, netverdict_lab::Outcome::TimedOut);
    let answer = tokio::task::block_in_place(|| {
        lab.dns(
            &client,
            "api.default.svc.cluster.local",
            Duration::from_secs(2),
        )
    })
    .expect("dns");
    assert!(
        matches!(answer, netverdict_lab::DnsAnswer::Addresses(_)),
        "{answer:?}"
    );

    // shop/np-client -> api through the Service: denied at default/api's ingress.
    let denied = wait_for(&flows, "shop/np-client -> default/api:8080 denied", |f| {
        who(&f.source) == "shop/np-client"
            && who(&f.destination) == "default/api"
            && f.destination.as_ref().is_some_and(|d| d.port == 8080)
            && f.traffic_direction() == pb::TrafficDirection::Egress
    })
    .await;
    assert_eq!(denied.verdict(), pb::Verdict::Denied, "{denied:?}");
    assert_eq!(denied.service, "default/api", "{denied:?}");
    assert_eq!(
        policies(&denied.denied_by),
        ["default/api-from-web", "default/default-deny"]
    );
    assert!(
        matches!(denied.outcome(), pb::Outcome::Dropped),
        "the SYNs were dropped: {denied:?}"
    );
    assert_eq!(denied.drop_reason, "NETFILTER_DROP");
    assert_eq!(denied.mismatch(), pb::Mismatch::None);
    assert!(
        denied
            .reason
            .contains("needs source namespace label team=web"),
        "{}",
        denied.reason
    );

    // The DNS query of default/np-client, allowed by allow-dns-egress and answered.
    let dns = wait_for(&flows, "DNS query for api.default.svc.cluster.local", |f| {
        who(&f.source) == "default/np-client"
            && f.dns
                .as_ref()
                .is_some_and(|d| d.query == "api.default.svc.cluster.local")
    })
    .await;
    assert_eq!(dns.verdict(), pb::Verdict::Allowed, "{dns:?}");
    assert_eq!(dns.outcome(), pb::Outcome::Answered);
    let d = dns.dns.as_ref().unwrap();
    assert_eq!((d.rcode.as_str(), d.qtype.as_str()), ("NOERROR", "A"));
    assert!(d.egress_allows_cluster_dns);
    assert_eq!(who(&dns.destination), "kube-system/coredns");
    assert_eq!(policies(&dns.allowed_by), ["default/allow-dns-egress"]);

    // Pings from shop/np-client (not isolated): to kube-system/coredns
    // (not isolated either) allowed and answered; to default/api denied by
    // default-deny (api-from-web's rule names a port, which never matches
    // ICMP) and dropped by nftables.
    let pod_ip = |key: &PodKey| lab.pod(key).expect("pod").ip;
    let coredns = PodKey::new("kube-system", "coredns");
    let api = PodKey::new("default", "api");
    let ping = |lab: &Lab, to: IpAddr| {
        tokio::task::block_in_place(|| {
            lab.probe(&shop, to, 0, Protocol::Icmp, Duration::from_secs(2))
        })
        .expect("ping")
    };
    assert_eq!(
        ping(&lab, pod_ip(&coredns)),
        netverdict_lab::Outcome::Succeeded
    );
    assert_eq!(ping(&lab, pod_ip(&api)), netverdict_lab::Outcome::TimedOut);
    let is_ping = |f: &pb::Flow, to: &str, outcome: pb::Outcome| {
        who(&f.source) == "shop/np-client"
            && who(&f.destination) == to
            && f.protocol() == pb::Protocol::Icmp
            && f.outcome() == outcome
    };
    let answered = wait_for(&flows, "a ping of coredns answered", |f| {
        is_ping(f, "kube-system/coredns", pb::Outcome::Answered)
    })
    .await;
    assert_eq!(answered.verdict(), pb::Verdict::Allowed, "{answered:?}");
    assert_eq!(answered.mismatch(), pb::Mismatch::None);
    assert_eq!(answered.destination.as_ref().map(|d| d.port), Some(0));
    assert_eq!(answered.source.as_ref().map(|s| s.port), Some(0));
    // One echo request of 44 bytes (IPv4 20, ICMP 8, data 16).
    assert_eq!((answered.packets, answered.bytes), (1, 44), "{answered:?}");
    let dropped = wait_for(&flows, "a ping of the api dropped", |f| {
        is_ping(f, "default/api", pb::Outcome::Dropped)
    })
    .await;
    assert_eq!(dropped.verdict(), pb::Verdict::Denied, "{dropped:?}");
    assert_eq!(dropped.drop_reason, "NETFILTER_DROP");
    assert_eq!(dropped.mismatch(), pb::Mismatch::None);
    assert_eq!(
        policies(&dropped.denied_by),
        ["default/api-from-web", "default/default-deny"]
    );
    assert_eq!(dropped.packets, 1);
    // coredns ignores pings from now on: allowed, never answered.
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pod(&coredns).expect("pod").netns])
        .args(["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"])
        .status()
        .expect("sysctl");
    assert!(status.success());
    assert_eq!(
        ping(&lab, pod_ip(&coredns)),
        netverdict_lab::Outcome::TimedOut
    );
    let silent = wait_for(&flows, "a ping of coredns unanswered", |f| {
        is_ping(f, "kube-system/coredns", pb::Outcome::NoAnswer)
    })
    .await;
    assert_eq!(silent.verdict(), pb::Verdict::Allowed);
    assert_eq!(silent.mismatch(), pb::Mismatch::NoAnswerThoughAllowed);

    // Debugging step 1: a "CNI" that does not enforce namespace default. The
    // kernel lets shop/np-client reach the API; the policy still denies it.
    let mut lab = lab;
    lab.set_unenforced(netverdict_lab::Unenforced {
        namespaces: ["default".to_string()].into(),
        policies: Default::default(),
    })
    .expect("unenforce default");
    let reached = probe(&lab, &shop, 8080).expect("probe");
    assert_eq!(reached, netverdict_lab::Outcome::Succeeded);
    let mismatch = wait_for(
        &flows,
        "allowed-though-denied shop/np-client -> default/api",
        |f| {
            who(&f.source) == "shop/np-client"
                && who(&f.destination) == "default/api"
                && f.mismatch() == pb::Mismatch::AllowedThoughDenied
        },
    )
    .await;
    assert_eq!(mismatch.verdict(), pb::Verdict::Denied);
    assert_eq!(mismatch.outcome(), pb::Outcome::Established);
    assert_eq!(
        policies(&mismatch.denied_by),
        ["default/api-from-web", "default/default-deny"]
    );

    let counters = pipeline.lock().await.counters().clone();
    assert!(counters.mismatches >= 1, "{counters:?}");
    assert!(counters.events > 0 && counters.records > 0, "{counters:?}");
    running.stop();
}

/// A pod resolves an outside name through the cluster DNS (a CNAME to a
/// name with an address, as internet names often are), then connects to the
/// address under default-deny: the denied flow carries the name the pod
/// asked for, `destination_fqdn` filters find it, and a
/// connection to an address the pod never resolved carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_to_outside_addresses_carry_the_names_their_pods_resolved() {
    if !require_root() {
        return;
    }
    let test_lab = TestLab::new("names");
    let options = test_lab.options(&SERVER);
    // An admin allowlist by name on top of default-deny: the engine allows
    // what the pod resolved from *.example.test, and only that. (The lab
    // cannot enforce names, and has no route out anyway: the kernel drops
    // both connections for want of one, which is no policy's drop.)
    let dir = tempfile::tempdir().expect("tempdir");
    let allowlist = dir.path().join("allowlist.yaml");
    std::fs::write(
        &allowlist,
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
         metadata: {name: allowlist}\nspec:\n  priority: 10\n  subject: {namespaces: {}}\n  \
         egress:\n  - {name: example, action: Allow, to: [{domainNames: [\"*.example.test\"]}], \
         ports: [{portNumber: {port: 443}}]}\n",
    )
    .expect("write the allowlist");
    let mut files = seed::paths(&["default-deny", "allow-dns-egress"]);
    files.push(allowlist);
    let mut lab = Lab::up(&files, &options).expect("lab up");
    let edge: IpAddr = "203.0.113.7".parse().unwrap();
    let unnamed: IpAddr = "203.0.113.8".parse().unwrap();
    lab.set_outside_name(
        "edge.cdn.test",
        netverdict_lab::lab::OutsideName::Addresses(vec![edge]),
    )
    .expect("outside name");
    lab.set_outside_name(
        "API.Example.test.",
        netverdict_lab::lab::OutsideName::Alias("edge.cdn.test".into()),
    )
    .expect("outside alias");

    let running = LabPipeline::start(&lab, &files, Timeouts::default());
    let (pipeline, flows) = (running.pipeline.clone(), running.flows.clone());

    let client = PodKey::new("default", "np-client");
    let answer = tokio::task::block_in_place(|| {
        lab.dns(&client, "api.example.test", Duration::from_secs(2))
    })
    .expect("dns");
    assert!(
        matches!(&answer, netverdict_lab::DnsAnswer::Addresses(a) if a.contains(&edge)),
        "{answer:?}"
    );
    for target in [edge, unnamed] {
        let outcome = tokio::task::block_in_place(|| {
            lab.probe(&client, target, 443, Protocol::Tcp, Duration::from_secs(1))
        })
        .expect("probe");
        assert_ne!(outcome, netverdict_lab::Outcome::Succeeded, "{target}");
    }

    let to = |ip: IpAddr| {
        move |f: &pb::Flow| {
            who(&f.source) == "default/np-client"
                && f.destination
                    .as_ref()
                    .is_some_and(|d| d.ip == ip.to_string() && d.port == 443)
        }
    };
    let named = wait_for(&flows, "default/np-client -> 203.0.113.7:443", to(edge)).await;
    assert_eq!(named.destination_names, ["api.example.test"], "{named:?}");
    assert_eq!(
        named.destination.as_ref().map(|d| d.kind()),
        Some(pb::EndpointKind::World)
    );
    assert_eq!(named.verdict(), pb::Verdict::Allowed, "{named:?}");
    let allowlist = |refs: &[pb::PolicyRef]| {
        refs.iter()
            .any(|r| r.name == "allowlist" && r.kind() == pb::PolicyKind::AdminNetworkPolicy)
    };
    assert!(allowlist(&named.allowed_by), "{named:?}");
    let rule = named.egress.as_ref().and_then(|e| e.admin_rule.as_ref());
    assert_eq!(rule.map(|r| r.name.as_str()), Some("example"), "{named:?}");
    let other = wait_for(&flows, "default/np-client -> 203.0.113.8:443", to(unnamed)).await;
    assert!(other.destination_names.is_empty(), "{other:?}");
    assert_eq!(other.verdict(), pb::Verdict::Denied, "{other:?}");
    assert!(!allowlist(&other.allowed_by), "{other:?}");
    assert!(
        other
            .egress
            .as_ref()
            .is_some_and(|e| e.not_evaluated.len() == 1),
        "the name rule could not be evaluated: {other:?}"
    );

    let filter = |pattern: &str| {
        netverdict_proto::filter::Filter::compile(&pb::FlowFilter {
            destination_fqdn: vec![pattern.into()],
            ..Default::default()
        })
        .expect("filter")
    };
    assert!(filter("*.example.test").matches(&named));
    assert!(filter("api.example.test").matches(&named));
    assert!(!filter("*.example.test").matches(&other));
    assert!(
        !filter("edge.cdn.test").matches(&named),
        "the name asked for, not the CNAME's target"
    );

    let (stats, pairs) = pipeline.lock().await.resolved_names();
    assert!(
        pairs >= 1 && stats.named >= 1 && stats.unnamed >= 1,
        "{stats:?}"
    );
    running.stop();
}

/// The flows the agent's Observer serves now, over its socket.
async fn observed(agent: &AgentHandle) -> Vec<pb::Flow> {
    let addr = agent.observer_addr().expect("observer served");
    let request = pb::GetFlowsRequest {
        number: 10_000,
        ..Default::default()
    };
    get_flows(&format!("http://{addr}"), request)
        .await
        .expect("GetFlows")
}

/// Flushes the agent until the flows it serves satisfy `done`, or fails after
/// 30 s listing them. (An event may still be in the kernel's ring buffer at a
/// flush; the next flush takes it.)
async fn flush_until(
    agent: &AgentHandle,
    what: &str,
    done: impl Fn(&[pb::Flow]) -> bool,
) -> Vec<pb::Flow> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        agent.flush().await.expect("flush");
        let flows = observed(agent).await;
        if done(&flows) {
            return flows;
        }
        if Instant::now() > deadline {
            panic!("no {what} within 30 s; flows:\n{}", describe_all(&flows));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The in-process agent on a real lab: real probes, the Observer over a real
/// socket, /metrics scraped over HTTP. One DNS query is exactly one flow with
/// count 1, although the probes see its packets in the pod and on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_on_a_lab_serves_flows_over_the_observer_and_counts_them_in_metrics() {
    if !require_root() {
        return;
    }
    let test_lab = TestLab::new("agent");
    let options = test_lab.options(&SERVER);
    let files = seed::paths(&["default-deny", "api-from-web", "allow-dns-egress"]);
    let lab = Lab::up(&files, &options).expect("lab up");
    let mut files_cluster = ManifestOptions::new(&files);
    files_cluster.require_pod_ips = true;
    let mut config = AgentConfig::new("lab-node", Source::Manifests(files_cluster));
    config.cluster.local_node_ips = vec!["169.254.1.1".parse().unwrap()];
    config.observer_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.pipeline = PipelineConfig {
        timeouts: Timeouts {
            dns: Duration::from_secs(2),
            ..Timeouts::default()
        },
        // Long windows: only flushes close records, so counts are exact.
        windows: Windows {
            allowed: Duration::from_secs(3600),
            denied: Duration::from_secs(3600),
        },
        netns: Some(lab_netns(&lab)),
        ..PipelineConfig::default()
    };
    let agent = Agent::start(config).await.expect("the agent starts");

    let shop = PodKey::new("shop", "np-client");
    let client = PodKey::new("default", "np-client");
    let outcome = tokio::task::block_in_place(|| {
        lab.probe(
            &shop,
            "10.96.1.10".parse().unwrap(),
            8080,
            Protocol::Tcp,
            Duration::from_secs(2),
        )
    })
    .expect("probe");
    assert_eq!(outcome, netverdict_lab::Outcome::TimedOut);
    let answer = tokio::task::block_in_place(|| {
        lab.dns(
            &client,
            "api.default.svc.cluster.local",
            Duration::from_secs(2),
        )
    })
    .expect("dns");
    assert!(
        matches!(answer, netverdict_lab::DnsAnswer::Addresses(_)),
        "{answer:?}"
    );

    let is_denied = |f: &pb::Flow| {
        who(&f.source) == "shop/np-client"
            && who(&f.destination) == "default/api"
            && f.traffic_direction() == pb::TrafficDirection::Egress
    };
    let is_dns = |f: &pb::Flow| {
        who(&f.source) == "default/np-client"
            && f.dns
                .as_ref()
                .is_some_and(|d| d.query == "api.default.svc.cluster.local" && d.qtype == "A")
    };
    let flows = flush_until(&agent, "denied TCP flow and DNS flow", |flows| {
        flows.iter().any(is_denied) && flows.iter().any(is_dns)
    })
    .await;
    let denied = flows.iter().find(|f| is_denied(f)).unwrap();
    assert_eq!(denied.verdict(), pb::Verdict::Denied, "{denied:?}");
    assert_eq!(denied.outcome(), pb::Outcome::Dropped, "{denied:?}");
    assert_eq!(denied.drop_reason, "NETFILTER_DROP");
    assert_eq!(denied.count, 1, "one probe, one attempt: {denied:?}");

    // One DNS query (type A) is one flow, seen once.
    let dns: Vec<&pb::Flow> = flows.iter().filter(|f| is_dns(f)).collect();
    assert_eq!(dns.len(), 1, "one query, one flow: {dns:#?}");
    assert_eq!(dns[0].count, 1, "one query, count 1: {:#?}", dns[0]);
    assert_eq!(dns[0].outcome(), pb::Outcome::Answered);
    assert_eq!(who(&dns[0].destination), "kube-system/coredns");

    let m = scrape(agent.metrics_addr().expect("metrics served")).await;
    let s = |series: &str| m.value(series);
    assert!(s(r#"netverdict_collector_flows_total{verdict="denied",outcome="dropped"}"#) >= 1.0);
    assert!(s(r#"netverdict_collector_flows_total{verdict="allowed",outcome="answered"}"#) >= 1.0);
    assert!(s(r#"netverdict_collector_kernel_drops_total{reason="NETFILTER_DROP"}"#) >= 1.0);
    // The API's ingress is isolated by both policies selecting it; DNS is
    // allowed by allow-dns-egress's rule.
    for (policy, direction, verdict) in [
        ("default-deny", "ingress", "denied"),
        ("api-from-web", "ingress", "denied"),
        ("allow-dns-egress", "egress", "allowed"),
    ] {
        let series = format!(
            r#"netverdict_collector_policy_verdicts_total{{namespace="default",policy="{policy}",kind="network-policy",direction="{direction}",verdict="{verdict}"}}"#
        );
        assert!(s(&series) >= 1.0, "{series}");
    }
    assert!(s("netverdict_collector_kernel_events_total") > 0.0);
    assert!(s("netverdict_collector_observations_annotated_total") >= 2.0);
    assert_eq!(
        s(r#"netverdict_collector_cluster_objects{kind="NetworkPolicy"}"#),
        3.0
    );
    assert_eq!(
        s("netverdict_collector_ring_flows"),
        observed(&agent).await.len() as f64
    );
    // The probes' own counters are read and exposed.
    s(r#"netverdict_collector_kernel_events_not_emitted_total{reason="non_ip_drop"}"#);
    s(r#"netverdict_collector_kernel_events_lost_total{kind="tcp",cause="ring_buffer_full"}"#);

    agent.shutdown().await.expect("clean shutdown");
}

/// `netverdict collector --lab NAME` as a process: binds port 0, says where,
/// serves /metrics with the lab's cluster, and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_command_serves_metrics_and_exits_cleanly_on_sigterm() {
    if !require_root() {
        return;
    }
    use std::io::BufRead;
    let test_lab = TestLab::new("command");
    let name = test_lab.name();
    let options = test_lab.options(&SERVER);
    let files = seed::paths(&["default-deny"]);
    let _lab = Lab::up(&files, &options).expect("lab up");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args([
            "collector",
            "--lab",
            name,
            "--node-name",
            "node-0",
            "--observer-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run netverdict collector");
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _kill = Kill(child.id());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let metrics: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the collector says where it listens within 30 s");
        if let Some(rest) = line.split_once("metrics on ").map(|(_, r)| r) {
            break rest.trim().parse().expect("an address");
        }
    };
    let m = scrape(metrics).await;
    assert_eq!(
        m.value(r#"netverdict_collector_cluster_objects{kind="NetworkPolicy"}"#),
        1.0
    );
    m.value("netverdict_collector_kernel_events_total");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not exit within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "exit {status:?}; stderr: {rest:#?}");
}
