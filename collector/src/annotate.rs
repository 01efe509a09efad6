//! Annotation: an observation of the kernel becomes a `Flow` that says who talked
//! to whom (pods with namespace and labels, nodes, or addresses outside the
//! cluster), through which Service, what NetworkPolicy says about it and why
//! (both directions: selecting policies, allowing rules, or the isolating
//! policies and the nearest miss), what the kernel did, and whether the two
//! contradict each other.
//!
//! Service traffic is judged at the backend the kernel sent it to (a drop
//! after DNAT, the NAT of its SYN, its DNS query seen after DNAT), or at the
//! Service's only backend; with several backends and none of that seen, the
//! flow says the backend is not known ([`NotEvaluated::BackendUnknown`])
//! rather than guess.
//!
//! Each flow also says at which end this node saw it ([`pb::ObservationPoint`]:
//! the source's node, the destination's, or neither) and whether another
//! observation is the connection's record of account (`counted_elsewhere`),
//! so that a connection seen by the collectors of both its nodes counts once.
//! The source's end is the record of account when the source is in the
//! cluster (a pod or a node: its node's collector saw the connection from its
//! start, before Service DNAT, with the outcome the client got); the
//! destination's end only when the source is outside the cluster; a transit
//! observation never. Both ends decide alike from the cluster state alone, so
//! exactly one record counts. A pod whose node is not known (no
//! `spec.nodeName`) is taken as this node's. Only the record of account
//! carries a mismatch.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use netverdict_policy::explain::Party;
use netverdict_policy::lint::dns_denied;
use netverdict_policy::model::{Owner, Pod, workload_name};
use netverdict_policy::{ClusterState, Connection, ConnectionError, Endpoint, Verdict};
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;

use crate::correlate::{Observation, SeenBy, TrafficDirection};
use crate::enforcement::is_enforcement_drop;

/// One end of an annotated flow, resolved against the cluster state: the
/// address and, when it is one, the pod that held it or whether it is a node's.
#[derive(Clone, Debug)]
pub struct ResolvedEndpoint {
    pub addr: SocketAddr,
    pub pod: Option<Arc<Pod>>,
    /// The address is a node's.
    pub node: bool,
    /// The address stands for endpoints not told apart (a Service's address
    /// whose backend is not known): neither a pod, a node nor the world.
    pub unresolved: bool,
    /// The pod's workload (its controller, followed through a ReplicaSet or
    /// a Job; see [`ClusterState::workload_of`]); None for a pod nothing
    /// controls, and for anything but a pod.
    pub workload: Option<Arc<Owner>>,
}

impl ResolvedEndpoint {
    /// Whether the address is outside the cluster: neither a pod's, a
    /// node's, nor a Service's whose backend is not known.
    pub fn is_outside(&self) -> bool {
        self.pod.is_none() && !self.node && !self.unresolved
    }
}

/// Why a flow has no verdict.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NotEvaluated {
    /// The policy engine could not evaluate it.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// It went to a Service with several backends, and which one it reached
    /// is not known (the kernel's NAT was not seen).
    #[error(
        "the Service {service} has {backends} backends and which one this flow reached is not known (the kernel's NAT was not seen)"
    )]
    BackendUnknown {
        /// The Service, `namespace/name`.
        service: String,
        /// How many backends it has.
        backends: usize,
    },
}

/// A flow annotated but not rendered: cheap to make (reference counts and
/// copies), merged by aggregation, rendered to protobuf once per record.
#[derive(Clone, Debug)]
pub struct Annotated {
    pub obs: Observation,
    /// Attempts this record stands for.
    pub count: u64,
    pub source: ResolvedEndpoint,
    /// The destination after Service DNAT.
    pub destination: ResolvedEndpoint,
    /// The Service the destination was reached through.
    pub service: Option<(String, String)>,
    pub verdict: Result<Arc<Verdict>, NotEvaluated>,
    pub mismatch: pb::Mismatch,
    /// For DNS flows: whether the source's egress allows DNS to the cluster DNS.
    pub egress_allows_cluster_dns: Option<bool>,
    /// Which end of the flow this node saw it at.
    pub point: pb::ObservationPoint,
    /// Another observation of the connection is its record of account.
    pub counted_elsewhere: bool,
    /// For a destination outside the cluster: the names the source resolved
    /// to its address, latest first (from the pipeline's record of the pods'
    /// DNS answers, through [`Annotator::annotate_named`]).
    pub destination_names: Vec<Arc<str>>,
}

