//! A lab: one cluster of pods made of network namespaces, its servers, its
//! DNS and its nftables, and the operations on it (up, down, apply, label,
//! unenforce, probe, dns, matrix).
//!
//! Everything a lab creates lives in namespaces named `nv.<lab>.*`: the node
//! namespace `nv.<lab>.node` (the router every pod's traffic crosses, holding the
//! nftables tables) and one namespace `nv.<lab>.<n>` per pod, joined to the node
//! by a veth pair whose both ends are inside the lab's namespaces. Two labs with
//! the same pod IPs therefore never meet, and the host's root namespace is never
//! touched. The lab's state (its objects, pods and processes) is a JSON file in
//! `<state root>/<lab>/state.json`; `down` works without it, by scanning names
//! and the processes inside the lab's namespaces.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use netverdict_policy::manifest::K8sObject;
use netverdict_policy::{ClusterState, Connection, Endpoint};
use netverdict_policy::{PodKey, Protocol};
use serde::{Deserialize, Serialize};

use crate::nft::{self, PodAddr, Unenforced};
use crate::objects::{
    self, assign_ips, build_cluster, ensure_dns_objects, from_json, merge, object_id, object_value,
    objects_from_values, read_objects,
};
use crate::probe::{self, DnsAnswer, Outcome};
use crate::serve::{PodPorts, ServeSpec};
use crate::sys;

/// The node's address on every pod link: the pods' gateway, and the node IP the
/// policy engine is told about (pod-to-node traffic is always allowed).
pub const NODE_IP: Ipv4Addr = nft::NODE_GATEWAY;
/// Where pods without status.podIP get their address.
pub const ALLOC_RANGE: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 250, 0, 0), 16);
/// The default state root.
pub const STATE_ROOT: &str = "/run/netverdict/labs";
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
const DNS_PORT: u16 = 53;

/// Errors of lab operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command or namespace operation failed.
    #[error(transparent)]
    Sys(#[from] sys::Error),
    /// A probe failed to run.
    #[error(transparent)]
    Probe(#[from] probe::Error),
    /// The lab needs root.
    #[error("the lab needs root (network namespaces and nftables); run as root")]
    NotRoot,
    /// A tool the lab needs is missing.
    #[error("`{program}` not found: install the Debian package `{package}`")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    /// The lab name is not usable.
    #[error("invalid lab name {0:?}: use 1-40 characters among a-z, 0-9 and '-'")]
    BadName(String),
    /// Manifests could not be read or are invalid.
    #[error(transparent)]
    Objects(#[from] objects::Error),
    /// A pod cannot be run by the lab.
    #[error("pod {pod}: {message}")]
    Pod { pod: String, message: String },
    /// The lab does not exist (no state file).
    #[error("lab {name:?} is not up (no {path})")]
    NotUp { name: String, path: PathBuf },
    /// The state file could not be read or written.
    #[error("lab state {path}: {message}")]
    State { path: PathBuf, message: String },
    /// A server process failed to start.
    #[error("servers of lab {lab} did not start: {message}")]
    Servers { lab: String, message: String },
    /// The cluster DNS failed to start.
    #[error("cluster DNS (dnsmasq in {pod}) did not start: {message}")]
    Dns { pod: String, message: String },
    /// A probe or label target does not exist.
    #[error("unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
    /// A label argument is not `key=value` or `key-`.
    #[error("invalid label change {0:?}: use key=value or key-")]
    BadLabel(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to bring a lab up.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub name: String,
    /// Run a cluster DNS (adds a kube-dns pod and Service when the manifests
    /// have none).
    pub dns: bool,
    /// The command that runs a server process: program and leading arguments;
    /// the [`ServeSpec`] JSON is appended as the last argument.
    pub server_command: Vec<OsString>,
    pub unenforced: Unenforced,
    pub state_root: PathBuf,
}

impl LabOptions {
    /// Options with DNS on, the default state root and nothing unenforced.
    pub fn new(name: impl Into<String>, server_command: Vec<OsString>) -> Self {
        LabOptions {
            name: name.into(),
            dns: true,
            server_command,
            unenforced: Unenforced::default(),
            state_root: PathBuf::from(STATE_ROOT),
        }
    }
}

/// A pod of the lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    pub index: usize,
    pub netns: String,
    pub ip: IpAddr,
    /// The ports a server listens on (protocol, port).
    #[serde(default)]
    pub served: Vec<(String, u16)>,
}

impl LabPod {
    pub fn key(&self) -> PodKey {
        PodKey::new(&self.namespace, &self.name)
    }
}

/// The cluster DNS of a lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsInfo {
    /// The kube-dns pod (`namespace/name`).
    pub pod: String,
    pub service_ip: IpAddr,
    /// The records served (`name,ip`), to restart only on change.
    pub records: Vec<String>,
}

/// What is saved of a lab between commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// By `namespace/name`.
    pub pods: BTreeMap<String, LabPod>,
    pub next_index: usize,
    pub dns: Option<DnsInfo>,
    pub unenforced: Unenforced,
    pub server_command: Vec<String>,
    /// Protocols/ports the kernel could not serve (e.g. SCTP).
    pub unsupported: Vec<String>,
    /// The cluster's objects (k8s JSON), pod IPs filled in.
    pub objects: Vec<serde_json::Value>,
}

