//! The cluster state: namespaces, pods, policies, services, slices, nodes and
//! the ReplicaSets and Jobs owning pods,
//! kept incrementally (one object applied or deleted at a time, as watches
//! deliver them) with the indexes the engine needs. [`ClusterState`] is the
//! composition of these parts, and keeps them consistent on each change:
//!
//! - `pods`: pods by key and by namespace, each with its identity;
//! - `ip_history`: the pod holding each pod IP now and the pods that held it
//!   before, in the state's time;
//! - `identities`: pods' (namespace, labels, container ports) interned to a
//!   `u32`, a key of the verdict cache;
//! - `ip_classes`: which of the cluster's ipBlocks an IP falls in, interned
//!   to a `u32`, the other key of the verdict cache;
//! - `policy_index`: NetworkPolicies by key and by namespace and label;
//! - `admin_policies`: the cluster-scoped admin policies by key and per tier
//!   in decision order;
//! - `policy_history`: both as one set, and the sets recent changes replaced
//!   (so that a flow held across a change is judged by the set of its start);
//! - `services` and `nodes`: Service resolution, and the node addresses
//!   traffic with which is always allowed;
//! - `controllers`: ReplicaSets and Jobs, through which a pod's workload is
//!   found (its Deployment, its CronJob); no verdict depends on them.
//!
//! What changes empties the verdict cache: a policy (of any kind), a
//! namespace's labels, a node, the local node's addresses. A pod change does not need to (a changed
//! pod has another identity).

mod admin_policies;
mod controllers;
mod identities;
mod ip_classes;
mod ip_history;
mod nodes;
mod pods;
mod policy_history;
mod policy_index;
mod services;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::cache::{CacheKey, VerdictCache};
use crate::error::{LoadError, LoadErrors, ObjectError};
use crate::manifest::{K8sObject, Manifests};
use crate::model::{
    AdminPeer, AdminPolicy, Controller, ControllerKind, Direction, EndpointSlice, IpBlock,
    Namespace, NamespaceMatch, NetworkPolicy, Node, Owner, Peer, Pod, PodKey, PolicyKey,
    PolicyKind, PortRef, Protocol, Service, Tier,
};
use crate::selector::{Labels, Selector};
use crate::verdict::Verdict;

use controllers::Controllers;
use identities::Identities;
pub(crate) use identities::{DEPARTED, EXTERNAL, HOST_NETWORK};
use ip_classes::IpClasses;
pub(crate) use ip_history::IpEntry;
use ip_history::IpHistory;
pub use ip_history::{DEFAULT_DEPARTED_RETENTION, Holder};
use nodes::Nodes;
pub(crate) use pods::PodEntry;
use pods::Pods;
use policy_history::PolicyHistory;
pub(crate) use policy_history::PolicySet;
use services::Services;

/// The kinds of object the state holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    EndpointSlice,
    Node,
    /// apps/v1 ReplicaSet (kept for its pods' workload).
    ReplicaSet,
    /// batch/v1 Job (kept for its pods' workload).
    Job,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
}

