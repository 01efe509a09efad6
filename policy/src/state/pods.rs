//! The pods, by key and by namespace (selectors are namespaced, so Service
//! backends and the pods a policy selects are found without scanning the
//! cluster), each with its identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{Pod, PodKey};

/// A pod with its identity (the verdict cache key).
#[derive(Clone, Debug)]
pub(crate) struct PodEntry {
    pub pod: Arc<Pod>,
    pub identity: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Pods {
    by_key: FxHashMap<PodKey, PodEntry>,
    /// The pods of each namespace by name.
    by_namespace: FxHashMap<String, BTreeMap<String, Arc<Pod>>>,
}

impl Pods {
    #[inline]
    pub fn get(&self, key: &PodKey) -> Option<&PodEntry> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Every pod, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &PodEntry> {
        self.by_key.values()
    }

    /// The pods of one namespace, in name order.
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = &Arc<Pod>> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.values())
    }

    /// Adds a pod whose key the map does not hold (remove it first).
    pub fn insert(&mut self, entry: PodEntry) {
        let pod = &entry.pod;
        self.by_namespace
            .entry(pod.key.namespace.clone())
            .or_default()
            .insert(pod.key.name.clone(), pod.clone());
        self.by_key.insert(pod.key.clone(), entry);
    }

    pub fn remove(&mut self, key: &PodKey) -> Option<PodEntry> {
        let entry = self.by_key.remove(key)?;
        if let Some(pods) = self.by_namespace.get_mut(&key.namespace) {
            pods.remove(&key.name);
            if pods.is_empty() {
                self.by_namespace.remove(&key.namespace);
            }
        }
        Some(entry)
    }

    /// Every pod with its identity, to re-key identities.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut PodEntry> {
        self.by_key.values_mut()
    }
}
