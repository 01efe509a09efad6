//! An in-process Kubernetes API server double that speaks the real list/watch
//! protocol over HTTP/1.1 on 127.0.0.1, for the resources the Kubernetes source watches.
//!
//! - list: `GET /api/v1/pods?limit=N&continue=T` → `{"kind":"PodList",
//!   "metadata":{"resourceVersion","continue"},"items":[...]}`; pages of one list
//!   are a consistent snapshot, items carry no `kind`/`apiVersion` (like the
//!   real server);
//! - watch: `GET ...?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`
//!   → chunked newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`,
//!   replaying history after N, then live events; a resourceVersion older than the
//!   compaction point gets an `ERROR` event with a `Status` of code 410 (what the
//!   API server does), or optionally an HTTP 410 answer;
//! - one resourceVersion counter for every resource (like etcd's revision).
//!
//! Not served (the source does not use them): namespaced collection paths
//! (`/api/v1/namespaces/NS/pods`), label/field selectors (ignored), streaming
//! lists (`sendInitialEvents`), `resourceVersionMatch`, writes, protobuf.
//!
//! The test drives it: add/modify/delete objects ([`FakeApiServer::apply`],
//! [`FakeApiServer::delete`]), send bookmarks, compact history, drop or hold
//! watch connections, expire watches with an in-stream 410.
//!
//! Every request, served or not, is also recorded as the RBAC [`Access`] it
//! needs (verb, API group, resource, namespace; or a non-resource URL), the
//! way the real API server's authorizer sees it: [`FakeApiServer::accesses`]
//! is what a component's role must grant (the CLI's least-privilege test
//! compares it with the deploy's roles).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The collection paths of the network-policy-api custom resources: served
/// only once [`FakeApiServer::install_crds`] installs them (a `404` before,
/// as from a cluster without the CRDs).
pub const CRD_PATHS: [&str; 3] = [
    "/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies",
    "/apis/policy.networking.k8s.io/v1alpha1/baselineadminnetworkpolicies",
    "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies",
];

/// A resource the server serves: collection path, list kind, object kind, apiVersion.
const RESOURCES: [(&str, &str, &str); 13] = [
    ("/api/v1/namespaces", "Namespace", "v1"),
    ("/api/v1/pods", "Pod", "v1"),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
    ),
    ("/api/v1/services", "Service", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
    ("/api/v1/nodes", "Node", "v1"),
    (
        CRD_PATHS[0],
        "AdminNetworkPolicy",
        "policy.networking.k8s.io/v1alpha1",
    ),
    (
        CRD_PATHS[1],
        "BaselineAdminNetworkPolicy",
        "policy.networking.k8s.io/v1alpha1",
    ),
    (
        CRD_PATHS[2],
        "ClusterNetworkPolicy",
        "policy.networking.k8s.io/v1alpha2",
    ),
    // Owners: pods' ReplicaSets and Jobs (watched), and the Deployments and
    // CronJobs owning those (served as a real API server does, never watched).
    ("/apis/apps/v1/replicasets", "ReplicaSet", "apps/v1"),
    ("/apis/batch/v1/jobs", "Job", "batch/v1"),
    ("/apis/apps/v1/deployments", "Deployment", "apps/v1"),
    ("/apis/batch/v1/cronjobs", "CronJob", "batch/v1"),
];

/// What live watches are told.
#[derive(Clone, Debug)]
enum Live {
    /// An event of one resource (the JSON line, which carries its
    /// resourceVersion).
    Event { path: String, line: Bytes },
    /// Send a bookmark at this resourceVersion.
    Bookmark(u64),
    /// Send `ERROR 410` and close (the watch fell out of the history window).
    Expire,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, type, object) after the compaction point.
    history: Vec<(u64, &'static str, Value)>,
}

