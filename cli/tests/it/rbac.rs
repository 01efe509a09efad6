//! Least privilege both ways: each component that talks to the Kubernetes API
//! (the collector and the API server) is run as a real `netverdict` process
//! against the in-process list/watch API double, which records every request
//! as the RBAC access it needs (verb, group, resource, namespace). The roles
//! every deploy overlay binds to that component's service account must grant
//! exactly those accesses: a missing grant breaks the component, an extra one
//! is a privilege it never uses.
//!
//! Each component runs as deployed: the API server with `--kubernetes`, the
//! collector with no cluster flag (in-cluster configuration), both finding
//! the double through `$KUBECONFIG`; the test checks that the rendered
//! manifests run them that way. Besides the initial lists and watches, the
//! double expires every watch once, so re-lists and reconnects are recorded
//! too. The collector loads the eBPF probes, so its test is
//! `privileged::rbac` (root). Needs `kubectl` (kustomize) to render `deploy/`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use netverdict_testing::apiserver::{Access, CRD_PATHS, FakeApiServer};
use serde_json::{Value, json};

const NAMESPACE: &str = "netverdict";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every overlay (and the base): what a user may apply.
fn overlays() -> Vec<PathBuf> {
    let mut dirs = vec![repo().join("deploy/base")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/overlays"))
        .expect("deploy/overlays")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    more.sort();
    dirs.extend(more);
    dirs
}

/// The objects `kubectl kustomize dir` renders.
fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl: {e}: install kubectl >= 1.27 (kustomize v5 built in)")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The workload `kind/name` and its container `container`.
fn container<'a>(
    objects: &'a [Value],
    kind: &str,
    name: &str,
    container: &str,
) -> (&'a Value, &'a Value) {
    let workload = objects
        .iter()
        .find(|o| str_at(o, "/kind") == kind && str_at(o, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    let c = workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/name") == container))
        .unwrap_or_else(|| panic!("{kind} {name} has no container {container}"));
    (workload, c)
}

/// What the roles bound to service account `namespace/name` grant, as
/// accesses: a ClusterRoleBinding grants cluster-wide, a RoleBinding in its
/// namespace. Wildcards are kept as they are (no component asks for `*`, so
/// a wildcard never equals what was recorded).
fn granted(objects: &[Value], namespace: &str, name: &str) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    for binding in objects {
        let kind = str_at(binding, "/kind");
        if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
            continue;
        }
        let bound = binding
            .pointer("/subjects")
            .and_then(Value::as_array)
            .is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    str_at(s, "/kind") == "ServiceAccount"
                        && str_at(s, "/name") == name
                        && str_at(s, "/namespace") == namespace
                })
            });
        if !bound {
            continue;
        }
        let scope =
            (kind == "RoleBinding").then(|| str_at(binding, "/metadata/namespace").to_string());
        let role_kind = str_at(binding, "/roleRef/kind");
        let role_name = str_at(binding, "/roleRef/name");
        let role = objects
            .iter()
            .find(|r| {
                str_at(r, "/kind") == role_kind
                    && str_at(r, "/metadata/name") == role_name
                    && (role_kind == "ClusterRole"
                        || Some(str_at(r, "/metadata/namespace")) == scope.as_deref())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{kind} {} binds {namespace}/{name} to {role_kind} {role_name}, which the deploy does not define",
                    str_at(binding, "/metadata/name")
                )
            });
        for rule in role
            .pointer("/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for verb in strings(rule, "/verbs") {
                for url in strings(rule, "/nonResourceURLs") {
                    out.insert(Access {
                        verb: verb.clone(),
                        group: String::new(),
                        resource: url,
                        namespace: None,
                        non_resource: true,
                    });
                }
                for group in strings(rule, "/apiGroups") {
                    for resource in strings(rule, "/resources") {
                        out.insert(Access {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource,
                            namespace: scope.clone(),
                            non_resource: false,
                        });
                    }
                }
            }
        }
    }
    out
}

