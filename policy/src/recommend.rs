//! Least-privilege NetworkPolicies from observed flows: for one namespace,
//! one policy per workload and direction that allows every observed allowed
//! flow of the namespace's pods (DNS included) and nothing more, and a
//! default deny; then a check by replay that, with them and the default deny
//! in place of the namespace's policies, every one of those flows stays
//! allowed.
//!
//! ```text
//! ReplayFlow ─> ends resolved (pod by name, else a pod of its workload; a
//!   node or other address) ─> a Service address becomes its backends
//!   ─> observed denied? counted, left out
//!   ─> per end in the namespace: (workload, direction) += peer on port/protocol
//! Recommender::finish ─> policies (fix.rs's writer) ─> check: a copy of the
//!   state with the namespace's policies replaced by them + default deny,
//!   each distinct observed connection decided again on the namespace's sides
//! ```
//!
//! - Subjects and peers inside the cluster are workloads, selected by the
//!   labels all their pods share minus per-pod ones
//!   ([`crate::fix::workload_selector`]); a peer in another namespace adds a
//!   `namespaceSelector` on `kubernetes.io/metadata.name`. Never a pod name.
//! - Nodes, host-network pods and addresses outside the cluster become
//!   `ipBlock`s of one address (/32, /128); [`Recommendation::address_comments`]
//!   says what each is (a node, a host-network pod, the DNS names the flows
//!   gave, else just the address).
//! - Ports are numbers with their protocol; a peer's ports are merged, and
//!   peers needing the same ports share a rule.
//! - A flow whose verdict was not observed (a flows file line without one) is
//!   decided by the cluster as given.
//!
//! Pure: the caller reads the flows and feeds them one at a time; memory
//! grows with the distinct connections (pods, peers, ports), not the flows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::error::ObjectError;
use crate::explain::explain;
use crate::fix::{
    MANAGED_BY_LABEL, PeerSpec, Ports, SelectorSpec, object_name, policy, rules, workload_selector,
};
use crate::manifest::K8sObject;
use crate::model::{Direction, Pod, PolicyKey, Protocol, workload_name};
use crate::state::{ClusterState, ObjectKind};
use crate::verdict::Status;
use crate::whatif::{Party, ReplayFlow};

/// `app.kubernetes.io/managed-by` of the policies `recommend` writes.
pub const RECOMMEND: &str = "netverdict-recommend";

/// Recommendation errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace is not in the cluster (no Namespace, pod or policy).
    #[error("namespace {0:?}: not in the cluster (no Namespace object, pod or policy names it)")]
    UnknownNamespace(String),
    /// A recommended policy does not load into the engine, so the check
    /// cannot run (a bug in the writer).
    #[error("checking the recommendation: policy {name}: {error}")]
    Check { name: String, error: ObjectError },
}

/// The result of recommendation operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One end of a flow, resolved against the cluster.
#[derive(Clone, Debug)]
enum End<'a> {
    /// A pod the cluster has (the flow's own, or one of its workload's when
    /// the flow's pod is gone), with its workload (`Deployment/web`).
    Pod { pod: &'a Arc<Pod>, workload: String },
    /// A node, a host-network pod or an address outside the cluster.
    Address(IpAddr),
    /// A pod the cluster no longer has, nor any pod of its workload.
    Gone { namespace: String, workload: String },
}

impl End<'_> {
    fn namespace(&self) -> Option<&str> {
        match self {
            End::Pod { pod, .. } => Some(&pod.key.namespace),
            End::Gone { namespace, .. } => Some(namespace),
            End::Address(_) => None,
        }
    }

    /// The engine's endpoint for deciding this end again.
    fn endpoint(&self) -> Option<Endpoint> {
        match self {
            End::Pod { pod, .. } => Some(Endpoint::Pod(pod.key.clone())),
            End::Address(ip) => Some(Endpoint::Ip(*ip)),
            End::Gone { .. } => None,
        }
    }
}

