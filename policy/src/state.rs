//! The cluster state: namespaces, pods, policies, services, slices and nodes,
//! kept incrementally (one object applied or deleted at a time, as watches
//! deliver them) with the indexes the engine needs:
//!
//! - policies per namespace, indexed by one `key=value` label their pod selector
//!   requires, so finding the policies that select a pod costs the number of
//!   candidate policies, not the number of policies in the cluster;
//! - pods by IP;
//! - pod identities (namespace, labels, container ports) and IP classes (which
//!   ipBlocks of the cluster an IP falls in), the key of the verdict cache.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::cache::VerdictCache;
use crate::error::{LoadError, LoadErrors, ObjectError};
use crate::manifest::{K8sObject, Manifests};
use crate::model::{
    ContainerPort, EndpointSlice, IpBlock, Namespace, NamespaceMatch, Node, Peer, Pod, PodKey,
    Policy, PolicyKey, PortRef, Protocol, Service,
};
use crate::selector::Labels;
use crate::verdict::Verdict;

/// The kinds of object the state holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    EndpointSlice,
    Node,
}

/// Options for building state from manifests.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Reject pods without status.podIP (true for manifests; the lab allocates
    /// IPs itself and the collector accepts pending pods).
    pub require_pod_ips: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            require_pod_ips: true,
        }
    }
}

/// A pod with its identity (the verdict cache key).
#[derive(Clone, Debug)]
pub(crate) struct PodEntry {
    pub pod: Arc<Pod>,
    pub identity: u32,
}

/// What a pod IP resolves to.
#[derive(Clone, Debug)]
pub(crate) struct IpEntry {
    pub pod: Arc<Pod>,
    pub identity: u32,
    pub ip_class: u32,
    /// When this pod (in this version) started holding the IP, as the state's
    /// time ([`ClusterState::set_time`]) when it was applied.
    pub since: SystemTime,
}

/// A past holder of a pod IP: the pod as it was, and when it held the IP
/// (`from` inclusive, `until` exclusive), in the state's time.
#[derive(Clone, Debug)]
pub(crate) struct Holding {
    pub pod: Arc<Pod>,
    pub from: SystemTime,
    pub until: SystemTime,
}

/// Most past holders kept per IP, whatever the retention: bounds the memory of
/// an address that churns very fast.
const MAX_HOLDINGS_PER_IP: usize = 16;

/// The default of [`ClusterState::set_departed_retention`].
pub const DEFAULT_DEPARTED_RETENTION: Duration = Duration::from_secs(300);

/// The pod an IP resolved to at some time ([`ClusterState::holder_at`]).
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    pub pod: &'a Arc<Pod>,
    /// Whether it is the IP's current holder (in its current version); if not,
    /// the pod departed (or changed) since, and verdicts on it are not cached.
    pub current: bool,
}

/// The policies of one namespace, indexed by a label their selector requires.
#[derive(Default, Debug)]
struct NamespacePolicies {
    by_label: FxHashMap<(String, String), Vec<Arc<Policy>>>,
    /// Policies whose selector has no single-valued `In` requirement (e.g. `{}`).
    unindexed: Vec<Arc<Policy>>,
}

/// The identity of a pod for verdict purposes: everything a verdict about it
/// depends on except its namespace's labels and its IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IdentityKey {
    namespace: String,
    labels: Labels,
    ports: Arc<[ContainerPort]>,
}

/// Cache key: source identity, destination identity, source IP class,
/// destination IP class, port and protocol packed in one integer (one hash
/// write). Identity `EXTERNAL` is an IP that is no (selectable) pod.
pub(crate) type CacheKey = u128;

/// Packs a cache key; None when an IP class does not fit (such verdicts are not
/// cached).
pub(crate) fn cache_key(
    src_identity: u32,
    src_class: u32,
    dst_identity: u32,
    dst_class: u32,
    port: u16,
    protocol: Protocol,
) -> Option<CacheKey> {
    let src_class = u16::try_from(src_class).ok()?;
    let dst_class = u16::try_from(dst_class).ok()?;
    Some(
        (src_identity as u128) << 96
            | (dst_identity as u128) << 64
            | (src_class as u128) << 48
            | (dst_class as u128) << 32
            | (port as u128) << 8
            | protocol.number() as u128,
    )
}
pub(crate) const EXTERNAL: u32 = u32::MAX;
/// The IP class of addresses whose ipBlock membership was never interned.
pub(crate) const UNCACHED_CLASS: u32 = u32::MAX;

