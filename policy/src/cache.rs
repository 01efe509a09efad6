//! The verdict cache: verdicts by packed (identity, IP class, port, protocol)
//! key, bounded, emptied whenever a policy, a namespace's labels or a node
//! changes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::verdict::Verdict;

/// Largest number of cached keys before the cache starts over.
const CAPACITY: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct VerdictCache {
    by_key: FxHashMap<u128, Arc<Verdict>>,
}

impl VerdictCache {
    pub fn get(&self, key: u128) -> Option<&Arc<Verdict>> {
        self.by_key.get(&key)
    }

    pub fn insert(&mut self, key: u128, verdict: Verdict) -> Arc<Verdict> {
        if self.by_key.len() >= CAPACITY {
            self.clear();
        }
        let verdict = Arc::new(verdict);
        self.by_key.insert(key, verdict.clone());
        verdict
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}
