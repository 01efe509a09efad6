//! Applying objects to the cluster state the same way for every source.
//!
//! The tracker remembers, per kind, which objects a source has given the state
//! and in which version, so that:
//!
//! - a complete list (a watch's initial list or re-list, a manifest reload)
//!   is applied as a diff against what the source had: new and changed objects
//!   are applied, unchanged ones skipped, and objects the new list no longer
//!   holds are deleted — the state ends up exactly equal to the list whatever
//!   events were missed in between (a watch gap, `410 Gone`);
//! - an object the engine rejects is logged with its field, counted, listed
//!   among the invalid objects, and its previous version is **removed** from the
//!   state.
//!
//! Why remove rather than keep the last valid version: the cluster no longer
//! holds that version, so keeping it would make verdicts silently describe a
//! policy (or pod, or namespace labels) that no longer exists, whereas a removed
//! object is visible in the invalid-object list and its counter, and the state
//! stays a subset of the cluster's truth. (The API server validates
//! NetworkPolicies itself, so an object the engine rejects is rare: typically a
//! field the engine does not understand yet.)
//!
//! A version is the object's `metadata.resourceVersion` for the Kubernetes source
//! (the API server changes it on every write) and the object's content for
//! manifests (files copied from `kubectl get -o yaml` keep a stale one).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netverdict_policy::model;
use netverdict_policy::{ClusterState, K8sObject, ObjectError, ObjectKind};

use crate::metrics::SourceMetrics;
use crate::{KINDS, kind_index, kind_name};

/// Which object of the state: kind, namespace (empty for cluster-scoped kinds)
/// and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The reference of an object.
    pub fn of(object: &K8sObject) -> ObjectRef {
        let meta = meta(object);
        ObjectRef {
            kind: kind_of(object),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", kind_name(self.kind), self.name)
        } else {
            write!(
                f,
                "{} {}/{}",
                kind_name(self.kind),
                self.namespace,
                self.name
            )
        }
    }
}

/// The metadata of an object.
pub(crate) fn meta(object: &K8sObject) -> &ObjectMeta {
    object.metadata()
}

/// The kind of an object.
pub(crate) fn kind_of(object: &K8sObject) -> ObjectKind {
    match object {
        K8sObject::Namespace(_) => ObjectKind::Namespace,
        K8sObject::Pod(_) => ObjectKind::Pod,
        K8sObject::NetworkPolicy(_) => ObjectKind::NetworkPolicy,
        K8sObject::Service(_) => ObjectKind::Service,
        K8sObject::EndpointSlice(_) => ObjectKind::EndpointSlice,
        K8sObject::Node(_) => ObjectKind::Node,
        K8sObject::ReplicaSet(_) => ObjectKind::ReplicaSet,
        K8sObject::Job(_) => ObjectKind::Job,
        K8sObject::AdminNetworkPolicy(_) => ObjectKind::AdminNetworkPolicy,
        K8sObject::BaselineAdminNetworkPolicy(_) => ObjectKind::BaselineAdminNetworkPolicy,
        K8sObject::ClusterNetworkPolicy(_) => ObjectKind::ClusterNetworkPolicy,
    }
}

/// Checks an object as the engine will when it is applied, without a state
/// (`require_pod_ips` rejects pods without an IP, as manifests must have one).
pub(crate) fn validate(object: &K8sObject, require_pod_ips: bool) -> Result<(), ObjectError> {
    match object {
        K8sObject::Namespace(o) => model::Namespace::from_k8s(o).map(drop),
        K8sObject::Pod(o) => model::Pod::from_k8s(o, require_pod_ips).map(drop),
        K8sObject::NetworkPolicy(o) => model::NetworkPolicy::from_k8s(o).map(drop),
        K8sObject::Service(o) => model::Service::from_k8s(o).map(drop),
        K8sObject::EndpointSlice(o) => model::EndpointSlice::from_k8s(o).map(drop),
        K8sObject::Node(o) => model::Node::from_k8s(o).map(drop),
        K8sObject::ReplicaSet(o) => model::Controller::from_replica_set(o).map(drop),
        K8sObject::Job(o) => model::Controller::from_job(o).map(drop),
        K8sObject::AdminNetworkPolicy(o) => model::AdminPolicy::from_anp(o).map(drop),
        K8sObject::BaselineAdminNetworkPolicy(o) => model::AdminPolicy::from_banp(o).map(drop),
        K8sObject::ClusterNetworkPolicy(o) => model::AdminPolicy::from_cnp(o).map(drop),
    }
}

