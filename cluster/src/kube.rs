//! The Kubernetes source: kube-rs watchers of Namespaces, Pods, NetworkPolicies,
//! Services, EndpointSlices, Nodes, ReplicaSets and Jobs (for pods' workloads),
//! applied to the shared state incrementally; and [`list_once`], the same
//! kinds listed once for one-shot commands (`netverdict explain --kubeconfig`).
//!
//! One task per kind runs `watcher(..).default_backoff()` (bookmarks on, paginated
//! lists) and forwards its events to one writer task, which owns the
//! [tracker](crate::tracker) and applies every queued event under a single write lock:
//!
//! - `Apply` / `Delete`: the object is applied or deleted;
//! - `Init`, `InitApply`..., `InitDone`: a complete (re-)list. Its objects are
//!   buffered until `InitDone`, then applied as a diff, so objects deleted while
//!   the watch was down (a dropped connection, `410 Gone` after compaction) leave
//!   the state: after every re-list the state of that kind equals the cluster's.
//!   Buffering also keeps half a list from ever being visible to readers.
//!
//! kube-rs re-lists by itself after a `410 Gone` reported inside a watch stream
//! (how the API server reports an expired resourceVersion). A `410` answered to
//! the watch request itself leaves kube-rs retrying the same expired version
//! forever, so this source restarts that kind's watcher (which re-lists).
//!
//! Errors never stop the source: they are logged, counted per kind, and the
//! watcher retries with backoff. A kind that cannot be listed keeps the source
//! from being synced, and [`KubeSource::wait_synced`] names it. A `403
//! Forbidden` (the role lacks a grant: the agent needs `list` and `watch` on
//! namespaces, pods, services, nodes, networkpolicies.networking.k8s.io,
//! endpointslices.discovery.k8s.io, the three policy.networking.k8s.io kinds,
//! replicasets.apps and jobs.batch) is named as the permission to grant
//! ([`ForbiddenKind`]): in a warning when it starts, in [`SourceMetrics`]
//! (the `cluster_forbidden` gauges) while it lasts, and in the error of a
//! sync that does not complete.
//! [`KubeSourceConfig::kinds`] narrows what is watched (the API server reads
//! fewer kinds than the agent); the source asks the API server for nothing but
//! `list` and `watch` of those kinds, across all namespaces.
//!
//! The custom resources (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//! ClusterNetworkPolicy) are often not installed: a list answered `404` says
//! so once (a warning and the kind's `not_installed` gauge), counts as an
//! empty list (so the source syncs), and the kind is listed again every
//! `not_installed_retry` until its CRD appears; no crash loop, no log per retry.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use netverdict_policy::crd::{
    AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy,
};
use netverdict_policy::{K8sObject, ObjectKind};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::metrics::{ForbiddenKind, SourceMetrics};
use crate::shared::SharedState;
use crate::tracker::{ObjectRef, Tracker, Versioning};
use crate::{KIND_COUNT, KINDS, kind_index, kind_name};

