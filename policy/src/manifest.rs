//! Reading Kubernetes manifests: YAML or JSON files and directories,
//! multi-document YAML and `kind: List` (what `kubectl get ... -o yaml` prints),
//! into the k8s-openapi objects (and the [`crd`](crate::crd) custom resources)
//! the cluster state is built from.
//!
//! Reading only parses; validation happens when an object is applied to the
//! state. Kinds the engine does not use (Deployment, ConfigMap...) are counted and
//! skipped (ReplicaSets and Jobs are read: their owner references name their
//! pods' workloads); a document that is not a Kubernetes object is an error.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::crd;
use crate::error::{LoadError, Origin};

/// A Kubernetes object of a kind the engine uses (boxed: they are large).
#[derive(Clone, Debug)]
pub enum K8sObject {
    Namespace(Box<core::Namespace>),
    Pod(Box<core::Pod>),
    NetworkPolicy(Box<net::NetworkPolicy>),
    Service(Box<core::Service>),
    EndpointSlice(Box<discovery::EndpointSlice>),
    Node(Box<core::Node>),
    /// Kept for the owner references of its pods (a Deployment's ReplicaSet).
    ReplicaSet(Box<apps::ReplicaSet>),
    /// Kept for the owner references of its pods (a CronJob's Job).
    Job(Box<batch::Job>),
    AdminNetworkPolicy(Box<crd::AdminNetworkPolicy>),
    BaselineAdminNetworkPolicy(Box<crd::BaselineAdminNetworkPolicy>),
    ClusterNetworkPolicy(Box<crd::ClusterNetworkPolicy>),
}

impl K8sObject {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            K8sObject::Namespace(_) => "Namespace",
            K8sObject::Pod(_) => "Pod",
            K8sObject::NetworkPolicy(_) => "NetworkPolicy",
            K8sObject::Service(_) => "Service",
            K8sObject::EndpointSlice(_) => "EndpointSlice",
            K8sObject::Node(_) => "Node",
            K8sObject::ReplicaSet(_) => "ReplicaSet",
            K8sObject::Job(_) => "Job",
            K8sObject::AdminNetworkPolicy(_) => "AdminNetworkPolicy",
            K8sObject::BaselineAdminNetworkPolicy(_) => "BaselineAdminNetworkPolicy",
            K8sObject::ClusterNetworkPolicy(_) => "ClusterNetworkPolicy",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            K8sObject::Namespace(o) => &o.metadata,
            K8sObject::Pod(o) => &o.metadata,
            K8sObject::NetworkPolicy(o) => &o.metadata,
            K8sObject::Service(o) => &o.metadata,
            K8sObject::EndpointSlice(o) => &o.metadata,
            K8sObject::Node(o) => &o.metadata,
            K8sObject::ReplicaSet(o) => &o.metadata,
            K8sObject::Job(o) => &o.metadata,
            K8sObject::AdminNetworkPolicy(o) => &o.metadata,
            K8sObject::BaselineAdminNetworkPolicy(o) => &o.metadata,
            K8sObject::ClusterNetworkPolicy(o) => &o.metadata,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(&self) -> bool {
        match self {
            K8sObject::Pod(_)
            | K8sObject::NetworkPolicy(_)
            | K8sObject::Service(_)
            | K8sObject::EndpointSlice(_)
            | K8sObject::ReplicaSet(_)
            | K8sObject::Job(_) => true,
            K8sObject::Namespace(_)
            | K8sObject::Node(_)
            | K8sObject::AdminNetworkPolicy(_)
            | K8sObject::BaselineAdminNetworkPolicy(_)
            | K8sObject::ClusterNetworkPolicy(_) => false,
        }
    }

    /// Whether the object is a cluster-scoped admin policy (AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy or ClusterNetworkPolicy).
    pub fn is_admin_policy(&self) -> bool {
        matches!(
            self,
            K8sObject::AdminNetworkPolicy(_)
                | K8sObject::BaselineAdminNetworkPolicy(_)
                | K8sObject::ClusterNetworkPolicy(_)
        )
    }

    /// The object as JSON (as the API serves it).
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            K8sObject::Namespace(o) => serde_json::to_value(o),
            K8sObject::Pod(o) => serde_json::to_value(o),
            K8sObject::NetworkPolicy(o) => serde_json::to_value(o),
            K8sObject::Service(o) => serde_json::to_value(o),
            K8sObject::EndpointSlice(o) => serde_json::to_value(o),
            K8sObject::Node(o) => serde_json::to_value(o),
            K8sObject::ReplicaSet(o) => serde_json::to_value(o),
            K8sObject::Job(o) => serde_json::to_value(o),
            K8sObject::AdminNetworkPolicy(o) => serde_json::to_value(o),
            K8sObject::BaselineAdminNetworkPolicy(o) => serde_json::to_value(o),
            K8sObject::ClusterNetworkPolicy(o) => serde_json::to_value(o),
        }
    }
}

/// An object and the document it came from.
#[derive(Clone, Debug)]
pub struct SourcedObject {
    pub origin: Origin,
    pub object: K8sObject,
}

/// What reading manifests produced.
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<SourcedObject>,
    /// Objects of kinds the engine does not use, by kind, with their count.
    pub ignored: Vec<(String, usize)>,
    /// Documents that could not be read (the rest was still read).
    pub errors: Vec<LoadError>,
}

