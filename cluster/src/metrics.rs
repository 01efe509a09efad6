//! Counters a cluster state source keeps, for logs, status endpoints and the
//! Prometheus metrics (the collector and the API server encode them).
//!
//! Labels stay low-cardinality: counters are per kind (eleven values) and per source;
//! which objects are currently invalid is a list for status pages and logs, never a
//! metric label. A kind the API server refuses to list or watch (`403
//! Forbidden`: the role lacks a grant) is a [`ForbiddenKind`], which names the
//! permission to grant.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use netverdict_policy::{ObjectError, ObjectKind};

use crate::{KINDS, kind_index, kind_resource};

/// The counters of one kind.
#[derive(Debug, Default)]
struct KindCounters {
    applied: AtomicU64,
    deleted: AtomicU64,
    rejected: AtomicU64,
    lists: AtomicU64,
    watch_errors: AtomicU64,
    not_installed: std::sync::atomic::AtomicBool,
}

/// The counters of one source (shared by its tasks; all updates are relaxed
/// atomics, read as a [`MetricsSnapshot`]).
#[derive(Debug, Default)]
pub struct SourceMetrics {
    kinds: [KindCounters; KINDS.len()],
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    invalid: Mutex<BTreeMap<(usize, String, String), ObjectError>>,
    /// Kinds whose last list or watch was refused with 403, by kind index.
    forbidden: Mutex<BTreeMap<usize, ForbiddenKind>>,
}

/// A kind the Kubernetes API refused to list or watch (`403 Forbidden`): the
/// source's service account lacks a grant. Its display names the permission:
/// `forbidden: cannot list replicasets.apps at cluster scope: grant list and
/// watch on replicasets (apiGroups ["apps"]) cluster-wide (...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForbiddenKind {
    pub kind: ObjectKind,
    /// What was refused: `list` or `watch`.
    pub verb: &'static str,
    /// The API server's message.
    pub message: String,
}

impl std::fmt::Display for ForbiddenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = kind_resource(self.kind);
        let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
        write!(
            f,
            "forbidden: cannot {} {resource} at cluster scope: grant list and watch on \
             {plural} (apiGroups [\"{group}\"]) cluster-wide, in a ClusterRole bound to \
             this service account",
            self.verb
        )?;
        if !self.message.is_empty() {
            write!(f, " (the API server said: {})", self.message)?;
        }
        Ok(())
    }
}

/// The counts of one kind at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Objects added or changed in the state.
    pub applied: u64,
    /// Objects removed from the state (deleted, absent from a re-list or reload,
    /// or removed because their new version is invalid).
    pub deleted: u64,
    /// Object versions the engine rejected as invalid.
    pub rejected: u64,
    /// Complete lists applied: the initial one, then every re-list (after a watch
    /// restart, `410 Gone`, or a manifest reload).
    pub lists: u64,
    /// Errors of the watch of this kind (failed lists or watches, error events).
    pub watch_errors: u64,
    /// The kind's CustomResourceDefinition is not installed (its list answered
    /// 404): no object of it is in the state.
    pub not_installed: bool,
}

impl KindCounts {
    /// Lists after the initial one: re-lists after a watch restart or `410 Gone`
    /// (manifest reloads, for the manifest source).
    pub fn relists(&self) -> u64 {
        self.lists.saturating_sub(1)
    }
}

/// An object whose current version the engine rejects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidObject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// The object and field at fault.
    pub error: ObjectError,
}

/// Every counter of a source at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Counts per kind, in [`KINDS`] order.
    pub kinds: Vec<(ObjectKind, KindCounts)>,
    /// Manifest reloads that were applied.
    pub reloads: u64,
    /// Manifest reloads refused because the new files have errors.
    pub reload_failures: u64,
    /// Objects currently left out of the state because they are invalid.
    pub invalid: Vec<InvalidObject>,
    /// Kinds the Kubernetes API currently refuses to list or watch.
    pub forbidden: Vec<ForbiddenKind>,
}

impl MetricsSnapshot {
    /// The counts of one kind.
    pub fn kind(&self, kind: ObjectKind) -> KindCounts {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    /// The sum of the counts of every kind.
    pub fn total(&self) -> KindCounts {
        let mut out = KindCounts::default();
        for (_, c) in &self.kinds {
            out.applied += c.applied;
            out.deleted += c.deleted;
            out.rejected += c.rejected;
            out.lists += c.lists;
            out.watch_errors += c.watch_errors;
        }
        out
    }
}

impl SourceMetrics {
    fn kind(&self, kind: ObjectKind) -> &KindCounters {
        &self.kinds[kind_index(kind)]
    }

    pub(crate) fn applied(&self, kind: ObjectKind) {
        self.kind(kind).applied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deleted(&self, kind: ObjectKind) {
        self.kind(kind).deleted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn listed(&self, kind: ObjectKind) {
        self.kind(kind).lists.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn watch_error(&self, kind: ObjectKind) {
        self.kind(kind).watch_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether a kind's CustomResourceDefinition is installed; returns
    /// the previous answer (so that a change is logged once).
    pub(crate) fn set_not_installed(&self, kind: ObjectKind, not_installed: bool) -> bool {
        self.kind(kind)
            .not_installed
            .swap(not_installed, Ordering::Relaxed)
    }

    pub(crate) fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the current version of an object is invalid.
    pub(crate) fn rejected(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        error: ObjectError,
    ) {
        self.kind(kind).rejected.fetch_add(1, Ordering::Relaxed);
        self.invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (kind_index(kind), namespace.to_string(), name.to_string()),
                error,
            );
    }

    /// Records that the API server refused to list or watch a kind (403).
    pub(crate) fn forbidden(&self, refused: ForbiddenKind) {
        self.forbidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind_index(refused.kind), refused);
    }

    /// Records that a list of a kind went through (it is no longer forbidden).
    pub(crate) fn permitted(&self, kind: ObjectKind) {
        self.forbidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&kind_index(kind));
    }

    /// Records that an object is no longer invalid (fixed or deleted).
    pub(crate) fn cleared(&self, kind: ObjectKind, namespace: &str, name: &str) {
        self.invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(kind_index(kind), namespace.to_string(), name.to_string()));
    }

    /// Every counter now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            kinds: KINDS
                .iter()
                .map(|&kind| {
                    let c = self.kind(kind);
                    (
                        kind,
                        KindCounts {
                            applied: get(&c.applied),
                            deleted: get(&c.deleted),
                            rejected: get(&c.rejected),
                            lists: get(&c.lists),
                            watch_errors: get(&c.watch_errors),
                            not_installed: c.not_installed.load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
            reloads: get(&self.reloads),
            reload_failures: get(&self.reload_failures),
            invalid: self
                .invalid
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|((kind, namespace, name), error)| InvalidObject {
                    kind: KINDS[*kind],
                    namespace: namespace.clone(),
                    name: name.clone(),
                    error: error.clone(),
                })
                .collect(),
            forbidden: self
                .forbidden
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
        }
    }
}