impl Annotated {
    /// Whether the policy denies the flow.
    pub fn denied(&self) -> bool {
        self.verdict.as_ref().is_ok_and(|v| !v.allowed)
    }
}

/// Turns observations into annotated flows, and annotated flows into protobuf.
#[derive(Debug, Clone)]
pub struct Annotator {
    node_name: String,
}

impl Annotator {
    pub fn new(node_name: impl Into<String>) -> Self {
        Annotator {
            node_name: node_name.into(),
        }
    }

    /// Annotates one observation against the cluster state, as it was at the
    /// observation's start: a recycled pod IP names the pod that held it then,
    /// and the verdict judges that pod (a departed pod's verdict is computed
    /// afresh rather than cached; see [`ClusterState::verdict_at`]).
    pub fn annotate(&self, state: &ClusterState, obs: Observation) -> Annotated {
        self.annotate_named(state, obs, |_, _, _| Vec::new())
    }

    /// [`Annotator::annotate`], with the names the source resolved to a
    /// destination outside the cluster reached directly (not through a
    /// Service): `names(source, destination, first_seen)`, latest first.
    /// They go into the record and into the verdict's connection, where
    /// admin `domainNames` peers match them.
    pub fn annotate_named(
        &self,
        state: &ClusterState,
        obs: Observation,
        names: impl FnOnce(IpAddr, IpAddr, SystemTime) -> Vec<Arc<str>>,
    ) -> Annotated {
        let (destination, service, unknown_backend) = resolve_destination(state, &obs);
        let at = obs.first_seen;
        let resolve = |addr: SocketAddr| {
            let pod = state.pod_by_ip_at(addr.ip(), at).cloned();
            let node = pod.is_none() && state.is_node_ip(addr.ip());
            let workload = pod.as_deref().and_then(|p| state.workload_of(p));
            ResolvedEndpoint {
                addr,
                pod,
                node,
                unresolved: false,
                workload,
            }
        };
        let source = resolve(obs.src);
        let mut destination = resolve(destination);
        let destination_names = if destination.is_outside() && service.is_none() {
            names(obs.src.ip(), destination.addr.ip(), obs.first_seen)
        } else {
            Vec::new()
        };
        let verdict = match unknown_backend {
            Some(unknown) => {
                destination.unresolved = true;
                Err(unknown)
            }
            None => {
                let conn = Connection::new(
                    Endpoint::Ip(obs.src.ip()),
                    Endpoint::Ip(destination.addr.ip()),
                    destination.addr.port(),
                    obs.protocol,
                )
                .with_destination_names(&destination_names);
                state.verdict_at(&conn, at).map_err(NotEvaluated::from)
            }
        };
        let point = self.observation_point(state, &obs, &source, &destination);
        let counted_elsewhere = match point {
            pb::ObservationPoint::Source | pb::ObservationPoint::Unspecified => false,
            // The source's node has the record of account, unless the
            // source is outside the cluster.
            pb::ObservationPoint::Destination => source.pod.is_some() || source.node,
            pb::ObservationPoint::Transit => true,
        };
        let peer_exists = destination
            .pod
            .as_ref()
            .is_some_and(|pod| state.pod(&pod.key).is_some());
        let mismatch = match &verdict {
            Ok(v) if !counted_elsewhere => mismatch(v.allowed, &obs, peer_exists),
            _ => pb::Mismatch::None,
        };
        let egress_allows_cluster_dns = obs.dns.as_ref().map(|_| {
            source
                .pod
                .as_ref()
                .and_then(|pod| dns_denied(state, pod))
                .is_none_or(|(denied, _)| denied.is_empty())
        });
        Annotated {
            obs,
            count: 1,
            source,
            destination,
            service,
            verdict,
            mismatch,
            egress_allows_cluster_dns,
            point,
            counted_elsewhere,
            destination_names,
        }
    }

    /// Where this node saw the flow: an accepted connection in the
    /// destination's namespace, a connect in the source's, else packets on
    /// the node of the source or of the destination, or of neither.
    fn observation_point(
        &self,
        state: &ClusterState,
        obs: &Observation,
        source: &ResolvedEndpoint,
        destination: &ResolvedEndpoint,
    ) -> pb::ObservationPoint {
        match obs.seen_by {
            SeenBy::ResponderSocket => pb::ObservationPoint::Destination,
            SeenBy::InitiatorSocket => pb::ObservationPoint::Source,
            SeenBy::Packets if self.is_local(state, source) => pb::ObservationPoint::Source,
            SeenBy::Packets if self.is_local(state, destination) => {
                pb::ObservationPoint::Destination
            }
            SeenBy::Packets => pb::ObservationPoint::Transit,
        }
    }

