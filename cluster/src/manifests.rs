//! The manifest source (`--cluster PATH...`): the cluster state from YAML/JSON
//! manifests, reloaded when the files change. For the lab, offline use and tests.
//!
//! A load reads every path (files, or directories of `.yaml`/`.yml`/`.json`
//! files, recursively), validates every object as the engine will, and only if
//! nothing is wrong applies the result to the state as a diff per kind: new and
//! changed objects are applied, unchanged ones kept, objects no longer in the
//! files deleted. A load with any error (unreadable file, bad YAML, invalid
//! object) changes nothing: the state keeps the last good manifests, and the
//! errors are logged, counted and published as a [`ReloadReport`]. The initial
//! load has no previous state to keep and fails instead.
//!
//! Changes are found by polling: every `poll_interval` the manifest files'
//! names, sizes and modification times are hashed (metadata only, cheap even for
//! large directories); when that changes, their contents are hashed, and only a
//! different content triggers a load (a file rewritten identically, or touched,
//! changes nothing). Polling works the same on every file system (ConfigMap
//! volumes, which swap a symlink, included) and needs no extra dependency.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netverdict_policy::{K8sObject, LoadError, LoadErrors, Manifests};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::KINDS;
use crate::metrics::SourceMetrics;
use crate::shared::SharedState;
use crate::tracker::{ListOutcome, Tracker, Versioning, validate};

/// Errors of the manifest source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests could not be loaded: every problem found (file, document,
    /// object and field). Nothing of that load was applied.
    #[error("{0}")]
    Load(#[source] LoadErrors),
    /// `-` (standard input) was given: it cannot be re-read on change.
    #[error("standard input (`-`) cannot be watched for changes; give files or directories")]
    Stdin,
    /// No path was given.
    #[error("no manifest path given")]
    NoPaths,
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options of the manifest source.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// Files or directories to load.
    pub paths: Vec<PathBuf>,
    /// Reject pods without `status.podIP` (true for real manifests; the lab
    /// allocates IPs itself).
    pub require_pod_ips: bool,
    /// How often to check the files for changes.
    pub poll_interval: Duration,
}

impl ManifestOptions {
    /// Options for `paths` with the defaults: pods need IPs, checked every 2 s.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        ManifestOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            require_pod_ips: true,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What one load did.
#[derive(Clone, Debug)]
pub struct ReloadReport {
    /// Loads attempted so far, this one included (the initial load is 1).
    pub attempt: u64,
    /// What changed in the state, or every error found (the state was kept).
    pub outcome: Result<ListOutcome, Arc<LoadErrors>>,
}

/// The running manifest source. Dropping it stops watching the files (the
/// state keeps what it had).
#[derive(Debug)]
pub struct ManifestSource {
    task: JoinHandle<()>,
    metrics: Arc<SourceMetrics>,
    reports: watch::Receiver<Arc<ReloadReport>>,
}

impl Drop for ManifestSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ManifestSource {
    /// Loads the manifests into `state` (failing with every error found), then
    /// watches them for changes. Must be called inside a tokio runtime.
    pub fn start(options: ManifestOptions, state: SharedState) -> Result<ManifestSource> {
        if options.paths.is_empty() {
            return Err(Error::NoPaths);
        }
        if options.paths.iter().any(|p| p == Path::new("-")) {
            return Err(Error::Stdin);
        }
        let metrics = Arc::new(SourceMetrics::default());
        let mut loader = Loader {
            tracker: Tracker::new(Versioning::Content, metrics.clone()),
            metadata: fingerprint(&options.paths, Fingerprint::Metadata),
            content: fingerprint(&options.paths, Fingerprint::Content),
            options,
            attempts: 0,
        };
        let first = match loader.load(&state) {
            Ok(outcome) => ReloadReport {
                attempt: loader.attempts,
                outcome: Ok(outcome),
            },
            Err(errors) => return Err(Error::Load(errors)),
        };
        let (reports_tx, reports) = watch::channel(Arc::new(first));
        let task = tokio::spawn(poll(loader, state, reports_tx));
        Ok(ManifestSource {
            task,
            metrics,
            reports,
        })
    }

    /// The source's counters.
    pub fn metrics(&self) -> &Arc<SourceMetrics> {
        &self.metrics
    }