#[derive(Debug)]
struct Inner {
    rv: u64,
    stores: HashMap<&'static str, Store>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    /// Answer an expired watch with HTTP 410 instead of an ERROR event.
    gone_as_http: bool,
    /// Continue tokens: the snapshot of a paginated list.
    snapshots: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    /// `LIST path` / `WATCH path rv=N` for every request.
    log: Vec<String>,
    next_uid: u64,
    /// BOOKMARK events written to watch streams.
    bookmarks_sent: usize,
    /// Answer the next list continuation with `410 Expired`.
    expire_next_continue: bool,
    /// Collections answered with `403 Forbidden` (missing RBAC).
    forbidden: Vec<&'static str>,
    /// Whether the custom resources' collections are served.
    crds_installed: bool,
    /// What every request asked for, as RBAC sees it.
    accesses: BTreeSet<Access>,
}

/// What one request needs from RBAC: a verb on a resource (in a namespace, or
/// cluster-wide), or on a non-resource URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or
    /// `deletecollection` (for non-resource URLs: the lowercase HTTP method).
    pub verb: String,
    /// The API group ("" for the core group); empty for a non-resource URL.
    pub group: String,
    /// The resource, with `/subresource` if any; for a non-resource URL, its path.
    pub resource: String,
    /// The namespace of a namespaced request; None when cluster-wide (a
    /// cluster-scoped kind, or a list or watch across every namespace).
    pub namespace: Option<String>,
    /// Whether `resource` is a non-resource URL (`/version`, `/healthz`...).
    pub non_resource: bool,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.non_resource {
            return write!(f, "{} {} (non-resource URL)", self.verb, self.resource);
        }
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match &self.namespace {
            Some(ns) => write!(
                f,
                "{} {}{} in namespace {ns}",
                self.verb, self.resource, group
            ),
            None => write!(f, "{} {}{} cluster-wide", self.verb, self.resource, group),
        }
    }
}

/// The RBAC access of a request, by the Kubernetes API's path conventions:
/// `/api/v1/...` (core) or `/apis/GROUP/VERSION/...`, then `RESOURCE[/NAME[/SUB]]`
/// or `namespaces/NS/RESOURCE[/NAME[/SUB]]`; anything else is a non-resource URL.
pub fn access_of(method: &hyper::Method, path: &str, watch: bool) -> Access {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => Some(("", rest)),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => Some((*group, rest)),
        _ => None,
    };
    let Some((group, rest)) = rest else {
        return Access {
            verb: method.as_str().to_ascii_lowercase(),
            group: String::new(),
            resource: path.to_string(),
            namespace: None,
            non_resource: true,
        };
    };
    let (namespace, rest) = match rest {
        // `namespaces/NS` alone is the Namespace object NS itself.
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(*name)),
        [resource, name, sub, ..] => (format!("{resource}/{sub}"), Some(*name)),
        [] => (String::new(), None),
    };
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return access_of_unknown(other, path),
    };
    Access {
        verb: verb.to_string(),
        group: group.to_string(),
        resource,
        namespace,
        non_resource: false,
    }
}

