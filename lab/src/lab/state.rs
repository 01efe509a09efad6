//! What a lab is: its name and the names of its namespaces, its nodes (name,
//! namespace, address), its pods (index, node, network namespace, address,
//! served ports), its cluster DNS, how and what it enforces and its objects,
//! saved as `<state root>/<lab>/state.json` between commands; the allocation
//! of pod addresses; the placement of pods on nodes; and the planning of the
//! pods a lab does not run yet. Nothing here touches the kernel: `lifecycle`
//! makes what is planned here, through `topology`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::Ipv4Net;
use netverdict_policy::PodKey;
use netverdict_policy::manifest::K8sObject;
use serde::{Deserialize, Serialize};

use super::enforce::Enforcement;
use super::{Error, Lab, LabOptions, Result};
use crate::nft::Unenforced;
use crate::objects::{
    build_cluster, ensure_dns_objects, host_network, node_object, object_id, object_value,
    objects_from_values, pod_ipv4, pod_node_name, set_pod_ip, set_pod_node_name,
};

/// The default state root.
pub const STATE_ROOT: &str = "/run/netverdict/labs";
/// Where pods without status.podIP get their address.
pub const ALLOC_RANGE: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 250, 0, 0), 16);
/// The state file in a lab's directory.
const STATE_FILE: &str = "state.json";
/// The nodes' addresses: node `i` has the `i + 1`-th address of this /24.
pub const NODE_RANGE: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 249, 0, 0), 24);
/// The most nodes a lab can have (addresses of [`NODE_RANGE`]).
pub const MAX_NODES: usize = 250;

/// A node of the lab: a network namespace that routes for its pods, enforces
/// their policies, and is joined to every other node by a veth pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    /// Its name (the Node object's, and the pods' `spec.nodeName`).
    pub name: String,
    /// Its number: node `i` is `node-<i>`.
    pub index: usize,
    /// Its network namespace.
    pub netns: String,
    /// Its address (the Node object's InternalIP), on its loopback and on its
    /// links to the other nodes.
    pub ip: IpAddr,
}

/// The nodes of lab `name` when it has `count` of them.
pub(crate) fn plan_nodes(name: &str, count: usize) -> Vec<LabNode> {
    (0..count)
        .map(|index| LabNode {
            name: node_name(index),
            index,
            netns: node_netns_of(name, index),
            ip: IpAddr::V4(node_ip(index)),
        })
        .collect()
}

/// The name of node number `index`.
pub fn node_name(index: usize) -> String {
    format!("node-{index}")
}

/// The address of node number `index` (in [`NODE_RANGE`]).
pub fn node_ip(index: usize) -> Ipv4Addr {
    let offset = u32::try_from(index + 1).unwrap_or(u32::MAX).min(254);
    Ipv4Addr::from(u32::from(NODE_RANGE.0) + offset)
}

/// A pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    /// Its number in the lab: names its namespace, its node-side link
    /// (`p<index>`) and its policy chains (`e<index>`, `i<index>`).
    pub index: usize,
    pub netns: String,
    pub ip: IpAddr,
    /// The ports a server listens on (protocol, port).
    #[serde(default)]
    pub served: Vec<(String, u16)>,
    /// The number of the node it runs on (0 in labs saved before nodes).
    #[serde(default)]
    pub node: usize,
}

impl LabPod {
    pub fn key(&self) -> PodKey {
        PodKey::new(&self.namespace, &self.name)
    }
}

/// The cluster DNS of a lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The nodes, by number (one node, `node-0`, in labs saved before nodes).
    #[serde(default)]
    pub nodes: Vec<LabNode>,
    /// How policy is enforced (nftables in labs saved before the choice).
    #[serde(default)]
    pub enforcement: Enforcement,
    /// By `namespace/name`.
    pub pods: BTreeMap<String, LabPod>,
    /// The index the next new pod gets (indexes are never reused).
    pub next_index: usize,
    pub dns: Option<DnsInfo>,
    pub unenforced: Unenforced,
    pub server_command: Vec<String>,
    /// Protocols/ports the kernel could not serve (e.g. SCTP).
    pub unsupported: Vec<String>,
    /// The cluster's objects (k8s JSON), pod IPs filled in.
    pub objects: Vec<serde_json::Value>,
    /// Names outside the cluster domain that the cluster DNS answers for, as
    /// an upstream resolver would for internet names (none in labs saved
    /// before they existed).
    #[serde(default)]
    pub outside_names: BTreeMap<String, OutsideName>,
}