/// Errors of the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable configuration: neither a kubeconfig (`$KUBECONFIG`,
    /// `~/.kube/config`) nor the in-cluster service account was found or valid.
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    InferConfig(#[source] kube::config::InferConfigError),
    /// The kubeconfig file given could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the configuration (e.g. bad TLS material).
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A task of the source ended (it only does on a bug: a panic in the engine
    /// or the source); the state no longer follows the cluster.
    #[error("the Kubernetes source stopped: {0}")]
    Stopped(String),
    /// Some kinds had not completed their initial list in time.
    #[error("initial list of {} not complete after {waited:?}", kinds.join(", "))]
    SyncTimeout {
        /// The kinds still listing.
        kinds: Vec<&'static str>,
        waited: Duration,
    },
    /// The Kubernetes API refused to list or watch some kinds (403): each
    /// names the permission to grant.
    #[error("{}", refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Forbidden {
        /// The kinds refused.
        refused: Vec<ForbiddenKind>,
    },
    /// Listing a kind failed (other than 403).
    #[error("cannot list {kind}: {source}")]
    List {
        /// The kind.
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the client's configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// A kubeconfig file; None infers (kube-rs `Config::infer`): `$KUBECONFIG` or
    /// `~/.kube/config` if there is one, else the in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST` and the mounted token), as in a DaemonSet pod.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (its current context if None).
    pub context: Option<String>,
}

/// Builds a Kubernetes client (in-cluster config or kubeconfig).
pub async fn client(options: &ClientOptions) -> Result<Client> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            let opts = kube::config::KubeConfigOptions {
                context: options.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None if options.context.is_some() => {
            let opts = kube::config::KubeConfigOptions {
                context: options.context.clone(),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: PathBuf::from("$KUBECONFIG"),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(Error::InferConfig)?,
    };
    Client::try_from(config).map_err(Error::Client)
}

/// Options of the Kubernetes source.
#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// The kinds to watch (default: every kind of [`KINDS`]). A component
    /// that reads fewer kinds lists only those, so that its RBAC role grants
    /// only those; the state then holds nothing of the others.
    pub kinds: Vec<ObjectKind>,
    /// Objects per list page (None: unpaginated lists).
    pub page_size: Option<u32>,
    /// Server-side timeout of each watch request, in seconds (kube-rs default
    /// 290 when None).
    pub watch_timeout: Option<u32>,
    /// Delay before restarting a watcher whose watch request was refused with
    /// `410 Gone`; doubles on each consecutive refusal, up to 30 s.
    pub restart_delay: Duration,
    /// How often a kind whose CustomResourceDefinition is not installed (its
    /// list answers 404) is listed again.
    pub not_installed_retry: Duration,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        KubeSourceConfig {
            kinds: KINDS.to_vec(),
            page_size: Some(500),
            watch_timeout: None,
            restart_delay: Duration::from_millis(200),
            not_installed_retry: Duration::from_secs(60),
        }
    }
}

/// A kind the source watches.
trait Watched:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: ObjectKind;
    fn into_object(self) -> K8sObject;
}

macro_rules! watched {
    ($ty:ty, $kind:ident) => {
        impl Watched for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            fn into_object(self) -> K8sObject {
                K8sObject::$kind(Box::new(self))
            }
        }
    };
}
watched!(Namespace, Namespace);
watched!(Pod, Pod);
watched!(NetworkPolicy, NetworkPolicy);
watched!(Service, Service);
watched!(EndpointSlice, EndpointSlice);
watched!(Node, Node);
watched!(AdminNetworkPolicy, AdminNetworkPolicy);
watched!(BaselineAdminNetworkPolicy, BaselineAdminNetworkPolicy);
watched!(ClusterNetworkPolicy, ClusterNetworkPolicy);
watched!(ReplicaSet, ReplicaSet);
watched!(Job, Job);

/// What a watch task tells the writer.
#[derive(Debug)]
enum Update {
    Init(ObjectKind),
    InitApply(K8sObject),
    InitDone(ObjectKind),
    Apply(K8sObject),
    Delete(ObjectRef),
    /// The kind's CustomResourceDefinition is not installed: it has no objects.
    NotInstalled(ObjectKind),
}

/// The running Kubernetes source. Dropping it stops its tasks (the state keeps
/// what it had).
#[derive(Debug)]
pub struct KubeSource {
    tasks: JoinSet<()>,
    metrics: Arc<SourceMetrics>,
    synced: watch::Receiver<bool>,
    listed: Arc<[AtomicBool; KIND_COUNT]>,
}

impl KubeSource {
    /// Starts watching every kind with `client` and keeping `state` equal to the
    /// cluster. Must be called inside a tokio runtime.
    pub fn spawn(client: Client, state: SharedState, config: KubeSourceConfig) -> KubeSource {
        let metrics = Arc::new(SourceMetrics::default());
        let (tx, rx) = mpsc::channel(1024);
        let (synced_tx, synced) = watch::channel(false);
        // Kinds not watched count as listed: the source is synced once the
        // watched ones are.
        let listed: Arc<[AtomicBool; KIND_COUNT]> =
            Arc::new(KINDS.map(|kind| AtomicBool::new(!config.kinds.contains(&kind))));
        let mut tasks = JoinSet::new();
        let shared = (&client, &config, &tx, &metrics);
        for kind in KINDS.into_iter().filter(|k| config.kinds.contains(k)) {
            match kind {
                ObjectKind::Namespace => spawn_watch::<Namespace>(&mut tasks, shared),
                ObjectKind::Pod => spawn_watch::<Pod>(&mut tasks, shared),
                ObjectKind::NetworkPolicy => spawn_watch::<NetworkPolicy>(&mut tasks, shared),
                ObjectKind::Service => spawn_watch::<Service>(&mut tasks, shared),
                ObjectKind::EndpointSlice => spawn_watch::<EndpointSlice>(&mut tasks, shared),
                ObjectKind::Node => spawn_watch::<Node>(&mut tasks, shared),
                ObjectKind::AdminNetworkPolicy => {
                    spawn_watch::<AdminNetworkPolicy>(&mut tasks, shared)
                }
                ObjectKind::BaselineAdminNetworkPolicy => {
                    spawn_watch::<BaselineAdminNetworkPolicy>(&mut tasks, shared)
                }
                ObjectKind::ClusterNetworkPolicy => {
                    spawn_watch::<ClusterNetworkPolicy>(&mut tasks, shared)
                }
                ObjectKind::ReplicaSet => spawn_watch::<ReplicaSet>(&mut tasks, shared),
                ObjectKind::Job => spawn_watch::<Job>(&mut tasks, shared),
            }
        }
        drop(tx);
        tasks.spawn(write(rx, state, metrics.clone(), synced_tx, listed.clone()));
        KubeSource {
            tasks,
            metrics,
            synced,
            listed,
        }
    }