    /// Whether an endpoint is on this node: a pod placed here (or on no known
    /// node), or an address of this node.
    fn is_local(&self, state: &ClusterState, end: &ResolvedEndpoint) -> bool {
        match &end.pod {
            Some(pod) => pod.node.as_deref().is_none_or(|n| n == self.node_name),
            None if end.node => state
                .nodes()
                .iter()
                .find(|n| n.ips.contains(&end.addr.ip()))
                .is_none_or(|n| n.name == self.node_name),
            None => false,
        }
    }

    /// Renders an annotated flow (or an aggregated record) as a protobuf Flow;
    /// `id` identifies it for the store.
    pub fn render(&self, a: &Annotated, id: String) -> pb::Flow {
        let obs = &a.obs;
        let mut out = pb::Flow {
            id,
            // Exact, saturating at the ends of what a Timestamp holds (prost's
            // own conversion panics there).
            first_seen: Some(UnixNanos::from_system(obs.first_seen).to_timestamp()),
            last_seen: Some(UnixNanos::from_system(obs.last_seen).to_timestamp()),
            count: a.count,
            node_name: self.node_name.clone(),
            source: Some(endpoint(&a.source)),
            destination: Some(endpoint(&a.destination)),
            protocol: pb::Protocol::from(obs.protocol) as i32,
            service: a
                .service
                .as_ref()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .unwrap_or_default(),
            traffic_direction: traffic_direction(obs.direction) as i32,
            outcome: obs.outcome as i32,
            drop_reason: obs.drop_reason.as_deref().unwrap_or_default().to_string(),
            drop_count: u64::from(obs.drops),
            packets: obs.packets,
            bytes: obs.bytes,
            mismatch: a.mismatch as i32,
            observation_point: a.point as i32,
            counted_elsewhere: a.counted_elsewhere,
            destination_names: a.destination_names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        match &a.verdict {
            Ok(verdict) => {
                out.verdict = if verdict.allowed {
                    pb::Verdict::Allowed
                } else {
                    pb::Verdict::Denied
                } as i32;
                let (src_ip, dst_ip) = (
                    a.source.addr.ip().to_string(),
                    a.destination.addr.ip().to_string(),
                );
                let (src_name, dst_name) = (
                    describe(&a.source, &[]),
                    describe(&a.destination, &a.destination_names),
                );
                out.reason = netverdict_policy::explain::reason(
                    verdict,
                    Party {
                        name: &src_name,
                        ip: &src_ip,
                    },
                    Party {
                        name: &dst_name,
                        ip: &dst_ip,
                    },
                );
                // The peer of the source's egress is the destination, and the reverse.
                out.egress = Some(verdict.egress.to_proto(&dst_ip));
                out.ingress = Some(verdict.ingress.to_proto(&src_ip));
                // Admin and baseline policies of deciding rules included, with their tier.
                (out.allowed_by, out.denied_by) = verdict.policy_refs();
            }
            Err(e) => {
                out.verdict = pb::Verdict::Unspecified as i32;
                out.reason = format!("not evaluated: {e}");
            }
        }
        if let Some(dns) = &obs.dns {
            out.dns = Some(pb::Dns {
                id: u32::from(dns.id),
                query: dns.query.clone().unwrap_or_default(),
                qtype: dns.qtype.map(qtype_name).unwrap_or_default(),
                rcode: dns.rcode.unwrap_or_default().to_string(),
                answers: u32::from(dns.answers),
                egress_allows_cluster_dns: a.egress_allows_cluster_dns.unwrap_or(true),
            });
        }
        out
    }
}

/// An endpoint for a person: `ns/pod`, `10.1.0.1 (node)`, `203.0.113.9
/// (outside the cluster)`, or with the name the source resolved,
/// `203.0.113.9 (api.example.com, outside the cluster)`.
fn describe(end: &ResolvedEndpoint, names: &[Arc<str>]) -> String {
    if end.unresolved {
        return format!("{} (a Service)", end.addr.ip());
    }
    match (&end.pod, end.node, names.first()) {
        (Some(pod), _, _) => pod.key.to_string(),
        (None, true, _) => format!("{} (node)", end.addr.ip()),
        (None, false, Some(name)) => format!("{} ({name}, outside the cluster)", end.addr.ip()),
        (None, false, None) => format!("{} (outside the cluster)", end.addr.ip()),
    }
}

/// The destination after Service DNAT: the backend the kernel revealed, else
/// the Service's only backend, else the address as observed. Returns the
/// Service's `namespace/name` when the destination was one, and why the
/// backend is not known when the Service has several and the kernel did not
/// say which.
fn resolve_destination(
    state: &ClusterState,
    obs: &Observation,
) -> (SocketAddr, Option<(String, String)>, Option<NotEvaluated>) {
    let service = state
        .service_by_ip(obs.dst.ip())
        .map(|s| (s.namespace.clone(), s.name.clone()));
    if let Some(backend) = obs.backend {
        return (backend, service, None);
    }
    if let Some((namespace, name)) = &service
        && let Some(backends) = state.service_backends(obs.dst.ip(), obs.dst.port(), obs.protocol)
    {
        let mut addrs: Vec<SocketAddr> = backends
            .iter()
            .filter_map(|(pod, port)| {
                let pod = state.pod(pod)?;
                let ip = pod
                    .ips
                    .iter()
                    .find(|ip| ip.is_ipv4() == obs.dst.is_ipv4())?;
                Some(SocketAddr::new(*ip, *port))
            })
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        match addrs.as_slice() {
            [] => {}
            [only] => return (*only, service, None),
            many => {
                let unknown = NotEvaluated::BackendUnknown {
                    service: format!("{namespace}/{name}"),
                    backends: many.len(),
                };
                return (obs.dst, service, Some(unknown));
            }
        }
    }
    (obs.dst, service, None)
}

fn endpoint(end: &ResolvedEndpoint) -> pb::Endpoint {
    let mut out = pb::Endpoint {
        ip: end.addr.ip().to_string(),
        port: u32::from(end.addr.port()),
        ..Default::default()
    };
    match &end.pod {
        Some(pod) => {
            out.kind = if pod.host_network {
                pb::EndpointKind::HostNetworkPod
            } else {
                pb::EndpointKind::Pod
            } as i32;
            out.namespace = pod.key.namespace.clone();
            out.pod_name = pod.key.name.clone();
            out.labels = pod
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.workload = workload_name(end.workload.as_deref(), &pod.key);
            out.node_name = pod.node.clone().unwrap_or_default();
        }
        None if end.unresolved => out.kind = pb::EndpointKind::Unspecified as i32,
        None if end.node => out.kind = pb::EndpointKind::Node as i32,
        None => out.kind = pb::EndpointKind::World as i32,
    }
    out
}

/// The kernel's traffic direction as protobuf: the one place the two meet.
fn traffic_direction(direction: TrafficDirection) -> pb::TrafficDirection {
    match direction {
        TrafficDirection::Egress => pb::TrafficDirection::Egress,
        TrafficDirection::Ingress => pb::TrafficDirection::Ingress,
        TrafficDirection::Unknown => pb::TrafficDirection::Unspecified,
    }
}

/// Whether the kernel's outcome contradicts the verdict: an allowed flow that
/// a datapath enforcing policy dropped (see [`crate::enforcement`]), a denied
/// flow that got through, or (weaker) an allowed flow to a pod that exists
/// which got no answer, with no enforcing drop seen. A TCP packet the stack
/// dropped with no connection attempt seen (a late reply to a socket that has
/// closed) is not an attempt left unanswered: no mismatch.
pub fn mismatch(allowed: bool, obs: &Observation, peer_exists: bool) -> pb::Mismatch {
    let enforced = is_enforcement_drop(obs.drop_reason.as_deref(), obs.drop_location.as_deref());
    let got_through = matches!(
        obs.outcome,
        pb::Outcome::Established | pb::Outcome::Answered
    );
    // TCP attempts are seen by their sockets; UDP ones (and DNS queries) by
    // the packets they send.
    let attempt_seen =
        obs.protocol != netverdict_policy::Protocol::Tcp || obs.seen_by != SeenBy::Packets;
    let unanswered =
        attempt_seen && matches!(obs.outcome, pb::Outcome::NoAnswer | pb::Outcome::Dropped);
    if allowed && enforced {
        pb::Mismatch::DroppedThoughAllowed
    } else if !allowed && got_through {
        pb::Mismatch::AllowedThoughDenied
    } else if allowed && unanswered && peer_exists {
        pb::Mismatch::NoAnswerThoughAllowed
    } else {
        pb::Mismatch::None
    }
}

/// The name of a DNS query type (`A`, `AAAA`, `SRV`...).
fn qtype_name(qtype: u16) -> String {
    hickory_proto::rr::RecordType::from(qtype).to_string()
}