/// What an outside name stands for in the cluster DNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutsideName {
    /// A and AAAA records.
    Addresses(Vec<std::net::IpAddr>),
    /// A CNAME to another name (outside names themselves).
    Alias(String),
}

/// The namespace-name prefix of a lab.
pub fn prefix(name: &str) -> String {
    format!("nv.{name}.")
}

/// The namespace of a lab's first node (its only one in a one-node lab).
pub fn node_netns(name: &str) -> String {
    node_netns_of(name, 0)
}

/// The namespace of a lab's node number `index`: `nv.<lab>.node`, then
/// `nv.<lab>.node1`, `nv.<lab>.node2`...
pub fn node_netns_of(name: &str, index: usize) -> String {
    if index == 0 {
        format!("nv.{name}.node")
    } else {
        format!("nv.{name}.node{index}")
    }
}

/// The namespace of a lab's pod number `index`.
pub(super) fn pod_netns(name: &str, index: usize) -> String {
    format!("{}{index}", prefix(name))
}

/// Checks that `name` can name a lab (it is part of namespace names).
pub(super) fn check_name(name: &str) -> Result<()> {
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

pub(super) fn state_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The addresses of a range handed out to pods without `status.podIP`:
/// lowest first from the range's second host (`.2`), never its last address,
/// never one in use.
#[derive(Debug)]
pub(crate) struct AddressPool {
    range: Ipv4Net,
    /// Offset of the next candidate in the range.
    next: u32,
    used: BTreeSet<Ipv4Addr>,
}

impl AddressPool {
    pub(crate) fn new(range: Ipv4Net, used: BTreeSet<Ipv4Addr>) -> Self {
        AddressPool {
            range,
            next: 2,
            used,
        }
    }

    /// The lab's range ([`ALLOC_RANGE`]).
    pub(crate) fn lab_range() -> Ipv4Net {
        u8::try_from(ALLOC_RANGE.1)
            .ok()
            .and_then(|len| Ipv4Net::new(ALLOC_RANGE.0, len).ok())
            .unwrap_or_else(|| Ipv4Net::from(ALLOC_RANGE.0))
            .trunc()
    }

    /// The next free address, or `None` when the range is used up.
    pub(crate) fn take(&mut self) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.range.prefix_len()));
        let base = u32::from(self.range.network());
        while u64::from(self.next) < size.saturating_sub(1) {
            let ip = Ipv4Addr::from(base + self.next);
            self.next += 1;
            if self.used.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    pub(crate) fn range(&self) -> Ipv4Net {
        self.range
    }
}

/// Places every pod on a node (see [`place_pods`]), then fills the IP of every
/// pod without one: pods the lab already runs (`known`) keep theirs,
/// host-network pods get their node's, others the next free address of
/// [`ALLOC_RANGE`]. Fails, naming the pod, when the range is used up or a pod's
/// address is a node's.
pub(super) fn assign_pod_ips(
    objects: &mut Vec<K8sObject>,
    known: &BTreeMap<String, LabPod>,
    nodes: &[LabNode],
) -> Result<()> {
    place_pods(objects, known, nodes);
    assign_pod_ips_from(objects, known, nodes, AddressPool::lab_range())
}

