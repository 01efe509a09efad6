//! What-if replay: observed flows decided again against the cluster as it is
//! (`before`) and as it would be after a rollout (`after`: candidate policies
//! added or replacing those of the same kind and name, named policies
//! deleted), and the flows whose verdict would change, grouped as the `denied`
//! report groups them (source workload, destination, port and protocol).
//!
//! ```text
//! ClusterState ──clone──> after = before + Rollout::apply − Rollout::delete
//! ReplayFlow ─> before.verdict, after.verdict (both cached) ─> changed? ─> Group
//! Replay::finish ─> Changes: DNS first, then allow→deny, then deny→allow
//! ```
//!
//! Pure: the caller reads the flows (a file, the API server's stream) and
//! feeds them one at a time; only changed flows are kept, one group each, so
//! memory grows with the number of changed groups, never with the flows.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::error::{LoadError, ObjectError, Origin};
use crate::explain::explain;
use crate::manifest::{K8sObject, SourcedObject};
use crate::model::{PodKey, PolicyKey, PolicyKind, Protocol, workload_name};
use crate::state::{ClusterState, ObjectKind};
use crate::verdict::Verdict;

/// What-if errors: a rollout that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A candidate object is not a policy.
    #[error(
        "{origin}: {kind} {name}: not a policy (candidates are NetworkPolicy, AdminNetworkPolicy, \
         BaselineAdminNetworkPolicy or ClusterNetworkPolicy objects)"
    )]
    NotAPolicy {
        origin: Origin,
        kind: &'static str,
        name: String,
    },
    /// A candidate policy is invalid (the error names the object and field).
    #[error(transparent)]
    Invalid(LoadError),
    /// A policy to delete is not in the cluster.
    #[error("{0}: no such policy in the cluster")]
    UnknownPolicy(PolicyKey),
    /// A policy to delete is not written `namespace/name` or `Kind/name`.
    #[error(
        "{0:?}: expected namespace/name (a NetworkPolicy) or Kind/name (AdminNetworkPolicy, \
         BaselineAdminNetworkPolicy, ClusterNetworkPolicy)"
    )]
    BadPolicyName(String),
}

/// The result of what-if operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A policy named as `PolicyKey` displays it: `namespace/name` for a
/// NetworkPolicy, `Kind/name` for a cluster-scoped kind.
pub fn parse_policy_key(text: &str) -> Result<PolicyKey> {
    let bad = || Error::BadPolicyName(text.to_string());
    let (first, name) = text.split_once('/').ok_or_else(bad)?;
    if first.is_empty() || name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    let kind = [
        PolicyKind::AdminNetworkPolicy,
        PolicyKind::BaselineAdminNetworkPolicy,
        PolicyKind::ClusterNetworkPolicy,
    ]
    .into_iter()
    .find(|k| k.as_str() == first);
    Ok(match kind {
        Some(kind) => PolicyKey::cluster_scoped(kind, name).ok_or_else(bad)?,
        None => PolicyKey::network_policy(first, name),
    })
}

/// A rollout: policies to add (or to replace those of the same kind and
/// name) and policies to delete.
#[derive(Clone, Debug, Default)]
pub struct Rollout {
    /// Candidate policies, as read from manifests.
    pub apply: Vec<SourcedObject>,
    /// Policies to delete.
    pub delete: Vec<PolicyKey>,
}

/// The cluster before and after a rollout.
#[derive(Debug)]
pub struct WhatIf {
    before: ClusterState,
    after: ClusterState,
}

