//! The policy index: the cluster's NetworkPolicies by key, and per namespace
//! indexed by one `key=value` label their pod selector requires, so that
//! finding the policies selecting a pod costs the candidate policies (those of
//! its namespace whose label the pod has, plus the few whose selector requires
//! none), not the cluster's policy count. A scan of every policy gives the same
//! answer, as the reference the index is checked and measured against.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{Direction, NetworkPolicy, Pod, PolicyKey};

/// The policies of one namespace, indexed by a label their selector requires.
#[derive(Clone, Default, Debug)]
struct NamespacePolicies {
    by_label: FxHashMap<(String, String), Vec<Arc<NetworkPolicy>>>,
    /// Policies whose selector has no single-valued `In` requirement (e.g. `{}`).
    unindexed: Vec<Arc<NetworkPolicy>>,
}

/// Every NetworkPolicy, by key and by namespace and label.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyIndex {
    by_key: FxHashMap<PolicyKey, Arc<NetworkPolicy>>,
    by_namespace: FxHashMap<String, NamespacePolicies>,
}

impl PolicyIndex {
    pub fn get(&self, key: &PolicyKey) -> Option<&Arc<NetworkPolicy>> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Every policy, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<NetworkPolicy>> {
        self.by_key.values()
    }

    /// Adds a policy whose key the index does not hold (remove it first).
    pub fn insert(&mut self, policy: Arc<NetworkPolicy>) {
        let index = self
            .by_namespace
            .entry(policy.namespace().to_string())
            .or_default();
        match policy.pod_selector.index_label() {
            Some((k, v)) => index
                .by_label
                .entry((k.to_string(), v.to_string()))
                .or_default()
                .push(policy.clone()),
            None => index.unindexed.push(policy.clone()),
        }
        self.by_key.insert(policy.key.clone(), policy);
    }

    pub fn remove(&mut self, key: &PolicyKey) -> Option<Arc<NetworkPolicy>> {
        let policy = self.by_key.remove(key)?;
        if let Some(index) = self.by_namespace.get_mut(policy.namespace()) {
            index.unindexed.retain(|p| p.key != *key);
            index.by_label.retain(|_, list| {
                list.retain(|p| p.key != *key);
                !list.is_empty()
            });
        }
        Some(policy)
    }

    /// The policies of the pod's namespace that select it and apply to
    /// `direction`, found through the label index, in key order.
    pub fn selecting(&self, pod: &Pod, direction: Direction) -> Vec<Arc<NetworkPolicy>> {
        let mut out: Vec<Arc<NetworkPolicy>> = Vec::new();
        if pod.host_network {
            return out;
        }
        let Some(index) = self.by_namespace.get(&pod.key.namespace) else {
            return out;
        };
        let mut consider = |p: &Arc<NetworkPolicy>| {
            if p.rules(direction).is_some() && p.pod_selector.matches(&pod.labels) {
                out.push(p.clone());
            }
        };
        for p in &index.unindexed {
            consider(p);
        }
        if index.by_label.len() <= pod.labels.len() {
            for ((k, v), policies) in &index.by_label {
                if pod.labels.get(k) == Some(v) {
                    policies.iter().for_each(&mut consider);
                }
            }
        } else {
            let mut probe = (String::new(), String::new());
            for (k, v) in pod.labels.iter() {
                probe.0.clear();
                probe.0.push_str(k);
                probe.1.clear();
                probe.1.push_str(v);
                if let Some(policies) = index.by_label.get(&probe) {
                    policies.iter().for_each(&mut consider);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The same answer as [`PolicyIndex::selecting`], by scanning every policy.
    pub fn selecting_by_scan(&self, pod: &Pod, direction: Direction) -> Vec<Arc<NetworkPolicy>> {
        let mut out: Vec<Arc<NetworkPolicy>> = self
            .by_key
            .values()
            .filter(|p| p.rules(direction).is_some() && p.selects(pod))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}