    /// The report of the latest load; `changed()` on it waits for the next one.
    pub fn reports(&self) -> watch::Receiver<Arc<ReloadReport>> {
        self.reports.clone()
    }
}

/// Reloads whenever the files' fingerprint changes.
async fn poll(mut loader: Loader, state: SharedState, reports: watch::Sender<Arc<ReloadReport>>) {
    let mut ticks = tokio::time::interval(loader.options.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let state = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let metadata = fingerprint(&loader.options.paths, Fingerprint::Metadata);
            if metadata == loader.metadata {
                return (loader, None);
            }
            loader.metadata = metadata;
            let content = fingerprint(&loader.options.paths, Fingerprint::Content);
            let report = if content != loader.content {
                loader.content = content;
                let outcome = loader.load(&state).map_err(Arc::new);
                Some(ReloadReport {
                    attempt: loader.attempts,
                    outcome,
                })
            } else {
                None
            };
            (loader, report)
        })
        .await;
        let Ok((back, report)) = result else {
            tracing::error!("manifest reload panicked; manifests are no longer watched");
            return;
        };
        loader = back;
        if let Some(report) = report {
            reports.send_replace(Arc::new(report));
        }
    }
}

#[derive(Debug)]
struct Loader {
    options: ManifestOptions,
    tracker: Tracker,
    /// The fingerprints of the files last loaded (or last refused).
    metadata: u64,
    content: u64,
    attempts: u64,
}

impl Loader {
    /// Reads, validates and (if all is well) applies the manifests.
    fn load(&mut self, state: &SharedState) -> Result<ListOutcome, LoadErrors> {
        self.attempts += 1;
        let attempt = self.attempts;
        let manifests = Manifests::read_paths(&self.options.paths);
        let mut errors = manifests.errors;
        for sourced in &manifests.objects {
            if let Err(error) = validate(&sourced.object, self.options.require_pod_ips) {
                errors.push(LoadError::Invalid {
                    origin: sourced.origin.clone(),
                    error,
                });
            }
        }
        let metrics = self.tracker_metrics();
        if !errors.is_empty() {
            metrics.reload_failed();
            for error in &errors {
                tracing::warn!(%error, attempt, "manifest error; keeping the previous cluster state");
            }
            return Err(LoadErrors(errors));
        }
        for (kind, count) in &manifests.ignored {
            tracing::debug!(kind = %kind, count, "manifest objects of kinds the engine does not use, skipped");
        }
        let objects: Vec<K8sObject> = manifests.objects.into_iter().map(|s| s.object).collect();
        let outcome = state.update(|s| {
            let mut total = ListOutcome::default();
            for kind in KINDS {
                let o = self.tracker.replace(s, kind, &objects);
                total.applied += o.applied;
                total.unchanged += o.unchanged;
                total.deleted += o.deleted;
                total.rejected += o.rejected;
            }
            total
        });
        metrics.reloaded();
        tracing::info!(
            attempt,
            applied = outcome.applied,
            unchanged = outcome.unchanged,
            deleted = outcome.deleted,
            "manifests loaded"
        );
        Ok(outcome)
    }

    fn tracker_metrics(&self) -> Arc<SourceMetrics> {
        self.tracker.metrics().clone()
    }
}

/// What a fingerprint covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fingerprint {
    /// Names, sizes and modification times.
    Metadata,
    /// Names and contents.
    Content,
}

/// A hash of the manifest files under `paths` (unreadable paths hash as their
/// error), so any edit, addition or removal changes it.
fn fingerprint(paths: &[PathBuf], mode: Fingerprint) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        hash_path(path, mode, &mut hasher);
    }
    hasher.finish()
}

fn hash_path(path: &Path, mode: Fingerprint, hasher: &mut DefaultHasher) {
    path.hash(hasher);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut entries: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                entries.sort();
                for entry in entries {
                    let manifest = matches!(
                        entry.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    );
                    if entry.is_dir() || manifest {
                        hash_path(&entry, mode, hasher);
                    }
                }
            }
            Err(e) => e.kind().hash(hasher),
        },
        Ok(meta) if mode == Fingerprint::Metadata => {
            meta.len().hash(hasher);
            meta.modified().ok().hash(hasher);
        }
        Ok(_) => match std::fs::read(path) {
            Ok(bytes) => bytes.hash(hasher),
            Err(e) => e.kind().hash(hasher),
        },
        Err(e) => e.kind().hash(hasher),
    }
}