impl ObjectKind {
    /// The policy kind of a policy object kind.
    pub fn policy_kind(self) -> Option<PolicyKind> {
        match self {
            ObjectKind::NetworkPolicy => Some(PolicyKind::NetworkPolicy),
            ObjectKind::AdminNetworkPolicy => Some(PolicyKind::AdminNetworkPolicy),
            ObjectKind::BaselineAdminNetworkPolicy => Some(PolicyKind::BaselineAdminNetworkPolicy),
            ObjectKind::ClusterNetworkPolicy => Some(PolicyKind::ClusterNetworkPolicy),
            _ => None,
        }
    }
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

/// The state of one cluster, and the verdict engine over it (see `engine`).
#[derive(Debug, Default)]
pub struct ClusterState {
    namespaces: FxHashMap<String, Namespace>,
    pods: Pods,
    ips: IpHistory,
    identities: Identities,
    ip_classes: IpClasses,
    policies: PolicyHistory,
    services: Services,
    nodes: Nodes,
    controllers: Controllers,
    cache: Mutex<VerdictCache>,
    require_pod_ips: bool,
}

/// A copy of the state with an empty verdict cache (what-if replays change a
/// copy and compare the two).
impl Clone for ClusterState {
    fn clone(&self) -> Self {
        ClusterState {
            namespaces: self.namespaces.clone(),
            pods: self.pods.clone(),
            ips: self.ips.clone(),
            identities: self.identities.clone(),
            ip_classes: self.ip_classes.clone(),
            policies: self.policies.clone(),
            services: self.services.clone(),
            nodes: self.nodes.clone(),
            controllers: self.controllers.clone(),
            cache: Mutex::default(),
            require_pod_ips: self.require_pod_ips,
        }
    }
}

impl ClusterState {
    /// An empty cluster that accepts pods without IPs (as watches deliver them).
    pub fn new() -> Self {
        ClusterState::default()
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
            K8sObject::NetworkPolicy(np) => self.upsert_policy(NetworkPolicy::from_k8s(np)?),
            K8sObject::Service(svc) => self.services.upsert(Service::from_k8s(svc)?),
            K8sObject::EndpointSlice(slice) => {
                self.services.upsert_slice(EndpointSlice::from_k8s(slice)?)
            }
            K8sObject::Node(node) => {
                self.nodes.upsert(Node::from_k8s(node)?);
                self.clear_cache();
            }
            K8sObject::ReplicaSet(rs) => self.controllers.upsert(Controller::from_replica_set(rs)?),
            K8sObject::Job(job) => self.controllers.upsert(Controller::from_job(job)?),
            K8sObject::AdminNetworkPolicy(anp) => {
                self.upsert_admin_policy(AdminPolicy::from_anp(anp)?)
            }
            K8sObject::BaselineAdminNetworkPolicy(banp) => {
                self.upsert_admin_policy(AdminPolicy::from_banp(banp)?)
            }
            K8sObject::ClusterNetworkPolicy(cnp) => {
                self.upsert_admin_policy(AdminPolicy::from_cnp(cnp)?)
            }
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
            ObjectKind::Pod => self.remove_pod(&PodKey::new(namespace, name), true),
            ObjectKind::NetworkPolicy => self
                .remove_policy(&PolicyKey::network_policy(namespace, name))
                .is_some(),
            ObjectKind::Service => self.services.remove(namespace, name),
            ObjectKind::EndpointSlice => self.services.remove_slice(namespace, name),
            ObjectKind::Node => {
                let removed = self.nodes.remove(name);
                if removed {
                    self.clear_cache();
                }
                removed
            }
            ObjectKind::ReplicaSet => {
                self.controllers
                    .remove(ControllerKind::ReplicaSet, namespace, name)
            }
            ObjectKind::Job => self
                .controllers
                .remove(ControllerKind::Job, namespace, name),
            ObjectKind::AdminNetworkPolicy
            | ObjectKind::BaselineAdminNetworkPolicy
            | ObjectKind::ClusterNetworkPolicy => kind
                .policy_kind()
                .and_then(|k| PolicyKey::cluster_scoped(k, name))
                .is_some_and(|key| self.remove_admin_policy(&key).is_some()),
        }
    }

    /// Declares IPs of the node every pod runs on (a one-node cluster such as the
    /// lab, or a node agent that knows its own addresses); traffic between a pod and
    /// these IPs is always allowed.
    pub fn set_local_node_ips(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.nodes.set_local_ips(ips);
        self.clear_cache();
    }

    // ---- time ----------------------------------------------------------------

    /// Sets the state's time: the changes applied from now on happened at
    /// `now` (a pod deleted now held its IPs until `now`; a pod added now
    /// holds them from `now`). The caller reads the clock; the engine never
    /// does. Time does not go backwards: an earlier `now` is ignored.
    pub fn set_time(&mut self, now: SystemTime) {
        self.ips.set_time(now);
    }