/// How the flows fed to a [`Recommender`] were used, in flow records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Flow records read.
    pub flows: u64,
    /// Records with an end in the namespace, observed allowed: what the
    /// recommendation allows.
    pub allowed: u64,
    /// Records of the namespace observed denied (or, without an observed
    /// verdict, denied by the cluster as given): left out.
    pub denied: u64,
    /// Records with no end in the namespace: ignored.
    pub elsewhere: u64,
    /// Records of the namespace naming a pod the cluster no longer has, nor
    /// any pod of its workload: neither allowed nor checked.
    pub unresolved: u64,
    /// Records whose only end in the namespace is a host-network pod (no
    /// policy selects those).
    pub host_network: u64,
}

/// The (workload, direction) a policy is written for.
type Subject = (String, Direction);

/// Builds a recommendation: [`Recommender::add`] each observed flow, then
/// [`Recommender::finish`].
#[derive(Debug)]
pub struct Recommender<'a> {
    state: &'a ClusterState,
    namespace: String,
    /// A pod of each (namespace, workload), for flows whose pod is gone.
    workload_pods: BTreeMap<(String, String), &'a Arc<Pod>>,
    /// Each (namespace, workload)'s selector, None when it has none.
    selectors: BTreeMap<(String, String), Option<SelectorSpec>>,
    /// The peers each subject needs, with their ports.
    needs: BTreeMap<Subject, BTreeMap<PeerSpec, Ports>>,
    /// Each subject's selector.
    subjects: BTreeMap<String, SelectorSpec>,
    /// The namespace's workloads seen in allowed flows.
    seen: BTreeSet<String>,
    /// Distinct allowed connections (ends resolved, before Service DNAT)
    /// and their flow records: what the check decides again.
    allowed: FxHashMap<Connection, u64>,
    /// The same for denied flows.
    denied: FxHashMap<Connection, u64>,
    /// DNS names the flows gave for addresses.
    names: BTreeMap<IpAddr, BTreeSet<String>>,
    /// The addresses peers name, with what they are when not outside.
    addresses: BTreeMap<IpAddr, Option<String>>,
    notes: BTreeSet<String>,
    tally: Tally,
}