/// Puts a Node object per lab node into `objects` (replacing one of the same
/// name) and sets `spec.nodeName` of every pod:
///
/// - a pod the lab runs stays on its node;
/// - a pod whose `spec.nodeName` names a lab node goes there;
/// - every other pod is placed in turn, in the order of the objects: the
///   `k`-th pod placed so in the lab's life (pods it already runs included)
///   goes on node `k mod N` (`node-0`, `node-1`, ..., `node-0`...).
pub(super) fn place_pods(
    objects: &mut Vec<K8sObject>,
    known: &BTreeMap<String, LabPod>,
    nodes: &[LabNode],
) {
    if nodes.is_empty() {
        return;
    }
    for node in nodes {
        let object = node_object(&node.name, node.ip);
        let id = object_id(&object);
        match objects.iter().position(|o| object_id(o) == id) {
            Some(i) => objects[i] = object,
            None => objects.push(object),
        }
    }
    let mut turn = known.len();
    for o in objects.iter_mut() {
        let (_, namespace, name) = object_id(o);
        let K8sObject::Pod(pod) = o else { continue };
        let node = match known.get(&format!("{namespace}/{name}")) {
            Some(running) => nodes.get(running.node).unwrap_or(&nodes[0]),
            None => match pod_node_name(pod).and_then(|n| nodes.iter().find(|x| x.name == n)) {
                Some(named) => named,
                None => {
                    let node = &nodes[turn % nodes.len()];
                    turn += 1;
                    node
                }
            },
        };
        set_pod_node_name(pod, &node.name);
    }
}

/// [`assign_pod_ips`] from the addresses of `range` (pods already placed).
fn assign_pod_ips_from(
    objects: &mut [K8sObject],
    known: &BTreeMap<String, LabPod>,
    nodes: &[LabNode],
    range: Ipv4Net,
) -> Result<()> {
    let mut used: BTreeSet<Ipv4Addr> = objects
        .iter()
        .filter_map(|o| match o {
            K8sObject::Pod(p) => pod_ipv4(p),
            _ => None,
        })
        .collect();
    used.extend(known.values().filter_map(|p| match p.ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }));
    let mut pool = AddressPool::new(range, used);
    for o in objects.iter_mut() {
        let (_, namespace, name) = object_id(o);
        let K8sObject::Pod(pod) = o else { continue };
        let node = pod_node_name(pod).and_then(|n| nodes.iter().find(|x| x.name == n));
        if host_network(pod) {
            // A host-network pod shares the node's network: its IP is the node's.
            if pod_ipv4(pod).is_none()
                && let Some(IpAddr::V4(ip)) = node.map(|n| n.ip)
            {
                set_pod_ip(pod, ip);
            }
            continue;
        }
        if let Some(ip) = pod_ipv4(pod)
            && let Some(taken) = nodes.iter().find(|n| n.ip == IpAddr::V4(ip))
        {
            return Err(Error::Pod {
                pod: format!("{namespace}/{name}"),
                message: format!(
                    "status.podIP {ip} is the address of lab node {}",
                    taken.name
                ),
            });
        }
        if let Some(existing) = known.get(&format!("{namespace}/{name}")) {
            if let IpAddr::V4(v4) = existing.ip {
                set_pod_ip(pod, v4);
            }
            continue;
        }
        if pod_ipv4(pod).is_some() {
            continue;
        }
        let ip = pool.take().ok_or_else(|| Error::Pod {
            pod: format!("{namespace}/{name}"),
            message: format!(
                "no address left in {} for a pod without status.podIP",
                pool.range()
            ),
        })?;
        set_pod_ip(pod, ip);
    }
    Ok(())
}

impl LabState {
    fn new(options: &LabOptions) -> Self {
        LabState {
            name: options.name.clone(),
            nodes: plan_nodes(&options.name, options.nodes),
            enforcement: options.enforcement,
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
            outside_names: BTreeMap::new(),
        }
    }
}

impl Lab {
    /// The lab `up` builds from `objects`, before anything is made: the
    /// cluster DNS's objects added (when `options.dns`), pod IPs filled in, the
    /// engine's cluster built, no pod yet. Also returns the kube-dns pod
    /// (`namespace/name`) when the lab runs a cluster DNS.
    pub(super) fn prepare(
        mut objects: Vec<K8sObject>,
        options: &LabOptions,
    ) -> Result<(Lab, Option<String>)> {
        check_name(&options.name)?;
        if options.nodes == 0 || options.nodes > MAX_NODES {
            return Err(Error::BadNodes(options.nodes));
        }
        let state = LabState::new(options);
        let dns_pod = options.dns.then(|| ensure_dns_objects(&mut objects));
        assign_pod_ips(&mut objects, &BTreeMap::new(), &state.nodes)?;
        let cluster = build_cluster(&objects)?;
        let lab = Lab {
            dir: options.state_root.join(&options.name),
            state,
            cluster,
            objects,
        };
        Ok((lab, dns_pod))
    }

