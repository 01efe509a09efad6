//! The policy side of `netverdict diagnose`: the seed guide's debugging flow
//! for one source and one destination, from the cluster state alone.
//!
//! ```text
//!  Request (from, to, port, protocol) ─> resolve: the source, the targets (a pod;
//!        a Service's backends after DNAT; an address)
//!   ─> policies  (2, 3): the policies of both namespaces, and which of them select
//!                        which pod of the flow, for which direction
//!   ─> labels    (4):    both pods' and both namespaces' labels, the ones the
//!                        policies' selectors read picked out
//!   ─> dns       (5):    whether the source's egress allows DNS to the cluster DNS
//!   ─> paths     (6):    each target's egress and ingress, separately
//!   ─> fix:              the least-privilege NetworkPolicies (see [`crate::fix`])
//! ```
//!
//! Steps 1 (evidence of enforcement) and 7 (observed flows, failed DNS
//! queries) need flows an API server stored: the CLI adds them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::networking::v1 as net;
use serde::Serialize;

use crate::engine::{Connection, Endpoint};
use crate::error::ConnectionError;
use crate::explain::{Party, describe_endpoint, reason};
use crate::fix::{Fix, Target, TargetEndpoint, dns_targets, fix, is_dns};
use crate::lint::{cluster_dns_pods, dns_denied};
use crate::model::{
    Direction, NamespaceMatch, NetworkPolicy, Peer, Pod, PodKey, PolicyKey, Protocol, workload_name,
};
use crate::selector::Selector;
use crate::state::ClusterState;
use crate::verdict::DirectionVerdict;

/// Errors of a diagnosis: the request names something the cluster does not
/// hold, or is ambiguous.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--to` is neither `ns/name`, `ns/pod/name`, `ns/svc/name` nor an IP.
    #[error(
        "--to {0:?}: expected namespace/pod, namespace/service, namespace/pod/NAME, namespace/svc/NAME or an IP address"
    )]
    BadDestination(String),
    /// `ns/name` is neither a pod nor a Service.
    #[error("--to {0}: no pod and no Service of that name")]
    UnknownDestination(String),
    /// The Service does not exist.
    #[error("--to {0}: no such Service")]
    UnknownService(String),
    /// The Service has no cluster IP to be reached at.
    #[error("--to {0}: the Service is headless (no cluster IP): diagnose a backend pod instead")]
    Headless(String),
    /// No port was given and the destination does not have exactly one.
    #[error("--port: required for {what} ({ports})")]
    PortRequired {
        /// The destination.
        what: String,
        /// The ports it has.
        ports: String,
    },
    /// The Service has no port of that number and protocol.
    #[error("--port {port}: Service {service} has no {protocol} port {port} ({ports})")]
    NoServicePort {
        service: String,
        port: u16,
        protocol: Protocol,
        ports: String,
    },
    /// The Service has no backend on that port.
    #[error(
        "Service {service} has no ready backend for port {port}/{protocol}: no flow to diagnose"
    )]
    NoBackends {
        service: String,
        port: u16,
        protocol: Protocol,
    },
    /// An endpoint could not be evaluated.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// Where the flow goes, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `ns/name`: the pod, else the Service of that name.
    Named(PodKey),
    /// `ns/pod/name`.
    Pod(PodKey),
    /// `ns/svc/name` (or `ns/service/name`).
    Service(PodKey),
    /// An address (a pod's, a Service's cluster IP, a node's or outside).
    Ip(IpAddr),
}

impl FromStr for Destination {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Destination::Ip(ip));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::BadDestination(s.to_string()));
        }
        match parts.as_slice() {
            [ns, name] => Ok(Destination::Named(PodKey::new(*ns, *name))),
            [ns, "pod" | "pods" | "po", name] => Ok(Destination::Pod(PodKey::new(*ns, *name))),
            [ns, "svc" | "service" | "services", name] => {
                Ok(Destination::Service(PodKey::new(*ns, *name)))
            }
            _ => Err(Error::BadDestination(s.to_string())),
        }
    }
}