impl<'a> Recommender<'a> {
    /// A recommender for `namespace`'s pods in `state`.
    pub fn new(state: &'a ClusterState, namespace: &str) -> Result<Recommender<'a>> {
        if !state.namespace_names().iter().any(|n| n == namespace) {
            return Err(Error::UnknownNamespace(namespace.to_string()));
        }
        let mut workload_pods = BTreeMap::new();
        for pod in state.pods() {
            let workload = workload_name(state.workload_of(pod).as_deref(), &pod.key);
            let slot = workload_pods
                .entry((pod.key.namespace.clone(), workload))
                .or_insert(pod);
            if slot.host_network && !pod.host_network {
                *slot = pod;
            }
        }
        Ok(Recommender {
            state,
            namespace: namespace.to_string(),
            workload_pods,
            selectors: BTreeMap::new(),
            needs: BTreeMap::new(),
            subjects: BTreeMap::new(),
            seen: BTreeSet::new(),
            allowed: FxHashMap::default(),
            denied: FxHashMap::default(),
            names: BTreeMap::new(),
            addresses: BTreeMap::new(),
            notes: BTreeSet::new(),
            tally: Tally::default(),
        })
    }

    /// Counts and, when it is an allowed flow of the namespace, allows one
    /// observed flow.
    pub fn add(&mut self, flow: ReplayFlow) {
        self.tally.flows += 1;
        let src = self.resolve(&flow.connection.src, &flow.src);
        let dst = self.resolve(&flow.connection.dst, &flow.dst);
        let namespace = self.namespace.as_str();
        if src.namespace() != Some(namespace) && dst.namespace() != Some(namespace) {
            self.tally.elsewhere += 1;
            return;
        }
        let connection = match (src.endpoint(), dst.endpoint()) {
            (Some(src), Some(dst)) => Some(Connection::new(
                src,
                dst,
                flow.connection.port,
                flow.connection.protocol,
            )),
            _ => None,
        };
        if flow.observed_allowed == Some(false) {
            self.tally.denied += 1;
            if let Some(connection) = connection {
                *self.denied.entry(connection).or_default() += 1;
            }
            return;
        }
        let Some(connection) = connection else {
            for end in [&src, &dst] {
                if let End::Gone {
                    namespace,
                    workload,
                } = end
                {
                    self.notes.insert(format!(
                        "flows of {namespace}/{workload} were left out: the cluster has no pod of it any more"
                    ));
                }
            }
            self.tally.unresolved += 1;
            return;
        };
        let targets = targets(self.state, &connection);
        let allowed = flow.observed_allowed.unwrap_or_else(|| {
            !targets.is_empty()
                && targets.iter().all(|t| {
                    self.state
                        .verdict(&t.connection)
                        .is_ok_and(|verdict| verdict.allowed)
                })
        });
        if !allowed {
            self.tally.denied += 1;
            *self.denied.entry(connection).or_default() += 1;
            return;
        }
        let ours = |end: &End<'_>| matches!(end, End::Pod { pod, .. } if pod.key.namespace == namespace && !pod.host_network);
        if !ours(&src) && !targets.iter().any(|t| ours(&t.dst)) {
            self.tally.host_network += 1;
            self.notes.insert(format!(
                "flows of host-network pods in {namespace} were left out: policies never select those pods"
            ));
            return;
        }
        self.tally.allowed += 1;
        // The name the source resolved to an outside destination, if any.
        if let Some(name) = flow.connection.destination_names.first()
            && let Endpoint::Ip(ip) = &connection.dst
        {
            self.names.entry(*ip).or_default().insert(name.clone());
        }
        *self.allowed.entry(connection).or_default() += 1;
        let ports_of = |t: &Target<'_>| (t.connection.protocol, t.connection.port);
        // Egress of the source's workload to each target.
        if let Some(workload) = self.subject(&src) {
            for target in &targets {
                if let Some(peer) = self.peer(&target.dst) {
                    self.needs
                        .entry((workload.clone(), Direction::Egress))
                        .or_default()
                        .entry(peer)
                        .or_default()
                        .insert(ports_of(target));
                }
            }
        }
        // Ingress of each target's workload in the namespace, from the source.
        for target in &targets {
            let Some(workload) = self.subject(&target.dst) else {
                continue;
            };
            if let Some(peer) = self.peer(&src) {
                self.needs
                    .entry((workload, Direction::Ingress))
                    .or_default()
                    .entry(peer)
                    .or_default()
                    .insert(ports_of(target));
            }
        }
    }

    /// A flow's end in the cluster: the flow's pod when the cluster has it
    /// (by name, or by address while the same workload holds it), else a pod
    /// of the flow's workload, else gone; a node or any other address as is.
    fn resolve(&self, endpoint: &Endpoint, party: &Party) -> End<'a> {
        let state = self.state;
        match party {
            Party::Workload {
                namespace,
                workload,
            } => {
                let own = match endpoint {
                    Endpoint::Pod(key) => state.pod(key),
                    Endpoint::Ip(ip) => state.pod_by_ip(*ip).filter(|pod| {
                        pod.key.namespace == *namespace
                            && workload_name(state.workload_of(pod).as_deref(), &pod.key)
                                == *workload
                    }),
                };
                let pod = own.or_else(|| {
                    self.workload_pods
                        .get(&(namespace.clone(), workload.clone()))
                        .copied()
                });
                match pod {
                    Some(pod) => End::Pod {
                        workload: workload_name(state.workload_of(pod).as_deref(), &pod.key),
                        pod,
                    },
                    None => End::Gone {
                        namespace: namespace.clone(),
                        workload: workload.clone(),
                    },
                }
            }
            Party::Node { .. } | Party::Address(_) => match endpoint {
                Endpoint::Ip(ip) => match state.pod_by_ip(*ip) {
                    Some(pod) => End::Pod {
                        workload: workload_name(state.workload_of(pod).as_deref(), &pod.key),
                        pod,
                    },
                    None => End::Address(*ip),
                },
                Endpoint::Pod(key) => End::Gone {
                    namespace: key.namespace.clone(),
                    workload: workload_name(None, key),
                },
            },
        }
    }

