//! Builders of the real k8s-openapi objects tests put on the Kubernetes API
//! double, in manifests or straight into a cluster state.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object is a valid k8s-openapi object")
}

/// Namespace `name` with these labels.
pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    typed(json!({"metadata": {"name": name, "labels": labels(pairs)}}))
}

/// A running pod on `node-a` with these labels and IP, serving TCP 8080
/// (port name `http`).
pub fn pod(namespace: &str, name: &str, pairs: &[(&str, &str)], ip: &str) -> Pod {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels(pairs)},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"},
    }))
}

/// A policy selecting `app=<target>` pods that allows ingress on TCP `port` only
/// from `app=<from>` pods of the same namespace.
pub fn allow_from(
    namespace: &str,
    name: &str,
    target: &str,
    from: &str,
    port: u16,
) -> NetworkPolicy {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": target}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}}],
                         "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }))
}

/// A policy denying all ingress to every pod of the namespace.
pub fn deny_all(namespace: &str, name: &str) -> NetworkPolicy {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
}

/// A policy allowing egress to an ipBlock (`cidr` may be invalid, for tests of
/// rejected objects).
pub fn egress_cidr(namespace: &str, name: &str, cidr: &str) -> NetworkPolicy {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]},
    }))
}

/// A ClusterIP Service selecting `app=<app>`, port 80 to target port `http`.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, app: &str) -> Service {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "selector": {"app": app},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }))
}

/// The EndpointSlice of Service `service` with one endpoint, pod `pod` at
/// `ip`, port 8080.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    pod: &str,
    ip: &str,
) -> EndpointSlice {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
}

/// Node `name` with this internal IP.
pub fn node(name: &str, ip: &str) -> Node {
    typed(json!({
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }))
}