impl WhatIf {
    /// The cluster `before` and a copy with `rollout` applied: deletions
    /// first, then the candidates. Every bad candidate or unknown deletion
    /// is an error naming it.
    pub fn new(before: ClusterState, rollout: &Rollout) -> Result<WhatIf> {
        let mut after = before.clone();
        for key in &rollout.delete {
            let kind = match key.kind() {
                PolicyKind::NetworkPolicy => ObjectKind::NetworkPolicy,
                PolicyKind::AdminNetworkPolicy => ObjectKind::AdminNetworkPolicy,
                PolicyKind::BaselineAdminNetworkPolicy => ObjectKind::BaselineAdminNetworkPolicy,
                PolicyKind::ClusterNetworkPolicy => ObjectKind::ClusterNetworkPolicy,
            };
            if !after.delete(kind, key.namespace().unwrap_or_default(), key.name()) {
                return Err(Error::UnknownPolicy(key.clone()));
            }
        }
        for sourced in &rollout.apply {
            let object = &sourced.object;
            if !matches!(object, K8sObject::NetworkPolicy(_)) && !object.is_admin_policy() {
                let meta = object.metadata();
                let name = match &meta.namespace {
                    Some(ns) => format!("{ns}/{}", meta.name.clone().unwrap_or_default()),
                    None => meta.name.clone().unwrap_or_default(),
                };
                return Err(Error::NotAPolicy {
                    origin: sourced.origin.clone(),
                    kind: object.kind(),
                    name,
                });
            }
            after
                .apply(object)
                .map_err(|error: ObjectError| LoadError::Invalid {
                    origin: sourced.origin.clone(),
                    error,
                })
                .map_err(Error::Invalid)?;
        }
        Ok(WhatIf { before, after })
    }

    /// The cluster as it is.
    pub fn before(&self) -> &ClusterState {
        &self.before
    }

    /// The cluster after the rollout.
    pub fn after(&self) -> &ClusterState {
        &self.after
    }

    /// Starts a replay.
    pub fn replay(&self) -> Replay<'_> {
        Replay {
            whatif: self,
            seen: FxHashMap::default(),
            groups: FxHashMap::default(),
            flows: 0,
            unresolved: 0,
        }
    }
}

/// One end of a flow as replay groups it (as the `denied` report does).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// A pod, by namespace and workload (`Deployment/web`, `Pod/debug`: see
    /// [`workload_name`]), as the collector names flows' workloads.
    Workload { namespace: String, workload: String },
    /// A node, by name, and the address used.
    Node { name: String, ip: String },
    /// Any other address (outside the cluster, or not known).
    Address(String),
}

impl Party {
    /// The party of an engine endpoint in `state`: a pod's workload, a
    /// node, or the address.
    pub fn of_endpoint(state: &ClusterState, endpoint: &Endpoint) -> Party {
        if let Some(pod) = state.endpoint_pod(endpoint) {
            return Party::Workload {
                namespace: pod.key.namespace.clone(),
                workload: workload_name(state.workload_of(pod).as_deref(), &pod.key),
            };
        }
        match endpoint {
            Endpoint::Pod(key) => Party::Workload {
                namespace: key.namespace.clone(),
                workload: workload_name(None, key),
            },
            Endpoint::Ip(ip) => match state.node_of_ip(*ip) {
                Some(node) => Party::Node {
                    name: node.name.clone(),
                    ip: ip.to_string(),
                },
                None => Party::Address(ip.to_string()),
            },
        }
    }
}

/// `ns/workload`, `node NAME (ip)` or the address: as `denied` prints them.
impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Workload {
                namespace,
                workload,
            } => write!(f, "{namespace}/{workload}"),
            Party::Node { name, ip } => write!(f, "node {name} ({ip})"),
            Party::Address(ip) => f.write_str(ip),
        }
    }
}