    /// The source's counters.
    pub fn metrics(&self) -> &Arc<SourceMetrics> {
        &self.metrics
    }

    /// Whether every kind has completed its initial list (verdicts before that
    /// may miss objects).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until every kind has completed its initial list. When it has
    /// not in time and the API server refused kinds still listing (403),
    /// the error is [`Error::Forbidden`], naming the permissions to grant.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        let mut synced = self.synced.clone();
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await {
            return Ok(());
        }
        let late: Vec<ObjectKind> = KINDS
            .into_iter()
            .filter(|k| !self.listed[kind_index(*k)].load(Ordering::Relaxed))
            .collect();
        let refused: Vec<ForbiddenKind> = self
            .metrics
            .snapshot()
            .forbidden
            .into_iter()
            .filter(|f| late.contains(&f.kind))
            .collect();
        if !refused.is_empty() {
            return Err(Error::Forbidden { refused });
        }
        Err(Error::SyncTimeout {
            kinds: late.into_iter().map(kind_name).collect(),
            waited: timeout,
        })
    }

    /// Resolves when the source stops following the cluster (a task ended: a
    /// bug), so that the agent can exit rather than serve a stale state.
    pub async fn stopped(&mut self) -> Error {
        match self.tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => Error::Stopped(format!("a task panicked: {e}")),
            Some(Err(e)) => Error::Stopped(e.to_string()),
            Some(Ok(())) => Error::Stopped("a task ended".into()),
            None => Error::Stopped("no task running".into()),
        }
    }

    /// Stops the source and waits for its tasks to end.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Starts the watch task of one kind.
fn spawn_watch<K: Watched>(
    tasks: &mut JoinSet<()>,
    (client, config, tx, metrics): (
        &Client,
        &KubeSourceConfig,
        &mpsc::Sender<Update>,
        &Arc<SourceMetrics>,
    ),
) {
    tasks.spawn(watch_kind::<K>(
        client.clone(),
        config.clone(),
        tx.clone(),
        metrics.clone(),
    ));
}

/// Whether a watcher error is a `410 Gone` answered to the watch request itself,
/// which kube-rs retries with the same expired resourceVersion forever.
fn watch_start_gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410)
}

/// What the API server refused, when `error` is a `403 Forbidden`.
fn forbidden<K: Watched>(error: &watcher::Error) -> Option<ForbiddenKind> {
    let (verb, status) = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status)) => ("list", &**status),
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => ("watch", &**status),
        watcher::Error::WatchError(status) => ("watch", &**status),
        _ => return None,
    };
    (status.code == 403).then(|| ForbiddenKind {
        kind: K::KIND,
        verb,
        message: status.message.clone(),
    })
}