/// How the tracker tells versions of an object apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Versioning {
    /// `metadata.resourceVersion` (the content when it is missing).
    ResourceVersion,
    /// The object's whole content.
    Content,
}

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Added or replaced in the state.
    Changed,
    /// The same version as the state already had: nothing to do.
    Unchanged,
    /// The engine rejected it (any previous version was removed).
    Rejected,
}

/// What applying a complete list did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListOutcome {
    /// Objects added or changed.
    pub applied: usize,
    /// Objects already in the state in the same version.
    pub unchanged: usize,
    /// Objects removed because the list no longer holds them.
    pub deleted: usize,
    /// Objects the engine rejected.
    pub rejected: usize,
}

#[derive(Debug)]
struct Known {
    version: String,
    valid: bool,
}

#[derive(Debug, Default)]
struct KindState {
    known: HashMap<(String, String), Known>,
    /// The objects of a list in progress (Init..InitDone), if one is.
    pending: Option<Vec<K8sObject>>,
}

/// What one source gave the state, per kind (see the module documentation).
#[derive(Debug)]
pub(crate) struct Tracker {
    versioning: Versioning,
    metrics: Arc<SourceMetrics>,
    kinds: [KindState; KINDS.len()],
}

impl Tracker {
    pub(crate) fn new(versioning: Versioning, metrics: Arc<SourceMetrics>) -> Self {
        Tracker {
            versioning,
            metrics,
            kinds: Default::default(),
        }
    }

    fn version(&self, object: &K8sObject) -> String {
        if self.versioning == Versioning::ResourceVersion
            && let Some(rv) = meta(object).resource_version.as_deref()
            && !rv.is_empty()
        {
            return format!("rv:{rv}");
        }
        let json = object.to_json().map(|v| v.to_string());
        // k8s-openapi objects always serialize; an error would only make the
        // object look changed, which is harmless.
        format!("json:{}", json.unwrap_or_default())
    }

    /// The counters this tracker updates.
    pub(crate) fn metrics(&self) -> &Arc<SourceMetrics> {
        &self.metrics
    }

    /// Adds or replaces one object. An invalid object is reported (log, counter,
    /// list of invalid objects) and its previous version is removed from the
    /// state (see the module documentation for why).
    pub(crate) fn apply(&mut self, state: &mut ClusterState, object: &K8sObject) -> Applied {
        let r = ObjectRef::of(object);
        let version = self.version(object);
        let kind = &mut self.kinds[kind_index(r.kind)];
        let key = (r.namespace.clone(), r.name.clone());
        let previous = kind.known.get(&key);
        if previous.is_some_and(|p| p.version == version) {
            return Applied::Unchanged;
        }
        let was_valid = previous.is_some_and(|p| p.valid);
        match state.apply(object) {
            Ok(()) => {
                if previous.is_some_and(|p| !p.valid) {
                    self.metrics.cleared(r.kind, &r.namespace, &r.name);
                }
                kind.known.insert(
                    key,
                    Known {
                        version,
                        valid: true,
                    },
                );
                self.metrics.applied(r.kind);
                tracing::debug!(kind = kind_name(r.kind), namespace = %r.namespace, name = %r.name, "object applied");
                Applied::Changed
            }
            Err(error) => {
                tracing::warn!(
                    kind = kind_name(r.kind),
                    namespace = %r.namespace,
                    name = %r.name,
                    field = %error.error.field,
                    reason = %error.error.message,
                    removed_previous_version = was_valid,
                    "invalid object left out of the cluster state"
                );
                if was_valid {
                    state.delete(r.kind, &r.namespace, &r.name);
                    self.metrics.deleted(r.kind);
                }
                self.metrics.rejected(r.kind, &r.namespace, &r.name, error);
                kind.known.insert(
                    key,
                    Known {
                        version,
                        valid: false,
                    },
                );
                Applied::Rejected
            }
        }
    }

