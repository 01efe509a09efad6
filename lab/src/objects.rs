//! The lab's cluster objects: reading manifests, keeping them as the source of
//! truth (merging applied objects by kind, namespace and name), reading and
//! setting pod IPs, adding the cluster DNS's objects, and building the policy
//! engine's state.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use netverdict_policy::manifest::K8sObject;
use netverdict_policy::{ClusterState, LoadErrors, LoadOptions, Manifests};

use crate::lab::NODE_IP;

/// Errors of the cluster objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Manifests could not be read, or objects are invalid (each error names its
    /// file, document and field).
    #[error("invalid manifests:\n{0}")]
    Invalid(LoadErrors),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads manifests into objects, failing with every error.
pub fn read_objects<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<K8sObject>> {
    let manifests = Manifests::read_paths(paths);
    if !manifests.errors.is_empty() {
        return Err(Error::Invalid(LoadErrors(manifests.errors)));
    }
    Ok(manifests.objects.into_iter().map(|o| o.object).collect())
}

/// Reads objects from YAML or JSON text (one or more documents, `List`s).
pub fn parse_objects(text: &str) -> Result<Vec<K8sObject>> {
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("<text>"), text);
    if !manifests.errors.is_empty() {
        return Err(Error::Invalid(LoadErrors(manifests.errors)));
    }
    Ok(manifests.objects.into_iter().map(|o| o.object).collect())
}

pub(crate) fn object_id(o: &K8sObject) -> (&'static str, String, String) {
    let (meta, namespaced) = (o.metadata(), o.is_namespaced());
    let ns = if namespaced {
        meta.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    (o.kind(), ns, meta.name.clone().unwrap_or_default())
}

pub(crate) fn object_value(o: &K8sObject) -> serde_json::Value {
    o.to_json().unwrap_or(serde_json::Value::Null)
}

pub(crate) fn objects_from_values(
    values: &[serde_json::Value],
    path: &Path,
) -> Result<Vec<K8sObject>> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values});
    let mut manifests = Manifests::default();
    manifests.read_str(path, &list.to_string());
    if !manifests.errors.is_empty() {
        return Err(Error::Invalid(LoadErrors(manifests.errors)));
    }
    Ok(manifests.objects.into_iter().map(|o| o.object).collect())
}

/// Adds or replaces objects by kind, namespace and name.
pub(crate) fn merge(objects: &mut Vec<K8sObject>, new: Vec<K8sObject>) {
    for o in new {
        let id = object_id(&o);
        match objects.iter().position(|x| object_id(x) == id) {
            Some(i) => objects[i] = o,
            None => objects.push(o),
        }
    }
}

pub(crate) fn pod_ipv4(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Ipv4Addr> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .iter()
        .chain(status.pod_ips.iter().flatten().map(|p| &p.ip))
        .find_map(|s| s.parse::<Ipv4Addr>().ok())
}

pub(crate) fn host_network(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

pub(crate) fn set_pod_ip(pod: &mut k8s_openapi::api::core::v1::Pod, ip: Ipv4Addr) {
    let status = pod.status.get_or_insert_with(Default::default);
    status.pod_ip = Some(ip.to_string());
    status.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
        ip: ip.to_string(),
    }]);
}

/// The node a pod names in `spec.nodeName`.
pub(crate) fn pod_node_name(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Sets a pod's `spec.nodeName`.
pub(crate) fn set_pod_node_name(pod: &mut k8s_openapi::api::core::v1::Pod, node: &str) {
    pod.spec.get_or_insert_with(Default::default).node_name = Some(node.to_string());
}

/// A Node object: its name and its address as InternalIP.
pub(crate) fn node_object(name: &str, ip: IpAddr) -> K8sObject {
    K8sObject::Node(Box::new(from_json(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip.to_string()},
            {"type": "Hostname", "address": name}
        ]}
    }))))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("the lab's built-in objects are valid")
}

