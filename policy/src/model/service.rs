//! Services and EndpointSlices: the cluster IPs a connection may be addressed
//! to, and the backend pods and ports it reaches after DNAT, validated from
//! core/v1 and discovery/v1.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::keys::PodKey;
use super::ports::{PortRef, Protocol};
use super::validate::{named, parse_ip, port_number, protocol_field, validate_port_name};
use super::workload::ContainerPort;
use crate::error::ObjectError;
use crate::selector::Selector;

/// A port of a service, and the pod port it forwards to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// The backend port: a number or a container port name.
    pub target_port: PortRef,
}

/// A Service: its cluster IPs, pod selector and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    /// None for services without selector (their endpoints come from slices).
    pub selector: Option<Selector>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn from_k8s(svc: &core::Service) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("Service", &svc.metadata)?;
        let spec = svc.spec.clone().unwrap_or_default();
        let mut cluster_ips = Vec::new();
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            if ip != "None" {
                cluster_ips.push(parse_ip(ip, &format!("spec.clusterIPs[{i}]")).map_err(&fail)?);
            }
        }
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None" && !ip.is_empty())
        {
            let ip = parse_ip(ip, "spec.clusterIP").map_err(&fail)?;
            if !cluster_ips.contains(&ip) {
                cluster_ips.insert(0, ip);
            }
        }
        let selector = spec
            .selector
            .as_ref()
            .map(|s| Selector::from_labels(s.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let at = format!("spec.ports[{i}]");
            let port = port_number(p.port, &format!("{at}.port")).map_err(&fail)?;
            let protocol =
                protocol_field(p.protocol.as_deref(), &format!("{at}.protocol")).map_err(&fail)?;
            let target_port = match &p.target_port {
                None => PortRef::Number(port),
                Some(IntOrString::Int(n)) => {
                    PortRef::Number(port_number(*n, &format!("{at}.targetPort")).map_err(&fail)?)
                }
                Some(IntOrString::String(s)) => {
                    validate_port_name(s, &format!("{at}.targetPort")).map_err(&fail)?;
                    PortRef::Name(s.clone())
                }
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                port,
                protocol,
                target_port,
            });
        }
        Ok(Service {
            namespace,
            name,
            cluster_ips,
            selector,
            ports,
        })
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub pod: Option<PodKey>,
}

/// An EndpointSlice: the backends of a service, by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub endpoints: Vec<SliceEndpoint>,
    /// Port name (as in the service), number and protocol.
    pub ports: Vec<ContainerPort>,
}

impl EndpointSlice {
    pub fn from_k8s(slice: &discovery::EndpointSlice) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named("EndpointSlice", &slice.metadata)?;
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name").cloned());
        let mut endpoints = Vec::new();
        for (i, e) in slice.endpoints.iter().enumerate() {
            let mut addresses = Vec::new();
            if slice.address_type == "IPv4" || slice.address_type == "IPv6" {
                for (j, a) in e.addresses.iter().enumerate() {
                    addresses.push(
                        parse_ip(a, &format!("endpoints[{i}].addresses[{j}]")).map_err(&fail)?,
                    );
                }
            }
            let pod = e
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| {
                    Some(PodKey::new(
                        t.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        t.name.clone()?,
                    ))
                });
            endpoints.push(SliceEndpoint { addresses, pod });
        }
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            let Some(n) = p.port else { continue };
            ports.push(ContainerPort {
                name: p.name.clone(),
                port: port_number(n, &format!("ports[{i}].port")).map_err(&fail)?,
                protocol: protocol_field(p.protocol.as_deref(), &format!("ports[{i}].protocol"))
                    .map_err(&fail)?,
            });
        }
        Ok(EndpointSlice {
            namespace,
            name,
            service,
            endpoints,
            ports,
        })
    }
}
