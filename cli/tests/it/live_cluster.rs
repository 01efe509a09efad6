//! The policy commands (`explain`, `lint`, `verdicts`, `diagnose`) on a live
//! cluster: the real binary against the Kubernetes API double holding the
//! seed's cluster, found through `--kubeconfig` and `--context` or, as
//! kubectl does, through `$KUBECONFIG` and its current context. Each lists
//! every kind once and asks for nothing but `list`; a kind its role may not
//! list fails the command naming the permission to grant.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use netverdict_testing::apiserver::FakeApiServer;
use serde_json::Value;

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

/// The seed's objects on the double (its policies in `default`, as the lab
/// applies them).
fn populate(server: &FakeApiServer) {
    let read = |path: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("seed file");
        let value: Value = serde_yaml_ng::from_str(&text).expect("seed YAML");
        match value["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![value],
        }
    };
    let mut objects = read(&Path::new(SEED).join("cluster.yaml"));
    for policy in ["default-deny", "allow-dns-egress", "api-from-web"] {
        let mut p = read(&Path::new(SEED).join(format!("policies/{policy}.yaml")));
        p[0]["metadata"]["namespace"] = "default".into();
        objects.extend(p);
    }
    for object in objects {
        let path = match object["kind"].as_str().unwrap_or("") {
            "Namespace" => "/api/v1/namespaces",
            "Pod" => "/api/v1/pods",
            "Service" => "/api/v1/services",
            "NetworkPolicy" => "/apis/networking.k8s.io/v1/networkpolicies",
            other => panic!("the seed has a {other}"),
        };
        server.apply_value(path, object);
    }
}

/// Runs `netverdict` with `$KUBECONFIG` set to `kubeconfig` (and no
/// `~/.kube/config` to fall back on), off the async runtime's threads.
async fn netverdict(args: &[&str], kubeconfig: &Path, stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let kubeconfig = kubeconfig.to_path_buf();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let home = kubeconfig.parent().expect("a directory").to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netverdict runs");
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes());
        child.wait_with_output().expect("netverdict ends")
    })
    .await
    .expect("joined")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_commands_read_a_live_cluster_as_kubectl_finds_it() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    // $KUBECONFIG's current context is the double.
    let current = dir.path().join("current");
    server.write_kubeconfig(&current);
    // Another kubeconfig whose current context leads nowhere: --context picks the double.
    let other = dir.path().join("other");
    std::fs::write(
        &other,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             - name: nowhere\n  cluster:\n    server: http://127.0.0.1:9\n\
             users:\n- name: me\n  user:\n    token: t0ken\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n\
             - name: broken\n  context:\n    cluster: nowhere\n    user: me\n\
             current-context: broken\n",
            server.url()
        ),
    )
    .expect("kubeconfig");
    let other_flags = [
        "--kubeconfig",
        other.to_str().expect("path"),
        "--context",
        "fake",
    ];

    // explain: shop's frontend is denied by api-from-web (exit 1).
    let mut args = vec![
        "explain",
        "--from",
        "shop/np-client",
        "--to",
        "default/api",
        "--port",
        "8080",
    ];
    args.extend(other_flags);
    let out = netverdict(&args, &current, "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api-from-web"),
        "{}",
        text(&out)
    );

    // lint from $KUBECONFIG alone: the seed's policies leave DNS allowed.
    let out = netverdict(&["lint", "-o", "json"], &current, "").await;
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{}",
        text(&out)
    );
    let findings: Value = serde_json::from_slice(&out.stdout).expect("lint JSON");
    assert!(findings.is_array(), "{findings}");

    // verdicts: DNS is what default's egress allows.
    let out = netverdict(
        &["verdicts"],
        &current,
        r#"{"src":"default/np-client","dst":"kube-system/coredns","port":53,"protocol":"UDP"}"#,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let line: Value = serde_json::from_slice(&out.stdout).expect("a verdict line");
    assert_eq!(line["verdict"], "allow", "{line}");

    // diagnose: the fix, from the live cluster.
    let mut args = vec![
        "diagnose",
        "--from",
        "shop/np-client",
        "--to",
        "default/api",
        "--port",
        "8080",
        "-o",
        "json",
    ];
    args.extend(other_flags);
    let out = netverdict(&args, &current, "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let d: Value = serde_json::from_slice(&out.stdout).expect("diagnose JSON");
    assert_eq!(d["fix"].as_array().map(Vec::len), Some(1), "{d}");

    // The context that leads nowhere fails, naming the cluster it tried.
    let out = netverdict(
        &[
            "explain",
            "--kubeconfig",
            other.to_str().expect("path"),
            "--from",
            "shop/np-client",
            "--to",
            "default/api",
            "--port",
            "8080",
        ],
        &current,
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Only list, of each kind, cluster-wide.
    let verbs: std::collections::BTreeSet<String> =
        server.accesses().iter().map(|a| a.verb.clone()).collect();
    assert_eq!(
        verbs,
        ["list".to_string()].into(),
        "{:?}",
        server.accesses()
    );

    // A kind the role does not grant: the error names the permission.
    server.forbid_path("/apis/networking.k8s.io/v1/networkpolicies", true);
    server.forbid_path("/apis/apps/v1/replicasets", true);
    let out = netverdict(&["lint"], &current, "").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "grant list and watch on networkpolicies (apiGroups [\"networking.k8s.io\"])"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("grant list and watch on replicasets (apiGroups [\"apps\"])"),
        "{stderr}"
    );
}

/// `netverdict api` with no cluster flag, in a pod (`KUBERNETES_SERVICE_HOST`
/// set), loads the cluster state from the Kubernetes API by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_in_a_pod_reads_the_cluster_by_default() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let _api = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_netverdict"))
            .args([
                "api",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("netverdict api runs"),
    );
    server
        .wait_requests("LIST /api/v1/pods", 1, std::time::Duration::from_secs(30))
        .await;
    server
        .wait_requests(
            "WATCH /apis/networking.k8s.io/v1/networkpolicies",
            1,
            std::time::Duration::from_secs(30),
        )
        .await;
}

/// Stops the child process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
