//! Field validation shared by the model's conversions: object names and
//! namespaces, labels, IPs, CIDRs, port numbers and names, protocols. Each
//! check returns a [`FieldError`] naming the field; [`named`] turns it into an
//! error naming the object.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ports::Protocol;
use crate::error::{FieldError, ObjectError};

/// The namespace used for namespaced objects that do not say theirs.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses a protocol as the API writes it (`TCP`), or absent as TCP.
pub(crate) fn protocol_field(value: Option<&str>, field: &str) -> Result<Protocol, FieldError> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(v) => Protocol::from_str(v)
            .ok()
            .filter(|p| p.has_ports())
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!("unknown protocol {v:?} (expected TCP, UDP or SCTP)"),
                )
            }),
    }
}

/// The namespace and name of a namespaced object, and the function that turns a
/// field error into an error naming the object (`Kind namespace/name`). A
/// missing name is itself an error.
pub(crate) fn named(
    kind: &str,
    meta: &ObjectMeta,
) -> Result<(String, String, impl Fn(FieldError) -> ObjectError + use<>), ObjectError> {
    let namespace = namespace_of(meta);
    let name = meta.name.clone().unwrap_or_default();
    let object = format!("{kind} {namespace}/{name}");
    if name.is_empty() {
        return Err(ObjectError {
            object,
            error: FieldError::new("metadata.name", "missing"),
        });
    }
    Ok((namespace, name, move |error| ObjectError {
        object: object.clone(),
        error,
    }))
}

pub(crate) fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

pub(crate) fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for key in labels.keys() {
        crate::selector::validate_label_key(key, "metadata.labels")?;
    }
    Ok(())
}

pub(crate) fn parse_ip(s: &str, field: &str) -> Result<IpAddr, FieldError> {
    s.parse()
        .map_err(|_| FieldError::new(field, format!("invalid IP address {s:?}")))
}

pub(crate) fn parse_cidr(s: &str, field: &str) -> Result<IpNet, FieldError> {
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .map_err(|_| FieldError::new(field, format!("invalid CIDR {s:?}")))
}

pub(crate) fn port_number(n: i32, field: &str) -> Result<u16, FieldError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| FieldError::new(field, format!("port {n} is outside 1-65535")))
}

/// A port name is an IANA service name: at most 15 lowercase letters, digits and
/// hyphens, with at least one letter, no leading/trailing or double hyphen.
pub(crate) fn validate_port_name(name: &str, field: &str) -> Result<(), FieldError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{name:?} is neither a port number nor a valid port name"),
        ))
    }
}