/// A lab that is up.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    state: LabState,
    cluster: ClusterState,
    objects: Vec<K8sObject>,
}

/// What `down` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DownReport {
    pub namespaces: usize,
    pub processes: usize,
    pub state_removed: bool,
}

/// A lab found on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct LabListing {
    pub name: String,
    /// How many of its network namespaces exist (node included).
    pub namespaces: usize,
    /// Whether its state file exists (false: a crashed lab, for `down`).
    pub has_state: bool,
}

/// The labs on this machine: those with state and those with namespaces left.
pub fn list(state_root: &Path) -> Vec<LabListing> {
    let mut names: BTreeMap<String, LabListing> = BTreeMap::new();
    for n in sys::netns_with_prefix("nv.") {
        let mut parts = n.splitn(3, '.');
        let (Some(_), Some(lab), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        names
            .entry(lab.to_string())
            .or_insert_with(|| LabListing {
                name: lab.to_string(),
                namespaces: 0,
                has_state: false,
            })
            .namespaces += 1;
    }
    for entry in std::fs::read_dir(state_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(name) = entry.file_name().into_string() {
            names
                .entry(name.clone())
                .or_insert_with(|| LabListing {
                    name,
                    namespaces: 0,
                    has_state: false,
                })
                .has_state = entry.path().join("state.json").exists();
        }
    }
    names.into_values().collect()
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

/// The namespace-name prefix of a lab.
pub fn prefix(name: &str) -> String {
    format!("nv.{name}.")
}

/// The node namespace of a lab.
pub fn node_netns(name: &str) -> String {
    format!("nv.{name}.node")
}

/// Checks root and the tools the lab runs.
pub fn preflight(dns: bool) -> Result<()> {
    if !sys::is_root() {
        return Err(Error::NotRoot);
    }
    let mut tools = vec![("ip", "iproute2"), ("nft", "nftables")];
    if dns {
        tools.push(("dnsmasq", "dnsmasq-base"));
    }
    for (program, package) in tools {
        if !sys::have_program(program) && !sys::have_program(&format!("/usr/sbin/{program}")) {
            return Err(Error::MissingTool { program, package });
        }
    }
    Ok(())
}

fn dnsmasq_program() -> &'static str {
    if sys::have_program("dnsmasq") {
        "dnsmasq"
    } else {
        "/usr/sbin/dnsmasq"
    }
}

/// Removes everything of lab `name`: processes inside its namespaces, the
/// namespaces (with their links, routes and nftables tables), their
/// /etc/netns files and the state directory. Works on a crashed lab.
pub fn down(name: &str, state_root: &Path) -> Result<DownReport> {
    check_name(name)?;
    let names = sys::netns_with_prefix(&prefix(name));
    let pids = sys::processes_in(&names);
    for &pid in &pids {
        sys::kill(pid);
    }
    for &pid in &pids {
        // Reap our own children; others are reaped by their parent or init.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
    if !names.is_empty() {
        let lines: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
        // -force: go on past a namespace another `down` removed meanwhile.
        if let Err(e) = sys::ip_batch(None, &lines, true) {
            let left = sys::netns_with_prefix(&prefix(name));
            if !left.is_empty() {
                return Err(e.into());
            }
        }
    }
    for n in &names {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(n));
    }
    let dir = state_root.join(name);
    let state_removed = dir.exists();
    if state_removed {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::State {
            path: dir.clone(),
            message: e.to_string(),
        })?;
    }
    tracing::info!(
        lab = name,
        namespaces = names.len(),
        processes = pids.len(),
        "lab down"
    );
    Ok(DownReport {
        namespaces: names.len(),
        processes: pids.len(),
        state_removed,
    })
}

/// The ports a pod's server listens on.
fn pod_ports(cluster: &ClusterState, key: &PodKey, skip_dns: bool) -> Vec<(Protocol, u16)> {
    let mut ports: Vec<(Protocol, u16)> = cluster
        .pod(key)
        .map(|p| p.ports.iter().map(|c| (c.protocol, c.port)).collect())
        .unwrap_or_default();
    if skip_dns {
        ports.retain(|(proto, port)| {
            !(*port == DNS_PORT && matches!(proto, Protocol::Udp | Protocol::Tcp))
        });
    }
    ports.sort();
    ports.dedup();
    ports
}