    /// Removes one object; returns whether the state held it.
    pub(crate) fn delete(&mut self, state: &mut ClusterState, r: &ObjectRef) -> bool {
        let kind = &mut self.kinds[kind_index(r.kind)];
        let previous = kind.known.remove(&(r.namespace.clone(), r.name.clone()));
        if previous.as_ref().is_some_and(|p| !p.valid) {
            self.metrics.cleared(r.kind, &r.namespace, &r.name);
        }
        let removed = state.delete(r.kind, &r.namespace, &r.name);
        if removed {
            self.metrics.deleted(r.kind);
            tracing::debug!(kind = kind_name(r.kind), namespace = %r.namespace, name = %r.name, "object deleted");
        }
        removed
    }

    /// A complete list of a kind starts (its objects follow, then
    /// [`finish_list`](Tracker::finish_list)). A list in progress is abandoned.
    pub(crate) fn begin_list(&mut self, kind: ObjectKind) {
        self.kinds[kind_index(kind)].pending = Some(Vec::new());
    }

    /// One object of the list in progress (kube-rs only sends them between `Init`
    /// and `InitDone`; one outside a list starts one).
    pub(crate) fn list_item(&mut self, object: K8sObject) {
        let kind = kind_of(&object);
        self.kinds[kind_index(kind)]
            .pending
            .get_or_insert_with(Vec::new)
            .push(object);
    }

    /// The list in progress is complete: applies it as a diff (see [`Tracker::replace`]).
    pub(crate) fn finish_list(
        &mut self,
        state: &mut ClusterState,
        kind: ObjectKind,
    ) -> ListOutcome {
        let objects = self.kinds[kind_index(kind)]
            .pending
            .take()
            .unwrap_or_default();
        self.replace(state, kind, &objects)
    }