    /// The state's time (see [`ClusterState::set_time`]).
    pub fn time(&self) -> SystemTime {
        self.ips.time()
    }

    /// How long a departed pod (or a pod's earlier version) stays resolvable by
    /// the IP it held, after it departed (default five minutes). Applies from
    /// the next [`ClusterState::prune_departed`].
    pub fn set_departed_retention(&mut self, retention: Duration) {
        self.ips.set_retention(retention);
    }

    /// Forgets past IP holders that ended more than the retention before `now`
    /// (and the policy sets replaced before the policy retention); returns
    /// how many IP holders were forgotten.
    pub fn prune_departed(&mut self, now: SystemTime) -> usize {
        self.policies.prune(now);
        self.ips.prune(now)
    }

    /// Keeps each policy set that a change replaces for `retention` after the
    /// change, so that [`ClusterState::verdict_at`] judges a flow by the
    /// policies in effect when it started (a collector sets it to the longest
    /// it holds a flow). Zero, the default, keeps none: verdicts at any time
    /// judge by the current policies.
    pub fn set_policy_retention(&mut self, retention: Duration) {
        self.policies.set_retention(retention);
    }

    /// How many replaced policy sets are kept.
    pub fn earlier_policy_sets(&self) -> usize {
        self.policies.earlier_count()
    }

    /// The policies in effect at `at` (the current ones without retention).
    pub(crate) fn policies_at(&self, at: SystemTime) -> &PolicySet {
        self.policies.at(at)
    }

    /// Whether the policies in effect at `at` are the current ones.
    pub(crate) fn policies_current_at(&self, at: SystemTime) -> bool {
        self.policies.is_current_at(at)
    }

    /// The policies in effect now.
    pub(crate) fn current_policies(&self) -> &PolicySet {
        self.policies.current()
    }

    /// How many past IP holders are kept.
    pub fn departed_count(&self) -> usize {
        self.ips.past_count()
    }

