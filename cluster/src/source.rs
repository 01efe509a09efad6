//! Starting a cluster state source, the same way for the node agent and the API
//! server: [`start`] takes a [`SourceConfig`] (which source, the node's own IPs,
//! and how long the initial sync may take) and returns a [`ClusterHandle`]: the
//! shared state and whatever keeps it current.
//!
//! ```text
//!  SourceConfig ─> start ─┬─ Kube:      client (kubeconfig | in-cluster) ─> KubeSource ─> wait for the
//!                         │                                                initial lists (SyncPolicy)
//!                         ├─ Manifests: ManifestSource (first load fails on any error, then polled)
//!                         ├─ Lab:       the lab's saved objects, read once
//!                         └─ Shared:    a state the caller fills
//!                         ─> ClusterHandle { SharedState, the running source }
//! ```
//!
//! Only the Kubernetes source has an initial sync that can run late (a kind the
//! RBAC forbids, a slow API server). What then happens is the caller's choice,
//! made explicit by [`OnSyncTimeout`]: the node agent fails ([`SyncPolicy::default`]:
//! annotating against half a cluster would give wrong verdicts), the API server
//! warns and serves while the lists complete (its DNS report may miss policy
//! gaps until then).

use std::net::IpAddr;
#[cfg(feature = "lab")]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::kube::{self, ClientOptions, KubeSource, KubeSourceConfig};
use crate::manifests::{self, ManifestOptions, ManifestSource};
use crate::metrics::SourceMetrics;
use crate::shared::SharedState;

/// Errors of starting (or running) a source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests could not be loaded (every problem is named).
    #[error("cluster manifests: {0}")]
    Manifests(#[from] manifests::Error),
    /// The Kubernetes client could not be built, or the initial lists did not
    /// complete in time under [`OnSyncTimeout::Fail`].
    #[error("Kubernetes source: {0}")]
    Kube(#[from] kube::Error),
    /// The lab could not be read, or its objects are invalid.
    #[cfg(feature = "lab")]
    #[error(transparent)]
    Lab(#[from] crate::lab::Error),
    /// A running source stopped following the cluster (one of its tasks
    /// ended: a bug); the state no longer changes.
    #[error(transparent)]
    Stopped(kube::Error),
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the cluster state comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The Kubernetes API (a kubeconfig, or the in-cluster service account),
    /// watched.
    Kube {
        /// Where the client's configuration comes from.
        client: ClientOptions,
        /// The watchers' settings.
        config: KubeSourceConfig,
    },
    /// Manifest files or directories, reloaded on change.
    Manifests(ManifestOptions),
    /// The objects of a lab that is up (`netverdict lab up`), read once.
    #[cfg(feature = "lab")]
    Lab {
        /// The lab's name.
        name: String,
        /// Where labs keep their state (`netverdict_lab::lab::STATE_ROOT`).
        state_root: PathBuf,
    },
    /// A state the caller fills and keeps current (the demo, tests).
    Shared(SharedState),
}

impl Source {
    /// The source's name in logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Kube { .. } => "kube",
            Source::Manifests(_) => "manifests",
            #[cfg(feature = "lab")]
            Source::Lab { .. } => "lab",
            Source::Shared(_) => "shared",
        }
    }
}

/// What [`start`] does when the initial sync is not complete in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSyncTimeout {
    /// Fail with the kinds still listing (and stop the source).
    Fail,
    /// Log a warning naming them and return the running source, which
    /// completes its lists in the background.
    Warn,
}

/// How long the initial sync may take, and what happens after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPolicy {
    /// How long [`start`] waits for the initial lists.
    pub timeout: Duration,
    /// What happens when they are not complete by then.
    pub on_timeout: OnSyncTimeout,
}

impl SyncPolicy {
    /// Fail when the initial sync takes longer than `timeout`.
    pub const fn fail_after(timeout: Duration) -> SyncPolicy {
        SyncPolicy {
            timeout,
            on_timeout: OnSyncTimeout::Fail,
        }
    }

    /// Warn and go on when the initial sync takes longer than `timeout`.
    pub const fn warn_after(timeout: Duration) -> SyncPolicy {
        SyncPolicy {
            timeout,
            on_timeout: OnSyncTimeout::Warn,
        }
    }
}

impl Default for SyncPolicy {
    /// The node agent's: fail after 120 s.
    fn default() -> Self {
        SyncPolicy::fail_after(Duration::from_secs(120))
    }
}