/// Whether a watcher error is a `404` answered to the list: the kind's
/// CustomResourceDefinition is not installed.
fn not_installed(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

/// Runs the watcher of one kind, forwarding its events, until the writer is gone.
async fn watch_kind<K: Watched>(
    client: Client,
    config: KubeSourceConfig,
    tx: mpsc::Sender<Update>,
    metrics: Arc<SourceMetrics>,
) {
    let kind = kind_name(K::KIND);
    let api: Api<K> = Api::all(client);
    // Bookmarks stay on (the default): a quiet kind keeps a current
    // resourceVersion and resumes after a disconnect instead of re-listing.
    let wc = watcher::Config {
        page_size: config.page_size,
        timeout: config.watch_timeout,
        ..watcher::Config::default()
    };
    let mut restart_delay = config.restart_delay;
    // Whether the last list or watch was refused with 403 (warned once).
    let mut refused = false;
    loop {
        let mut events = watcher(api.clone(), wc.clone())
            // The engine reads neither: don't hold them while a list is buffered.
            .modify(|o| {
                o.managed_fields_mut().clear();
                o.annotations_mut().clear();
            })
            .default_backoff()
            .boxed();
        let mut restart = false;
        let mut missing = false;
        while let Some(event) = events.next().await {
            let update = match event {
                Ok(watcher::Event::Init) => {
                    tracing::debug!(kind, "listing");
                    Update::Init(K::KIND)
                }
                Ok(watcher::Event::InitApply(o)) => Update::InitApply(o.into_object()),
                Ok(watcher::Event::InitDone) => {
                    // A list went through: whatever made us restart is over.
                    restart_delay = config.restart_delay;
                    if std::mem::take(&mut refused) {
                        tracing::info!(kind, "listing is permitted again");
                    }
                    metrics.permitted(K::KIND);
                    if metrics.set_not_installed(K::KIND, false) {
                        tracing::info!(
                            kind,
                            "the kind's CustomResourceDefinition is installed now: watching it"
                        );
                    }
                    Update::InitDone(K::KIND)
                }
                Ok(watcher::Event::Apply(o)) => Update::Apply(o.into_object()),
                Ok(watcher::Event::Delete(o)) => {
                    let o = o.into_object();
                    Update::Delete(ObjectRef::of(&o))
                }
                Err(error) if not_installed(&error) => {
                    // Said once (log line and the not-installed gauge), not
                    // on every retry; the kind counts as listed, empty.
                    if !metrics.set_not_installed(K::KIND, true) {
                        tracing::warn!(
                            kind,
                            retry = ?config.not_installed_retry,
                            "the kind's CustomResourceDefinition is not installed (list answered 404): \
                             no policy of this kind is evaluated; listing again periodically"
                        );
                    }
                    missing = true;
                    if tx.send(Update::NotInstalled(K::KIND)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(error) => {
                    metrics.watch_error(K::KIND);
                    if let Some(denied) = forbidden::<K>(&error) {
                        // Logged once per refusal, not on every retry.
                        if !std::mem::replace(&mut refused, true) {
                            tracing::warn!(
                                kind,
                                resource = crate::kind_resource(K::KIND),
                                verb = denied.verb,
                                "{denied}; retrying with backoff"
                            );
                        }
                        metrics.forbidden(denied);
                        continue;
                    }
                    match &error {
                        watcher::Error::WatchError(status) if status.code == 410 => {
                            tracing::info!(kind, reason = %status.message, "watch history expired (410 Gone): re-listing");
                        }
                        e if watch_start_gone(e) => {
                            tracing::info!(kind, error = %e, "watch refused with 410 Gone: restarting the watcher to re-list");
                            restart = true;
                        }
                        e => tracing::warn!(kind, error = %e, "watch error; retrying with backoff"),
                    }
                    if restart {
                        break;
                    }
                    continue;
                }
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
        if missing {
            tokio::time::sleep(config.not_installed_retry).await;
            continue;
        }
        if !restart {
            // The watcher stream never ends by itself; if it did, start over.
            tracing::warn!(kind, "watcher ended; restarting");
        }
        tokio::time::sleep(restart_delay).await;
        restart_delay = (restart_delay * 2).min(Duration::from_secs(30));
    }
}

/// The single writer: applies queued updates in batches under one write lock.
async fn write(
    mut rx: mpsc::Receiver<Update>,
    state: SharedState,
    metrics: Arc<SourceMetrics>,
    synced: watch::Sender<bool>,
    listed: Arc<[AtomicBool; KIND_COUNT]>,
) {
    let mut tracker = Tracker::new(Versioning::ResourceVersion, metrics);
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        // Updates that only buffer a list need no lock: handle the leading ones
        // without it, the rest (in order) under one write lock.
        let writes = match batch
            .iter()
            .position(|u| !matches!(u, Update::Init(_) | Update::InitApply(_)))
        {
            Some(i) => batch.split_off(i),
            None => Vec::new(),
        };
        for update in batch.drain(..) {
            match update {
                Update::Init(kind) => tracker.begin_list(kind),
                Update::InitApply(object) => tracker.list_item(object),
                _ => {}
            }
        }
        if !writes.is_empty() {
            state.update(|s| {
                for update in writes {
                    match update {
                        Update::Init(kind) => tracker.begin_list(kind),
                        Update::InitApply(object) => tracker.list_item(object),
                        Update::InitDone(kind) => {
                            let outcome = tracker.finish_list(s, kind);
                            let first = !listed[kind_index(kind)].swap(true, Ordering::Relaxed);
                            tracing::info!(
                                kind = kind_name(kind),
                                initial = first,
                                applied = outcome.applied,
                                unchanged = outcome.unchanged,
                                deleted = outcome.deleted,
                                rejected = outcome.rejected,
                                "list applied"
                            );
                        }
                        Update::Apply(object) => {
                            tracker.apply(s, &object);
                        }
                        Update::Delete(r) => {
                            tracker.delete(s, &r);
                        }
                        Update::NotInstalled(kind) => {
                            // Objects of a CRD uninstalled while watched leave.
                            tracker.begin_list(kind);
                            tracker.finish_list(s, kind);
                            listed[kind_index(kind)].store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        if !*synced.borrow() && listed.iter().all(|l| l.load(Ordering::Relaxed)) {
            tracing::info!("cluster state synced: every kind listed");
            synced.send_replace(true);
        }
    }
}

/// Lists `kinds` once (paginated, `page_size` objects a page) across every
/// namespace: the cluster as one-shot commands (`explain`, `lint`,
/// `verdicts`, `diagnose` with `--kubeconfig`) see it. Asks only `list`. A
/// kind the API server refuses (403) is [`Error::Forbidden`], naming every
/// kind refused and the permission to grant; an admin policy kind whose
/// CustomResourceDefinition is not installed (404) has no object.
pub async fn list_once(
    client: &Client,
    kinds: &[ObjectKind],
    page_size: u32,
) -> Result<Vec<K8sObject>> {
    let mut objects = Vec::new();
    let mut refused = Vec::new();
    for kind in KINDS.into_iter().filter(|k| kinds.contains(k)) {
        let listed = match kind {
            ObjectKind::Namespace => list_all::<Namespace>(client, page_size).await,
            ObjectKind::Pod => list_all::<Pod>(client, page_size).await,
            ObjectKind::NetworkPolicy => list_all::<NetworkPolicy>(client, page_size).await,
            ObjectKind::Service => list_all::<Service>(client, page_size).await,
            ObjectKind::EndpointSlice => list_all::<EndpointSlice>(client, page_size).await,
            ObjectKind::Node => list_all::<Node>(client, page_size).await,
            ObjectKind::ReplicaSet => list_all::<ReplicaSet>(client, page_size).await,
            ObjectKind::Job => list_all::<Job>(client, page_size).await,
            ObjectKind::AdminNetworkPolicy => {
                list_all::<AdminNetworkPolicy>(client, page_size).await
            }
            ObjectKind::BaselineAdminNetworkPolicy => {
                list_all::<BaselineAdminNetworkPolicy>(client, page_size).await
            }
            ObjectKind::ClusterNetworkPolicy => {
                list_all::<ClusterNetworkPolicy>(client, page_size).await
            }
        };
        match listed {
            Ok(mut items) => objects.append(&mut items),
            // A CustomResourceDefinition not installed: no object of the kind.
            Err(kube::Error::Api(status))
                if status.code == 404
                    && matches!(
                        kind,
                        ObjectKind::AdminNetworkPolicy
                            | ObjectKind::BaselineAdminNetworkPolicy
                            | ObjectKind::ClusterNetworkPolicy
                    ) =>
            {
                tracing::info!(
                    kind = kind_name(kind),
                    "not installed (list answered 404): none"
                );
            }
            Err(kube::Error::Api(status)) if status.code == 403 => refused.push(ForbiddenKind {
                kind,
                verb: "list",
                message: status.message.clone(),
            }),
            Err(source) => {
                return Err(Error::List {
                    kind: kind_name(kind),
                    source,
                });
            }
        }
    }
    if !refused.is_empty() {
        return Err(Error::Forbidden { refused });
    }
    Ok(objects)
}

/// Every object of one kind, page after page.
async fn list_all<K: Watched>(client: &Client, page_size: u32) -> kube::Result<Vec<K8sObject>> {
    let api: Api<K> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(page_size.max(1));
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items.into_iter().map(Watched::into_object));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