/// What to diagnose.
#[derive(Clone, Debug)]
pub struct Request {
    /// The source: a pod or an address.
    pub from: Endpoint,
    pub to: Destination,
    /// The destination port (a Service's port for a Service); None: the
    /// destination's only port.
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// One end of the flow.
#[derive(Clone, Debug, Serialize)]
pub struct End {
    /// `ns/pod`, `10.0.0.7 (pod ns/pod)`, `203.0.113.9 (outside the cluster)`...
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodKey>,
    /// Its workload (`Deployment/web`, `Pod/debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
}

/// The destination as resolved.
#[derive(Clone, Debug, Serialize)]
pub struct ResolvedDestination {
    /// `pod`, `service` or `address`.
    pub kind: &'static str,
    /// What was asked for, resolved: `ns/pod`, `ns/service`, an address.
    pub name: String,
    /// The Service's port asked for (targets are after DNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
    /// Each pod (or the address) the flow reaches.
    pub ends: Vec<End>,
}

/// A policy of one of the flow's namespaces, and which pods of the flow it
/// selects.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyFinding {
    pub policy: PolicyKey,
    /// The directions it isolates its pods for.
    pub policy_types: Vec<Direction>,
    /// The flow's pods it selects, for the direction that matters for the
    /// flow: the source's egress, a destination's ingress.
    pub selects: Vec<Selected>,
}

/// A pod of the flow a policy selects.
#[derive(Clone, Debug, Serialize)]
pub struct Selected {
    pub pod: PodKey,
    pub direction: Direction,
}

/// The policies of one namespace.
#[derive(Clone, Debug, Serialize)]
pub struct NamespacePolicies {
    pub namespace: String,
    pub policies: Vec<PolicyFinding>,
}

/// The labels of one pod of the flow and of its namespace.
#[derive(Clone, Debug, Serialize)]
pub struct EndLabels {
    /// `source` or `destination`.
    pub role: &'static str,
    pub pod: PodKey,
    pub labels: BTreeMap<String, String>,
    /// The labels some selector of the flow's policies reads (pod selectors
    /// and peers' pod selectors): their value, or null when the pod lacks it.
    pub that_matter: BTreeMap<String, Option<String>>,
    pub namespace_labels: BTreeMap<String, String>,
    /// The namespace labels some peer's namespaceSelector reads.
    pub namespace_labels_that_matter: BTreeMap<String, Option<String>>,
}

/// Whether the source's egress allows DNS to the cluster DNS.
#[derive(Clone, Debug, Serialize)]
pub struct DnsFinding {
    /// The cluster DNS pods (kube-system/kube-dns's backends, else pods
    /// labelled k8s-app=kube-dns).
    pub dns_pods: Vec<PodKey>,
    /// Whether a policy isolates the source for egress.
    pub isolated: bool,
    /// The protocols on port 53 its egress denies to every DNS pod.
    pub denied: Vec<Protocol>,
    /// The policies isolating it for egress.
    pub egress_policies: Vec<PolicyKey>,
    /// When DNS is denied: the DNS egress policy that allows it (UDP and
    /// TCP 53 to the cluster DNS only), and what it cannot do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<net::NetworkPolicy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix_notes: Vec<String>,
}

/// One target's verdict, each direction on its own.
#[derive(Clone, Debug, Serialize)]
pub struct PathFinding {
    pub target: Target,
    /// `allow` or `deny`.
    pub verdict: &'static str,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
    /// One sentence on why.
    pub reason: String,
}

/// What policy says of one flow, step by step.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub source: End,
    pub destination: ResolvedDestination,
    pub protocol: Protocol,
    /// What the flow reaches: each pod or address with its port, after DNAT.
    pub targets: Vec<Target>,
    /// Whether policy allows the flow to every target.
    pub allowed: bool,
    /// Steps 2 and 3: the policies of the namespaces involved.
    pub policies: Vec<NamespacePolicies>,
    /// Step 4: the labels that matter.
    pub labels: Vec<EndLabels>,
    /// Step 5: DNS for the source (a pod), from policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFinding>,
    /// Step 6: ingress and egress, for each target.
    pub paths: Vec<PathFinding>,
    /// The nodes the flow's pods run on (where enforcement is looked for).
    pub nodes: Vec<String>,
    /// The least-privilege fix (empty when allowed). A DNS flow is fixed
    /// on UDP and TCP 53 together.
    pub fix: Fix,
}

