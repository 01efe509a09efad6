//! Builders of the real k8s-openapi objects tests put on the Kubernetes API
//! double, in manifests or straight into a cluster state.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
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

/// An owner reference with `controller: true`.
fn controller_ref(api_version: &str, kind: &str, name: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name,
            "uid": format!("uid-{kind}-{name}"), "controller": true}])
}

/// A pod controlled by `owner` (`(apiVersion, kind, name)`), labelled `pairs`.
pub fn owned_pod(
    namespace: &str,
    name: &str,
    pairs: &[(&str, &str)],
    ip: &str,
    owner: (&str, &str, &str),
) -> Pod {
    let mut value = serde_json::to_value(pod(namespace, name, pairs, ip)).expect("pod");
    value["metadata"]["ownerReferences"] = controller_ref(owner.0, owner.1, owner.2);
    typed(value)
}

/// A Deployment's ReplicaSet (`owner`: the Deployment's name, or None).
pub fn replica_set(namespace: &str, name: &str, owner: Option<&str>) -> ReplicaSet {
    let mut value = json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}},
    });
    if let Some(owner) = owner {
        value["metadata"]["ownerReferences"] = controller_ref("apps/v1", "Deployment", owner);
    }
    typed(value)
}

/// A Deployment (served by the double as a real API server does; never watched).
pub fn deployment(namespace: &str, name: &str) -> Deployment {
    typed(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "app"}]}}},
    }))
}

/// A Job (`owner`: its CronJob's name, or None).
pub fn job(namespace: &str, name: &str, owner: Option<&str>) -> Job {
    let mut value = json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app"}],
                                       "restartPolicy": "Never"}}},
    });
    if let Some(owner) = owner {
        value["metadata"]["ownerReferences"] = controller_ref("batch/v1", "CronJob", owner);
    }
    typed(value)
}
