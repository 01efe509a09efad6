//! The verdict cache: verdicts by a packed key of (source identity, source IP
//! class, destination identity, destination IP class, port, protocol), and,
//! for connections whose verdict also depends on their destination names
//! (admin `domainNames` peers), by that key and the names; bounded, emptied
//! whenever a policy, a namespace's labels or a node changes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::Protocol;
use crate::verdict::Verdict;

/// Largest number of cached keys before the cache starts over.
const CAPACITY: usize = 1 << 20;

/// Source identity, destination identity, source IP class, destination IP
/// class, port and protocol packed in one integer (one hash write).
pub(crate) type CacheKey = u128;

/// Packs a cache key; None when an IP class does not fit (such verdicts are not
/// cached).
pub(crate) fn cache_key(
    src_identity: u32,
    src_class: u32,
    dst_identity: u32,
    dst_class: u32,
    port: u16,
    protocol: Protocol,
) -> Option<CacheKey> {
    let src_class = u16::try_from(src_class).ok()?;
    let dst_class = u16::try_from(dst_class).ok()?;
    Some(
        (src_identity as u128) << 96
            | (dst_identity as u128) << 64
            | (src_class as u128) << 48
            | (dst_class as u128) << 32
            | (port as u128) << 8
            | protocol.number() as u128,
    )
}

#[derive(Debug, Default)]
pub(crate) struct VerdictCache {
    by_key: FxHashMap<CacheKey, Arc<Verdict>>,
    /// Verdicts that depend on the destination's names, by key then names.
    by_key_and_names: FxHashMap<CacheKey, FxHashMap<Vec<String>, Arc<Verdict>>>,
    /// How many verdicts `by_key_and_names` holds.
    named: usize,
}

impl VerdictCache {
    pub fn get(&self, key: CacheKey) -> Option<&Arc<Verdict>> {
        self.by_key.get(&key)
    }

    pub fn insert(&mut self, key: CacheKey, verdict: Verdict) -> Arc<Verdict> {
        if self.len() >= CAPACITY {
            self.clear();
        }
        let verdict = Arc::new(verdict);
        self.by_key.insert(key, verdict.clone());
        verdict
    }

    pub fn get_named(&self, key: CacheKey, names: &[String]) -> Option<&Arc<Verdict>> {
        self.by_key_and_names.get(&key)?.get(names)
    }

    pub fn insert_named(
        &mut self,
        key: CacheKey,
        names: &[String],
        verdict: Verdict,
    ) -> Arc<Verdict> {
        if self.len() >= CAPACITY {
            self.clear();
        }
        let verdict = Arc::new(verdict);
        let by_names = self.by_key_and_names.entry(key).or_default();
        if by_names.insert(names.to_vec(), verdict.clone()).is_none() {
            self.named += 1;
        }
        verdict
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_key_and_names.clear();
        self.named = 0;
    }

    pub fn len(&self) -> usize {
        self.by_key.len() + self.named
    }
}