impl Serialize for Party {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One observed flow to replay (`whatif`) or to allow (`recommend`): the
/// connection the engine decides, the parties it is grouped by, how many
/// attempts it stands for, and what was seen of it.
#[derive(Clone, Debug)]
pub struct ReplayFlow {
    pub connection: Connection,
    pub src: Party,
    pub dst: Party,
    /// Attempts the flow record counts (at least 1).
    pub count: u64,
    /// Whether policy allowed the flow when it was observed; None when the
    /// record does not say (a flows file line without a verdict, a stored
    /// flow whose backend was not known).
    pub observed_allowed: Option<bool>,
}

impl ReplayFlow {
    /// A flow of `connection` counted once, grouped by the parties its ends
    /// are in `state`, with no verdict or name observed.
    pub fn of_connection(state: &ClusterState, connection: Connection) -> ReplayFlow {
        ReplayFlow {
            src: Party::of_endpoint(state, &connection.src),
            dst: Party::of_endpoint(state, &connection.dst),
            connection,
            count: 1,
            observed_allowed: None,
        }
    }
}

/// Whether a connection is a DNS query: port 53 over UDP or TCP.
pub fn is_dns(port: u16, protocol: Protocol) -> bool {
    port == 53 && matches!(protocol, Protocol::Udp | Protocol::Tcp)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    src: Party,
    dst: Party,
    port: u16,
    protocol: Protocol,
    before: bool,
    after: bool,
}

#[derive(Debug)]
struct Group {
    count: u64,
    flows: u64,
    /// The first flow of the group, which its reason and policies describe.
    example: Connection,
    after: Arc<Verdict>,
}

/// The most connections a replay remembers the verdicts of.
const SEEN_CAPACITY: usize = 1 << 20;

/// A replay in progress: feed flows with [`Replay::add`], then
/// [`Replay::finish`].
#[derive(Debug)]
pub struct Replay<'a> {
    whatif: &'a WhatIf,
    /// Connections already decided: the after-verdict when it differs from
    /// the before-verdict, else None (a flow seen again costs one lookup).
    /// Emptied past [`SEEN_CAPACITY`].
    seen: FxHashMap<Connection, Option<Arc<Verdict>>>,
    groups: FxHashMap<GroupKey, Group>,
    flows: u64,
    unresolved: u64,
}

impl Replay<'_> {
    /// Decides one flow before and after; keeps it when the verdict changes.
    /// A flow to a Service address is judged at the Service's backends (it
    /// may have reached any): it changes when it changes for one of them,
    /// and is grouped under that backend. A flow the engine cannot decide
    /// (an unknown pod, port 0) is counted as unresolved.
    pub fn add(&mut self, flow: ReplayFlow) {
        self.flows += 1;
        // Most flows are to pods: only a Service address is expanded.
        let expanded;
        let targets = match &flow.connection.dst {
            Endpoint::Ip(ip) if self.whatif.before.service_by_ip(*ip).is_some() => {
                expanded = flow.connection.through_services(&self.whatif.before);
                expanded.as_slice()
            }
            _ => std::slice::from_ref(&flow.connection),
        };
        let mut decided = false;
        let mut changed = None;
        for target in targets {
            match self.decide(target) {
                None => continue,
                Some(None) => decided = true,
                Some(Some(after)) => {
                    changed = Some((target.clone(), after));
                    break;
                }
            }
        }
        let Some((target, after)) = changed else {
            if !decided {
                self.unresolved += 1;
            }
            return;
        };
        let dst = if target == flow.connection {
            flow.dst
        } else {
            Party::of_endpoint(&self.whatif.before, &target.dst)
        };
        let key = GroupKey {
            src: flow.src,
            dst,
            port: target.port,
            protocol: target.protocol,
            before: !after.allowed,
            after: after.allowed,
        };
        let count = flow.count.max(1);
        match self.groups.get_mut(&key) {
            Some(g) => {
                g.count += count;
                g.flows += 1;
            }
            None => {
                self.groups.insert(
                    key,
                    Group {
                        count,
                        flows: 1,
                        example: target,
                        after,
                    },
                );
            }
        }
    }

    /// The after-verdict of `connection` when it differs from the
    /// before-verdict (`Some(None)` when it does not); None when the engine
    /// cannot decide it. Remembered (a connection seen again costs one
    /// lookup).
    fn decide(&mut self, connection: &Connection) -> Option<Option<Arc<Verdict>>> {
        if let Some(known) = self.seen.get(connection) {
            return Some(known.clone());
        }
        let (Ok(before), Ok(after)) = (
            self.whatif.before.verdict(connection),
            self.whatif.after.verdict(connection),
        ) else {
            return None;
        };
        if self.seen.len() >= SEEN_CAPACITY {
            self.seen.clear();
        }
        let changed = (before.allowed != after.allowed).then_some(after);
        self.seen.insert(connection.clone(), changed.clone());
        Some(changed)
    }

    /// Flows added so far.
    pub fn flows(&self) -> u64 {
        self.flows
    }

    /// The changed groups, DNS first, then allow→deny, then deny→allow, each
    /// by count (largest first), then by source and destination.
    pub fn finish(self) -> Changes {
        let after_state = &self.whatif.after;
        let mut changes: Vec<Change> = self
            .groups
            .into_iter()
            .map(|(key, group)| {
                let explanation = explain(after_state, &group.example, &group.after);
                Change {
                    dns: is_dns(key.port, key.protocol),
                    src: key.src,
                    dst: key.dst,
                    port: key.port,
                    protocol: key.protocol,
                    before: allow_str(key.before),
                    after: allow_str(key.after),
                    count: group.count,
                    flows: group.flows,
                    denied_by: distinct(group.after.denied_by()),
                    allowed_by: distinct(group.after.allowed_by()),
                    reason: explanation.reason,
                    example_src: group.example.src.to_string(),
                    example_dst: group.example.dst.to_string(),
                }
            })
            .collect();
        changes.sort_by(|a, b| {
            a.rank()
                .cmp(&b.rank())
                .then_with(|| b.count.cmp(&a.count))
                .then_with(|| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)))
        });
        Changes {
            changes,
            flows: self.flows,
            unresolved: self.unresolved,
        }
    }
}

