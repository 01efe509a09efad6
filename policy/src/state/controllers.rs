//! The intermediate controllers (ReplicaSets and Jobs) by kind, namespace and
//! name, each with its own controller: what a pod's workload is resolved
//! through ([`ClusterState::workload_of`](crate::ClusterState::workload_of)).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{Controller, ControllerKind, Owner};

/// A controller's kind, namespace and name.
type ControllerKey = (ControllerKind, String, String);

#[derive(Clone, Debug, Default)]
pub(crate) struct Controllers {
    by_key: FxHashMap<ControllerKey, Controller>,
}

impl Controllers {
    pub fn upsert(&mut self, controller: Controller) {
        let key = (
            controller.kind,
            controller.namespace.clone(),
            controller.name.clone(),
        );
        self.by_key.insert(key, controller);
    }

    /// Removes a controller; returns whether it was there.
    pub fn remove(&mut self, kind: ControllerKind, namespace: &str, name: &str) -> bool {
        self.by_key
            .remove(&(kind, namespace.to_string(), name.to_string()))
            .is_some()
    }

    pub fn get(&self, kind: ControllerKind, namespace: &str, name: &str) -> Option<&Controller> {
        self.by_key
            .get(&(kind, namespace.to_string(), name.to_string()))
    }

    /// Every controller, in kind, namespace and name order.
    pub fn sorted(&self) -> Vec<&Controller> {
        let mut out: Vec<_> = self.by_key.values().collect();
        out.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        out
    }

    /// The workload of something in `namespace` controlled by `owner`: the
    /// owner's own controller when the owner is a ReplicaSet or Job that has
    /// one, else the owner itself.
    pub fn top(&self, namespace: &str, owner: &Arc<Owner>) -> Arc<Owner> {
        owner
            .intermediate()
            .and_then(|kind| self.get(kind, namespace, &owner.name))
            .and_then(|c| c.owner.clone())
            .unwrap_or_else(|| owner.clone())
    }
}