fn access_of_unknown(method: &str, path: &str) -> Access {
    Access {
        verb: method.to_ascii_lowercase(),
        group: String::new(),
        resource: path.to_string(),
        namespace: None,
        non_resource: true,
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Live>,
    /// Bumped to close every open watch.
    disconnect: watch::Sender<u64>,
    /// Whether watch requests are answered (false: they wait).
    open: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server; dropping it stops it and closes its watches.
#[derive(Debug)]
pub struct FakeApiServer {
    url: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.disconnect.send_modify(|e| *e += 1);
    }
}

/// The collection path of a k8s-openapi resource type.
fn collection_path<K: k8s_openapi::Resource>() -> String {
    if K::GROUP.is_empty() {
        format!("/api/{}/{}", K::VERSION, K::URL_PATH_SEGMENT)
    } else {
        format!("/apis/{}/{}/{}", K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
    }
}

fn static_path(path: &str) -> Option<&'static str> {
    RESOURCES.iter().map(|r| r.0).find(|p| *p == path)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

impl FakeApiServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1,
                stores: RESOURCES.iter().map(|r| (r.0, Store::default())).collect(),
                compacted: 0,
                gone_as_http: false,
                snapshots: HashMap::new(),
                next_token: 0,
                log: Vec::new(),
                next_uid: 0,
                bookmarks_sent: 0,
                expire_next_continue: false,
                forbidden: Vec::new(),
                crds_installed: false,
                accesses: BTreeSet::new(),
            }),
            live: broadcast::channel(4096).0,
            disconnect: watch::Sender::new(0),
            open: watch::Sender::new(true),
        });
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer {
            url,
            shared,
            accept,
        }
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Writes a kubeconfig whose current context is this server (token auth)
    /// to `path`: what `netverdict_cluster::start` builds its client from.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: me\n  user:\n    token: t0ken\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n\
             current-context: fake\n",
            self.url
        );
        std::fs::write(path, kubeconfig).expect("write kubeconfig");
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Creates or replaces an object (ADDED or MODIFIED event); returns its new
    /// resourceVersion.
    pub fn apply<K: k8s_openapi::Resource + Serialize>(&self, object: &K) -> u64 {
        let path = collection_path::<K>();
        let value = serde_json::to_value(object).expect("serialize object");
        self.apply_value(&path, value)
    }

    /// Creates or replaces an object given as JSON in the collection at `path`.
    pub fn apply_value(&self, path: &str, mut value: Value) -> u64 {
        let path = static_path(path).unwrap_or_else(|| panic!("unknown resource path {path}"));
        let mut inner = self.shared.lock();
        inner.rv += 1;
        let rv = inner.rv;
        inner.next_uid += 1;
        let uid = format!("uid-{}", inner.next_uid);
        let meta = value
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("object has metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (
            meta.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            meta.get("name")
                .and_then(Value::as_str)
                .expect("object has a name")
                .to_string(),
        );
        let store = inner.stores.get_mut(path).expect("store");
        let kind = match store.objects.get(&key) {
            Some(old) => {
                // Keep the uid of the object being replaced.
                if let Some(uid) = old.pointer("/metadata/uid").cloned() {
                    meta.insert("uid".into(), uid);
                }
                "MODIFIED"
            }
            None => {
                meta.entry("uid").or_insert(json!(uid));
                "ADDED"
            }
        };
        store.objects.insert(key, value.clone());
        store.history.push((rv, kind, value.clone()));
        let line = event_line(kind, &value);
        let _ = self.shared.live.send(Live::Event {
            path: path.to_string(),
            line,
        });
        rv
    }

    /// Deletes an object (DELETED event); returns whether it existed.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: &str, name: &str) -> bool {
        self.delete_at(&collection_path::<K>(), namespace, name)
    }

    /// Deletes an object of the collection at `path` (DELETED event); returns
    /// whether it existed.
    pub fn delete_at(&self, path: &str, namespace: &str, name: &str) -> bool {
        let path = static_path(path).expect("known resource");
        let mut inner = self.shared.lock();
        let key = (namespace.to_string(), name.to_string());
        let Some(mut value) = inner
            .stores
            .get_mut(path)
            .and_then(|s| s.objects.remove(&key))
        else {
            return false;
        };
        inner.rv += 1;
        let rv = inner.rv;
        value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let store = inner.stores.get_mut(path).expect("store");
        store.history.push((rv, "DELETED", value.clone()));
        let _ = self.shared.live.send(Live::Event {
            path: path.to_string(),
            line: event_line("DELETED", &value),
        });
        true
    }

    /// Every object the server holds, as JSON with `kind`/`apiVersion`.
    pub fn objects(&self) -> Vec<Value> {
        let inner = self.shared.lock();
        let mut out = Vec::new();
        for (path, kind, api_version) in RESOURCES {
            for value in inner.stores[path].objects.values() {
                let mut value = value.clone();
                value["kind"] = json!(kind);
                value["apiVersion"] = json!(api_version);
                out.push(value);
            }
        }
        out
    }

    /// Installs (or removes) the network-policy-api CRDs: their collections
    /// are served, or answered `404`.
    pub fn install_crds(&self, on: bool) {
        self.shared.lock().crds_installed = on;
    }

    /// Forgets the history up to now: a watch from an older resourceVersion gets
    /// `410 Gone`.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.compacted = inner.rv;
        let compacted = inner.compacted;
        for store in inner.stores.values_mut() {
            store.history.retain(|(rv, _, _)| *rv > compacted);
        }
        inner.snapshots.clear();
    }

    /// Answers the next list continuation (`continue=` token) with `410 Expired`,
    /// as when the list's snapshot was compacted between two pages.
    pub fn expire_next_continue(&self) {
        self.shared.lock().expire_next_continue = true;
    }

    /// Answers every request for the collection of `K` with `403 Forbidden`
    /// (`on`), as when the agent's RBAC lacks it, or serves it again.
    pub fn forbid<K: k8s_openapi::Resource>(&self, on: bool) {
        self.forbid_path(&collection_path::<K>(), on);
    }

    /// [`FakeApiServer::forbid`] by collection path (`/api/v1/pods`), for
    /// tests without the k8s-openapi types.
    pub fn forbid_path(&self, path: &str, on: bool) {
        let path = static_path(path).unwrap_or_else(|| panic!("unknown resource path {path}"));
        let mut inner = self.shared.lock();
        inner.forbidden.retain(|p| *p != path);
        if on {
            inner.forbidden.push(path);
        }
    }

    /// Answer expired watches with an HTTP 410 instead of an in-stream ERROR event.
    pub fn set_gone_as_http_status(&self, on: bool) {
        self.shared.lock().gone_as_http = on;
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that asked
    /// for bookmarks.
    pub fn bookmark(&self) {
        let rv = self.shared.lock().rv;
        let _ = self.shared.live.send(Live::Bookmark(rv));
    }

    /// Closes every open watch (clients reconnect from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.disconnect.send_modify(|e| *e += 1);
    }

    /// Closes every open watch and holds new watch requests until
    /// [`resume_watches`](Self::resume_watches): a watch gap.
    pub fn pause_watches(&self) {
        self.shared.open.send_replace(false);
        self.drop_watches();
    }

    /// Answers watch requests again.
    pub fn resume_watches(&self) {
        self.shared.open.send_replace(true);
    }

    /// Sends `ERROR 410 Expired` to every open watch and closes it.
    pub fn expire_watches(&self) {
        let _ = self.shared.live.send(Live::Expire);
    }

    /// How many BOOKMARK events were written to watch streams.
    pub fn bookmarks_sent(&self) -> usize {
        self.shared.lock().bookmarks_sent
    }

    /// What every request so far asked for, as RBAC sees it (served or not).
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.shared.lock().accesses.clone()
    }

    /// The requests served so far (`LIST path` or `WATCH path rv=N`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// How many requests start with `prefix`.
    pub fn count_requests(&self, prefix: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// Waits until the number of requests starting with `prefix` reaches `n`.
    pub async fn wait_requests(&self, prefix: &str, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.count_requests(prefix) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} requests {prefix:?} after {timeout:?}: {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.replace("%3D", "=").replace("%2C", ",")),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

async fn handle(shared: Arc<Shared>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let params = query_params(request.uri().query());
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    shared
        .lock()
        .accesses
        .insert(access_of(request.method(), request.uri().path(), watch));
    if request.method() != hyper::Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", "only list and watch are served"),
        );
    }
    let Some(path) = static_path(request.uri().path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                &format!("no resource at {}", request.uri().path()),
            ),
        );
    };
    if CRD_PATHS.contains(&path) && !shared.lock().crds_installed {
        shared.lock().log.push(format!("NOTFOUND {path}"));
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if shared.lock().forbidden.contains(&path) {
        shared.lock().log.push(format!("FORBIDDEN {path}"));
        return json_response(
            StatusCode::FORBIDDEN,
            &status(403, "Forbidden", &forbidden_message(path, watch)),
        );
    }
    if watch {
        watch_response(shared, path, params).await
    } else {
        list_response(&shared, path, &params)
    }
}