/// The policies of a verdict, each once (a policy may decide both
/// directions), in order.
fn distinct(policies: Vec<(&PolicyKey, crate::model::Tier)>) -> Vec<PolicyKey> {
    let mut out: Vec<PolicyKey> = Vec::new();
    for (p, _) in policies {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

fn allow_str(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

/// A group of flows whose verdict changes.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The source's workload, node or address.
    pub src: Party,
    /// The destination's.
    pub dst: Party,
    pub port: u16,
    pub protocol: Protocol,
    /// `allow` or `deny`, as the cluster is.
    pub before: &'static str,
    /// `allow` or `deny`, after the rollout.
    pub after: &'static str,
    /// Attempts the group's flows count.
    pub count: u64,
    /// Flow records in the group.
    pub flows: u64,
    /// Whether these are DNS queries (port 53).
    pub dns: bool,
    /// The policies that deny the flows after the rollout (empty when allowed).
    pub denied_by: Vec<PolicyKey>,
    /// The policies whose rules allow them after the rollout.
    pub allowed_by: Vec<PolicyKey>,
    /// Why, after the rollout, for the group's first flow (as `verdicts` says it).
    pub reason: String,
    /// The group's first flow's source, as the flow named it.
    pub example_src: String,
    /// Its destination.
    pub example_dst: String,
}

impl Change {
    /// The order of kinds of change: DNS denials, other denials, allows.
    fn rank(&self) -> u8 {
        match (self.newly_denied(), self.dns) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        }
    }

    /// Allowed now, denied after the rollout.
    pub fn newly_denied(&self) -> bool {
        self.before == "allow" && self.after == "deny"
    }
}

/// What a replay found.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// The changed groups, DNS denials first (see [`Replay::finish`]).
    pub changes: Vec<Change>,
    /// Flows replayed.
    pub flows: u64,
    /// Flows the engine could not decide (an unknown pod, port 0).
    pub unresolved: u64,
}

impl Changes {
    /// Whether some flow would go from allow to deny.
    pub fn any_newly_denied(&self) -> bool {
        self.changes.iter().any(Change::newly_denied)
    }
}

/// A flow's endpoint for replay: the pod by name when the cluster has it,
/// else its address (which may now be another pod's, or no one's).
pub fn endpoint_for_replay(
    state: &ClusterState,
    pod: Option<PodKey>,
    ip: Option<IpAddr>,
) -> Option<Endpoint> {
    match (pod, ip) {
        (Some(key), _) if state.pod(&key).is_some() => Some(Endpoint::Pod(key)),
        (_, Some(ip)) => Some(Endpoint::Ip(ip)),
        (Some(key), None) => Some(Endpoint::Pod(key)),
        (None, None) => None,
    }
}