    /// The workload a policy of the namespace selects for this end (None
    /// for ends outside the namespace and host-network pods), remembered as
    /// seen; its selector is kept when it has one (else noted).
    fn subject(&mut self, end: &End<'_>) -> Option<String> {
        let End::Pod { pod, workload } = end else {
            return None;
        };
        if pod.key.namespace != self.namespace || pod.host_network {
            return None;
        }
        self.seen.insert(workload.clone());
        let selector = self.selector(pod, workload)?;
        self.subjects.entry(workload.clone()).or_insert(selector);
        Some(workload.clone())
    }

    /// This end as a rule's peer: its workload's pods, or its address.
    fn peer(&mut self, end: &End<'_>) -> Option<PeerSpec> {
        match end {
            End::Pod { pod, workload } if !pod.host_network => Some(PeerSpec::Pods {
                namespace: pod.key.namespace.clone(),
                selector: self.selector(pod, workload)?,
            }),
            End::Pod { pod, .. } => {
                let ip = *pod.ips.first()?;
                let node = pod.node.as_deref().unwrap_or("its node");
                self.addresses
                    .insert(ip, Some(format!("host-network pod {} on {node}", pod.key)));
                Some(PeerSpec::Address(ip))
            }
            End::Address(ip) => {
                let what = self
                    .state
                    .node_of_ip(*ip)
                    .map(|n| format!("node {}", n.name));
                self.addresses.insert(*ip, what);
                Some(PeerSpec::Address(*ip))
            }
            End::Gone { .. } => None,
        }
    }

    /// The selector of `pod`'s workload, computed once per workload; None
    /// (noted) when its pods have no label to select them by.
    fn selector(&mut self, pod: &Pod, workload: &str) -> Option<SelectorSpec> {
        let key = (pod.key.namespace.clone(), workload.to_string());
        if let Some(known) = self.selectors.get(&key) {
            return known.clone();
        }
        let selector = match workload_selector(self.state, pod) {
            Ok((selector, notes)) => {
                self.notes.extend(notes);
                Some(selector)
            }
            Err(note) => {
                self.notes.insert(note);
                None
            }
        };
        self.selectors.insert(key, selector.clone());
        selector
    }

    /// The policies, and the check of them by replay.
    pub fn finish(self) -> Result<Recommendation> {
        let namespace = self.namespace.clone();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut name_for = |wanted: &str| -> String {
            let base = object_name(wanted);
            let name = if taken.contains(&base) {
                (2..)
                    .map(|n| format!("{base}-{n}"))
                    .find(|name| !taken.contains(name))
                    .unwrap_or_else(|| base.clone())
            } else {
                base
            };
            taken.insert(name.clone());
            name
        };
        let mut policies = Vec::new();
        for ((workload, direction), peers) in self.needs {
            let Some(selector) = self.subjects.get(&workload) else {
                continue;
            };
            let short = workload.rsplit('/').next().unwrap_or(&workload);
            let name = name_for(&format!("recommended-{short}-{direction}"));
            policies.push(RecommendedPolicy {
                workload: workload.clone(),
                direction,
                policy: policy(
                    &namespace,
                    &name,
                    RECOMMEND,
                    selector,
                    direction,
                    rules(peers),
                ),
            });
        }
        let default_deny = default_deny(&namespace, &name_for("recommended-default-deny"));

        let mut notes = self.notes;
        let silent: Vec<String> = self
            .workload_pods
            .iter()
            .filter(|((ns, workload), pod)| {
                *ns == namespace && !pod.host_network && !self.seen.contains(workload)
            })
            .map(|((_, workload), _)| workload.clone())
            .collect();
        if !silent.is_empty() {
            notes.insert(format!(
                "no allowed flow of {} was observed: the default deny isolates {} both ways",
                silent.join(", "),
                if silent.len() == 1 { "it" } else { "them" }
            ));
        }
        let address_comments = self
            .addresses
            .into_iter()
            .map(|(ip, what)| {
                let comment = match (self.names.get(&ip), what) {
                    (Some(names), _) if !names.is_empty() => {
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                    (_, Some(what)) => what,
                    _ => ip.to_string(),
                };
                (cidr(ip), comment)
            })
            .collect();
        let mut recommendation = Recommendation {
            namespace,
            policies,
            default_deny,
            address_comments,
            notes: notes.into_iter().collect(),
            tally: self.tally,
            check: Check::default(),
        };
        recommendation.check = check(self.state, &recommendation, &self.allowed, &self.denied)?;
        Ok(recommendation)
    }
}

/// Where a connection goes after Service DNAT: each backend of a Service
/// address (a flow to it may have reached any), else itself.
#[derive(Clone, Debug)]
struct Target<'a> {
    connection: Connection,
    dst: End<'a>,
}