/// The message a real API server's authorizer gives for a refused request.
fn forbidden_message(path: &str, watch: bool) -> String {
    let access = access_of(&hyper::Method::GET, path, watch);
    format!(
        "{resource} is forbidden: User \"system:serviceaccount:netverdict:test\" cannot {verb} resource \"{resource}\" in API group \"{group}\" at the cluster scope",
        resource = access.resource,
        verb = access.verb,
        group = access.group,
    )
}

fn list_response(
    shared: &Shared,
    path: &'static str,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let (_, kind, api_version) = RESOURCES
        .iter()
        .find(|r| r.0 == path)
        .copied()
        .expect("resource");
    let mut inner = shared.lock();
    inner.log.push(format!("LIST {path}"));
    let (rv, items) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match inner
            .snapshots
            .remove(token)
            .filter(|_| !std::mem::take(&mut inner.expire_next_continue))
        {
            Some(snapshot) => snapshot,
            None => {
                return json_response(
                    StatusCode::GONE,
                    &status(410, "Expired", "the provided continue parameter is too old"),
                );
            }
        },
        None => {
            let items = inner.stores[path]
                .objects
                .values()
                .map(|v| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("kind");
                        o.remove("apiVersion");
                    }
                    v
                })
                .collect();
            (inner.rv, items)
        }
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    let page: Vec<Value> = if items.len() > limit {
        let rest = items[limit..].to_vec();
        inner.next_token += 1;
        let token = format!("page{}", inner.next_token);
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(rest.len());
        inner.snapshots.insert(token, (rv, rest));
        items[..limit].to_vec()
    } else {
        items
    };
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{kind}List"),
            "apiVersion": api_version,
            "metadata": metadata,
            "items": page,
        }),
    )
}