fn state_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Lab {
    /// Brings a lab up from manifest files (see [`Lab::up_objects`]).
    pub fn up<P: AsRef<Path>>(paths: &[P], options: &LabOptions) -> Result<Lab> {
        let objects = read_objects(paths)?;
        Lab::up_objects(objects, options)
    }

    /// Brings a lab up: cleans up any previous lab of the same name, then creates
    /// the node, the pods, their servers, the service DNAT, the DNS and the
    /// policy enforcement.
    pub fn up_objects(mut objects: Vec<K8sObject>, options: &LabOptions) -> Result<Lab> {
        check_name(&options.name)?;
        preflight(options.dns)?;
        down(&options.name, &options.state_root)?;
        let started = Instant::now();
        let dns_pod = options.dns.then(|| ensure_dns_objects(&mut objects));
        assign_ips(&mut objects, &BTreeMap::new());
        let cluster = build_cluster(&objects)?;
        let dir = options.state_root.join(&options.name);
        std::fs::create_dir_all(&dir).map_err(|e| state_error(&dir, e))?;
        let mut lab = Lab {
            dir,
            state: LabState {
                name: options.name.clone(),
                pods: BTreeMap::new(),
                next_index: 0,
                dns: None,
                unenforced: options.unenforced.clone(),
                server_command: options
                    .server_command
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect(),
                unsupported: Vec::new(),
                objects: Vec::new(),
            },
            cluster,
            objects,
        };
        if let Err(e) = lab.build(dns_pod) {
            // Leave nothing half-built behind.
            if let Err(cleanup) = down(&options.name, &options.state_root) {
                tracing::warn!(lab = options.name, error = %cleanup, "cleanup after a failed up");
            }
            return Err(e);
        }
        tracing::info!(
            lab = options.name,
            pods = lab.state.pods.len(),
            seconds = started.elapsed().as_secs_f64(),
            "lab up"
        );
        Ok(lab)
    }

    /// Creates the node, the pods, the rules, the servers and the DNS.
    fn build(&mut self, dns_pod: Option<String>) -> Result<()> {
        let node = node_netns(&self.state.name);
        sys::ip_batch(None, &format!("netns add {node}\n"), false)?;
        sys::in_netns(&node, || -> sys::Result<()> {
            sys::write_net_sysctl("ipv4/ip_forward", "1")?;
            sys::write_net_sysctl("ipv4/conf/all/rp_filter", "0")?;
            sys::write_net_sysctl("ipv4/conf/default/rp_filter", "0")?;
            // Hairpinned Service traffic leaves by the link it came in on: no
            // redirects to the pods.
            sys::write_net_sysctl("ipv4/conf/all/send_redirects", "0")?;
            sys::write_net_sysctl("ipv4/conf/default/send_redirects", "0")
        })??;
        sys::ip_batch(
            Some(&node),
            &format!("link set lo up\naddr add {NODE_IP}/32 dev lo\n"),
            false,
        )?;
        let new = self.add_pods()?;
        self.sync_rules()?;
        self.start_servers(&new)?;
        if let Some(pod) = dns_pod {
            self.start_dns(&pod)?;
        }
        self.save()
    }

    /// Opens a lab that is up.
    pub fn open(name: &str, state_root: &Path) -> Result<Lab> {
        check_name(name)?;
        let dir = state_root.join(name);
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|_| Error::NotUp {
            name: name.to_string(),
            path: path.clone(),
        })?;
        let state: LabState = serde_json::from_str(&text).map_err(|e| state_error(&path, e))?;
        let objects = objects_from_values(&state.objects, &path)?;
        let cluster = build_cluster(&objects)?;
        Ok(Lab {
            dir,
            state,
            cluster,
            objects,
        })
    }

    fn save(&mut self) -> Result<()> {
        self.state.objects = self.objects.iter().map(object_value).collect();
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(&self.state).map_err(|e| state_error(&path, e))?;
        std::fs::write(&tmp, text).map_err(|e| state_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| state_error(&path, e))
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The cluster as the policy engine sees it (IPs filled, node IP set).
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// The lab's saved state.
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// The lab's pods, in `namespace/name` order.
    pub fn pods(&self) -> Vec<&LabPod> {
        self.state.pods.values().collect()
    }

    /// A pod of the lab.
    pub fn pod(&self, key: &PodKey) -> Result<&LabPod> {
        self.state
            .pods
            .get(&key.to_string())
            .ok_or_else(|| Error::Unknown {
                what: "pod",
                name: key.to_string(),
            })
    }

    /// Creates namespaces and links for every pod of the cluster the lab does
    /// not run yet; returns them.
    fn add_pods(&mut self) -> Result<Vec<LabPod>> {
        let node = node_netns(&self.state.name);
        let mut new = Vec::new();
        for pod in self.cluster.pods() {
            let id = pod.key.to_string();
            if pod.host_network || self.state.pods.contains_key(&id) {
                continue;
            }
            let ip = pod
                .ips
                .iter()
                .find(|i| i.is_ipv4())
                .copied()
                .ok_or_else(|| Error::Pod {
                    pod: id.clone(),
                    message: "the lab runs IPv4 pods only".into(),
                })?;
            let index = self.state.next_index;
            self.state.next_index += 1;
            new.push(LabPod {
                namespace: pod.key.namespace.clone(),
                name: pod.key.name.clone(),
                index,
                netns: format!("{}{index}", prefix(&self.state.name)),
                ip,
                served: Vec::new(),
            });
        }
        if new.is_empty() {
            return Ok(new);
        }
        let adds: String = new
            .iter()
            .map(|p| format!("netns add {}\n", p.netns))
            .collect();
        sys::ip_batch(None, &adds, false)?;
        let mut links = String::new();
        for p in &new {
            links.push_str(&format!(
                "link add p{i} type veth peer name eth0 netns {ns}\nlink set p{i} up\nroute add {ip}/32 dev p{i}\n",
                i = p.index,
                ns = p.netns,
                ip = p.ip
            ));
        }
        sys::ip_batch(Some(&node), &links, false)?;
        let dns_ip = self.dns_service_ip();
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = new
                .chunks(new.len().div_ceil(8))
                .map(|chunk| {
                    scope.spawn(move || -> Result<()> {
                        for p in chunk {
                            setup_pod(p, dns_ip)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Sys(sys::Error::Panicked {
                            netns: "pod setup".into(),
                        }))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        for p in &new {
            self.state.pods.insert(p.key().to_string(), p.clone());
        }
        Ok(new)
    }

    fn dns_service_ip(&self) -> Option<IpAddr> {
        self.cluster
            .service("kube-system", "kube-dns")
            .and_then(|s| s.cluster_ips.first().copied())
    }

    fn pod_addrs(&self) -> BTreeMap<PodKey, PodAddr> {
        self.state
            .pods
            .values()
            .map(|p| {
                (
                    p.key(),
                    PodAddr {
                        index: p.index,
                        ip: p.ip,
                    },
                )
            })
            .collect()
    }

    /// The nftables script that replaces both tables (one transaction).
    pub fn ruleset(&self) -> String {
        let addrs = self.pod_addrs();
        let mut script = nft::replace_table(
            nft::SERVICE_TABLE,
            &nft::service_rules(&self.cluster, &addrs),
        );
        script.push_str(&nft::replace_table(
            nft::POLICY_TABLE,
            &nft::policy_rules(&self.cluster, &addrs, &self.state.unenforced),
        ));
        script
    }

    /// The packets the policy chains dropped so far (their `counter drop` rules).
    pub fn dropped_packets(&self) -> Result<u64> {
        let node = node_netns(&self.state.name);
        let listing = sys::in_netns(&node, || {
            sys::run("nft", &["list", "table", "inet", nft::POLICY_TABLE], None)
        })??;
        Ok(listing
            .lines()
            .filter(|l| l.trim_end().ends_with("drop"))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse::<u64>().ok()
            })
            .sum())
    }

    /// Replaces the service and policy tables in one `nft -f` transaction.
    fn sync_rules(&self) -> Result<()> {
        let script = self.ruleset();
        sys::nft_in(&node_netns(&self.state.name), &script)?;
        Ok(())
    }

    fn start_servers(&mut self, pods: &[LabPod]) -> Result<()> {
        let dns_pod = self.state.dns.as_ref().map(|d| d.pod.clone()).or_else(|| {
            self.cluster
                .pods()
                .into_iter()
                .find(|p| {
                    p.key.namespace == "kube-system"
                        && p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
                })
                .map(|p| p.key.to_string())
        });
        let has_dns = self.dns_service_ip().is_some();
        let spec = ServeSpec {
            pods: pods
                .iter()
                .map(|p| {
                    let id = p.key().to_string();
                    let skip = has_dns && dns_pod.as_deref() == Some(id.as_str());
                    PodPorts {
                        pod: id,
                        netns: p.netns.clone(),
                        ports: pod_ports(&self.cluster, &p.key(), skip)
                            .into_iter()
                            .map(|(proto, port)| (proto.as_str().to_string(), port))
                            .filter(|port| !p.served.contains(port))
                            .collect(),
                    }
                })
                .filter(|p| !p.ports.is_empty())
                .collect(),
        };
        if spec.pods.is_empty() {
            return Ok(());
        }
        let lab = self.state.name.clone();
        let fail = |message: String| Error::Servers {
            lab: lab.clone(),
            message,
        };
        let (program, args) = self
            .state
            .server_command
            .split_first()
            .ok_or_else(|| fail("no server command".into()))?;
        let log = self.dir.join("servers.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| state_error(&log, e))?;
        let spec_json = serde_json::to_string(&spec).map_err(|e| fail(e.to_string()))?;
        let mut child = Command::new(program)
            .args(args)
            .arg(spec_json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(rest) = line.strip_prefix("ready") else {
            let _ = child.kill();
            let _ = child.wait();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(fail(format!(
                "no `ready` from the server process; its log ({}):\n{log_text}",
                log.display()
            )));
        };
        self.state
            .unsupported
            .extend(rest.split_whitespace().map(str::to_string));
        for served in &spec.pods {
            if let Some(pod) = self.state.pods.get_mut(&served.pod) {
                pod.served.extend(served.ports.iter().cloned());
            }
        }
        reap(child);
        Ok(())
    }

    fn dns_records(&self) -> Vec<String> {
        let mut records = Vec::new();
        let mut has_kubernetes = false;
        for svc in self.cluster.services() {
            if svc.cluster_ips.is_empty() {
                continue;
            }
            has_kubernetes |= svc.namespace == "default" && svc.name == "kubernetes";
            let ips: Vec<String> = svc.cluster_ips.iter().map(|i| i.to_string()).collect();
            records.push(format!(
                "{}.{}.svc.{CLUSTER_DOMAIN},{}",
                svc.name,
                svc.namespace,
                ips.join(",")
            ));
        }
        if !has_kubernetes {
            records.push(format!("kubernetes.default.svc.{CLUSTER_DOMAIN},10.96.0.1"));
        }
        for p in self.state.pods.values() {
            let dashed = p.ip.to_string().replace(['.', ':'], "-");
            records.push(format!(
                "{dashed}.{}.pod.{CLUSTER_DOMAIN},{}",
                p.namespace, p.ip
            ));
        }
        records.sort();
        records
    }

    /// Starts (or restarts) dnsmasq in the kube-dns pod and waits until it answers.
    fn start_dns(&mut self, pod_id: &str) -> Result<()> {
        let fail = |message: String| Error::Dns {
            pod: pod_id.to_string(),
            message,
        };
        let pod = self
            .state
            .pods
            .get(pod_id)
            .cloned()
            .ok_or_else(|| fail("the pod is not in the lab".into()))?;
        let service_ip = self
            .dns_service_ip()
            .ok_or_else(|| fail("no Service kube-system/kube-dns with a cluster IP".into()))?;
        // A restart: stop the previous dnsmasq (the only process of the pod's
        // namespace besides the server threads, which are in another process's
        // main namespace).
        let pid_file = self.dir.join("dnsmasq.pid");
        if let Ok(old) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = old.trim().parse::<i32>()
        {
            sys::kill(pid);
            // Its port 53 is free once it has exited (it may not be our child).
            sys::wait_gone(pid, Duration::from_secs(5));
        }
        let records = self.dns_records();
        let log = self.dir.join("dnsmasq.log");
        let mut args: Vec<String> = vec![
            "--keep-in-foreground".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--conf-file=/dev/null".into(),
            format!("--pid-file={}", pid_file.display()),
            "--user=root".into(),
            format!("--port={DNS_PORT}"),
            format!("--local=/{CLUSTER_DOMAIN}/"),
            "--local=/#/".into(),
            "--local-ttl=1".into(),
            format!("--log-facility={}", log.display()),
        ];
        args.extend(records.iter().map(|r| format!("--host-record={r}")));
        let program = dnsmasq_program();
        let mut child = sys::in_netns(&pod.netns, || {
            Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })?
        .map_err(|e| fail(format!("cannot run {program}: {e} (install dnsmasq-base)")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT);
        let name = format!("kubernetes.default.svc.{CLUSTER_DOMAIN}");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(fail(format!("dnsmasq exited ({status}): {err}")));
            }
            let answer = sys::in_netns(&pod.netns, || {
                probe::dns_query_here(
                    server,
                    &name,
                    RecordType::A,
                    false,
                    Duration::from_millis(200),
                )
            })??;
            if matches!(answer, DnsAnswer::Addresses(ref a) if !a.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(fail(format!(
                    "no answer for {name} within 10s (last: {answer})"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::write(&pid_file, child.id().to_string());
        reap(child);
        self.state.dns = Some(DnsInfo {
            pod: pod_id.to_string(),
            service_ip,
            records,
        });
        Ok(())
    }

    /// Brings the lab in line with its objects: new pods, rules, DNS records.
    fn reconcile(&mut self) -> Result<()> {
        assign_ips(&mut self.objects, &self.state.pods);
        self.cluster = build_cluster(&self.objects)?;
        self.add_pods()?;
        self.sync_rules()?;
        // New pods, and ports added to existing pods.
        let pods: Vec<LabPod> = self.state.pods.values().cloned().collect();
        self.start_servers(&pods)?;
        if let Some(dns) = self.state.dns.clone()
            && dns.records != self.dns_records()
        {
            self.start_dns(&dns.pod)?;
        }
        self.save()
    }

    /// Adds or replaces objects (policies, pods, labels of namespaces...) and
    /// updates the lab in place.
    pub fn apply_objects(&mut self, objects: Vec<K8sObject>) -> Result<()> {
        merge(&mut self.objects, objects);
        self.reconcile()
    }

    /// Applies manifest files.
    pub fn apply<P: AsRef<Path>>(&mut self, paths: &[P]) -> Result<()> {
        let objects = read_objects(paths)?;
        self.apply_objects(objects)
    }

    /// Removes a NetworkPolicy and updates the rules.
    pub fn delete_policy(&mut self, namespace: &str, name: &str) -> Result<bool> {
        let before = self.objects.len();
        self.objects
            .retain(|o| object_id(o) != ("NetworkPolicy", namespace.to_string(), name.to_string()));
        let removed = self.objects.len() != before;
        self.reconcile()?;
        Ok(removed)
    }

    /// Changes labels (`key=value` sets, `key-` removes) of a pod
    /// (`namespace/name`) or a namespace, and updates the rules.
    pub fn label(&mut self, target: &LabelTarget, changes: &[String]) -> Result<()> {
        let mut parsed = Vec::new();
        for c in changes {
            if let Some(key) = c.strip_suffix('-') {
                parsed.push((key.to_string(), None));
            } else if let Some((k, v)) = c.split_once('=') {
                parsed.push((k.to_string(), Some(v.to_string())));
            } else {
                return Err(Error::BadLabel(c.clone()));
            }
        }
        let wanted = match target {
            LabelTarget::Pod(key) => ("Pod", key.namespace.clone(), key.name.clone()),
            LabelTarget::Namespace(ns) => ("Namespace", String::new(), ns.clone()),
        };
        if !self.objects.iter().any(|o| object_id(o) == wanted) {
            match target {
                LabelTarget::Namespace(ns) if self.cluster.namespace_names().contains(ns) => {
                    self.objects.push(K8sObject::Namespace(Box::new(from_json(
                        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": ns,
                                "labels": {"kubernetes.io/metadata.name": ns}}}),
                    ))));
                }
                LabelTarget::Namespace(ns) => {
                    return Err(Error::Unknown {
                        what: "namespace",
                        name: ns.clone(),
                    });
                }
                LabelTarget::Pod(key) => {
                    return Err(Error::Unknown {
                        what: "pod",
                        name: key.to_string(),
                    });
                }
            }
        }
        for o in self.objects.iter_mut() {
            if object_id(o) != wanted {
                continue;
            }
            let meta = match o {
                K8sObject::Pod(p) => &mut p.metadata,
                K8sObject::Namespace(n) => &mut n.metadata,
                _ => continue,
            };
            let labels = meta.labels.get_or_insert_with(Default::default);
            for (k, v) in &parsed {
                match v {
                    Some(v) => {
                        labels.insert(k.clone(), v.clone());
                    }
                    None => {
                        labels.remove(k);
                    }
                }
            }
        }
        self.reconcile()
    }

    /// Sets which namespaces and policies are left unenforced, and updates the rules.
    pub fn set_unenforced(&mut self, unenforced: Unenforced) -> Result<()> {
        self.state.unenforced = unenforced;
        self.sync_rules()?;
        self.save()
    }

    /// Resolves a probe target: `namespace/pod`, an IP, or a DNS name (`svc.ns`,
    /// `svc` in the source's namespace, or a full name) through the cluster DNS
    /// from the source pod, as a program in the pod would.
    pub fn resolve_target(&self, from: &PodKey, target: &str, timeout: Duration) -> Result<IpAddr> {
        if let Ok(ip) = target.parse::<IpAddr>() {
            return Ok(ip);
        }
        if let Some((ns, name)) = target.split_once('/') {
            return Ok(self.pod(&PodKey::new(ns, name))?.ip);
        }
        let name = expand_name(target, &from.namespace);
        if self.state.dns.is_none() {
            // No cluster DNS: the Service's cluster IP from the lab's state.
            let mut parts = name.split('.');
            let (svc, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            return self
                .cluster
                .service(ns, svc)
                .and_then(|s| s.cluster_ips.first().copied())
                .ok_or_else(|| Error::Unknown {
                    what: "service",
                    name: format!("{ns}/{svc}"),
                });
        }
        match self.lookup(from, target, RecordType::A, false, timeout)? {
            (_, DnsAnswer::Addresses(a)) if !a.is_empty() => Ok(a[0]),
            (name, other) => Err(Error::Unknown {
                what: "host",
                name: format!("{target} ({name}: {other})"),
            }),
        }
    }

    /// Resolves `name` as a program in pod `from` would with its resolv.conf
    /// (search `<ns>.svc.cluster.local svc.cluster.local cluster.local`,
    /// `ndots:5`): NXDOMAIN goes on to the next candidate, any other answer
    /// (or a timeout) ends the search. Returns the name asked last and its answer.
    pub fn lookup(
        &self,
        from: &PodKey,
        name: &str,
        record: RecordType,
        tcp: bool,
        timeout: Duration,
    ) -> Result<(String, DnsAnswer)> {
        let mut last = (name.to_string(), DnsAnswer::NxDomain);
        for candidate in search_list(name, &from.namespace) {
            let answer = self.dns_with(from, &candidate, record, tcp, timeout)?;
            let done = !matches!(answer, DnsAnswer::NxDomain);
            last = (candidate, answer);
            if done {
                break;
            }
        }
        Ok(last)
    }

    /// Connects from `from` to `ip:port` like `nc -vz`.
    pub fn probe(
        &self,
        from: &PodKey,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Outcome> {
        let pod = self.pod(from)?;
        let out = probe::probe_many(
            &pod.netns,
            &[(SocketAddr::new(ip, port), protocol)],
            timeout,
        )?;
        Ok(out[0])
    }

    /// Resolves `name` (A record) through the cluster DNS from pod `from` (UDP).
    pub fn dns(&self, from: &PodKey, name: &str, timeout: Duration) -> Result<DnsAnswer> {
        self.dns_with(from, name, RecordType::A, false, timeout)
    }

    /// Resolves `name` through the cluster DNS from pod `from`.
    pub fn dns_with(
        &self,
        from: &PodKey,
        name: &str,
        record: RecordType,
        tcp: bool,
        timeout: Duration,
    ) -> Result<DnsAnswer> {
        let pod = self.pod(from)?;
        let server = self
            .state
            .dns
            .as_ref()
            .map(|d| d.service_ip)
            .ok_or_else(|| Error::Unknown {
                what: "cluster DNS of lab",
                name: self.state.name.clone(),
            })?;
        let server = SocketAddr::new(server, DNS_PORT);
        Ok(sys::in_netns(&pod.netns, || {
            probe::dns_query_here(server, name, record, tcp, timeout)
        })??)
    }

    /// Probes every pod pair on one port, all sources in parallel.
    pub fn matrix(&self, port: u16, protocol: Protocol, timeout: Duration) -> Result<Matrix> {
        let pods: Vec<&LabPod> = self.pods();
        let targets: Vec<(SocketAddr, Protocol)> = pods
            .iter()
            .map(|p| (SocketAddr::new(p.ip, port), protocol))
            .collect();
        let rows: Vec<Result<Vec<Outcome>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pods
                .iter()
                .map(|p| {
                    let targets = &targets;
                    scope.spawn(move || probe::probe_many(&p.netns, targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| {
                            Err(probe::Error::Sys(sys::Error::Panicked {
                                netns: "matrix".into(),
                            }))
                        })
                        .map_err(Error::from)
                })
                .collect()
        });
        let mut cells = Vec::new();
        for r in rows {
            cells.push(r?);
        }
        Ok(Matrix {
            port,
            protocol,
            pods: pods.iter().map(|p| p.key().to_string()).collect(),
            cells,
        })
    }

    /// The policy engine's verdicts for the matrix's pairs (`allowed`), and
    /// the explanation text for each pair.
    pub fn expected(&self, matrix: &Matrix) -> Vec<Vec<bool>> {
        matrix
            .pods
            .iter()
            .map(|from| {
                matrix
                    .pods
                    .iter()
                    .map(|to| self.verdict(from, to, matrix.port, matrix.protocol).0)
                    .collect()
            })
            .collect()
    }

    /// The engine's verdict for one pair and its explanation.
    pub fn verdict(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> (bool, String) {
        let key = |s: &str| {
            let (ns, name) = s.split_once('/').unwrap_or(("", s));
            PodKey::new(ns, name)
        };
        let flow = Connection::new(
            Endpoint::Pod(key(from)),
            Endpoint::Pod(key(to)),
            port,
            protocol,
        );
        match self.cluster.verdict(&flow) {
            Ok(v) => (
                v.allowed,
                netverdict_policy::explain(&self.cluster, &flow, &v).to_string(),
            ),
            Err(e) => (false, format!("engine error: {e}")),
        }
    }

    /// The pairs where the observed matrix differs from the engine.
    pub fn differences(&self, matrix: &Matrix) -> Vec<Difference> {
        let expected = self.expected(matrix);
        let mut out = Vec::new();
        for (i, from) in matrix.pods.iter().enumerate() {
            for (j, to) in matrix.pods.iter().enumerate() {
                let observed = matrix.cells[i][j];
                if observed.reached() != expected[i][j] {
                    let (allowed, explanation) =
                        self.verdict(from, to, matrix.port, matrix.protocol);
                    out.push(Difference {
                        from: from.clone(),
                        to: to.clone(),
                        port: matrix.port,
                        protocol: matrix.protocol,
                        observed,
                        engine_allowed: allowed,
                        explanation,
                    });
                }
            }
        }
        out
    }
}

/// Waits for a child in the background, so it never lingers as a zombie.
fn reap(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// The names a pod's resolver tries for `name` (search list, `ndots:5`).
///
/// ```
/// let names = netverdict_lab::lab::search_list("api.default", "shop");
/// assert_eq!(names[0], "api.default.shop.svc.cluster.local");
/// assert_eq!(names[1], "api.default.svc.cluster.local");
/// ```
pub fn search_list(name: &str, namespace: &str) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![absolute.to_string()];
    }
    // Names in the cluster domain are taken as complete (a resolver with
    // ndots:5 would first try them under the search domains, in vain).
    if name.ends_with(&format!(".{CLUSTER_DOMAIN}")) {
        return vec![name.to_string()];
    }
    let search = [
        format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}"),
        format!("{name}.svc.{CLUSTER_DOMAIN}"),
        format!("{name}.{CLUSTER_DOMAIN}"),
    ];
    if name.matches('.').count() >= 5 {
        std::iter::once(name.to_string()).chain(search).collect()
    } else {
        search
            .into_iter()
            .chain(std::iter::once(name.to_string()))
            .collect()
    }
}

/// `svc.ns` → `svc.ns.svc.cluster.local`; `svc` → `svc.<ns>.svc.cluster.local`;
/// a name ending in the cluster domain is kept.
pub fn expand_name(name: &str, from_namespace: &str) -> String {
    let name = name.trim_end_matches('.');
    if name.ends_with(CLUSTER_DOMAIN) {
        return name.to_string();
    }
    match name.matches('.').count() {
        0 => format!("{name}.{from_namespace}.svc.{CLUSTER_DOMAIN}"),
        1 => format!("{name}.svc.{CLUSTER_DOMAIN}"),
        _ if name.ends_with(".svc") => format!("{name}.{CLUSTER_DOMAIN}"),
        _ => name.to_string(),
    }
}

fn setup_pod(p: &LabPod, dns: Option<IpAddr>) -> Result<()> {
    sys::ip_batch(
        Some(&p.netns),
        &format!(
            "link set lo up\naddr add {ip}/32 dev eth0\nlink set eth0 up\nroute add {NODE_IP}/32 dev eth0 scope link\nroute add default via {NODE_IP} dev eth0 onlink\n",
            ip = p.ip
        ),
        false,
    )?;
    // ICMP errors (UDP "refused") must not be rate limited, or a refusal would
    // look like a drop.
    sys::in_netns(&p.netns, || -> sys::Result<()> {
        sys::write_net_sysctl("ipv4/icmp_ratelimit", "0")?;
        sys::write_net_sysctl("ipv4/icmp_msgs_per_sec", "100000")?;
        sys::write_net_sysctl("ipv4/icmp_msgs_burst", "100000")
    })??;
    if let Some(dns) = dns {
        // The pod's resolv.conf, as `ip netns exec` shows it to programs.
        let dir = Path::new("/etc/netns").join(&p.netns);
        let text = format!(
            "nameserver {dns}\nsearch {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n",
            ns = p.namespace
        );
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("resolv.conf"), text))
        {
            // Only programs run with `ip netns exec` read it; the lab's own
            // probes ask the kube-dns Service directly.
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the pod's resolv.conf");
        }
    }
    Ok(())
}

/// What a label change applies to.
#[derive(Clone, Debug)]
pub enum LabelTarget {
    Pod(PodKey),
    Namespace(String),
}

/// An observed reachability matrix: rows are sources, columns destinations.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    pub port: u16,
    pub protocol: Protocol,
    pub pods: Vec<String>,
    pub cells: Vec<Vec<Outcome>>,
}

impl Matrix {
    /// The truth table as text (`.` reached, `X` not reached), with a legend.
    pub fn render(&self) -> String {
        let mut out = format!(
            "reachability on {}/{} (rows: from, columns: to; . reached, X blocked)\n",
            self.protocol, self.port
        );
        for (i, p) in self.pods.iter().enumerate() {
            out.push_str(&format!("  {i:>3} {p}\n"));
        }
        out.push_str("     ");
        for j in 0..self.pods.len() {
            out.push_str(&format!("{:>4}", j));
        }
        out.push('\n');
        for (i, row) in self.cells.iter().enumerate() {
            out.push_str(&format!("{i:>4} "));
            for cell in row {
                out.push_str(if cell.reached() { "   ." } else { "   X" });
            }
            out.push('\n');
        }
        out
    }
}

/// One pair where the kernel and the engine disagree.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub observed: Outcome,
    pub engine_allowed: bool,
    pub explanation: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}: observed {}, engine says {}\n{}",
            self.from,
            self.to,
            self.protocol,
            self.port,
            self.observed,
            if self.engine_allowed {
                "allowed"
            } else {
                "denied"
            },
            self.explanation
        )
    }
}

/// Brings lab `name` down when dropped (tests: also when they panic).
#[derive(Debug)]
pub struct DownOnDrop {
    pub name: String,
    pub state_root: PathBuf,
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Err(e) = down(&self.name, &self.state_root) {
            eprintln!("cleanup of lab {}: {e}", self.name);
        }
    }
}