    /// The pod that held an IP at time `at`: the current holder if it held it
    /// by then, else the past holder whose interval contains `at`, else the
    /// current holder (a flow seen before its pod was applied: watches lag the
    /// kernel). `None` when the IP is no pod's then.
    pub fn holder_at(&self, ip: IpAddr, at: SystemTime) -> Option<Holder<'_>> {
        self.ips.holder_at(ip, at)
    }

    /// The pod holding an IP at time `at` (see [`ClusterState::holder_at`]).
    pub fn pod_by_ip_at(&self, ip: IpAddr, at: SystemTime) -> Option<&Arc<Pod>> {
        self.holder_at(ip, at).map(|h| h.pod)
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

    /// Labels of a namespace as a map, for lints and tests.
    pub fn namespace_label_map(&self, name: &str) -> BTreeMap<String, String> {
        (*self.namespace_labels(name)).clone()
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
        names.extend(self.pods.iter().map(|e| e.pod.key.namespace.as_str()));
        names.extend(
            self.policies
                .current()
                .network
                .iter()
                .map(|p| p.namespace()),
        );
        let mut out: Vec<String> = names.into_iter().map(str::to_string).collect();
        out.sort();
        out
    }

    /// The namespaces a namespace selector matches (declared or implicit).
    pub fn namespaces_matching(&self, selector: &Selector) -> Vec<String> {
        self.namespace_names()
            .into_iter()
            .filter(|n| selector.matches(&self.namespace_labels(n)))
            .collect()
    }

    /// All pods, in namespace/name order.
    pub fn pods(&self) -> Vec<&Arc<Pod>> {
        let mut out: Vec<_> = self.pods.iter().map(|e| &e.pod).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The pods of one namespace, in name order.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.in_namespace(namespace)
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&Arc<Pod>> {
        self.pods.get(key).map(|e| &e.pod)
    }

    /// The (non-host-network) pod holding an IP.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Arc<Pod>> {
        self.ips.current(ip).map(|e| &e.pod)
    }

    /// All policies, in key order.
    pub fn policies(&self) -> Vec<&Arc<NetworkPolicy>> {
        let mut out: Vec<_> = self.policies.current().network.iter().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub fn policy_count(&self) -> usize {
        self.policies.current().network.len()
    }

    pub fn policy(&self, key: &PolicyKey) -> Option<&Arc<NetworkPolicy>> {
        self.policies.current().network.get(key)
    }

    /// Every admin policy (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
    /// ClusterNetworkPolicy): the Admin tier then the Baseline tier, each in
    /// decision order.
    pub fn admin_policies(&self) -> impl Iterator<Item = &Arc<AdminPolicy>> {
        let admin = &self.policies.current().admin;
        admin
            .tier(Tier::Admin)
            .iter()
            .chain(admin.tier(Tier::Baseline))
    }

    /// The admin policies of one tier, in decision order.
    pub fn admin_tier(&self, tier: Tier) -> &[Arc<AdminPolicy>] {
        self.policies.current().admin.tier(tier)
    }

    pub fn admin_policy(&self, key: &PolicyKey) -> Option<&Arc<AdminPolicy>> {
        self.policies.current().admin.get(key)
    }

    pub fn admin_policy_count(&self) -> usize {
        self.policies.current().admin.len()
    }

    /// Whether an admin policy's subject selects `pod`.
    pub fn admin_selects(&self, policy: &AdminPolicy, pod: &Pod) -> bool {
        policy.selects(pod, &self.namespace_labels(&pod.key.namespace))
    }

    /// Whether a `namespaces` or `pods` peer of an admin rule matches `pod`
    /// (never a host-network pod; other peers, which match addresses, never).
    pub fn admin_peer_matches_pod(&self, peer: &AdminPeer, pod: &Pod) -> bool {
        if pod.host_network {
            return false;
        }
        match peer {
            AdminPeer::Namespaces(ns) => ns.matches(&self.namespace_labels(&pod.key.namespace)),
            AdminPeer::Pods { namespaces, pods } => {
                pods.matches(&pod.labels)
                    && namespaces.matches(&self.namespace_labels(&pod.key.namespace))
            }
            AdminPeer::Nodes(_)
            | AdminPeer::Networks(_)
            | AdminPeer::DomainNames(_)
            | AdminPeer::Unrecognized => false,
        }
    }

    /// The addresses of the nodes a `nodes` peer of an admin rule selects
    /// (none for other peers).
    pub fn admin_peer_node_ips(&self, peer: &AdminPeer) -> Vec<IpAddr> {
        match peer {
            AdminPeer::Nodes(selector) => self
                .nodes()
                .into_iter()
                .filter(|n| selector.matches(&n.labels))
                .flat_map(|n| n.ips.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The pods an admin policy's subject selects, in order.
    pub fn admin_selected_pods(&self, policy: &AdminPolicy) -> Vec<&Arc<Pod>> {
        self.pods()
            .into_iter()
            .filter(|p| self.admin_selects(policy, p))
            .collect()
    }

    /// The node object an address belongs to.
    pub fn node_of_ip(&self, ip: IpAddr) -> Option<&Node> {
        self.nodes.node_of_ip(ip)
    }

    /// Whether verdicts involving a node address depend on which node it is
    /// (some admin policy has a `nodes` peer).
    pub(crate) fn admin_node_peers(&self) -> bool {
        self.policies.current().admin.have_node_peers()
    }

    /// Whether verdicts on connections with destination names depend on the
    /// names (some admin policy has a `domainNames` peer).
    pub(crate) fn admin_domain_peers(&self) -> bool {
        self.policies.current().admin.have_domain_peers()
    }

    /// Whether `policy` selects `pod` (host-network pods are never selected).
    pub fn policy_selects(&self, policy: &NetworkPolicy, pod: &Pod) -> bool {
        policy.selects(pod)
    }

    /// The pods a policy selects, in order.
    pub fn selected_pods(&self, policy: &NetworkPolicy) -> Vec<&Arc<Pod>> {
        self.pods_in(policy.namespace())
            .filter(|p| policy.selects(p))
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

    /// The policies of the pod's namespace that select it and apply to `direction`,
    /// found through the label index, in key order.
    pub fn policies_selecting(&self, pod: &Pod, direction: Direction) -> Vec<Arc<NetworkPolicy>> {
        self.policies.current().network.selecting(pod, direction)
    }

    /// The same answer as `policies_selecting`, by scanning every policy of the
    /// cluster: the reference the index is checked and measured against.
    pub fn policies_selecting_by_scan(
        &self,
        pod: &Pod,
        direction: Direction,
    ) -> Vec<Arc<NetworkPolicy>> {
        self.policies
            .current()
            .network
            .selecting_by_scan(pod, direction)
    }

    /// All services, in namespace/name order.
    pub fn services(&self) -> Vec<&Service> {
        self.services.sorted()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(namespace, name)
    }

    /// The service owning a cluster IP.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.services.by_ip(ip)
    }

    /// All endpoint slices, in namespace/name order.
    pub fn endpoint_slices(&self) -> Vec<&EndpointSlice> {
        self.services.sorted_slices()
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
                for slice in self.services.slices() {
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

    /// The ReplicaSets and Jobs, in kind, namespace and name order.
    pub fn controllers(&self) -> Vec<&Controller> {
        self.controllers.sorted()
    }

    /// A pod's workload: its controller, followed through a ReplicaSet to its
    /// Deployment and through a Job to its CronJob when the state holds that
    /// ReplicaSet or Job and it has a controller (else the ReplicaSet or Job
    /// itself); None for a pod nothing controls. Render it with
    /// [`workload_name`](crate::model::workload_name).
    pub fn workload_of(&self, pod: &Pod) -> Option<Arc<Owner>> {
        let owner = pod.owner.as_ref()?;
        Some(self.controllers.top(&pod.key.namespace, owner))
    }

    /// All nodes, in name order.
    pub fn nodes(&self) -> Vec<&Node> {
        self.nodes.sorted()
    }

    /// Whether `ip` belongs to the node `pod` runs on (or to the local node).
    pub fn is_node_of(&self, pod: &Pod, ip: IpAddr) -> bool {
        self.nodes.is_node_of(pod, ip)
    }

    /// Whether an IP belongs to any known node.
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        self.nodes.is_node_ip(ip)
    }

    // ---- engine support ------------------------------------------------------

    #[inline]
    pub(crate) fn pod_entry(&self, key: &PodKey) -> Option<&PodEntry> {
        self.pods.get(key)
    }

    #[inline]
    pub(crate) fn ip_entry(&self, ip: IpAddr) -> Option<&IpEntry> {
        self.ips.current(ip)
    }

    /// The IP class of an address (see `ip_classes`).
    pub(crate) fn ip_class(&self, ip: IpAddr) -> u32 {
        match self.ips.current(ip) {
            Some(entry) => entry.ip_class,
            None => self.ip_classes.lookup(ip),
        }
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

    pub(crate) fn cache_get_named(&self, key: CacheKey, names: &[String]) -> Option<Arc<Verdict>> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_named(key, names)
            .cloned()
    }

    pub(crate) fn cache_insert_named(
        &self,
        key: CacheKey,
        names: &[String],
        verdict: Verdict,
    ) -> Arc<Verdict> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert_named(key, names, verdict)
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
                if let Some(e) = self.ips.current(*ip).filter(|e| e.pod.key == pod.key) {
                    since.insert(*ip, e.since);
                }
            }
        }
        self.remove_pod(&pod.key, !unchanged);
        let identity = self.identities.intern(&pod);
        let pod = Arc::new(pod);
        if !pod.host_network {
            for ip in &pod.ips {
                let ip_class = self.ip_classes.intern(*ip);
                self.ips
                    .hold(*ip, pod.clone(), identity, ip_class, since.get(ip).copied());
            }
        }
        self.pods.insert(PodEntry { pod, identity });
        if self.identities.needs_rebuild(self.pods.len()) {
            self.rebuild_identities();
        }
    }

    /// Removes a pod; returns whether it was there. With `record`, the IPs it
    /// held are recorded as held by it until now.
    fn remove_pod(&mut self, key: &PodKey, record: bool) -> bool {
        let Some(entry) = self.pods.remove(key) else {
            return false;
        };
        for ip in &entry.pod.ips {
            let successor = self.ips.release(*ip, key, record);
            if let Some(other) = successor.and_then(|k| self.pods.get(&k)).cloned() {
                let ip_class = self.ip_classes.intern(*ip);
                self.ips.take_over(*ip, other.pod, other.identity, ip_class);
            }
        }
        true
    }

    /// Drops identities no pod has any more; cached verdicts keyed by the old ids
    /// go too.
    fn rebuild_identities(&mut self) {
        self.identities.clear();
        for entry in self.pods.iter_mut() {
            entry.identity = self.identities.intern(&entry.pod);
        }
        for (_, entry) in self.ips.current_mut() {
            if let Some(pod) = self.pods.get(&entry.pod.key) {
                entry.identity = pod.identity;
            }
        }
        self.clear_cache();
    }

    /// Interns every current pod IP's class again, after the ipBlocks changed.
    fn recompute_ip_classes(&mut self) {
        self.ip_classes.reset();
        for (ip, entry) in self.ips.current_mut() {
            entry.ip_class = self.ip_classes.intern(*ip);
        }
    }

    fn upsert_policy(&mut self, policy: NetworkPolicy) {
        let same = self
            .policies
            .current()
            .network
            .get(&policy.key)
            .is_some_and(|old| **old == policy);
        if same {
            return;
        }
        self.remove_policy(&policy.key);
        let policy = Arc::new(policy);
        let blocks_changed = self.ip_classes.add_blocks(policy.ip_blocks());
        let now = self.time();
        self.policies.change(now).network.insert(policy);
        if blocks_changed {
            self.recompute_ip_classes();
        }
        self.clear_cache();
    }

    fn remove_policy(&mut self, key: &PolicyKey) -> Option<Arc<NetworkPolicy>> {
        self.policies.current().network.get(key)?;
        let now = self.time();
        let policy = self.policies.change(now).network.remove(key)?;
        if self.ip_classes.remove_blocks(policy.ip_blocks()) {
            self.recompute_ip_classes();
        }
        self.clear_cache();
        Some(policy)
    }

    fn upsert_admin_policy(&mut self, policy: AdminPolicy) {
        if self
            .policies
            .current()
            .admin
            .get(&policy.key)
            .is_some_and(|old| **old == policy)
        {
            return;
        }
        self.remove_admin_policy(&policy.key);
        let policy = Arc::new(policy);
        let blocks_changed = self.ip_classes.add_blocks(&network_blocks(&policy));
        let now = self.time();
        self.policies.change(now).admin.insert(policy);
        if blocks_changed {
            self.recompute_ip_classes();
        }
        self.clear_cache();
    }

    fn remove_admin_policy(&mut self, key: &PolicyKey) -> Option<Arc<AdminPolicy>> {
        self.policies.current().admin.get(key)?;
        let now = self.time();
        let policy = self.policies.change(now).admin.remove(key)?;
        if self.ip_classes.remove_blocks(&network_blocks(&policy)) {
            self.recompute_ip_classes();
        }
        self.clear_cache();
        Some(policy)
    }
}

/// An admin policy's `networks` as ipBlocks without exceptions (IP classes
/// count them like NetworkPolicy ipBlocks).
fn network_blocks(policy: &AdminPolicy) -> Vec<IpBlock> {
    policy
        .networks()
        .map(|cidr| IpBlock {
            cidr: *cidr,
            except: Vec::new(),
        })
        .collect()
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
