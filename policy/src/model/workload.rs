//! Where traffic comes from and goes to: namespaces (whose labels peers
//! select), pods (labels, IPs, node, container ports for named ports, their
//! controller) and nodes
//! (traffic between a pod and its node is always allowed), validated from
//! core/v1.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use serde::Serialize;

use super::keys::PodKey;
use super::owner::Owner;
use super::ports::Protocol;
use super::validate::{
    named, parse_ip, port_number, protocol_field, validate_labels, validate_port_name,
};
use crate::error::{FieldError, ObjectError};
use crate::selector::Labels;

/// The namespace label the API server sets on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace and its labels (always including `kubernetes.io/metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with only the labels the API server gives every namespace.
    pub fn implicit(name: &str) -> Self {
        Namespace {
            name: name.to_string(),
            labels: Arc::new(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
        }
    }

    pub fn from_k8s(ns: &core::Namespace) -> Result<Self, ObjectError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let object = format!("Namespace {name}");
        if name.is_empty() {
            return Err(ObjectError {
                object,
                error: FieldError::new("metadata.name", "missing"),
            });
        }
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        validate_labels(&labels).map_err(|error| ObjectError {
            object: object.clone(),
            error,
        })?;
        // The API server sets this label to the name on every namespace,
        // whatever the manifest says; hand-written manifests often leave it out.
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Ok(Namespace {
            name,
            labels: Arc::new(labels),
        })
    }
}

/// A port a container declares, which named ports in policies resolve against.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod as the policy engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub key: PodKey,
    pub labels: Labels,
    /// The pod's IPs (status.podIPs, else status.podIP); empty before it runs.
    pub ips: Vec<IpAddr>,
    /// Host-network pods use their node's IP and are never selected by policies.
    pub host_network: bool,
    /// The node the pod runs on (spec.nodeName).
    pub node: Option<String>,
    /// The ports of all containers, for named-port resolution.
    pub ports: Arc<[ContainerPort]>,
    /// Its controller (`metadata.ownerReferences` with `controller: true`),
    /// if any: where its workload is found (see [`super::owner`]).
    pub owner: Option<Arc<Owner>>,
}

impl Pod {
    /// Converts a pod; `require_ip` rejects pods without status.podIP.
    pub fn from_k8s(pod: &core::Pod, require_ip: bool) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("Pod", &pod.metadata)?;
        let key = PodKey::new(namespace, name);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        validate_labels(&labels).map_err(&fail)?;
        let owner = Owner::controller_of(&pod.metadata).map_err(&fail)?;
        let mut ips = Vec::new();
        if let Some(status) = &pod.status {
            for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
                let parsed = parse_ip(&ip.ip, &format!("status.podIPs[{i}].ip")).map_err(&fail)?;
                if !ips.contains(&parsed) {
                    ips.push(parsed);
                }
            }
            if let Some(ip) = &status.pod_ip {
                let parsed = parse_ip(ip, "status.podIP").map_err(&fail)?;
                if !ips.contains(&parsed) {
                    ips.insert(0, parsed);
                }
            }
        }
        // A finished pod's address is back in the pool (its status keeps it,
        // and another pod may hold it already): it holds none.
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        if finished {
            ips.clear();
        }
        if require_ip && ips.is_empty() && !finished {
            return Err(fail(FieldError::new(
                "status.podIP",
                "the pod has no IP address (set status.podIP, or let `netverdict lab up` allocate one)",
            )));
        }
        let spec = pod.spec.as_ref();
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c))
                .chain(
                    spec.init_containers
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c)),
                );
            for (at, container) in containers {
                for (j, p) in container.ports.iter().flatten().enumerate() {
                    let field = format!("{at}.ports[{j}]");
                    let port = port_number(p.container_port, &format!("{field}.containerPort"))
                        .map_err(&fail)?;
                    let protocol =
                        protocol_field(p.protocol.as_deref(), &format!("{field}.protocol"))
                            .map_err(&fail)?;
                    if let Some(name) = &p.name {
                        validate_port_name(name, &format!("{field}.name")).map_err(&fail)?;
                    }
                    ports.push(ContainerPort {
                        name: p.name.clone(),
                        port,
                        protocol,
                    });
                }
            }
        }
        Ok(Pod {
            key,
            labels: Arc::new(labels),
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node: spec.and_then(|s| s.node_name.clone()),
            ports: ports.into(),
            owner: owner.map(Arc::new),
        })
    }

    /// Resolves a named port against this pod's container ports.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// A node, its labels (which admin policies' `nodes` peers select) and its
/// addresses (traffic between a pod and its node is always allowed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
}

impl Node {
    pub fn from_k8s(node: &core::Node) -> Result<Self, ObjectError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let object = format!("Node {name}");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        validate_labels(&labels).map_err(|error| ObjectError {
            object: object.clone(),
            error,
        })?;
        let mut ips = Vec::new();
        for (i, a) in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                let ip = parse_ip(&a.address, &format!("status.addresses[{i}].address")).map_err(
                    |error| ObjectError {
                        object: object.clone(),
                        error,
                    },
                )?;
                ips.push(ip);
            }
        }
        Ok(Node {
            name,
            labels: Arc::new(labels),
            ips,
        })
    }
}