fn targets<'a>(state: &'a ClusterState, connection: &Connection) -> Vec<Target<'a>> {
    let end_of = |endpoint: &Endpoint| match endpoint {
        Endpoint::Pod(key) => state.pod(key).map(|pod| End::Pod {
            workload: workload_name(state.workload_of(pod).as_deref(), &pod.key),
            pod,
        }),
        Endpoint::Ip(ip) => Some(match state.pod_by_ip(*ip) {
            Some(pod) => End::Pod {
                workload: workload_name(state.workload_of(pod).as_deref(), &pod.key),
                pod,
            },
            None => End::Address(*ip),
        }),
    };
    connection
        .through_services(state)
        .into_iter()
        .filter_map(|connection| {
            Some(Target {
                dst: end_of(&connection.dst)?,
                connection,
            })
        })
        .collect()
}

/// The default deny of both directions for every pod of `namespace`.
fn default_deny(namespace: &str, name: &str) -> net::NetworkPolicy {
    net::NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                RECOMMEND.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// An address as a one-address `ipBlock` CIDR.
fn cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// A policy of the recommendation.
#[derive(Clone, Debug, Serialize)]
pub struct RecommendedPolicy {
    /// The workload it selects (`Deployment/web`, `Pod/debug`).
    pub workload: String,
    /// The direction it allows.
    pub direction: Direction,
    /// The NetworkPolicy object.
    pub policy: net::NetworkPolicy,
}

/// What [`Recommender::finish`] gives.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub namespace: String,
    /// One policy per workload and direction, in workload then direction
    /// (ingress, egress) order.
    pub policies: Vec<RecommendedPolicy>,
    /// The default deny (both directions) for the namespace, without which
    /// the policies do not limit anything beyond their workloads and
    /// directions.
    pub default_deny: net::NetworkPolicy,
    /// What each `ipBlock` CIDR of the policies is: the DNS names the flows
    /// gave for it, a node, a host-network pod, or (nothing known) the
    /// address itself.
    pub address_comments: BTreeMap<String, String>,
    /// What the recommendation could not do, or does besides (sentences).
    pub notes: Vec<String>,
    pub tally: Tally,
    pub check: Check,
}

impl Recommendation {
    /// The objects to apply: the policies, then the default deny (applied
    /// in this order, no allowed flow is cut in between).
    pub fn objects(&self) -> Vec<&net::NetworkPolicy> {
        self.policies
            .iter()
            .map(|p| &p.policy)
            .chain([&self.default_deny])
            .collect()
    }
}

/// The check by replay: the observed allowed flows decided again with the
/// recommendation and the default deny in place of the namespace's
/// NetworkPolicies (NetworkPolicy only adds allowed flows, so keeping
/// those as well cannot deny more).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Check {
    /// Allowed flow records decided again ([`Tally::allowed`]).
    pub flows: u64,
    /// Of those, the records every side in the namespace still allows.
    pub stay_allowed: u64,
    /// The connections a side in the namespace would deny, with why.
    pub failures: Vec<CheckFailure>,
    /// Denied flow records of the namespace that the recommendation would
    /// allow: a workload's selector allows all its pods what one of them
    /// was seen doing, so another pod's denied flow of the same pair of
    /// workloads and port is allowed as well.
    pub denied_now_allowed: u64,
    /// The namespace's NetworkPolicies the check set aside.
    pub replaced: Vec<PolicyKey>,
}

