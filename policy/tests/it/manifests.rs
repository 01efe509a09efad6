//! Loading cluster state from manifests: formats (multi-document YAML, JSON,
//! `kind: List`, directories), errors that name the file, object and field,
//! nothing valid dropped, and incremental updates.

use std::io::Write;
use std::path::Path;

use netverdict_policy::{
    ClusterState, Connection, Endpoint, LoadError, LoadOptions, Manifests, ObjectKind, PodKey,
    Protocol, Status,
};

fn load(text: &str) -> (ClusterState, Vec<LoadError>) {
    let mut m = Manifests::default();
    m.read_str(Path::new("test.yaml"), text);
    ClusterState::from_manifests(m, &LoadOptions::default())
}

fn errors(text: &str) -> Vec<String> {
    load(text).1.iter().map(|e| e.to_string()).collect()
}

const POD_A: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec:
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.0.0.1}
"#;

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}"
    )
}

#[test]
fn multi_document_yaml_list_and_json_all_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("{POD_A}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{team: a}}}}\n---\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut json = std::fs::File::create(dir.path().join("sub/list.json")).unwrap();
    write!(
        json,
        r#"{{"apiVersion":"v1","kind":"List","items":[
            {{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"b","namespace":"y"}},"status":{{"podIP":"fd00::2"}}}},
            {{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"d"}}}}
        ]}}"#
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let m = Manifests::read_paths(&[dir.path()]);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(m.ignored, vec![("Deployment".to_string(), 1)]);
    let state = ClusterState::load_paths(&[dir.path()]).unwrap();
    assert_eq!(state.pod_count(), 2);
    assert_eq!(
        state
            .namespace_label_map("x")
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    // The API server's namespace name label is added when missing.
    assert_eq!(
        state
            .namespace_label_map("x")
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("x")
    );
    assert!(state.pod_by_ip("fd00::2".parse().unwrap()).is_some());
}

#[test]
fn invalid_cidr_names_file_object_and_field() {
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n",
    ));
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0],
        "test.yaml (document 1): NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\""
    );
}

#[test]
fn except_outside_cidr_is_rejected() {
    let errs = errors(&policy(
        "  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}\n",
    ));
    assert!(
        errs[0].contains("spec.egress[0].to[0].ipBlock.except[0]"),
        "{errs:?}"
    );
}

#[test]
fn unknown_operator_names_the_field() {
    let errs = errors(&policy(
        "  podSelector:\n    matchExpressions: [{key: app, operator: Equals, values: [a]}]\n",
    ));
    assert!(
        errs[0].contains("NetworkPolicy x/p: spec.podSelector.matchExpressions[0].operator: unknown operator \"Equals\""),
        "{errs:?}"
    );
}

#[test]
fn port_neither_number_nor_name() {
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: \"HTTP PORT\"}]\n",
    ));
    assert!(
        errs[0].contains("spec.ingress[0].ports[0].port"),
        "{errs:?}"
    );
    assert!(
        errs[0].contains("neither a port number nor a valid port name"),
        "{errs:?}"
    );
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 70000}]\n",
    ));
    assert!(
        errs[0].contains("spec.ingress[0].ports[0].port: port 70000 is outside 1-65535"),
        "{errs:?}"
    );
}

#[test]
fn end_port_without_port_or_with_a_name() {
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - ports: [{endPort: 90}]\n",
    ));
    assert!(
        errs[0].contains("spec.ingress[0].ports[0].endPort: endPort needs port"),
        "{errs:?}"
    );
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: http, endPort: 90}]\n",
    ));
    assert!(errs[0].contains("endPort needs a numeric port"), "{errs:?}");
    let errs = errors(&policy(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]\n",
    ));
    assert!(errs[0].contains("endPort 80 is below port 90"), "{errs:?}");
}

#[test]
fn pod_without_ip_is_an_error_unless_allowed() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: pending, namespace: x}\nspec: {containers: []}\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("Pod x/pending: status.podIP: the pod has no IP address"),
        "{errs:?}"
    );
    let mut m = Manifests::default();
    m.read_str(Path::new("t.yaml"), text);
    let (state, errs) = ClusterState::from_manifests(
        m,
        &LoadOptions {
            require_pod_ips: false,
        },
    );
    assert!(errs.is_empty());
    assert_eq!(state.pod_count(), 1);
}