impl Manifests {
    /// Reads every path: a file, a directory (its `.yaml`, `.yml` and `.json`
    /// files, recursively, in name order) or `-` for standard input.
    pub fn read_paths<P: AsRef<Path>>(paths: &[P]) -> Manifests {
        let mut out = Manifests::default();
        for path in paths {
            out.read_path(path.as_ref());
        }
        out
    }

    /// Reads one file or directory.
    pub fn read_path(&mut self, path: &Path) {
        if path == Path::new("-") {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => self.read_str(path, &text),
                Err(source) => self.errors.push(LoadError::Read {
                    path: path.to_path_buf(),
                    source,
                }),
            }
            return;
        }
        match manifest_files(path) {
            Ok(files) => {
                for file in files {
                    match std::fs::read_to_string(&file) {
                        Ok(text) => self.read_str(&file, &text),
                        Err(source) => self.errors.push(LoadError::Read { path: file, source }),
                    }
                }
            }
            Err(source) => self.errors.push(LoadError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads the text of one file (YAML, possibly multi-document, or JSON).
    pub fn read_str(&mut self, path: &Path, text: &str) {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let origin = Origin {
                path: path.to_path_buf(),
                document: i + 1,
            };
            match serde_json::Value::deserialize(doc) {
                Ok(serde_json::Value::Null) => {}
                Ok(value) => self.read_value(&origin, value, None),
                Err(e) => {
                    self.errors.push(LoadError::Syntax {
                        origin,
                        message: e.to_string(),
                    });
                    // The YAML stream cannot be resynchronised after a syntax error.
                    break;
                }
            }
        }
    }

    fn read_value(&mut self, origin: &Origin, value: serde_json::Value, item: Option<usize>) {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let prefix = item.map(|i| format!("items[{i}].")).unwrap_or_default();
        let shape_error =
            |field: String, message: String, value: &serde_json::Value| LoadError::Shape {
                origin: origin.clone(),
                object: describe(&kind, value),
                field,
                message,
            };
        if kind.is_empty() {
            let err = shape_error(
                format!("{prefix}kind"),
                "missing: not a Kubernetes object".into(),
                &value,
            );
            self.errors.push(err);
            return;
        }
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            match value.get("items") {
                Some(serde_json::Value::Array(items)) => {
                    for (i, item_value) in items.iter().enumerate() {
                        self.read_value(origin, item_value.clone(), Some(i));
                    }
                }
                Some(serde_json::Value::Null) | None => {}
                Some(_) => {
                    let err =
                        shape_error(format!("{prefix}items"), "must be a list".into(), &value);
                    self.errors.push(err);
                }
            }
            return;
        }
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let object = match (group, kind.as_str()) {
            ("", "Namespace") => typed(&value).map(K8sObject::Namespace),
            ("", "Pod") => typed(&value).map(K8sObject::Pod),
            ("", "Service") => typed(&value).map(K8sObject::Service),
            ("", "Node") => typed(&value).map(K8sObject::Node),
            ("networking.k8s.io", "NetworkPolicy") => typed(&value).map(K8sObject::NetworkPolicy),
            ("discovery.k8s.io", "EndpointSlice") => typed(&value).map(K8sObject::EndpointSlice),
            ("apps", "ReplicaSet") => typed(&value).map(K8sObject::ReplicaSet),
            ("batch", "Job") => typed(&value).map(K8sObject::Job),
            (crd::GROUP, "AdminNetworkPolicy") if api_version.ends_with("/v1alpha1") => {
                typed(&value).map(K8sObject::AdminNetworkPolicy)
            }
            (crd::GROUP, "BaselineAdminNetworkPolicy") if api_version.ends_with("/v1alpha1") => {
                typed(&value).map(K8sObject::BaselineAdminNetworkPolicy)
            }
            (crd::GROUP, "ClusterNetworkPolicy") if api_version.ends_with("/v1alpha2") => {
                typed(&value).map(K8sObject::ClusterNetworkPolicy)
            }
            (
                crd::GROUP,
                "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" | "ClusterNetworkPolicy",
            ) => Err((
                "apiVersion".to_string(),
                format!(
                    "unsupported version {api_version:?} (netverdict reads v1alpha1 AdminNetworkPolicy and \
                     BaselineAdminNetworkPolicy, and v1alpha2 ClusterNetworkPolicy)"
                ),
            )),
            _ => {
                match self.ignored.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => self.ignored.push((kind.clone(), 1)),
                }
                return;
            }
        };
        match object {
            Ok(object) => self.objects.push(SourcedObject {
                origin: origin.clone(),
                object,
            }),
            Err((path, message)) => {
                let err = shape_error(format!("{prefix}{path}"), message, &value);
                self.errors.push(err);
            }
        }
    }
}

/// Deserializes a k8s-openapi object, returning the path of the field at fault.
fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<Box<T>, (String, String)> {
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|e| {
            let path = e.path().to_string();
            (
                if path == "." {
                    "(object)".to_string()
                } else {
                    path
                },
                e.into_inner().to_string(),
            )
        })
}

/// `Kind namespace/name` from a raw object, as far as it can be read.
fn describe(kind: &str, value: &serde_json::Value) -> String {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>");
    let kind = if kind.is_empty() { "object" } else { kind };
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The manifest files of a path: itself if it is a file, else its YAML/JSON files.
fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(manifest_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(out)
}
