//! Annotation: an observation of the kernel becomes a `Flow` that says who talked
//! to whom (pods with namespace and labels, nodes, or addresses outside the
//! cluster), through which Service, what NetworkPolicy says about it and why
//! (both directions: selecting policies, allowing rules, or the isolating
//! policies and the nearest miss), what the kernel did, and whether the two
//! contradict each other.

use std::net::SocketAddr;
use std::sync::Arc;

use netverdict_policy::explain::Party;
use netverdict_policy::lint::dns_denied;
use netverdict_policy::model::Pod;
use netverdict_policy::{ClusterState, Connection, ConnectionError, Endpoint, PodKey, Verdict};
use netverdict_proto::v1 as pb;

use crate::correlate::{Observation, TrafficDirection};

/// One end of an annotated flow, resolved against the cluster state: the
/// address and, when it is one, the pod that held it or whether it is a node's.
#[derive(Clone, Debug)]
pub struct ResolvedEndpoint {
    pub addr: SocketAddr,
    pub pod: Option<Arc<Pod>>,
    /// The address is a node's.
    pub node: bool,
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
    pub verdict: Result<Arc<Verdict>, ConnectionError>,
    pub mismatch: pb::Mismatch,
    /// For DNS flows: whether the source's egress allows DNS to the cluster DNS.
    pub egress_allows_cluster_dns: Option<bool>,
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

/// The drop reason nftables' drops carry.
pub const NETFILTER_DROP: &str = "NETFILTER_DROP";

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
        let (destination, service) = resolve_destination(state, &obs);
        let at = obs.first_seen;
        let resolve = |addr: SocketAddr| {
            let pod = state.pod_by_ip_at(addr.ip(), at).cloned();
            let node = pod.is_none() && state.is_node_ip(addr.ip());
            ResolvedEndpoint { addr, pod, node }
        };
        let source = resolve(obs.src);
        let destination = resolve(destination);
        let conn = Connection::new(
            Endpoint::Ip(obs.src.ip()),
            Endpoint::Ip(destination.addr.ip()),
            destination.addr.port(),
            obs.protocol,
        );
        let verdict = state.verdict_at(&conn, at);
        let mismatch = match &verdict {
            Ok(v) => mismatch(v.allowed, &obs),
            Err(_) => pb::Mismatch::None,
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
        }
    }

    /// Renders an annotated flow (or an aggregated record) as a protobuf Flow;
    /// `id` identifies it for the store.
    pub fn render(&self, a: &Annotated, id: String) -> pb::Flow {
        let obs = &a.obs;
        let mut out = pb::Flow {
            id,
            first_seen: Some(obs.first_seen.into()),
            last_seen: Some(obs.last_seen.into()),
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
            mismatch: a.mismatch as i32,
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
                let (src_name, dst_name) = (describe(&a.source), describe(&a.destination));
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

/// An endpoint for a person: `ns/pod`, `10.1.0.1 (node)`, `203.0.113.9 (outside the cluster)`.
fn describe(end: &ResolvedEndpoint) -> String {
    match (&end.pod, end.node) {
        (Some(pod), _) => pod.key.to_string(),
        (None, true) => format!("{} (node)", end.addr.ip()),
        (None, false) => format!("{} (outside the cluster)", end.addr.ip()),
    }
}

/// The destination after Service DNAT: the backend a drop revealed, else the
/// Service's first backend, else the address as observed. Returns the Service's
/// `namespace/name` when the destination was one.
fn resolve_destination(
    state: &ClusterState,
    obs: &Observation,
) -> (SocketAddr, Option<(String, String)>) {
    let service = state
        .service_by_ip(obs.dst.ip())
        .map(|s| (s.namespace.clone(), s.name.clone()));
    if let Some(backend) = obs.backend {
        return (backend, service);
    }
    if service.is_some()
        && let Some(backends) = state.service_backends(obs.dst.ip(), obs.dst.port(), obs.protocol)
        && let Some((pod, port)) = backends.first()
        && let Some(ip) = state
            .pod(pod)
            .and_then(|p| p.ips.iter().find(|ip| ip.is_ipv4() == obs.dst.is_ipv4()))
    {
        return (SocketAddr::new(*ip, *port), service);
    }
    (obs.dst, service)
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
            out.workload = workload(&pod.key, &pod.labels);
            out.node_name = pod.node.clone().unwrap_or_default();
        }
        None if end.node => out.kind = pb::EndpointKind::Node as i32,
        None => out.kind = pb::EndpointKind::World as i32,
    }
    out
}

/// The workload a pod belongs to, for grouping: its `app.kubernetes.io/name` or
/// `app` label, else its name.
fn workload(key: &PodKey, labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .get("app.kubernetes.io/name")
        .or_else(|| labels.get("app"))
        .cloned()
        .unwrap_or_else(|| key.name.clone())
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
/// nftables dropped, or a denied flow that got through.
pub fn mismatch(allowed: bool, obs: &Observation) -> pb::Mismatch {
    let dropped_by_netfilter = obs.drop_reason.as_deref() == Some(NETFILTER_DROP);
    let got_through = matches!(
        obs.outcome,
        pb::Outcome::Established | pb::Outcome::Answered
    );
    if allowed && dropped_by_netfilter {
        pb::Mismatch::DroppedThoughAllowed
    } else if !allowed && got_through {
        pb::Mismatch::AllowedThoughDenied
    } else {
        pb::Mismatch::None
    }
}

/// The name of a DNS query type (`A`, `AAAA`, `SRV`...).
fn qtype_name(qtype: u16) -> String {
    hickory_proto::rr::RecordType::from(qtype).to_string()
}