/// Adds a kube-dns pod and Service to kube-system when the objects have none;
/// returns the kube-dns pod id (`namespace/name`).
pub(crate) fn ensure_dns_objects(objects: &mut Vec<K8sObject>) -> String {
    let is_dns_pod = |o: &K8sObject| match o {
        K8sObject::Pod(p) => {
            p.metadata.namespace.as_deref() == Some("kube-system")
                && p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("k8s-app"))
                    .map(String::as_str)
                    == Some("kube-dns")
                && !host_network(p)
        }
        _ => false,
    };
    let pod_id = match objects.iter().find(|o| is_dns_pod(o)) {
        Some(o) => {
            let id = object_id(o);
            format!("{}/{}", id.1, id.2)
        }
        None => {
            objects.push(K8sObject::Pod(Box::new(from_json(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns"}},
                "spec": {"containers": [{"name": "dnsmasq", "image": "dnsmasq",
                    "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                              {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}
            })))));
            "kube-system/kube-dns".to_string()
        }
    };
    let has_ns = objects
        .iter()
        .any(|o| matches!(o, K8sObject::Namespace(n) if n.metadata.name.as_deref() == Some("kube-system")));
    if !has_ns {
        objects.push(K8sObject::Namespace(Box::new(from_json(
            serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "kube-system",
                             "labels": {"kubernetes.io/metadata.name": "kube-system"}}
            }),
        ))));
    }
    let has_svc = objects.iter().any(|o| {
        let id = object_id(o);
        id.0 == "Service" && id.1 == "kube-system" && id.2 == "kube-dns"
    });
    if !has_svc {
        let used: BTreeSet<String> = objects
            .iter()
            .filter_map(|o| match o {
                K8sObject::Service(s) => s.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
                _ => None,
            })
            .collect();
        let ip = (10..=250u8)
            .map(|i| format!("10.96.0.{i}"))
            .find(|ip| !used.contains(ip))
            .unwrap_or_else(|| "10.96.0.251".into());
        objects.push(K8sObject::Service(Box::new(from_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": ip, "selector": {"k8s-app": "kube-dns"},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}
        })))));
    }
    pod_id
}

pub(crate) fn build_cluster(objects: &[K8sObject]) -> Result<ClusterState> {
    let mut manifests = Manifests::default();
    for o in objects {
        manifests
            .objects
            .push(netverdict_policy::manifest::SourcedObject {
                origin: netverdict_policy::error::Origin {
                    path: PathBuf::from("<lab>"),
                    document: 0,
                },
                object: o.clone(),
            });
    }
    let (mut cluster, errors) = ClusterState::from_manifests(
        manifests,
        &LoadOptions {
            require_pod_ips: true,
        },
    );
    if !errors.is_empty() {
        return Err(Error::Invalid(LoadErrors(errors)));
    }
    cluster.set_local_node_ips([IpAddr::V4(NODE_IP)]);
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_policies_are_read_and_reach_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anp.yaml");
        std::fs::write(
            &path,
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
             metadata: {name: deny-tenant}\nspec: {priority: 1, subject: {namespaces: {}}}\n",
        )
        .unwrap();
        let objects = read_objects(&[&path]).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].kind(), "AdminNetworkPolicy");
        assert_eq!(object_id(&objects[0]).1, "", "cluster-scoped");
        let cluster = build_cluster(&objects).unwrap();
        assert_eq!(cluster.admin_policy_count(), 1);
    }

    #[test]
    fn an_invalid_admin_policy_is_an_error_naming_the_object_and_field() {
        let error = parse_objects(
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
             metadata: {name: no-priority}\nspec: {subject: {namespaces: {}}}\n",
        )
        .and_then(|objects| build_cluster(&objects).map(|_| ()))
        .unwrap_err()
        .to_string();
        assert!(error.contains("AdminNetworkPolicy no-priority"), "{error}");
        assert!(error.contains("spec.priority"), "{error}");
    }

    /// Pods made with owner references keep them through the lab's saved
    /// state, with their ReplicaSet: the lab's cluster names their workload.
    #[test]
    fn owned_pods_and_their_replica_sets_survive_the_saved_state() {
        let objects = parse_objects(
            r#"
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-7d9f
    namespace: shop
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u1, controller: true}]
  spec: {selector: {matchLabels: {app: web}}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d9f-a
    namespace: shop
    labels: {app: web, pod-template-hash: 7d9f}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f, uid: u2, controller: true}]
  spec: {containers: [{name: c, image: i}]}
  status: {podIP: 10.244.5.1}
"#,
        )
        .expect("valid objects");
        let saved: Vec<serde_json::Value> = objects.iter().map(object_value).collect();
        let restored = objects_from_values(&saved, Path::new("state.json")).expect("restored");
        let cluster = build_cluster(&restored).expect("cluster");
        let pod = cluster
            .pod(&netverdict_policy::PodKey::new("shop", "web-7d9f-a"))
            .expect("pod")
            .clone();
        assert_eq!(
            netverdict_policy::model::workload_name(cluster.workload_of(&pod).as_deref(), &pod.key),
            "Deployment/web"
        );
        assert_eq!(object_id(&restored[0]).0, "ReplicaSet");
    }
}
