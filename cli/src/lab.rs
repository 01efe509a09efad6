//! `netverdict lab ...`: a cluster of network namespaces with NetworkPolicy
//! enforced by nftables (see the `netverdict-lab` crate), and probes inside it.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use netverdict_lab::lab::OutsideName;
use netverdict_lab::lab::STATE_ROOT;
use netverdict_lab::serve::ServeSpec;
use netverdict_lab::{DnsAnswer, Lab, LabOptions, LabelTarget, Outcome, Unenforced};
use netverdict_policy::{PodKey, Protocol};

use crate::output::{self, Output};

/// Arguments of `netverdict lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

/// Options every lab command shares.
#[derive(Args, Debug, Clone)]
struct LabName {
    /// The lab's name (several labs coexist).
    #[arg(long, default_value = "lab", global = true)]
    name: String,
    /// Where labs keep their state.
    #[arg(long, default_value = STATE_ROOT, global = true, hide = true)]
    state_root: PathBuf,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Build the cluster: pods as network namespaces, servers on their ports,
    /// Services as DNAT, a cluster DNS, NetworkPolicy in nftables.
    Up {
        #[command(flatten)]
        lab: LabName,
        /// Manifest files or directories (Namespaces, Pods, Services, NetworkPolicies).
        #[arg(long = "cluster", required = true, num_args = 1..)]
        cluster: Vec<PathBuf>,
        /// Do not run a cluster DNS.
        #[arg(long)]
        no_dns: bool,
        /// Leave this namespace's policies unenforced (as with a CNI that does not enforce).
        #[arg(long = "unenforced-namespace")]
        unenforced_namespaces: Vec<String>,
        /// Leave this policy (`namespace/name`, or `Kind/name` for an admin policy) unenforced.
        #[arg(long = "unenforced-policy")]
        unenforced_policies: Vec<String>,
        /// How many nodes: node namespaces routed to each other, pods spread
        /// over them (a pod whose spec.nodeName names a lab node goes there,
        /// the others in turn: node-0, node-1, ...).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// How NetworkPolicy is enforced: `nftables` (drop reason
        /// NETFILTER_DROP) or `tc` (tc programs drop, as eBPF CNIs do).
        #[arg(long, default_value = "nftables")]
        enforcement: netverdict_lab::Enforcement,
    },
    /// List the labs on this machine (with state, or left over by a crash).
    List {
        #[command(flatten)]
        lab: LabName,
    },
    /// Remove everything the lab made (also after a crash).
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Add or replace objects (policies, pods, namespaces, services); rules are
    /// updated in place.
    Apply {
        #[command(flatten)]
        lab: LabName,
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Delete a NetworkPolicy (`namespace/name`).
    DeletePolicy {
        #[command(flatten)]
        lab: LabName,
        /// The policy, `namespace/name`.
        policy: String,
    },
    /// Change labels: `label pod NS/NAME k=v k2-` or `label namespace NS k=v`.
    Label {
        #[command(flatten)]
        lab: LabName,
        /// `pod` or `namespace`.
        kind: String,
        /// The pod (`namespace/name`) or the namespace.
        target: String,
        /// `key=value` to set a label, `key-` to remove it.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Choose which namespaces and policies are left unenforced (replaces the
    /// previous choice; no option enforces everything again).
    Unenforce {
        #[command(flatten)]
        lab: LabName,
        /// Leave this namespace's policies unenforced (repeatable).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Leave this policy (`namespace/name`, or `Kind/name` for an admin policy) unenforced (repeatable).
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
    /// Make the cluster DNS answer for a name outside the cluster, as an
    /// upstream resolver would for an internet name: with addresses (A and
    /// AAAA records) or as an alias (a CNAME) of another such name. Flows
    /// from pods that resolved it then carry the name.
    OutsideName {
        #[command(flatten)]
        lab: LabName,
        /// The name, e.g. `api.example.test`.
        #[arg(value_name = "NAME")]
        outside: String,
        /// Its addresses.
        #[arg(required_unless_present = "alias", conflicts_with = "alias")]
        addresses: Vec<IpAddr>,
        /// Make it a CNAME to this name instead.
        #[arg(long, value_name = "NAME")]
        alias: Option<String>,
    },
    /// Connect from inside a pod, like `kubectl exec POD -- nc -vz`. Exit code:
    /// 0 succeeded, 1 refused, 3 timed out (or unreachable, or the name did not
    /// resolve).
    Probe {
        #[command(flatten)]
        lab: LabName,
        /// Source pod `namespace/name`.
        #[arg(long)]
        from: String,
        /// `namespace/pod`, `service.namespace` (resolved through the cluster DNS) or an IP.
        #[arg(long)]
        to: String,
        /// The destination port.
        #[arg(long)]
        port: u16,
        /// TCP, UDP, SCTP or ICMP (a ping; its port is ignored).
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// How long to wait for an answer.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Resolve a name through the cluster DNS from inside a pod, like `nslookup`.
    /// It uses the pod's search list (`api.default` finds
    /// `api.default.svc.cluster.local`). Exit code: 0 an answer, 1 NXDOMAIN or
    /// another error code, 3 timed out.
    Dns {
        #[command(flatten)]
        lab: LabName,
        /// The pod asking, `namespace/name`.
        #[arg(long)]
        from: String,
        /// The name to resolve.
        #[arg(value_name = "NAME")]
        query: String,
        /// Ask for AAAA instead of A.
        #[arg(long)]
        aaaa: bool,
        /// Query over TCP.
        #[arg(long)]
        tcp: bool,
        /// How long to wait for an answer.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Probe every pod pair and print the reachability truth table.
    Matrix {
        #[command(flatten)]
        lab: LabName,
        /// The port every pod is probed on.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// TCP, UDP, SCTP or ICMP (a ping; its port is ignored).
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// How long each probe waits for an answer.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Compare with the policy engine's verdicts; exit 1 on a difference.
        #[arg(long)]
        expect: bool,
        /// Output format: text, json.
        #[arg(short = 'o', long, value_parser = output::parser(output::PROSE), default_value = "text")]
        output: Output,
    },
    /// Time `lab up` (100 pods, 50 policies) and a 100×100 matrix.
    Bench {
        #[command(flatten)]
        lab: LabName,
        /// How many pods the benchmark's cluster has.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// How many policies it has.
        #[arg(long, default_value_t = 50)]
        policies: usize,
    },
    /// The chaos soak: lab traffic from many pods (connections,
    /// random-subdomain DNS, port scans) through a collector, an API server
    /// and a ClickHouse of its own, each killed with SIGKILL at random
    /// moments and restarted. Prints flows acknowledged against stored
    /// (exactly once), peak and per-minute RSS, losses by cause and each
    /// fault's recovery time; exit 1 when the goal is missed (as root).
    Soak(Box<crate::soak::SoakArgs>),
    /// Run pod servers (started by `lab up`; the argument is a JSON spec).
    #[command(hide = true)]
    Serve { spec: String },
}

/// Exit code of a probe or lookup that timed out (2 is an error of the command).
const TIMED_OUT: u8 = 3;

fn protocol(s: &str) -> anyhow::Result<Protocol> {
    s.parse()
        .map_err(|()| anyhow::anyhow!("unknown protocol {s:?}: use TCP, UDP, SCTP or ICMP"))
}

fn pod_key(s: &str) -> anyhow::Result<PodKey> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(PodKey::new(ns, name)),
        _ => bail!("{s:?} is not namespace/name"),
    }
}

/// The command that runs a lab's servers: this binary's `lab serve`.
pub(crate) fn server_command() -> anyhow::Result<Vec<OsString>> {
    let exe = std::env::current_exe().context("cannot find the netverdict binary")?;
    Ok(vec![exe.into(), "lab".into(), "serve".into()])
}

/// Runs a `netverdict lab` command.
pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Soak(args) => crate::soak::run(*args),
        LabCommand::Serve { spec } => {
            let spec: ServeSpec = serde_json::from_str(&spec).context("invalid serve spec")?;
            netverdict_lab::serve::serve(&spec)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Up {
            lab,
            cluster,
            no_dns,
            unenforced_namespaces,
            unenforced_policies,
            nodes,
            enforcement,
        } => {
            let mut options = LabOptions::new(&lab.name, server_command()?);
            options.dns = !no_dns;
            options.nodes = nodes;
            options.enforcement = enforcement;
            options.state_root = lab.state_root;
            options.unenforced = Unenforced {
                namespaces: unenforced_namespaces.into_iter().collect(),
                policies: unenforced_policies.into_iter().collect(),
            };
            let started = Instant::now();
            let l = Lab::up(&cluster, &options)?;
            println!(
                "lab {} up: {} pods on {} node(s), {} policies enforced by {} in {:.2}s",
                l.name(),
                l.pods().len(),
                l.nodes().len(),
                l.cluster().policy_count(),
                l.state().enforcement.as_str(),
                started.elapsed().as_secs_f64()
            );
            for (node, _) in l.namespaces_by_node() {
                println!("  node {} {} ({})", node.name, node.ip, node.netns);
                for pod in l.pods().into_iter().filter(|p| p.node == node.index) {
                    println!(
                        "    {}/{} {} ({})",
                        pod.namespace, pod.name, pod.ip, pod.netns
                    );
                }
            }
            if let Some(dns) = &l.state().dns {
                println!("  cluster DNS {} in {}", dns.service_ip, dns.pod);
            }
            for u in &l.state().unsupported {
                println!("  unsupported by this kernel, not served: {u}");
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::List { lab } => {
            for l in netverdict_lab::lab::list(&lab.state_root) {
                let status = if l.has_state {
                    "up"
                } else {
                    "crashed (run `down`)"
                };
                println!("{}\t{} namespaces\t{status}", l.name, l.namespaces);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { lab } => {
            let r = netverdict_lab::down(&lab.name, &lab.state_root)?;
            println!(
                "lab {} down: {} namespaces, {} processes removed",
                lab.name, r.namespaces, r.processes
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Apply { lab, paths } => {
            let mut l = Lab::open(&lab.name, &lab.state_root)?;
            l.apply(&paths)?;
            println!(
                "applied; lab {} has {} pods, {} policies",
                l.name(),
                l.pods().len(),
                l.cluster().policy_count()
            );
            let unenforced = netverdict_lab::nft::unenforced_domain_name_rules(l.cluster());
            if !unenforced.is_empty() {
                println!(
                    "note: the lab does not enforce domainNames peers (nftables sees addresses, \
                     not names): it skips these rules, so their flows meet the rules after \
                     them, while verdicts judge flows by the names their pods resolved:"
                );
                for rule in unenforced {
                    println!("  {rule}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::DeletePolicy { lab, policy } => {
            let mut l = Lab::open(&lab.name, &lab.state_root)?;
            let key = pod_key(&policy)?;
            if !l.delete_policy(&key.namespace, &key.name)? {
                bail!("no NetworkPolicy {policy} in lab {}", lab.name);
            }
            println!("deleted networkpolicy {policy}");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Label {
            lab,
            kind,
            target,
            changes,
        } => {
            let mut l = Lab::open(&lab.name, &lab.state_root)?;
            let target = match kind.as_str() {
                "pod" | "pods" | "po" => LabelTarget::Pod(pod_key(&target)?),
                "namespace" | "namespaces" | "ns" => LabelTarget::Namespace(target),
                other => bail!("cannot label {other:?}: use pod or namespace"),
            };
            l.label(&target, &changes)?;
            println!("labelled");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::OutsideName {
            lab,
            outside: name,
            addresses,
            alias,
        } => {
            let mut l = Lab::open(&lab.name, &lab.state_root)?;
            let target = match alias {
                Some(target) => OutsideName::Alias(target),
                None => OutsideName::Addresses(addresses),
            };
            l.set_outside_name(&name, target)?;
            println!("the cluster DNS answers for {name}");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Unenforce {
            lab,
            namespaces,
            policies,
        } => {
            let mut l = Lab::open(&lab.name, &lab.state_root)?;
            l.set_unenforced(Unenforced {
                namespaces: namespaces.into_iter().collect(),
                policies: policies.into_iter().collect(),
            })?;
            let u = &l.state().unenforced;
            let list = |set: &std::collections::BTreeSet<String>| {
                if set.is_empty() {
                    "(none)".to_string()
                } else {
                    set.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            println!(
                "unenforced namespaces: {}; unenforced policies: {}",
                list(&u.namespaces),
                list(&u.policies)
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Probe {
            lab,
            from,
            to,
            port,
            protocol: proto,
            timeout,
        } => {
            let l = Lab::open(&lab.name, &lab.state_root)?;
            let from = pod_key(&from)?;
            let proto = protocol(&proto)?;
            let ip = match l.resolve_target(&from, &to, timeout) {
                Ok(ip) => ip,
                Err(e) => {
                    println!("nc: {e}");
                    return Ok(ExitCode::from(TIMED_OUT));
                }
            };
            let outcome = l.probe(&from, ip, port, proto, timeout)?;
            println!(
                "{to} ({ip}) {port} port [{}] {outcome}",
                proto.as_str().to_ascii_lowercase()
            );
            Ok(match outcome {
                Outcome::Succeeded => ExitCode::SUCCESS,
                Outcome::Refused => ExitCode::from(1),
                _ => ExitCode::from(TIMED_OUT),
            })
        }
        LabCommand::Dns {
            lab,
            from,
            query,
            aaaa,
            tcp,
            timeout,
        } => {
            let l = Lab::open(&lab.name, &lab.state_root)?;
            let from = pod_key(&from)?;
            let record = if aaaa {
                hickory_proto::rr::RecordType::AAAA
            } else {
                hickory_proto::rr::RecordType::A
            };
            let (asked, answer) = l.lookup(&from, &query, record, tcp, timeout)?;
            if asked == query {
                println!("{query}: {answer}");
            } else {
                println!("{query} ({asked}): {answer}");
            }
            Ok(match answer {
                DnsAnswer::Addresses(_) => ExitCode::SUCCESS,
                DnsAnswer::NxDomain | DnsAnswer::Failed(_) => ExitCode::from(1),
                DnsAnswer::TimedOut => ExitCode::from(TIMED_OUT),
            })
        }
        LabCommand::Matrix {
            lab,
            port,
            protocol: proto,
            timeout,
            expect,
            output,
        } => {
            let l = Lab::open(&lab.name, &lab.state_root)?;
            let matrix = l.matrix(port, protocol(&proto)?, timeout)?;
            let diffs = if expect {
                l.differences(&matrix)
            } else {
                Vec::new()
            };
            match output {
                Output::Json => {
                    let v = serde_json::json!({"matrix": matrix, "differences": diffs, "expect": expect});
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                _ => {
                    print!("{}", matrix.render());
                    if expect {
                        if diffs.is_empty() {
                            println!("the kernel agrees with the policy engine on every pair");
                        } else {
                            println!("{} differences with the policy engine:", diffs.len());
                            for d in &diffs {
                                println!("{d}\n");
                            }
                        }
                    }
                }
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        LabCommand::Bench {
            lab,
            pods,
            policies,
        } => {
            let mut options = LabOptions::new(&lab.name, server_command()?);
            options.state_root = lab.state_root.clone();
            options.dns = false;
            let objects = netverdict_lab::generate::bench_cluster(pods, policies);
            let _guard = netverdict_lab::DownOnDrop {
                name: lab.name.clone(),
                state_root: lab.state_root.clone(),
            };
            let started = Instant::now();
            let l = Lab::up_objects(objects, &options)?;
            let up = started.elapsed().as_secs_f64();
            println!(
                "lab up: {} pods, {} policies in {up:.2}s",
                l.pods().len(),
                l.cluster().policy_count()
            );
            let started = Instant::now();
            let matrix = l.matrix(80, Protocol::Tcp, Duration::from_secs(1))?;
            let m = started.elapsed().as_secs_f64();
            let n = matrix.pods.len();
            let reached = matrix
                .cells
                .iter()
                .flatten()
                .filter(|c| c.reached())
                .count();
            println!(
                "matrix: {n}x{n} probes on TCP/80 in {m:.2}s ({reached} reached, {} blocked)",
                n * n - reached
            );
            let diffs = l.differences(&matrix);
            println!("differences with the policy engine: {}", diffs.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
