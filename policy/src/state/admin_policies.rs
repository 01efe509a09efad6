//! The cluster-scoped admin policies (AdminNetworkPolicy,
//! BaselineAdminNetworkPolicy, ClusterNetworkPolicy) by key, and per tier in
//! the order they are decided ([`AdminPolicy::order_key`]). Clusters hold few
//! of them (tens, against thousands of NetworkPolicies), so the engine walks a
//! tier in order rather than through an index; an empty tier costs nothing.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{AdminPolicy, PolicyKey, Tier};

#[derive(Clone, Debug, Default)]
pub(crate) struct AdminPolicies {
    by_key: FxHashMap<PolicyKey, Arc<AdminPolicy>>,
    /// The Admin tier, in decision order.
    admin: Vec<Arc<AdminPolicy>>,
    /// The Baseline tier, in decision order.
    baseline: Vec<Arc<AdminPolicy>>,
    /// How many policies have a `nodes` peer (verdicts with a node address
    /// then depend on the node, which no cache key holds).
    with_node_peers: usize,
    /// How many policies have a `domainNames` peer (verdicts on connections
    /// with destination names then depend on the names).
    with_domain_peers: usize,
}

impl AdminPolicies {
    pub fn get(&self, key: &PolicyKey) -> Option<&Arc<AdminPolicy>> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The policies of a tier, in decision order (none in the NetworkPolicy tier).
    pub fn tier(&self, tier: Tier) -> &[Arc<AdminPolicy>] {
        match tier {
            Tier::Admin => &self.admin,
            Tier::Baseline => &self.baseline,
            Tier::NetworkPolicy => &[],
        }
    }

    /// Whether some policy has a `nodes` peer.
    pub fn have_node_peers(&self) -> bool {
        self.with_node_peers > 0
    }

    /// Whether some policy has a `domainNames` peer.
    pub fn have_domain_peers(&self) -> bool {
        self.with_domain_peers > 0
    }

    /// Adds a policy whose key is not held (remove it first).
    pub fn insert(&mut self, policy: Arc<AdminPolicy>) {
        if policy.has_node_peers() {
            self.with_node_peers += 1;
        }
        if policy.has_domain_peers() {
            self.with_domain_peers += 1;
        }
        // The model builds admin policies of the Admin and Baseline tiers only.
        let list = match policy.tier {
            Tier::Admin | Tier::NetworkPolicy => &mut self.admin,
            Tier::Baseline => &mut self.baseline,
        };
        let at = list.partition_point(|p| p.order_key() < policy.order_key());
        list.insert(at, policy.clone());
        self.by_key.insert(policy.key.clone(), policy);
    }

    pub fn remove(&mut self, key: &PolicyKey) -> Option<Arc<AdminPolicy>> {
        let policy = self.by_key.remove(key)?;
        if policy.has_node_peers() {
            self.with_node_peers -= 1;
        }
        if policy.has_domain_peers() {
            self.with_domain_peers -= 1;
        }
        self.admin.retain(|p| p.key != *key);
        self.baseline.retain(|p| p.key != *key);
        Some(policy)
    }
}
