//! Identities: a pod for verdict purposes is its namespace, labels and container
//! ports (everything a verdict about it depends on except its namespace's labels
//! and its IP), interned to a `u32`. Pods of one identity share cached
//! verdicts; a pod whose labels or ports change gets another identity, so pod
//! changes never need to empty the verdict cache.
//!
//! The values from [`DEPARTED`] up are reserved for endpoints that are not
//! (current, selectable) pods.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{ContainerPort, Pod};
use crate::selector::Labels;

/// The identity of an IP that is no pod's.
pub(crate) const EXTERNAL: u32 = u32::MAX;
/// The identity of a host-network pod: an address of its node for policy purposes.
pub(crate) const HOST_NETWORK: u32 = u32::MAX - 1;
/// The identity of a departed pod (or an earlier version of one); its verdicts
/// are never cached, so it only needs to differ from the others.
pub(crate) const DEPARTED: u32 = u32::MAX - 2;

/// What makes two pods the same identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IdentityKey {
    namespace: String,
    labels: Labels,
    ports: Arc<[ContainerPort]>,
}

/// The interned identities.
#[derive(Clone, Debug, Default)]
pub(crate) struct Identities {
    ids: FxHashMap<IdentityKey, u32>,
}

impl Identities {
    /// The identity of `pod`, interned on first sight.
    pub fn intern(&mut self, pod: &Pod) -> u32 {
        let key = IdentityKey {
            namespace: pod.key.namespace.clone(),
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
        };
        let next = self.ids.len() as u32;
        *self.ids.entry(key).or_insert(next)
    }

    /// Whether identities of departed pods outweigh the live ones enough that
    /// the caller should rebuild them (with [`Identities::clear`] and interning
    /// every pod again).
    pub fn needs_rebuild(&self, pods: usize) -> bool {
        self.ids.len() > 1024 && self.ids.len() > 4 * pods
    }

    /// Forgets every identity: the next interned one is 0 again.
    pub fn clear(&mut self) {
        self.ids.clear();
    }
}