    /// Makes the objects of `kind` in the state exactly `objects` (those the
    /// engine accepts): applies new and changed ones, deletes the ones not listed.
    pub(crate) fn replace(
        &mut self,
        state: &mut ClusterState,
        kind: ObjectKind,
        objects: &[K8sObject],
    ) -> ListOutcome {
        let mut outcome = ListOutcome::default();
        let mut listed = HashSet::with_capacity(objects.len());
        for object in objects.iter().filter(|o| kind_of(o) == kind) {
            let r = ObjectRef::of(object);
            listed.insert((r.namespace, r.name));
            match self.apply(state, object) {
                Applied::Changed => outcome.applied += 1,
                Applied::Unchanged => outcome.unchanged += 1,
                Applied::Rejected => outcome.rejected += 1,
            }
        }
        let gone: Vec<(String, String)> = self.kinds[kind_index(kind)]
            .known
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            let r = ObjectRef {
                kind,
                namespace,
                name,
            };
            if self.delete(state, &r) {
                outcome.deleted += 1;
            }
        }
        self.metrics.listed(kind);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    fn pod(name: &str, rv: &str, app: &str) -> K8sObject {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "labels": {"app": app}},
            "status": {"podIP": "10.0.0.1"},
        }))
        .expect("pod");
        K8sObject::Pod(Box::new(pod))
    }

    fn policy(name: &str, rv: &str, cidr: &str) -> K8sObject {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]},
        }))
        .expect("policy");
        K8sObject::NetworkPolicy(Box::new(np))
    }

    fn names(state: &ClusterState) -> Vec<String> {
        state.pods().iter().map(|p| p.key.to_string()).collect()
    }

    fn tracker() -> (Tracker, Arc<SourceMetrics>) {
        let metrics = Arc::new(SourceMetrics::default());
        (
            Tracker::new(Versioning::ResourceVersion, metrics.clone()),
            metrics,
        )
    }

    #[test]
    fn a_list_is_applied_as_a_diff() {
        let (mut t, metrics) = tracker();
        let mut state = ClusterState::new();
        t.replace(
            &mut state,
            ObjectKind::Pod,
            &[pod("a", "1", "x"), pod("b", "2", "x")],
        );
        assert_eq!(names(&state), ["ns/a", "ns/b"]);
        // b deleted while nobody watched, a unchanged, c new.
        let outcome = t.replace(
            &mut state,
            ObjectKind::Pod,
            &[pod("a", "1", "x"), pod("c", "3", "x")],
        );
        assert_eq!(names(&state), ["ns/a", "ns/c"]);
        assert_eq!(
            outcome,
            ListOutcome {
                applied: 1,
                unchanged: 1,
                deleted: 1,
                rejected: 0
            }
        );
        assert_eq!(metrics.snapshot().kind(ObjectKind::Pod).lists, 2);
    }

    #[test]
    fn a_list_replaces_only_its_kind() {
        let (mut t, _) = tracker();
        let mut state = ClusterState::new();
        t.apply(&mut state, &pod("a", "1", "x"));
        t.apply(&mut state, &policy("p", "2", "10.0.0.0/8"));
        t.replace(&mut state, ObjectKind::NetworkPolicy, &[]);
        assert_eq!(names(&state), ["ns/a"]);
        assert_eq!(state.policy_count(), 0);
    }

    #[test]
    fn buffered_list_items_apply_at_the_end() {
        let (mut t, _) = tracker();
        let mut state = ClusterState::new();
        t.apply(&mut state, &pod("old", "1", "x"));
        t.begin_list(ObjectKind::Pod);
        t.list_item(pod("new", "5", "x"));
        assert_eq!(
            names(&state),
            ["ns/old"],
            "nothing applies before the list is complete"
        );
        t.finish_list(&mut state, ObjectKind::Pod);
        assert_eq!(names(&state), ["ns/new"]);
    }

    #[test]
    fn the_same_resource_version_is_not_applied_twice() {
        let (mut t, metrics) = tracker();
        let mut state = ClusterState::new();
        assert_eq!(t.apply(&mut state, &pod("a", "1", "x")), Applied::Changed);
        assert_eq!(t.apply(&mut state, &pod("a", "1", "x")), Applied::Unchanged);
        assert_eq!(t.apply(&mut state, &pod("a", "2", "y")), Applied::Changed);
        assert_eq!(metrics.snapshot().kind(ObjectKind::Pod).applied, 2);
    }

    #[test]
    fn content_versioning_ignores_resource_versions() {
        let metrics = Arc::new(SourceMetrics::default());
        let mut t = Tracker::new(Versioning::Content, metrics);
        let mut state = ClusterState::new();
        assert_eq!(t.apply(&mut state, &pod("a", "1", "x")), Applied::Changed);
        // Same resourceVersion, edited content (a manifest copied from kubectl).
        assert_eq!(t.apply(&mut state, &pod("a", "1", "y")), Applied::Changed);
        assert_eq!(t.apply(&mut state, &pod("a", "1", "y")), Applied::Unchanged);
    }

    #[test]
    fn an_invalid_update_removes_the_previous_version_and_is_listed() {
        let (mut t, metrics) = tracker();
        let mut state = ClusterState::new();
        t.apply(&mut state, &policy("p", "1", "10.0.0.0/8"));
        assert_eq!(
            t.apply(&mut state, &policy("p", "2", "10.0.0.0/40")),
            Applied::Rejected
        );
        assert_eq!(state.policy_count(), 0);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.invalid.len(), 1);
        assert_eq!(snapshot.invalid[0].name, "p");
        assert!(snapshot.invalid[0].error.error.field.contains("cidr"));
        assert_eq!(snapshot.kind(ObjectKind::NetworkPolicy).deleted, 1);
        // The same invalid version again is neither re-counted nor re-logged.
        assert_eq!(
            t.apply(&mut state, &policy("p", "2", "10.0.0.0/40")),
            Applied::Unchanged
        );
        assert_eq!(
            metrics.snapshot().kind(ObjectKind::NetworkPolicy).rejected,
            1
        );
        // Fixed: applied, no longer listed.
        assert_eq!(
            t.apply(&mut state, &policy("p", "3", "10.0.0.0/9")),
            Applied::Changed
        );
        assert!(metrics.snapshot().invalid.is_empty());
        assert_eq!(state.policy_count(), 1);
    }

    #[test]
    fn an_invalid_object_absent_from_a_relist_is_forgotten() {
        let (mut t, metrics) = tracker();
        let mut state = ClusterState::new();
        t.replace(
            &mut state,
            ObjectKind::NetworkPolicy,
            &[policy("bad", "1", "nope")],
        );
        assert_eq!(metrics.snapshot().invalid.len(), 1);
        let outcome = t.replace(&mut state, ObjectKind::NetworkPolicy, &[]);
        assert!(metrics.snapshot().invalid.is_empty());
        assert_eq!(outcome.deleted, 0, "it never was in the state");
    }
}