/// The state of one cluster, and the verdict engine over it (see `engine`).
#[derive(Debug)]
pub struct ClusterState {
    pub(crate) namespaces: FxHashMap<String, Namespace>,
    pub(crate) pods: FxHashMap<PodKey, PodEntry>,
    /// The pods of each namespace by name: selectors are namespaced, so
    /// Service backends and policy targets are found without scanning the cluster.
    pods_by_namespace: FxHashMap<String, BTreeMap<String, Arc<Pod>>>,
    /// Every (non-host-network) pod IP: its pod, identity and IP class, so that
    /// resolving a flow endpoint is one lookup.
    ip_index: FxHashMap<IpAddr, IpEntry>,
    /// Every pod holding each IP, in the order they were applied (usually one).
    ip_holders: FxHashMap<IpAddr, Vec<PodKey>>,
    /// Past holders of pod IPs (departed pods, or earlier versions of a pod
    /// whose labels, ports or IPs changed), oldest first, kept for
    /// `departed_retention` after they ended.
    ip_history: FxHashMap<IpAddr, VecDeque<Holding>>,
    departed_retention: Duration,
    /// The time changes are applied at, given by the caller (never read from a
    /// clock here).
    now: SystemTime,
    pub(crate) policies: FxHashMap<PolicyKey, Arc<Policy>>,
    policy_index: FxHashMap<String, NamespacePolicies>,
    services: FxHashMap<(String, String), Service>,
    services_by_ip: FxHashMap<IpAddr, (String, String)>,
    slices: FxHashMap<(String, String), EndpointSlice>,
    nodes: FxHashMap<String, Node>,
    node_ips: FxHashMap<IpAddr, String>,
    local_node_ips: FxHashSet<IpAddr>,
    identities: FxHashMap<IdentityKey, u32>,
    /// Distinct ipBlocks of all policies, with the number of peers using each.
    ip_blocks: Vec<(IpBlock, usize)>,
    ip_class_ids: FxHashMap<Vec<u32>, u32>,
    pub(crate) cache: Mutex<VerdictCache>,
    require_pod_ips: bool,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new()
    }
}

impl ClusterState {
    /// An empty cluster that accepts pods without IPs (as watches deliver them).
    pub fn new() -> Self {
        ClusterState {
            namespaces: FxHashMap::default(),
            pods: FxHashMap::default(),
            pods_by_namespace: FxHashMap::default(),
            ip_index: FxHashMap::default(),
            ip_holders: FxHashMap::default(),
            ip_history: FxHashMap::default(),
            departed_retention: DEFAULT_DEPARTED_RETENTION,
            now: SystemTime::UNIX_EPOCH,
            policies: FxHashMap::default(),
            policy_index: FxHashMap::default(),
            services: FxHashMap::default(),
            services_by_ip: FxHashMap::default(),
            slices: FxHashMap::default(),
            nodes: FxHashMap::default(),
            node_ips: FxHashMap::default(),
            local_node_ips: FxHashSet::default(),
            identities: FxHashMap::default(),
            ip_blocks: Vec::new(),
            ip_class_ids: FxHashMap::from_iter([(Vec::new(), 0)]),
            cache: Mutex::new(VerdictCache::default()),
            require_pod_ips: false,
        }
    }

    /// Builds the state from read manifests. Every invalid object is reported
    /// (with its file and document) and left out; every valid one is applied.
    pub fn from_manifests(
        manifests: Manifests,
        options: &LoadOptions,
    ) -> (ClusterState, Vec<LoadError>) {
        let mut state = ClusterState::new();
        state.require_pod_ips = options.require_pod_ips;
        let mut errors = manifests.errors;
        for sourced in manifests.objects {
            if let Err(error) = state.apply(&sourced.object) {
                errors.push(LoadError::Invalid {
                    origin: sourced.origin,
                    error,
                });
            }
        }
        state.require_pod_ips = false;
        (state, errors)
    }

