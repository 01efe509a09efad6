//! The cluster state shared by its one writer (a source) and its readers (the
//! annotator, the API, tests).
//!
//! The engine answers `verdict(&self)` (its verdict cache has its own lock) and
//! changes with `apply(&mut self)`, so the state sits behind a [`RwLock`]: readers
//! run concurrently, a writer takes the lock for one batch of updates (a source
//! applies every update it has queued in one go, so a re-list of thousands of
//! objects is one short exclusive section rather than thousands), and nobody holds
//! the lock across an `.await`. Copy-on-write snapshots were rejected: the state
//! has no cheap clone (indexes, interned identities, cache), and a copy per
//! update would cost more than the brief writer sections it avoids.
//!
//! Every write bumps a version published on a [`tokio::sync::watch`] channel, so a
//! reader can wait for changes (or for a condition) without polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use netverdict_policy::ClusterState;
use tokio::sync::watch;

/// Waiting for a condition on the state took longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("the cluster state did not reach the expected condition within {waited:?}")]
pub struct WaitTimeout {
    /// How long the caller waited.
    pub waited: Duration,
}

/// A handle on one cluster state; clones share it.
#[derive(Clone, Debug)]
pub struct SharedState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<ClusterState>,
    version: watch::Sender<u64>,
    /// When departed pods were last pruned (seconds since the epoch).
    last_prune: AtomicU64,
}

/// How often [`SharedState::update`] prunes departed pods.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Default for SharedState {
    fn default() -> Self {
        SharedState::new(ClusterState::new())
    }
}

impl SharedState {
    /// Shares a state (usually `ClusterState::new()`: sources fill it).
    pub fn new(state: ClusterState) -> Self {
        SharedState {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                version: watch::Sender::new(0),
                last_prune: AtomicU64::new(0),
            }),
        }
    }

    /// Read access. Hold it briefly and never across an `.await`. A writer that
    /// panicked leaves the state as it was at the panic; it is still served.
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state under the write lock, then publishes a new version.
    /// The changes are stamped with the wall clock (the state's time, see
    /// [`ClusterState::set_time`]), so that a pod IP resolves to the pod that
    /// held it at a flow's time; departed pods past their retention are pruned
    /// here, at most every [`PRUNE_EVERY`].
    pub fn update<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        let now = SystemTime::now();
        let out = {
            let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            state.set_time(now);
            let secs = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if secs >= self.inner.last_prune.load(Ordering::Relaxed) + PRUNE_EVERY.as_secs() {
                self.inner.last_prune.store(secs, Ordering::Relaxed);
                state.prune_departed(now);
            }
            f(&mut state)
        };
        self.inner.version.send_modify(|v| *v += 1);
        out
    }

    /// How many updates the state has had.
    pub fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// A receiver that is notified after every update.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Waits until `condition` holds on the state, re-checking after every update.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&ClusterState) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut updates = self.subscribe();
        let wait = async {
            loop {
                updates.borrow_and_update();
                if condition(&self.read()) {
                    return;
                }
                // The sender lives in `self`, so `changed` cannot fail while we wait.
                let _ = updates.changed().await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| WaitTimeout { waited: timeout })
    }
}