/// What [`start`] starts. [`SourceConfig::new`] gives the defaults; every field
/// can be changed before [`start`].
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Where the cluster state comes from.
    pub source: Source,
    /// How long the initial sync may take, and what happens after that
    /// (default: fail after 120 s).
    pub sync: SyncPolicy,
    /// The node's own IPs (traffic between a pod and them is always allowed),
    /// set on the state before the source fills it. Empty: none declared.
    pub local_node_ips: Vec<IpAddr>,
}

impl SourceConfig {
    /// `source` with the default sync policy and no local node IPs.
    pub fn new(source: Source) -> SourceConfig {
        SourceConfig {
            source,
            sync: SyncPolicy::default(),
            local_node_ips: Vec::new(),
        }
    }
}

/// A running source and the state it keeps current. Dropping it stops the
/// source (the state keeps what it had).
#[derive(Debug)]
pub struct ClusterHandle {
    state: SharedState,
    name: &'static str,
    running: Running,
}

/// What keeps the state current.
#[derive(Debug)]
enum Running {
    Kube(KubeSource),
    Manifests(ManifestSource),
    /// A lab read once, or a state the caller keeps.
    Nothing,
}

/// Starts the source `config` names and fills the state: loads the manifests
/// (failing with every error found), reads the lab, or builds the Kubernetes
/// client and waits for the initial lists as `config.sync` says. Must be called
/// inside a tokio runtime.
pub async fn start(config: SourceConfig) -> Result<ClusterHandle> {
    let SourceConfig {
        source,
        sync,
        local_node_ips,
    } = config;
    let name = source.name();
    let state = match &source {
        Source::Shared(state) => state.clone(),
        #[cfg(feature = "lab")]
        Source::Lab { name, state_root } => SharedState::new(crate::lab::load(name, state_root)?),
        Source::Kube { .. } | Source::Manifests(_) => SharedState::default(),
    };
    if !local_node_ips.is_empty() {
        state.update(|s| s.set_local_node_ips(local_node_ips));
    }
    let running = match source {
        Source::Manifests(options) => {
            Running::Manifests(ManifestSource::start(options, state.clone())?)
        }
        Source::Kube { client, config } => {
            let client = kube::client(&client).await?;
            let source = KubeSource::spawn(client, state.clone(), config);
            if let Err(error) = source.wait_synced(sync.timeout).await {
                match sync.on_timeout {
                    OnSyncTimeout::Fail => return Err(error.into()),
                    OnSyncTimeout::Warn => tracing::warn!(
                        error = %error,
                        "the cluster state is not synced yet; going on while the lists complete \
                         (verdicts and reports may miss objects until then)"
                    ),
                }
            }
            Running::Kube(source)
        }
        #[cfg(feature = "lab")]
        Source::Lab { .. } => Running::Nothing,
        Source::Shared(_) => Running::Nothing,
    };
    Ok(ClusterHandle {
        state,
        name,
        running,
    })
}

impl ClusterHandle {
    /// The state the source keeps current.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// The source's name (`kube`, `manifests`, `lab`, `shared`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The counters of a source that keeps any (Kubernetes, manifests).
    pub fn metrics(&self) -> Option<&Arc<SourceMetrics>> {
        match &self.running {
            Running::Kube(source) => Some(source.metrics()),
            Running::Manifests(source) => Some(source.metrics()),
            Running::Nothing => None,
        }
    }

    /// Whether the initial sync is complete (only the Kubernetes source can be
    /// running late, under [`OnSyncTimeout::Warn`]).
    pub fn is_synced(&self) -> bool {
        match &self.running {
            Running::Kube(source) => source.is_synced(),
            Running::Manifests(_) | Running::Nothing => true,
        }
    }

    /// Resolves when the source stops following the cluster (a task ended: a
    /// bug), so that a daemon can exit rather than serve a stale state. Never
    /// resolves for a source with nothing running (a lab, a shared state).
    pub async fn stopped(&mut self) -> Error {
        match &mut self.running {
            Running::Kube(source) => Error::Stopped(source.stopped().await),
            Running::Manifests(_) | Running::Nothing => std::future::pending().await,
        }
    }

    /// Stops the source and waits for its tasks to end (the state keeps what
    /// it had).
    pub async fn shutdown(self) {
        match self.running {
            Running::Kube(source) => source.shutdown().await,
            Running::Manifests(source) => drop(source),
            Running::Nothing => {}
        }
    }
}