    /// Reads manifests from files or directories; fails with every error found.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<ClusterState, LoadErrors> {
        let (state, errors) =
            ClusterState::from_manifests(Manifests::read_paths(paths), &LoadOptions::default());
        if errors.is_empty() {
            Ok(state)
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Adds or replaces an object. An invalid object leaves the state unchanged.
    pub fn apply(&mut self, object: &K8sObject) -> Result<(), ObjectError> {
        match object {
            K8sObject::Namespace(ns) => self.upsert_namespace(Namespace::from_k8s(ns)?),
            K8sObject::Pod(pod) => self.upsert_pod(Pod::from_k8s(pod, self.require_pod_ips)?),
            K8sObject::NetworkPolicy(np) => self.upsert_policy(Policy::from_k8s(np)?),
            K8sObject::Service(svc) => self.upsert_service(Service::from_k8s(svc)?),
            K8sObject::EndpointSlice(slice) => {
                let slice = EndpointSlice::from_k8s(slice)?;
                self.slices
                    .insert((slice.namespace.clone(), slice.name.clone()), slice);
            }
            K8sObject::Node(node) => self.upsert_node(Node::from_k8s(node)?),
        }
        Ok(())
    }

    /// Removes an object; returns whether it was there. `namespace` is ignored for
    /// cluster-scoped kinds.
    pub fn delete(&mut self, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        match kind {
            ObjectKind::Namespace => {
                let removed = self.namespaces.remove(name).is_some();
                if removed {
                    self.clear_cache();
                }
                removed
            }
            ObjectKind::Pod => self.remove_pod(&PodKey::new(namespace, name)).is_some(),
            ObjectKind::NetworkPolicy => self
                .remove_policy(&PolicyKey::new(namespace, name))
                .is_some(),
            ObjectKind::Service => {
                let key = (namespace.to_string(), name.to_string());
                match self.services.remove(&key) {
                    Some(svc) => {
                        for ip in &svc.cluster_ips {
                            self.services_by_ip.remove(ip);
                        }
                        true
                    }
                    None => false,
                }
            }
            ObjectKind::EndpointSlice => self
                .slices
                .remove(&(namespace.to_string(), name.to_string()))
                .is_some(),
            ObjectKind::Node => match self.nodes.remove(name) {
                Some(node) => {
                    for ip in &node.ips {
                        self.node_ips.remove(ip);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Declares IPs of the node every pod runs on (a one-node cluster such as the
    /// lab, or a node agent that knows its own addresses); traffic between a pod and
    /// these IPs is always allowed.
    pub fn set_local_node_ips(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.local_node_ips = ips.into_iter().collect();
        self.clear_cache();
    }

    /// Sets the state's time: the changes applied from now on happened at
    /// `now` (a pod deleted now held its IPs until `now`; a pod added now
    /// holds them from `now`). The caller reads the clock; the engine never
    /// does. Time does not go backwards: an earlier `now` is ignored.
    pub fn set_time(&mut self, now: SystemTime) {
        self.now = self.now.max(now);
    }

    /// The state's time (see [`ClusterState::set_time`]).
    pub fn time(&self) -> SystemTime {
        self.now
    }

    /// How long a departed pod (or a pod's earlier version) stays resolvable by
    /// the IP it held, after it departed (default five minutes). Applies from
    /// the next [`ClusterState::prune_departed`].
    pub fn set_departed_retention(&mut self, retention: Duration) {
        self.departed_retention = retention;
    }

    /// Forgets past IP holders that ended more than the retention before `now`;
    /// returns how many were forgotten.
    pub fn prune_departed(&mut self, now: SystemTime) -> usize {
        let retention = self.departed_retention;
        let mut pruned = 0;
        self.ip_history.retain(|_, holdings| {
            while holdings.front().is_some_and(|h| h.until + retention <= now) {
                holdings.pop_front();
                pruned += 1;
            }
            !holdings.is_empty()
        });
        pruned
    }

    /// How many past IP holders are kept.
    pub fn departed_count(&self) -> usize {
        self.ip_history.values().map(VecDeque::len).sum()
    }

    /// The pod that held an IP at time `at`: the current holder if it held it
    /// by then, else the past holder whose interval contains `at`, else the
    /// current holder (a flow seen before its pod was applied: watches lag the
    /// kernel). `None` when the IP is no pod's then.
    pub fn holder_at(&self, ip: IpAddr, at: SystemTime) -> Option<Holder<'_>> {
        let current = self.ip_index.get(&ip);
        if let Some(entry) = current
            && at >= entry.since
        {
            return Some(Holder {
                pod: &entry.pod,
                current: true,
            });
        }
        if let Some(past) = self
            .ip_history
            .get(&ip)
            .and_then(|hs| hs.iter().rev().find(|h| h.from <= at && at < h.until))
        {
            return Some(Holder {
                pod: &past.pod,
                current: false,
            });
        }
        current.map(|entry| Holder {
            pod: &entry.pod,
            current: true,
        })
    }

    /// The pod holding an IP at time `at` (see [`ClusterState::holder_at`]).
    pub fn pod_by_ip_at(&self, ip: IpAddr, at: SystemTime) -> Option<&Arc<Pod>> {
        self.holder_at(ip, at).map(|h| h.pod)
    }

    /// Records that `entry` stopped holding `ip` now.
    fn record_departure(&mut self, ip: IpAddr, entry: &IpEntry) {
        let holdings = self.ip_history.entry(ip).or_default();
        holdings.push_back(Holding {
            pod: entry.pod.clone(),
            from: entry.since,
            until: self.now,
        });
        while holdings.len() > MAX_HOLDINGS_PER_IP {
            holdings.pop_front();
        }
    }

    // ---- queries -----------------------------------------------------------

    /// The labels of a namespace; a namespace no object declared has only
    /// `kubernetes.io/metadata.name`, as the API server would give it.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::implicit(name).labels,
        }
    }

    /// Declared namespaces, in name order.
    pub fn namespaces(&self) -> Vec<&Namespace> {
        let mut out: Vec<_> = self.namespaces.values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The names of every namespace that is declared or holds a pod or policy.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: FxHashSet<&str> = self.namespaces.keys().map(|s| s.as_str()).collect();
        names.extend(self.pods.keys().map(|k| k.namespace.as_str()));
        names.extend(self.policies.keys().map(|k| k.namespace.as_str()));
        let mut out: Vec<String> = names.into_iter().map(str::to_string).collect();
        out.sort();
        out
    }

    /// All pods, in namespace/name order.
    pub fn pods(&self) -> Vec<&Arc<Pod>> {
        let mut out: Vec<_> = self.pods.values().map(|e| &e.pod).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The pods of one namespace, in name order.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.values())
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&Arc<Pod>> {
        self.pods.get(key).map(|e| &e.pod)
    }

    /// The (non-host-network) pod holding an IP.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Arc<Pod>> {
        self.ip_index.get(&ip).map(|e| &e.pod)
    }

    /// All policies, in namespace/name order.
    pub fn policies(&self) -> Vec<&Arc<Policy>> {
        let mut out: Vec<_> = self.policies.values().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    pub fn policy(&self, key: &PolicyKey) -> Option<&Arc<Policy>> {
        self.policies.get(key)
    }

    /// All services, in namespace/name order.
    pub fn services(&self) -> Vec<&Service> {
        let mut out: Vec<_> = self.services.values().collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The service owning a cluster IP.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.services_by_ip
            .get(&ip)
            .and_then(|k| self.services.get(k))
    }

    /// All endpoint slices, in namespace/name order.
    pub fn endpoint_slices(&self) -> Vec<&EndpointSlice> {
        let mut out: Vec<_> = self.slices.values().collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// All nodes, in name order.
    pub fn nodes(&self) -> Vec<&Node> {
        let mut out: Vec<_> = self.nodes.values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `ip` belongs to the node `pod` runs on (or to the local node).
    pub fn is_node_of(&self, pod: &Pod, ip: IpAddr) -> bool {
        if self.local_node_ips.contains(&ip) {
            return true;
        }
        match (&pod.node, self.node_ips.get(&ip)) {
            (Some(pod_node), Some(ip_node)) => pod_node == ip_node,
            _ => false,
        }
    }

    /// Whether an IP belongs to any known node.
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        self.local_node_ips.contains(&ip) || self.node_ips.contains_key(&ip)
    }

    /// Whether `policy` selects `pod` (host-network pods are never selected).
    pub fn policy_selects(&self, policy: &Policy, pod: &Pod) -> bool {
        !pod.host_network
            && policy.key.namespace == pod.key.namespace
            && policy.pod_selector.matches(&pod.labels)
    }

    /// The pods a policy selects, in order.
    pub fn selected_pods(&self, policy: &Policy) -> Vec<&Arc<Pod>> {
        self.pods_in(&policy.key.namespace)
            .filter(|p| self.policy_selects(policy, p))
            .collect()
    }

    /// Whether a pod peer of a policy in `policy_namespace` matches `pod`.
    pub fn peer_matches_pod(&self, policy_namespace: &str, peer: &Peer, pod: &Pod) -> bool {
        if pod.host_network {
            return match peer {
                Peer::IpBlock(block) => pod.ips.iter().any(|ip| block.contains(*ip)),
                Peer::Pods { .. } => false,
            };
        }
        match peer {
            Peer::IpBlock(block) => pod.ips.iter().any(|ip| block.contains(*ip)),
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    NamespaceMatch::PolicyNamespace => pod.key.namespace == policy_namespace,
                    NamespaceMatch::Selector(sel) => {
                        sel.matches(&self.namespace_labels(&pod.key.namespace))
                    }
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
            }
        }
    }

    /// The namespaces a namespace selector matches (declared or implicit).
    pub fn namespaces_matching(&self, selector: &crate::selector::Selector) -> Vec<String> {
        self.namespace_names()
            .into_iter()
            .filter(|n| selector.matches(&self.namespace_labels(n)))
            .collect()
    }

    /// The backends a connection to `ip:port/protocol` reaches when `ip` is a
    /// service's cluster IP (DNAT as kube-proxy does it): pod and target port.
    /// Named target ports are resolved against each backend pod.
    pub fn service_backends(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Option<Vec<(PodKey, u16)>> {
        let svc = self.service_by_ip(ip)?;
        let sp = svc
            .ports
            .iter()
            .find(|p| p.port == port && p.protocol == protocol)?;
        let mut out = Vec::new();
        match &svc.selector {
            Some(sel) => {
                for pod in self.pods_in(&svc.namespace) {
                    if pod.ips.is_empty() || !sel.matches(&pod.labels) {
                        continue;
                    }
                    let target = match &sp.target_port {
                        PortRef::Number(n) => Some(*n),
                        PortRef::Name(name) => pod.named_port(name, protocol),
                    };
                    if let Some(t) = target {
                        out.push((pod.key.clone(), t));
                    }
                }
            }
            None => {
                for slice in self.slices.values() {
                    if slice.namespace != svc.namespace
                        || slice.service.as_deref() != Some(&svc.name)
                    {
                        continue;
                    }
                    let Some(slice_port) = slice
                        .ports
                        .iter()
                        .find(|p| p.name == sp.name && p.protocol == protocol)
                    else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        let pod = ep.pod.clone().or_else(|| {
                            ep.addresses
                                .iter()
                                .find_map(|a| self.pod_by_ip(*a))
                                .map(|p| p.key.clone())
                        });
                        if let Some(pod) = pod {
                            out.push((pod, slice_port.port));
                        }
                    }
                }
                out.sort();
            }
        }
        Some(out)
    }

    // ---- engine support ------------------------------------------------------

    /// The policies of the pod's namespace that select it and apply to `direction`,
    /// found through the label index, in namespace/name order.
    pub fn policies_selecting(
        &self,
        pod: &Pod,
        direction: crate::model::Direction,
    ) -> Vec<Arc<Policy>> {
        let mut out: Vec<Arc<Policy>> = Vec::new();
        if pod.host_network {
            return out;
        }
        let Some(index) = self.policy_index.get(&pod.key.namespace) else {
            return out;
        };
        let mut consider = |p: &Arc<Policy>| {
            if p.rules(direction).is_some() && p.pod_selector.matches(&pod.labels) {
                out.push(p.clone());
            }
        };
        for p in &index.unindexed {
            consider(p);
        }
        if index.by_label.len() <= pod.labels.len() {
            for ((k, v), policies) in &index.by_label {
                if pod.labels.get(k) == Some(v) {
                    policies.iter().for_each(&mut consider);
                }
            }
        } else {
            let mut probe = (String::new(), String::new());
            for (k, v) in pod.labels.iter() {
                probe.0.clear();
                probe.0.push_str(k);
                probe.1.clear();
                probe.1.push_str(v);
                if let Some(policies) = index.by_label.get(&probe) {
                    policies.iter().for_each(&mut consider);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The same answer as `policies_selecting`, by scanning every policy of the
    /// cluster: the reference the index is checked and measured against.
    pub fn policies_selecting_by_scan(
        &self,
        pod: &Pod,
        direction: crate::model::Direction,
    ) -> Vec<Arc<Policy>> {
        let mut out: Vec<Arc<Policy>> = self
            .policies
            .values()
            .filter(|p| p.rules(direction).is_some() && self.policy_selects(p, pod))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub(crate) fn pod_entry(&self, key: &PodKey) -> Option<&PodEntry> {
        self.pods.get(key)
    }

    pub(crate) fn ip_entry(&self, ip: IpAddr) -> Option<&IpEntry> {
        self.ip_index.get(&ip)
    }

    /// The IP class of an address: which of the cluster's ipBlocks contain it.
    /// `UNCACHED_CLASS` for a set of ipBlocks no pod IP falls in (rare: an
    /// external IP inside some ipBlocks); verdicts for it are not cached.
    pub(crate) fn ip_class(&self, ip: IpAddr) -> u32 {
        if let Some(entry) = self.ip_index.get(&ip) {
            return entry.ip_class;
        }
        let members = self.ip_block_members(ip);
        self.ip_class_ids
            .get(&members)
            .copied()
            .unwrap_or(UNCACHED_CLASS)
    }

    /// The ipBlocks whose CIDR holds `ip`, each followed by 0 when the block
    /// admits it or by 1 + the index of the first exception holding it: verdicts
    /// (and the misses they explain) depend on no more than this.
    fn ip_block_members(&self, ip: IpAddr) -> Vec<u32> {
        let mut members = Vec::new();
        for (i, (block, uses)) in self.ip_blocks.iter().enumerate() {
            if *uses > 0 && block.cidr.contains(&ip) {
                let except = block.except.iter().position(|e| e.contains(&ip));
                members.push(i as u32);
                members.push(except.map_or(0, |e| e as u32 + 1));
            }
        }
        members
    }

    pub(crate) fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn cache_get(&self, key: CacheKey) -> Option<Arc<Verdict>> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn cache_insert(&self, key: CacheKey, verdict: Verdict) -> Arc<Verdict> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, verdict)
    }

    /// How many flow keys have a cached verdict.
    pub fn cached_verdicts(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    // ---- updates -------------------------------------------------------------

    fn upsert_namespace(&mut self, ns: Namespace) {
        let changed = self
            .namespaces
            .get(&ns.name)
            .is_none_or(|old| old.labels != ns.labels);
        self.namespaces.insert(ns.name.clone(), ns);
        if changed {
            self.clear_cache();
        }
    }

    fn upsert_pod(&mut self, pod: Pod) {
        // An update that changes nothing the engine uses (most pod updates:
        // status, annotations) keeps the IPs' holding times.
        let unchanged = self
            .pods
            .get(&pod.key)
            .is_some_and(|old| same_holder(&old.pod, &pod));
        let mut since: FxHashMap<IpAddr, SystemTime> = FxHashMap::default();
        if unchanged {
            for ip in &pod.ips {
                if let Some(e) = self.ip_index.get(ip).filter(|e| e.pod.key == pod.key) {
                    since.insert(*ip, e.since);
                }
            }
        }
        self.remove_pod_recording(&pod.key, !unchanged);
        let identity = self.intern_identity(&pod);
        let pod = Arc::new(pod);
        if !pod.host_network {
            for ip in &pod.ips {
                let ip_class = self.intern_ip_class(*ip);
                let entry = IpEntry {
                    pod: pod.clone(),
                    identity,
                    ip_class,
                    since: since.get(ip).copied().unwrap_or(self.now),
                };
                if let Some(previous) = self.ip_index.insert(*ip, entry)
                    && previous.pod.key != pod.key
                {
                    // Another pod held the address (its deletion not seen yet):
                    // it is the new pod's from now on.
                    self.record_departure(*ip, &previous);
                }
                self.ip_holders
                    .entry(*ip)
                    .or_default()
                    .push(pod.key.clone());
            }
        }
        self.pods_by_namespace
            .entry(pod.key.namespace.clone())
            .or_default()
            .insert(pod.key.name.clone(), pod.clone());
        self.pods
            .insert(pod.key.clone(), PodEntry { pod, identity });
        if self.identities.len() > 1024 && self.identities.len() > 4 * self.pods.len() {
            self.rebuild_identities();
        }
    }

    fn remove_pod(&mut self, key: &PodKey) -> Option<PodEntry> {
        self.remove_pod_recording(key, true)
    }

    /// Removes a pod; with `record`, the IPs it held are recorded as held by it
    /// until now.
    fn remove_pod_recording(&mut self, key: &PodKey, record: bool) -> Option<PodEntry> {
        let entry = self.pods.remove(key)?;
        if let Some(pods) = self.pods_by_namespace.get_mut(&key.namespace) {
            pods.remove(&key.name);
            if pods.is_empty() {
                self.pods_by_namespace.remove(&key.namespace);
            }
        }
        if !entry.pod.host_network {
            for ip in &entry.pod.ips {
                if let Some(holders) = self.ip_holders.get_mut(ip) {
                    holders.retain(|k| k != key);
                    if holders.is_empty() {
                        self.ip_holders.remove(ip);
                    }
                }
            }
        }
        for ip in &entry.pod.ips {
            if self.ip_index.get(ip).is_some_and(|e| e.pod.key == *key) {
                if let Some(removed) = self.ip_index.remove(ip)
                    && record
                {
                    self.record_departure(*ip, &removed);
                }
                // Another pod may hold the address too (a finished pod's IP
                // reused, events out of order): it is the latest such pod's now.
                let other = self
                    .ip_holders
                    .get(ip)
                    .and_then(|holders| holders.iter().rev().find(|k| *k != key))
                    .and_then(|k| self.pods.get(k))
                    .cloned();
                if let Some(other) = other {
                    let ip_class = self.intern_ip_class(*ip);
                    let entry = IpEntry {
                        pod: other.pod,
                        identity: other.identity,
                        ip_class,
                        since: self.now,
                    };
                    self.ip_index.insert(*ip, entry);
                }
            }
        }
        Some(entry)
    }

    fn intern_identity(&mut self, pod: &Pod) -> u32 {
        let key = IdentityKey {
            namespace: pod.key.namespace.clone(),
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
        };
        let next = self.identities.len() as u32;
        *self.identities.entry(key).or_insert(next)
    }

    /// Drops identities no pod has any more; cached verdicts keyed by the old ids
    /// go too.
    fn rebuild_identities(&mut self) {
        self.identities.clear();
        let keys: Vec<PodKey> = self.pods.keys().cloned().collect();
        for key in keys {
            let pod = self.pods[&key].pod.clone();
            let id = self.intern_identity(&pod);
            if let Some(e) = self.pods.get_mut(&key) {
                e.identity = id;
            }
            for ip in &pod.ips {
                if let Some(entry) = self.ip_index.get_mut(ip).filter(|e| e.pod.key == key) {
                    entry.identity = id;
                }
            }
        }
        self.clear_cache();
    }

    fn intern_ip_class(&mut self, ip: IpAddr) -> u32 {
        let members = self.ip_block_members(ip);
        let next = self.ip_class_ids.len() as u32;
        *self.ip_class_ids.entry(members).or_insert(next)
    }

    fn recompute_ip_classes(&mut self) {
        self.ip_class_ids.clear();
        // The class of addresses in no ipBlock: the common case for external IPs.
        self.ip_class_ids.insert(Vec::new(), 0);
        let ips: Vec<IpAddr> = self.ip_index.keys().copied().collect();
        for ip in ips {
            let class = self.intern_ip_class(ip);
            if let Some(entry) = self.ip_index.get_mut(&ip) {
                entry.ip_class = class;
            }
        }
    }

    fn upsert_policy(&mut self, policy: Policy) {
        let same = self
            .policies
            .get(&policy.key)
            .is_some_and(|old| **old == policy);
        if same {
            return;
        }
        self.remove_policy(&policy.key);
        let policy = Arc::new(policy);
        let index = self
            .policy_index
            .entry(policy.key.namespace.clone())
            .or_default();
        match policy.pod_selector.index_label() {
            Some((k, v)) => index
                .by_label
                .entry((k.to_string(), v.to_string()))
                .or_default()
                .push(policy.clone()),
            None => index.unindexed.push(policy.clone()),
        }
        let mut blocks_changed = false;
        for block in policy_ip_blocks(&policy) {
            match self.ip_blocks.iter_mut().find(|(b, _)| b == block) {
                Some((_, uses)) => {
                    if *uses == 0 {
                        blocks_changed = true;
                    }
                    *uses += 1;
                }
                None => {
                    self.ip_blocks.push((block.clone(), 1));
                    blocks_changed = true;
                }
            }
        }
        self.policies.insert(policy.key.clone(), policy);
        if blocks_changed {
            self.recompute_ip_classes();
        }
        self.clear_cache();
    }

    fn remove_policy(&mut self, key: &PolicyKey) -> Option<Arc<Policy>> {
        let policy = self.policies.remove(key)?;
        if let Some(index) = self.policy_index.get_mut(&key.namespace) {
            index.unindexed.retain(|p| p.key != *key);
            index.by_label.retain(|_, list| {
                list.retain(|p| p.key != *key);
                !list.is_empty()
            });
        }
        let mut blocks_changed = false;
        for block in policy_ip_blocks(&policy) {
            if let Some((_, uses)) = self.ip_blocks.iter_mut().find(|(b, _)| b == block) {
                *uses = uses.saturating_sub(1);
                blocks_changed |= *uses == 0;
            }
        }
        if blocks_changed {
            self.ip_blocks.retain(|(_, uses)| *uses > 0);
            self.recompute_ip_classes();
        }
        self.clear_cache();
        Some(policy)
    }

    fn upsert_service(&mut self, svc: Service) {
        let key = (svc.namespace.clone(), svc.name.clone());
        if let Some(old) = self.services.remove(&key) {
            for ip in &old.cluster_ips {
                self.services_by_ip.remove(ip);
            }
        }
        for ip in &svc.cluster_ips {
            self.services_by_ip.insert(*ip, key.clone());
        }
        self.services.insert(key, svc);
    }

    fn upsert_node(&mut self, node: Node) {
        if let Some(old) = self.nodes.remove(&node.name) {
            for ip in &old.ips {
                self.node_ips.remove(ip);
            }
        }
        for ip in &node.ips {
            self.node_ips.insert(*ip, node.name.clone());
        }
        self.nodes.insert(node.name.clone(), node);
        self.clear_cache();
    }

    /// Labels of a namespace as a map, for lints and tests.
    pub fn namespace_label_map(&self, name: &str) -> BTreeMap<String, String> {
        (*self.namespace_labels(name)).clone()
    }
}

/// The ipBlocks a policy's rules name (each occurrence once per peer).
fn policy_ip_blocks(policy: &Policy) -> impl Iterator<Item = &IpBlock> {
    policy
        .ingress
        .iter()
        .chain(policy.egress.iter())
        .flatten()
        .flat_map(|rule| rule.peers.iter())
        .filter_map(|peer| match peer {
            Peer::IpBlock(block) => Some(block),
            Peer::Pods { .. } => None,
        })
}

/// Whether two versions of a pod are the same for the engine (so the newer
/// one keeps the older one's IP holding times).
fn same_holder(a: &Pod, b: &Pod) -> bool {
    a.key == b.key
        && a.labels == b.labels
        && a.ips == b.ips
        && a.host_network == b.host_network
        && a.node == b.node
        && a.ports == b.ports
}