#[test]
fn a_bad_object_does_not_drop_the_good_ones() {
    let text = format!(
        "{POD_A}\n---\n{}\n---\n{}",
        policy("  podSelector: {}\n  ingress:\n  - ports: [{protocol: HTTP}]\n"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIP: 10.0.0.2}\n"
    );
    let (state, errs) = load(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].to_string().contains("test.yaml (document 2)"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].to_string().contains("unknown protocol \"HTTP\""),
        "{}",
        errs[0]
    );
    assert_eq!(state.pod_count(), 2);
    assert_eq!(state.policy_count(), 0);
}

#[test]
fn wrong_shapes_and_syntax_are_reported() {
    let errs = errors(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: 5}\n",
    );
    assert!(errs[0].contains("Pod x/a: spec.containers"), "{errs:?}");
    let errs = errors("just: [a, list\n");
    assert!(errs[0].contains("not valid YAML/JSON"), "{errs:?}");
    let errs = errors("hello: world\n");
    assert!(errs[0].contains("kind: missing"), "{errs:?}");
}

#[test]
fn missing_file_is_reported() {
    let err = ClusterState::load_paths(&["/nonexistent/cluster.yaml"]).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/cluster.yaml"),
        "{err}"
    );
}

#[test]
fn incremental_updates_change_verdicts_without_rebuilding() {
    let (mut state, errs) = load(&format!(
        "{POD_A}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: x, labels: {{app: b}}}}\nstatus: {{podIP: 10.0.0.2}}\n"
    ));
    assert!(errs.is_empty());
    let f = Connection::new(
        Endpoint::Pod(PodKey::new("x", "b")),
        Endpoint::Pod(PodKey::new("x", "a")),
        80,
        Protocol::Tcp,
    );
    assert!(state.verdict(&f).unwrap().allowed);
    let mut m = Manifests::default();
    m.read_str(
        Path::new("p.yaml"),
        &policy("  podSelector: {matchLabels: {app: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n"),
    );
    state.apply(&m.objects[0].object).unwrap();
    let v = state.verdict(&f).unwrap();
    assert_eq!(v.ingress.status, Status::Denied);
    // Relabel b as a client: a changed pod is a new identity, so the cached
    // denial for the old labels must not be reused.
    let mut m = Manifests::default();
    m.read_str(
        Path::new("b.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {role: client}}\nstatus: {podIP: 10.0.0.2}\n",
    );
    state.apply(&m.objects[0].object).unwrap();
    assert!(state.verdict(&f).unwrap().allowed);
    assert!(state.delete(ObjectKind::NetworkPolicy, "x", "p"));
    assert_eq!(
        state.verdict(&f).unwrap().ingress.status,
        Status::NotIsolated
    );
    assert!(state.delete(ObjectKind::Pod, "x", "b"));
    assert!(state.verdict(&f).is_err());
    assert!(!state.delete(ObjectKind::Pod, "x", "b"));
}

#[test]
fn service_backends_follow_pod_updates_and_deletes() {
    let (mut state, errs) = load(&format!(
        "{POD_A}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a2, namespace: x, labels: {{app: a}}}}\nstatus: {{podIP: 10.0.0.3}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a3, namespace: y, labels: {{app: a}}}}\nstatus: {{podIP: 10.0.0.4}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: x}}\nspec: {{clusterIP: 10.96.0.5, selector: {{app: a}}, ports: [{{port: 80, targetPort: http}}]}}\n"
    ));
    assert!(errs.is_empty(), "{errs:?}");
    let backends = |state: &ClusterState| {
        state
            .service_backends("10.96.0.5".parse().unwrap(), 80, Protocol::Tcp)
            .unwrap()
            .into_iter()
            .map(|(pod, port)| format!("{pod}:{port}"))
            .collect::<Vec<_>>()
    };
    // a2 defines no port named http; y/a3 is in another namespace.
    assert_eq!(backends(&state), ["x/a:80"]);
    let mut m = Manifests::default();
    m.read_str(
        Path::new("a.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: b}}\nstatus: {podIP: 10.0.0.1}\n",
    );
    state.apply(&m.objects[0].object).unwrap();
    assert!(backends(&state).is_empty(), "relabelled away");
    assert!(state.delete(ObjectKind::Pod, "x", "a"));
    assert!(backends(&state).is_empty());
    assert_eq!(
        state
            .pods_in("x")
            .map(|p| p.key.name.as_str())
            .collect::<Vec<_>>(),
        ["a2"]
    );
    assert!(state.delete(ObjectKind::Pod, "x", "a2"));
    assert_eq!(state.pods_in("x").count(), 0);
}