async fn watch_response(
    shared: Arc<Shared>,
    path: &'static str,
    params: HashMap<String, String>,
) -> Response<Body> {
    let (_, kind, api_version) = RESOURCES
        .iter()
        .find(|r| r.0 == path)
        .copied()
        .expect("resource");
    // Held watches (a watch gap) wait here.
    let mut open = shared.open.subscribe();
    let _ = open.wait_for(|o| *o).await;
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let from: Option<u64> = params
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| rv.parse().unwrap_or(0));
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let mut live;
    let counter = shared.clone();
    let mut disconnect = shared.disconnect.subscribe();
    disconnect.borrow_and_update();
    {
        let mut inner = shared.lock();
        inner.log.push(format!(
            "WATCH {path} rv={}",
            from.map(|r| r.to_string()).unwrap_or_default()
        ));
        let mut backlog = Vec::new();
        match from {
            Some(from) if from < inner.compacted => {
                let message = format!("too old resource version: {from} ({})", inner.compacted);
                if inner.gone_as_http {
                    return json_response(StatusCode::GONE, &status(410, "Expired", &message));
                }
                backlog.push(event_line("ERROR", &status(410, "Expired", &message)));
                drop(inner);
                return stream_response(backlog, None);
            }
            Some(from) => {
                for (rv, kind, value) in &inner.stores[path].history {
                    if *rv > from {
                        backlog.push(event_line(kind, value));
                    }
                }
            }
            None => {
                for value in inner.stores[path].objects.values() {
                    backlog.push(event_line("ADDED", value));
                }
            }
        }
        // Subscribed under the lock: no event is missed or sent twice.
        live = shared.live.subscribe();
        for line in backlog {
            let _ = tx.send(line);
        }
    }
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // Events already sent to this watch go out before a disconnect.
                biased;
                event = live.recv() => {
                    let line = match event {
                        Ok(Live::Event { path: p, line }) if p == path => line,
                        Ok(Live::Event { .. }) => continue,
                        Ok(Live::Bookmark(rv)) if bookmarks => {
                            counter.lock().bookmarks_sent += 1;
                            event_line(
                                "BOOKMARK",
                                &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}),
                            )
                        }
                        Ok(Live::Bookmark(_)) => continue,
                        Ok(Live::Expire) => {
                            let _ = tx.send(event_line("ERROR", &status(410, "Expired", "too old resource version")));
                            return;
                        }
                        // Fell behind the broadcast: close, the client resumes.
                        Err(_) => return,
                    };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                _ = disconnect.changed() => return,
                _ = &mut deadline => return,
            }
        }
    });
    stream_response(Vec::new(), Some(rx))
}

/// A chunked response of JSON lines: `first`, then whatever `rx` yields.
fn stream_response(
    first: Vec<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
) -> Response<Body> {
    let head = futures::stream::iter(first);
    let tail = futures::stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        let line = rx.recv().await?;
        Some((line, Some(rx)))
    });
    let frames = futures::StreamExt::map(futures::StreamExt::chain(head, tail), |line| {
        Ok::<_, Infallible>(Frame::data(line))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
