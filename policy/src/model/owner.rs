//! Who runs a pod: its controller (the owner reference with `controller:
//! true`), followed through the intermediate controllers Kubernetes creates
//! (a Deployment's ReplicaSets, a CronJob's Jobs) to the workload a person
//! deployed. Policy verdicts never depend on it; reports group pods by it.
//!
//! A pod's workload, as `Kind/name` ([`workload_name`]):
//!
//! | the pod's controller | its workload |
//! | --- | --- |
//! | ReplicaSet `web-7d9f` owned by Deployment `web` | `Deployment/web` |
//! | ReplicaSet `web-7d9f` with no controller, or not known | `ReplicaSet/web-7d9f` |
//! | Job `backup-2890` owned by CronJob `backup` | `CronJob/backup` |
//! | Job `once` with no controller, or not known | `Job/once` |
//! | StatefulSet `db`, DaemonSet `agent`, or any other controller | `StatefulSet/db`, `DaemonSet/agent`... |
//! | none (a bare pod) | `Pod/<its name>` |
//!
//! The ReplicaSets and Jobs are [`Controller`]s the cluster state keeps (the
//! sources watch them); Deployments, CronJobs, StatefulSets and DaemonSets are
//! never read: the owner references name them.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::keys::PodKey;
use super::validate::named;
use crate::error::{FieldError, ObjectError};

/// An object controlling another (the owner reference with `controller:
/// true`): its API group, kind and name, in the namespace of what it controls.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Owner {
    /// The API group ("" for the core group): `apps` for a ReplicaSet.
    pub group: String,
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Owner {
    /// `Kind/name`, e.g. `Deployment/web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Owner {
    /// The controller among an object's owner references (None when no
    /// reference has `controller: true`). Two controllers, or one without a
    /// kind or name, is an error naming the reference.
    pub(crate) fn controller_of(meta: &ObjectMeta) -> Result<Option<Owner>, FieldError> {
        let mut found: Option<Owner> = None;
        for (i, r) in meta.owner_references.iter().flatten().enumerate() {
            if r.controller != Some(true) {
                continue;
            }
            let field = format!("metadata.ownerReferences[{i}]");
            if found.is_some() {
                return Err(FieldError::new(
                    format!("{field}.controller"),
                    "a second controller (an object has at most one)",
                ));
            }
            if r.kind.is_empty() {
                return Err(FieldError::new(format!("{field}.kind"), "missing"));
            }
            if r.name.is_empty() {
                return Err(FieldError::new(format!("{field}.name"), "missing"));
            }
            let group = match r.api_version.split_once('/') {
                Some((group, _)) => group.to_string(),
                None => String::new(),
            };
            found = Some(Owner {
                group,
                kind: r.kind.clone(),
                name: r.name.clone(),
            });
        }
        Ok(found)
    }

    /// The kind of intermediate controller this owner is, if it is one.
    pub fn intermediate(&self) -> Option<ControllerKind> {
        match (self.group.as_str(), self.kind.as_str()) {
            ("apps", "ReplicaSet") => Some(ControllerKind::ReplicaSet),
            ("batch", "Job") => Some(ControllerKind::Job),
            _ => None,
        }
    }
}

/// The kinds of intermediate controllers the state keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ControllerKind {
    /// apps/v1 ReplicaSet (a Deployment's).
    ReplicaSet,
    /// batch/v1 Job (a CronJob's).
    Job,
}

impl ControllerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerKind::ReplicaSet => "ReplicaSet",
            ControllerKind::Job => "Job",
        }
    }
}

/// A ReplicaSet or a Job as the state keeps it: only its own controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Controller {
    pub kind: ControllerKind,
    pub namespace: String,
    pub name: String,
    /// Its controller (a Deployment, a CronJob), if it has one.
    pub owner: Option<Arc<Owner>>,
}

impl Controller {
    fn from_meta(kind: ControllerKind, meta: &ObjectMeta) -> Result<Self, ObjectError> {
        let (namespace, name, fail) = named(kind.as_str(), meta)?;
        let owner = Owner::controller_of(meta).map_err(fail)?;
        Ok(Controller {
            kind,
            namespace,
            name,
            owner: owner.map(Arc::new),
        })
    }

    pub fn from_replica_set(rs: &apps::ReplicaSet) -> Result<Self, ObjectError> {
        Controller::from_meta(ControllerKind::ReplicaSet, &rs.metadata)
    }

    pub fn from_job(job: &batch::Job) -> Result<Self, ObjectError> {
        Controller::from_meta(ControllerKind::Job, &job.metadata)
    }
}

/// A pod's workload as `Kind/name` (see the module documentation), from its
/// resolved top-level owner ([`ClusterState::workload_of`]): the owner, or
/// `Pod/<name>` for a pod nothing controls. The one definition of what
/// `Endpoint.workload` holds.
///
/// [`ClusterState::workload_of`]: crate::ClusterState::workload_of
pub fn workload_name(owner: Option<&Owner>, pod: &PodKey) -> String {
    match owner {
        Some(owner) => owner.to_string(),
        None => format!("Pod/{}", pod.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(refs: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({"name": "x", "namespace": "ns", "ownerReferences": refs}))
            .expect("meta")
    }

    fn reference(api_version: &str, kind: &str, name: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u",
               "controller": controller})
    }

    #[test]
    fn the_controller_is_the_reference_marked_so() {
        let m = meta(json!([
            reference("v1", "ConfigMap", "c", false),
            reference("apps/v1", "ReplicaSet", "web-1", true),
        ]));
        let owner = Owner::controller_of(&m)
            .expect("valid")
            .expect("a controller");
        assert_eq!(owner.to_string(), "ReplicaSet/web-1");
        assert_eq!(owner.intermediate(), Some(ControllerKind::ReplicaSet));
        let none = meta(json!([reference("v1", "ConfigMap", "c", false)]));
        assert_eq!(Owner::controller_of(&none), Ok(None));
    }

    #[test]
    fn two_controllers_are_an_error_naming_the_second() {
        let m = meta(json!([
            reference("apps/v1", "ReplicaSet", "a", true),
            reference("apps/v1", "ReplicaSet", "b", true),
        ]));
        let error = Owner::controller_of(&m).expect_err("two controllers");
        assert_eq!(error.field, "metadata.ownerReferences[1].controller");
    }

    #[test]
    fn only_apps_replicasets_and_batch_jobs_are_intermediate() {
        let owner = |group: &str, kind: &str| Owner {
            group: group.into(),
            kind: kind.into(),
            name: "n".into(),
        };
        assert_eq!(
            owner("batch", "Job").intermediate(),
            Some(ControllerKind::Job)
        );
        assert_eq!(owner("example.com", "ReplicaSet").intermediate(), None);
        assert_eq!(owner("apps", "StatefulSet").intermediate(), None);
    }

    #[test]
    fn a_pod_without_a_controller_is_its_own_workload() {
        let key = PodKey::new("ns", "debug");
        assert_eq!(workload_name(None, &key), "Pod/debug");
        let owner = Owner {
            group: "apps".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
        };
        assert_eq!(workload_name(Some(&owner), &key), "DaemonSet/agent");
    }
}