/// A cluster with an object of every kind, so that every list has items.
fn populate(server: &FakeApiServer) {
    let objects = [
        (
            "/api/v1/namespaces",
            json!({"metadata": {"name": "shop", "labels": {"team": "web"}}}),
        ),
        (
            "/api/v1/pods",
            json!({
                "metadata": {"namespace": "shop", "name": "web-1", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web"}]},
                "status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}], "phase": "Running"},
            }),
        ),
        (
            "/apis/networking.k8s.io/v1/networkpolicies",
            json!({
                "metadata": {"namespace": "shop", "name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            }),
        ),
        (
            "/api/v1/services",
            json!({
                "metadata": {"namespace": "shop", "name": "web"},
                "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                         "ports": [{"port": 80, "protocol": "TCP"}]},
            }),
        ),
        (
            "/apis/discovery.k8s.io/v1/endpointslices",
            json!({
                "metadata": {"namespace": "shop", "name": "web-1",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.0.5"]}],
                "ports": [{"port": 80, "protocol": "TCP"}],
            }),
        ),
        (
            "/api/v1/nodes",
            json!({
                "metadata": {"name": "node-a"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]},
            }),
        ),
    ];
    for (path, object) in objects {
        server.apply_value(path, object);
    }
    // A cluster with the network-policy-api CRDs (without them, the lists
    // answer 404 and the kinds are never watched).
    server.install_crds(true);
    server.apply_value(
        CRD_PATHS[0],
        json!({
            "metadata": {"name": "deny-tenant"},
            "spec": {"priority": 1, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]}]},
        }),
    );
}

/// A `netverdict` process whose stderr is read on a thread.
struct Process {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn spawn(args: &[&str], kubeconfig: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netverdict starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Process {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (off the runtime) for a stderr line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return,
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line {prefix:?} within {timeout:?}; it printed:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// SIGTERM, and waits for the exit.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netverdict args` against a populated double until `ready` is
/// printed, expires every watch once and waits for each listed kind to be
/// listed and watched again; every access the process asked for.
pub(crate) async fn record(args: &[&str], ready: &'static str) -> BTreeSet<Access> {
    let server = FakeApiServer::start().await;
    populate(&server);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut process = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Process::spawn(&args, &kubeconfig);
        p.wait_line(ready, Duration::from_secs(120));
        p
    })
    .await
    .unwrap();
    // Every kind listed (the process is synced) has its watch open...
    let listed = |prefix: &str| -> BTreeSet<String> {
        server
            .requests()
            .iter()
            .filter_map(|r| r.strip_prefix(prefix))
            .map(|r| r.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while listed("WATCH ") != listed("LIST ") {
        assert!(
            Instant::now() < deadline,
            "watches never opened: {:#?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...then every watch expires: each kind is listed and watched again.
    let kinds = listed("LIST ").len();
    assert!(kinds > 0, "the process listed nothing");
    server.expire_watches();
    server
        .wait_requests("LIST ", 2 * kinds, Duration::from_secs(30))
        .await;
    server
        .wait_requests("WATCH ", 2 * kinds, Duration::from_secs(30))
        .await;
    tokio::task::spawn_blocking(move || {
        process.seen.clear();
        process.stop()
    })
    .await
    .unwrap();
    server.accesses()
}

/// Asserts that every overlay's roles for `service_account` grant exactly
/// `asked`.
pub(crate) fn assert_granted_exactly(
    component: &str,
    service_account: &str,
    asked: &BTreeSet<Access>,
) {
    let show =
        |set: &BTreeSet<Access>| -> Vec<String> { set.iter().map(Access::to_string).collect() };
    for dir in overlays() {
        let objects = render(&dir);
        let grants = granted(&objects, NAMESPACE, service_account);
        let missing: BTreeSet<_> = asked.difference(&grants).cloned().collect();
        let extra: BTreeSet<_> = grants.difference(asked).cloned().collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: the roles of {NAMESPACE}/{service_account} ({component}) must grant exactly what it asks\n\
             asked: {:#?}\nnot granted: {:#?}\ngranted but never asked: {:#?}",
            dir.display(),
            show(asked),
            show(&missing),
            show(&extra),
        );
    }
}

/// The service account of `kind/name` in every overlay (all the same), after
/// checking that `check` holds for its container `container`.
pub(crate) fn service_account(
    kind: &str,
    name: &str,
    c: &str,
    check: impl Fn(&[String]) -> Result<(), String>,
) -> String {
    let mut accounts = BTreeSet::new();
    for dir in overlays() {
        let objects = render(&dir);
        let (workload, container) = container(&objects, kind, name, c);
        let pod = workload.pointer("/spec/template/spec").expect("pod spec");
        assert_ne!(
            pod.pointer("/automountServiceAccountToken"),
            Some(&json!(false)),
            "{}: {kind} {name} talks to the Kubernetes API: it needs its token",
            dir.display()
        );
        let args = strings(container, "/args");
        if let Err(e) = check(&args) {
            panic!("{}: {kind} {name}: {e}: {args:?}", dir.display());
        }
        accounts.insert(str_at(pod, "/serviceAccountName").to_string());
    }
    assert_eq!(accounts.len(), 1, "{kind} {name}: {accounts:?}");
    accounts.pop_first().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_role_grants_exactly_what_it_asks() {
    let account = service_account("Deployment", "netverdict-api", "api", |args| {
        if args.iter().any(|a| a == "--kubernetes") {
            Ok(())
        } else {
            Err("not run with --kubernetes (the mode this test records)".into())
        }
    });
    let asked = record(
        &[
            "api",
            "--kubernetes",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "netverdict api: gRPC on",
    )
    .await;
    assert!(!asked.is_empty());
    assert_granted_exactly("netverdict api", &account, &asked);
}

/// The comparison itself: an extra grant and a missing one are both found.
#[test]
fn a_role_granting_more_or_less_than_asked_is_caught() {
    let objects = vec![
        json!({"kind": "ClusterRole", "metadata": {"name": "r"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["list", "watch"]},
        ]}),
        json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
               "roleRef": {"kind": "ClusterRole", "name": "r"},
               "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": NAMESPACE}]}),
        json!({"kind": "Role", "metadata": {"name": "r", "namespace": "x"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        ]}),
        json!({"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "x"},
               "roleRef": {"kind": "Role", "name": "r"},
               "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": NAMESPACE}]}),
    ];
    let shown: Vec<String> = granted(&objects, NAMESPACE, "sa")
        .iter()
        .map(Access::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "get configmaps in namespace x",
            "list pods cluster-wide",
            "list secrets cluster-wide",
            "watch pods cluster-wide",
            "watch secrets cluster-wide",
        ]
    );
    assert!(granted(&objects, NAMESPACE, "other").is_empty());
}