/// Diagnoses one flow against `state`.
pub fn diagnose(state: &ClusterState, request: &Request) -> Result<Diagnosis, Error> {
    let source_pod = match &request.from {
        Endpoint::Pod(key) => Some(
            state
                .pod(key)
                .ok_or_else(|| ConnectionError::UnknownPod(key.to_string()))?,
        ),
        Endpoint::Ip(ip) => state.pod_by_ip(*ip),
    };
    let (destination, targets) = resolve(state, request)?;
    let source = end(state, &request.from, source_pod.map(|p| &**p));

    let mut paths = Vec::new();
    for target in &targets {
        let conn = Connection::new(
            request.from.clone(),
            target.endpoint.engine(),
            target.port,
            target.protocol,
        );
        let verdict = state.verdict(&conn)?;
        let (src_ip, dst_ip) = state.connection_ips(&conn)?;
        let (src_ip, dst_ip) = (src_ip.to_string(), dst_ip.to_string());
        let src_name = describe_endpoint(state, &conn.src);
        let dst_name = describe_endpoint(state, &conn.dst);
        paths.push(PathFinding {
            target: target.clone(),
            verdict: verdict.as_str(),
            egress: verdict.egress.clone(),
            ingress: verdict.ingress.clone(),
            reason: reason(
                &verdict,
                Party {
                    name: &src_name,
                    ip: &src_ip,
                },
                Party {
                    name: &dst_name,
                    ip: &dst_ip,
                },
            ),
        });
    }
    let allowed = paths.iter().all(|p| p.verdict == "allow");

    // The pods of the flow: the source's egress and each destination's
    // ingress are what policies decide.
    let mut flow_pods: Vec<(&Pod, Direction, &'static str)> = Vec::new();
    if let Some(pod) = source_pod {
        flow_pods.push((pod, Direction::Egress, "source"));
    }
    let mut seen = BTreeSet::new();
    for target in &targets {
        if let Some(pod) = target_pod(state, &target.endpoint)
            && seen.insert(pod.key.clone())
        {
            flow_pods.push((pod, Direction::Ingress, "destination"));
        }
    }
    let namespaces: BTreeSet<&str> = flow_pods
        .iter()
        .map(|(p, _, _)| p.key.namespace.as_str())
        .collect();
    let in_namespaces: Vec<&NetworkPolicy> = state
        .policies()
        .into_iter()
        .map(|p| &**p)
        .filter(|p| namespaces.contains(p.namespace()))
        .collect();
    let policies = namespaces
        .iter()
        .map(|ns| NamespacePolicies {
            namespace: ns.to_string(),
            policies: in_namespaces
                .iter()
                .filter(|p| p.namespace() == *ns)
                .map(|p| PolicyFinding {
                    policy: p.key.clone(),
                    policy_types: [Direction::Ingress, Direction::Egress]
                        .into_iter()
                        .filter(|d| p.rules(*d).is_some())
                        .collect(),
                    selects: flow_pods
                        .iter()
                        .filter(|(pod, direction, _)| {
                            p.rules(*direction).is_some() && p.selects(pod)
                        })
                        .map(|(pod, direction, _)| Selected {
                            pod: pod.key.clone(),
                            direction: *direction,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();

    let (pod_keys, namespace_keys) = selector_keys(&in_namespaces);
    let labels = flow_pods
        .iter()
        .map(|(pod, _, role)| {
            let namespace_labels = state.namespace_label_map(&pod.key.namespace);
            EndLabels {
                role,
                pod: pod.key.clone(),
                labels: (*pod.labels).clone(),
                that_matter: pick(&pod.labels, &pod_keys),
                namespace_labels_that_matter: pick(&namespace_labels, &namespace_keys),
                namespace_labels,
            }
        })
        .collect();

    let dns = match source_pod {
        Some(pod) if !pod.host_network => Some(dns_finding(state, &request.from, pod)?),
        _ => None,
    };
    let fix_targets = if is_dns(state, &targets) {
        dns_targets(state)
    } else {
        targets.clone()
    };
    let fix = fix(state, &request.from, &fix_targets)?;
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    nodes.extend(source.node.clone());
    for e in &destination.ends {
        nodes.extend(e.node.clone());
    }
    Ok(Diagnosis {
        source,
        destination,
        protocol: request.protocol,
        targets,
        allowed,
        policies,
        labels,
        dns,
        paths,
        nodes: nodes.into_iter().collect(),
        fix,
    })
}

/// The source's DNS, from policy.
fn dns_finding(state: &ClusterState, from: &Endpoint, pod: &Pod) -> Result<DnsFinding, Error> {
    let dns_pods: Vec<PodKey> = cluster_dns_pods(state)
        .into_iter()
        .map(|p| p.key.clone())
        .collect();
    let isolating: Vec<PolicyKey> = state
        .policies_selecting(pod, Direction::Egress)
        .iter()
        .map(|p| p.key.clone())
        .collect();
    let denied = dns_denied(state, pod)
        .map(|(denied, _)| denied)
        .unwrap_or_default();
    let (fix, fix_notes) = if denied.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let f = fix(state, from, &dns_targets(state))?;
        (f.policies, f.notes)
    };
    Ok(DnsFinding {
        dns_pods,
        isolated: !isolating.is_empty(),
        denied,
        egress_policies: isolating,
        fix,
        fix_notes,
    })
}

/// The pod a target is, if any.
fn target_pod<'a>(state: &'a ClusterState, endpoint: &TargetEndpoint) -> Option<&'a Pod> {
    match endpoint {
        TargetEndpoint::Pod(key) => state.pod(key).map(|p| &**p),
        TargetEndpoint::Ip(ip) => state.pod_by_ip(*ip).map(|p| &**p),
    }
}

/// One end, described.
fn end(state: &ClusterState, endpoint: &Endpoint, pod: Option<&Pod>) -> End {
    End {
        name: describe_endpoint(state, endpoint),
        pod: pod.map(|p| p.key.clone()),
        workload: pod.map(|p| workload_name(state.workload_of(p).as_deref(), &p.key)),
        node: pod.and_then(|p| p.node.clone()),
        ips: match (pod, endpoint) {
            (Some(p), _) => p.ips.clone(),
            (None, Endpoint::Ip(ip)) => vec![*ip],
            (None, Endpoint::Pod(_)) => Vec::new(),
        },
    }
}

/// The destination and the targets the flow reaches.
fn resolve(
    state: &ClusterState,
    request: &Request,
) -> Result<(ResolvedDestination, Vec<Target>), Error> {
    let protocol = request.protocol;
    let pod_target = |key: &PodKey, endpoint: Endpoint| -> Result<_, Error> {
        let pod = state
            .pod(key)
            .ok_or_else(|| ConnectionError::UnknownPod(key.to_string()))?;
        let port = match request.port {
            Some(port) => port,
            None => only_port(
                &format!("pod {key}"),
                pod.ports
                    .iter()
                    .filter(|p| p.protocol == protocol)
                    .map(|p| p.port),
            )?,
        };
        let target = Target {
            endpoint: match &endpoint {
                Endpoint::Ip(ip) => TargetEndpoint::Ip(*ip),
                Endpoint::Pod(key) => TargetEndpoint::Pod(key.clone()),
            },
            port,
            protocol,
        };
        let destination = ResolvedDestination {
            kind: "pod",
            name: key.to_string(),
            service_port: None,
            ends: vec![end(state, &endpoint, Some(pod))],
        };
        Ok((destination, vec![target]))
    };
    match &request.to {
        Destination::Pod(key) => pod_target(key, Endpoint::Pod(key.clone())),
        Destination::Named(key) if state.pod(key).is_some() => {
            pod_target(key, Endpoint::Pod(key.clone()))
        }
        Destination::Named(key) => {
            if state.service(&key.namespace, &key.name).is_none() {
                return Err(Error::UnknownDestination(key.to_string()));
            }
            service_targets(state, key, request.port, protocol)
        }
        Destination::Service(key) => service_targets(state, key, request.port, protocol),
        Destination::Ip(ip) => {
            if let Some(pod) = state.pod_by_ip(*ip) {
                let key = pod.key.clone();
                return pod_target(&key, Endpoint::Ip(*ip));
            }
            if let Some(svc) = state.service_by_ip(*ip) {
                let key = PodKey::new(svc.namespace.clone(), svc.name.clone());
                return service_targets(state, &key, request.port, protocol);
            }
            let port = request.port.ok_or_else(|| Error::PortRequired {
                what: format!("address {ip}"),
                ports: "any".into(),
            })?;
            let destination = ResolvedDestination {
                kind: "address",
                name: describe_endpoint(state, &Endpoint::Ip(*ip)),
                service_port: None,
                ends: vec![end(state, &Endpoint::Ip(*ip), None)],
            };
            let target = Target {
                endpoint: TargetEndpoint::Ip(*ip),
                port,
                protocol,
            };
            Ok((destination, vec![target]))
        }
    }
}

/// A Service's backends on one of its ports.
fn service_targets(
    state: &ClusterState,
    key: &PodKey,
    port: Option<u16>,
    protocol: Protocol,
) -> Result<(ResolvedDestination, Vec<Target>), Error> {
    let name = key.to_string();
    let svc = state
        .service(&key.namespace, &key.name)
        .ok_or_else(|| Error::UnknownService(name.clone()))?;
    let ip = *svc
        .cluster_ips
        .first()
        .ok_or_else(|| Error::Headless(name.clone()))?;
    let ports_text = || {
        svc.ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let port = match port {
        Some(port) => port,
        None => only_port(
            &format!("Service {name}"),
            svc.ports
                .iter()
                .filter(|p| p.protocol == protocol)
                .map(|p| p.port),
        )?,
    };
    if !svc
        .ports
        .iter()
        .any(|p| p.port == port && p.protocol == protocol)
    {
        return Err(Error::NoServicePort {
            service: name,
            port,
            protocol,
            ports: ports_text(),
        });
    }
    let backends = state
        .service_backends(ip, port, protocol)
        .unwrap_or_default();
    if backends.is_empty() {
        return Err(Error::NoBackends {
            service: name,
            port,
            protocol,
        });
    }
    let targets: Vec<Target> = backends
        .iter()
        .map(|(pod, target_port)| Target {
            endpoint: TargetEndpoint::Pod(pod.clone()),
            port: *target_port,
            protocol,
        })
        .collect();
    let ends = backends
        .iter()
        .filter_map(|(pod, _)| state.pod(pod))
        .map(|p| end(state, &Endpoint::Pod(p.key.clone()), Some(p)))
        .collect();
    Ok((
        ResolvedDestination {
            kind: "service",
            name,
            service_port: Some(port),
            ends,
        },
        targets,
    ))
}

/// The only port of a list, or the error asking for `--port`.
fn only_port(what: &str, ports: impl Iterator<Item = u16>) -> Result<u16, Error> {
    let ports: BTreeSet<u16> = ports.collect();
    match ports.len() {
        1 => Ok(*ports.first().unwrap_or(&0)),
        _ => Err(Error::PortRequired {
            what: what.to_string(),
            ports: if ports.is_empty() {
                "it declares none".to_string()
            } else {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// The label keys the policies' selectors read: of pods (their pod
/// selectors and the pod selectors of their peers) and of namespaces (the
/// namespace selectors of their peers).
fn selector_keys(policies: &[&NetworkPolicy]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut pods = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    let keys = |s: &Selector, into: &mut BTreeSet<String>| {
        into.extend(s.requirements().iter().map(|r| r.key.clone()));
    };
    for policy in policies {
        keys(&policy.pod_selector, &mut pods);
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).into_iter().flatten() {
                for peer in &rule.peers {
                    if let Peer::Pods {
                        namespaces: ns,
                        pods: selector,
                    } = peer
                    {
                        if let NamespaceMatch::Selector(s) = ns {
                            keys(s, &mut namespaces);
                        }
                        if let Some(s) = selector {
                            keys(s, &mut pods);
                        }
                    }
                }
            }
        }
    }
    (pods, namespaces)
}

/// The values of `keys` in `labels` (None when absent).
fn pick(
    labels: &BTreeMap<String, String>,
    keys: &BTreeSet<String>,
) -> BTreeMap<String, Option<String>> {
    keys.iter()
        .map(|k| (k.clone(), labels.get(k).cloned()))
        .collect()
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Named(key) => write!(f, "{key}"),
            Destination::Pod(key) => write!(f, "{}/pod/{}", key.namespace, key.name),
            Destination::Service(key) => write!(f, "{}/svc/{}", key.namespace, key.name),
            Destination::Ip(ip) => write!(f, "{ip}"),
        }
    }
}