impl Check {
    /// Whether every observed allowed flow stays allowed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.stay_allowed == self.flows
    }
}

/// A connection the recommendation would deny.
#[derive(Clone, Debug, Serialize)]
pub struct CheckFailure {
    /// The source as the flow named it (`ns/pod` or an address).
    pub src: String,
    /// The destination (after Service DNAT).
    pub dst: String,
    pub port: u16,
    pub protocol: Protocol,
    /// The sides in the namespace that deny it: the source's egress, the
    /// destination's ingress, or both.
    pub directions: Vec<Direction>,
    /// Flow records of the connection.
    pub flows: u64,
    /// Why, as `verdicts` says it.
    pub reason: String,
}

impl Recommendation {
    /// `state` with the namespace's NetworkPolicies replaced by the
    /// recommendation and its default deny (what the check decides with),
    /// and the keys of the policies replaced.
    pub fn applied_to(&self, state: &ClusterState) -> Result<(ClusterState, Vec<PolicyKey>)> {
        let mut after = state.clone();
        let replaced: Vec<PolicyKey> = state
            .policies()
            .into_iter()
            .filter(|p| p.key.namespace() == Some(self.namespace.as_str()))
            .map(|p| p.key.clone())
            .collect();
        for key in &replaced {
            after.delete(ObjectKind::NetworkPolicy, &self.namespace, key.name());
        }
        for object in self.objects() {
            after
                .apply(&K8sObject::NetworkPolicy(Box::new(object.clone())))
                .map_err(|error| Error::Check {
                    name: object.metadata.name.clone().unwrap_or_default(),
                    error,
                })?;
        }
        Ok((after, replaced))
    }
}

/// Decides each distinct connection again on its sides in the namespace.
fn check(
    state: &ClusterState,
    recommendation: &Recommendation,
    allowed: &FxHashMap<Connection, u64>,
    denied: &FxHashMap<Connection, u64>,
) -> Result<Check> {
    let namespace = recommendation.namespace.as_str();
    let (after, replaced) = recommendation.applied_to(state)?;
    // The sides of a target in the namespace that deny it, and why.
    let denials = |target: &Target<'_>| -> Option<(Vec<Direction>, String)> {
        let ours = |endpoint: &Endpoint| {
            after
                .endpoint_pod(endpoint)
                .is_some_and(|pod| pod.key.namespace == namespace && !pod.host_network)
        };
        let sides = [
            (Direction::Egress, &target.connection.src),
            (Direction::Ingress, &target.connection.dst),
        ]
        .into_iter()
        .filter(|(_, end)| ours(end))
        .map(|(direction, _)| direction);
        match after.verdict(&target.connection) {
            Ok(verdict) => {
                let denied: Vec<Direction> = sides
                    .filter(|d| verdict.direction(*d).status == Status::Denied)
                    .collect();
                (!denied.is_empty())
                    .then(|| (denied, explain(&after, &target.connection, &verdict).reason))
            }
            Err(error) => Some((sides.collect(), error.to_string())),
        }
    };
    let mut out = Check {
        replaced,
        ..Check::default()
    };
    for (connection, flows) in allowed {
        out.flows += flows;
        let mut failed = false;
        for target in targets(&after, connection) {
            if let Some((directions, reason)) = denials(&target) {
                failed = true;
                out.failures.push(CheckFailure {
                    src: target.connection.src.to_string(),
                    dst: target.connection.dst.to_string(),
                    port: target.connection.port,
                    protocol: target.connection.protocol,
                    directions,
                    flows: *flows,
                    reason,
                });
            }
        }
        if !failed {
            out.stay_allowed += flows;
        }
    }
    for (connection, flows) in denied {
        let targets = targets(&after, connection);
        if !targets.is_empty() && targets.iter().all(|t| denials(t).is_none()) {
            out.denied_now_allowed += flows;
        }
    }
    out.failures.sort_by(|a, b| {
        (&a.src, &a.dst, a.port, a.protocol.as_str()).cmp(&(
            &b.src,
            &b.dst,
            b.port,
            b.protocol.as_str(),
        ))
    });
    Ok(out)
}