    /// Opens a lab that is up.
    pub fn open(name: &str, state_root: &Path) -> Result<Lab> {
        check_name(name)?;
        let dir = state_root.join(name);
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| Error::NotUp {
            name: name.to_string(),
            path: path.clone(),
        })?;
        let mut state: LabState = serde_json::from_str(&text).map_err(|e| state_error(&path, e))?;
        if state.nodes.is_empty() {
            state.nodes = plan_nodes(name, 1);
        }
        let objects = objects_from_values(&state.objects, &path)?;
        let cluster = build_cluster(&objects)?;
        Ok(Lab {
            dir,
            state,
            cluster,
            objects,
        })
    }

    /// Saves the state (objects included) by writing a new file and renaming
    /// it over the old one, so a reader never sees half a file.
    pub(super) fn save(&mut self) -> Result<()> {
        self.state.objects = self.objects.iter().map(object_value).collect();
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(&self.state).map_err(|e| state_error(&path, e))?;
        std::fs::write(&tmp, text).map_err(|e| state_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| state_error(&path, e))
    }

    /// The pods of the cluster the lab does not run yet (host-network pods are
    /// never run), numbered from `next_index`, with their namespace and IPv4
    /// address. Nothing is made or recorded.
    pub(super) fn plan_new_pods(&self) -> Result<Vec<LabPod>> {
        let mut index = self.state.next_index;
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
            let node = pod
                .node
                .as_ref()
                .and_then(|n| self.state.nodes.iter().position(|x| &x.name == n))
                .unwrap_or(0);
            new.push(LabPod {
                namespace: pod.key.namespace.clone(),
                name: pod.key.name.clone(),
                index,
                netns: pod_netns(&self.state.name, index),
                ip,
                served: Vec::new(),
                node,
            });
            index += 1;
        }
        Ok(new)
    }

    /// Records pods that now run.
    pub(super) fn record_pods(&mut self, pods: &[LabPod]) {
        for p in pods {
            self.state.next_index = self.state.next_index.max(p.index + 1);
            self.state.pods.insert(p.key().to_string(), p.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    const NO_IPS: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
- apiVersion: v1
  kind: Pod
  metadata: {name: fixed, namespace: a}
  spec: {containers: [{name: c, image: x}]}
  status: {podIP: 10.250.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: first, namespace: a}
  spec: {containers: [{name: c, image: x}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: second, namespace: a}
  spec: {containers: [{name: c, image: x}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: host, namespace: a}
  spec: {hostNetwork: true, containers: [{name: c, image: x}]}
"#;

    fn pod_ips(objects: &[K8sObject]) -> BTreeMap<String, Ipv4Addr> {
        objects
            .iter()
            .filter_map(|o| match o {
                K8sObject::Pod(p) => Some((
                    p.metadata.name.clone().unwrap_or_default(),
                    pod_ipv4(p).expect("every pod has an IP"),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn addresses_skip_those_in_use_and_the_node_gets_host_network_pods() {
        let mut objects = fixture::objects(NO_IPS);
        assign_pod_ips(&mut objects, &BTreeMap::new(), &plan_nodes("unit", 1)).expect("assign");
        let ips = pod_ips(&objects);
        assert_eq!(ips["fixed"], Ipv4Addr::new(10, 250, 0, 3));
        assert_eq!(ips["first"], Ipv4Addr::new(10, 250, 0, 2));
        // .3 is fixed's.
        assert_eq!(ips["second"], Ipv4Addr::new(10, 250, 0, 4));
        assert_eq!(ips["host"], node_ip(0), "on node-0");
    }

    #[test]
    fn pods_the_lab_runs_keep_their_address_and_new_ones_never_take_it() {
        let mut objects = fixture::objects(NO_IPS);
        let known: BTreeMap<String, LabPod> = [LabPod {
            namespace: "a".into(),
            name: "second".into(),
            index: 7,
            netns: "nv.x.7".into(),
            ip: "10.250.0.2".parse().unwrap(),
            served: Vec::new(),
            node: 0,
        }]
        .into_iter()
        .map(|p| (p.key().to_string(), p))
        .collect();
        assign_pod_ips(&mut objects, &known, &plan_nodes("unit", 1)).expect("assign");
        let ips = pod_ips(&objects);
        assert_eq!(ips["second"], Ipv4Addr::new(10, 250, 0, 2));
        assert_eq!(ips["first"], Ipv4Addr::new(10, 250, 0, 4));
    }

    #[test]
    fn thousands_of_pods_get_distinct_addresses_inside_the_range() {
        let mut items = Vec::new();
        for i in 0..3000 {
            // Every tenth pod brings its own address, scattered over the range
            // the allocator walks through.
            let status = if i % 10 == 0 {
                format!(", status: {{podIP: 10.250.{}.{}}}", i / 250, 2 + i % 250)
            } else {
                String::new()
            };
            items.push(format!(
                "- {{apiVersion: v1, kind: Pod, metadata: {{name: p{i}, namespace: n{}}}, spec: {{containers: [{{name: c, image: x}}]}}{status}}}",
                i % 5
            ));
        }
        let yaml = format!("apiVersion: v1\nkind: List\nitems:\n{}\n", items.join("\n"));
        let mut objects = fixture::objects(&yaml);
        let given: BTreeSet<Ipv4Addr> = pod_ips(
            &objects
                .iter()
                .filter(|o| matches!(o, K8sObject::Pod(p) if p.status.is_some()))
                .cloned()
                .collect::<Vec<_>>(),
        )
        .into_values()
        .collect();
        assign_pod_ips(&mut objects, &BTreeMap::new(), &plan_nodes("unit", 1)).expect("assign");
        let ips = pod_ips(&objects);
        assert_eq!(ips.len(), 3000);
        let distinct: BTreeSet<Ipv4Addr> = ips.values().copied().collect();
        assert_eq!(distinct.len(), 3000, "an address was handed out twice");
        let range: Ipv4Net = "10.250.0.0/16".parse().unwrap();
        assert!(distinct.iter().all(|ip| range.contains(ip)));
        assert!(given.is_subset(&distinct), "a pod lost its own address");
    }

    #[test]
    fn a_used_up_range_is_an_error_naming_the_pod() {
        let mut pool = AddressPool::new("10.9.0.0/29".parse().unwrap(), BTreeSet::new());
        let taken: Vec<Ipv4Addr> = std::iter::from_fn(|| pool.take()).collect();
        // .2 to .6: never the network, .1 or the last address.
        assert_eq!(
            taken,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 9, 0, i))
                .collect::<Vec<_>>()
        );

        // NO_IPS has two pods to place in a /29 where .2 to .5 are taken.
        let mut objects = fixture::objects(NO_IPS);
        let known: BTreeMap<String, LabPod> = (2..=5)
            .map(|i| LabPod {
                namespace: "other".into(),
                name: format!("p{i}"),
                index: i,
                netns: format!("nv.x.{i}"),
                ip: IpAddr::V4(Ipv4Addr::new(10, 9, 0, i as u8)),
                served: Vec::new(),
                node: 0,
            })
            .map(|p| (p.key().to_string(), p))
            .collect();
        let err = assign_pod_ips_from(&mut objects, &known, &[], "10.9.0.0/29".parse().unwrap())
            .expect_err("one address (.6) for two pods");
        assert_eq!(
            err.to_string(),
            "pod a/second: no address left in 10.9.0.0/29 for a pod without status.podIP"
        );
        assert_eq!(pod_ips(&objects[..3])["first"], Ipv4Addr::new(10, 9, 0, 6));
    }

    #[test]
    fn planned_pods_are_numbered_after_those_that_run_and_skip_host_network_pods() {
        let mut lab = fixture::planned(fixture::objects(NO_IPS), false);
        let names: Vec<(usize, String, String)> = lab
            .pods()
            .iter()
            .map(|p| (p.index, p.key().to_string(), p.netns.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                (0, "a/first".to_string(), "nv.unit.0".to_string()),
                (1, "a/fixed".to_string(), "nv.unit.1".to_string()),
                (2, "a/second".to_string(), "nv.unit.2".to_string()),
            ]
        );
        assert_eq!(lab.state.next_index, 3);
        assert!(lab.plan_new_pods().expect("plan").is_empty());

        let mut objects = lab.objects.clone();
        objects.extend(fixture::objects(
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: late, namespace: a}, spec: {containers: [{name: c, image: x}]}}\n",
        ));
        assign_pod_ips(&mut objects, &lab.state.pods, &lab.state.nodes).expect("assign");
        lab.objects = objects;
        lab.cluster = build_cluster(&lab.objects).expect("cluster");
        let new = lab.plan_new_pods().expect("plan");
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].index, new[0].netns.as_str()), (3, "nv.unit.3"));
        assert!(!lab.pods().iter().any(|p| p.ip == new[0].ip));
    }

    #[test]
    fn a_saved_lab_opens_with_the_same_pods_objects_and_rules() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut lab = fixture::planned_in(fixture::seed_objects(true), true, root.path());
        lab.state
            .unenforced
            .policies
            .insert("default/api-from-web".into());
        lab.state.unsupported.push("x/y:SCTP/9".into());
        std::fs::create_dir_all(&lab.dir).expect("mkdir");
        lab.save().expect("save");

        let opened = Lab::open("unit", root.path()).expect("open");
        assert_eq!(opened.pods(), lab.pods());
        assert_eq!(opened.state.next_index, lab.state.next_index);
        assert_eq!(opened.state.unenforced, lab.state.unenforced);
        assert_eq!(opened.state.unsupported, lab.state.unsupported);
        assert_eq!(opened.state.server_command, ["nv-lab", "serve"]);
        assert_eq!(opened.cluster().policy_count(), 3);
        assert_eq!(opened.ruleset(), lab.ruleset());
        assert!(!lab.dir.join("state.json.tmp").exists());
    }

    #[test]
    fn state_files_without_served_ports_still_load() {
        let text =
            r#"{"namespace": "a", "name": "p", "index": 4, "netns": "nv.x.4", "ip": "10.0.0.1"}"#;
        let pod: LabPod = serde_json::from_str(text).expect("an older state file's pod");
        assert!(pod.served.is_empty());
        assert_eq!(pod.key().to_string(), "a/p");
    }

    #[test]
    fn opening_a_lab_that_is_not_up_names_its_state_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = Lab::open("gone", root.path()).expect_err("no state");
        assert!(matches!(err, Error::NotUp { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with(&format!("{}/gone/state.json)", root.path().display())),
            "{err}"
        );
        std::fs::create_dir_all(root.path().join("bad")).expect("mkdir");
        std::fs::write(root.path().join("bad/state.json"), "{\"name\": 3}").expect("write");
        let err = Lab::open("bad", root.path()).expect_err("bad state");
        assert!(err.to_string().starts_with("lab state "), "{err}");
    }

    #[test]
    fn lab_names_are_checked_because_they_name_namespaces() {
        for good in ["a", "lab-1", &"x".repeat(40)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Lab", "a.b", "a/b", "a b", &"x".repeat(41)] {
            assert!(matches!(check_name(bad), Err(Error::BadName(_))), "{bad:?}");
        }
        assert_eq!(prefix("demo"), "nv.demo.");
        assert_eq!(node_netns("demo"), "nv.demo.node");
        assert_eq!(pod_netns("demo", 12), "nv.demo.12");
        // A pod namespace never looks like the node's.
        assert!(!node_netns("demo")[prefix("demo").len()..].starts_with(char::is_numeric));
    }
}
