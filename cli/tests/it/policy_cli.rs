//! The policy subcommands through the real binary: `verdicts` keeps input order
//! and answers bad lines with error lines, `explain` and `lint` use their exit
//! statuses, and bad manifests fail with the file, object and field.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

fn netverdict(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netverdict runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `contents` in a file `name` of a new temporary directory, which lives as
/// long as the returned guard; and the file's path.
fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn verdicts_answers_every_line_in_order() {
    let input = [
        r#"{"src":"shop/np-client","dst":"default/api","port":8080}"#,
        r#"{"src":"default/np-client","dst":"kube-system/coredns","port":53,"protocol":"UDP"}"#,
        "",
        "not json",
        r#"{"src":"default/nope","dst":"default/api","port":8080}"#,
        r#"{"src":"10.244.2.20","dst":"10.244.1.10","port":8080,"protocol":"tcp"}"#,
        r#"{"src":"default/api","dst":"203.0.113.9","port":443,"protocol":"QUIC"}"#,
    ]
    .join("\n");
    let out = netverdict(&["verdicts", "--cluster", SEED], &input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 6, "one line per non-blank input: {lines:?}");
    assert_eq!(lines[0]["verdict"], "deny");
    assert_eq!(lines[0]["ingress"]["status"], "denied");
    assert_eq!(
        lines[0]["ingress"]["selected_by"],
        serde_json::json!(["default/api-from-web", "default/default-deny"])
    );
    assert_eq!(
        lines[0]["ingress"]["nearest_miss"]["policy"],
        "default/api-from-web"
    );
    assert_eq!(lines[1]["verdict"], "allow");
    assert_eq!(
        lines[1]["egress"]["allowed_by"][0]["policy"],
        "default/allow-dns-egress"
    );
    assert_eq!(lines[2]["line"], 4);
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid flow")
    );
    assert_eq!(lines[3]["line"], 5);
    assert_eq!(lines[3]["error"], "unknown pod default/nope");
    assert_eq!(lines[4]["src_pod"], "shop/np-client");
    assert_eq!(lines[4]["dst_pod"], "default/api");
    assert_eq!(lines[4]["verdict"], "deny");
    assert!(lines[5]["error"].as_str().unwrap().contains("QUIC"));
}

#[test]
fn verdicts_reads_a_flows_file() {
    let (_dir, path) = temp_file(
        "flows.jsonl",
        r#"{"src":"shop/np-client","dst":"default/api","port":5432}"#,
    );
    let out = netverdict(&["verdicts", "--cluster", SEED, "--flows", &path], "");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["verdict"], "deny");
}

#[test]
fn explain_exit_status_follows_the_verdict() {
    let out = netverdict(
        &[
            "explain",
            "--cluster",
            SEED,
            "--from",
            "shop/np-client",
            "--to",
            "default/api",
            "--port",
            "8080",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("DENY: shop/np-client -> default/api TCP/8080"),
        "{text}"
    );
    assert!(
        text.contains("needs source namespace label team=web; namespace shop has team=payments"),
        "{text}"
    );

    let out = netverdict(
        &[
            "explain",
            "--cluster",
            SEED,
            "--from",
            "default/np-client",
            "--to",
            "kube-system/coredns",
            "--port",
            "53",
            "--protocol",
            "UDP",
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "allow");
}

#[test]
fn lint_flags_dns_broken_by_default_deny() {
    let cluster = format!("{SEED}/cluster.yaml");
    let deny = format!("{SEED}/policies/default-deny.yaml");
    let out = netverdict(
        &[
            "lint",
            "--cluster",
            &cluster,
            "--cluster",
            &deny,
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "dns-egress-blocked" && f["policy"] == "default/default-deny"),
        "{findings}"
    );
    let out = netverdict(&["lint", "--cluster", SEED], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_manifests_fail_with_file_object_and_field() {
    let (_dir, path) = temp_file(
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: nope}}]\n",
    );
    let out = netverdict(&["lint", "--cluster", &path], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml (document 1): NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"nope\""),
        "{err}"
    );
}

/// The seed's policies plus an AdminNetworkPolicy that denies the web team's
/// namespace to the api: what NetworkPolicy allows (default/np-client ->
/// default/api) is denied, and every command says by which admin rule.
#[test]
fn admin_network_policy_through_explain_verdicts_and_lint() {
    let (_dir, anp) = temp_file(
        "anp.yaml",
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
         metadata: {name: lock-api}\nspec:\n  priority: 5\n  subject: {pods: {namespaceSelector: {}, \
         podSelector: {matchLabels: {app: api}}}}\n  ingress:\n  - name: no-frontends\n    action: Deny\n    \
         from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: frontend}}}}]\n",
    );
    let anp = anp.as_str();
    let args = [
        "explain",
        "--cluster",
        SEED,
        "--cluster",
        anp,
        "--from",
        "default/np-client",
        "--to",
        "default/api",
        "--port",
        "8080",
    ];
    let out = netverdict(&args, "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ingress of default/api: Admin tier: DENIED"),
        "{text}"
    );
    assert!(
        text.contains("decided by: rule 0 \"no-frontends\" (Deny) of AdminNetworkPolicy/lock-api (Admin tier, priority 5)"),
        "{text}"
    );

    let out = netverdict(
        &["verdicts", "--cluster", SEED, "--cluster", anp],
        r#"{"src":"default/np-client","dst":"default/api","port":8080}"#,
    );
    let lines = json_lines(&out);
    assert_eq!(lines[0]["verdict"], "deny");
    assert_eq!(lines[0]["ingress"]["tier"], "admin");
    assert_eq!(
        lines[0]["ingress"]["admin_rule"]["policy"],
        "AdminNetworkPolicy/lock-api"
    );
    assert_eq!(lines[0]["ingress"]["admin_rule"]["name"], "no-frontends");

    let out = netverdict(&["lint", "--cluster", SEED, "--cluster", anp], "");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "warning[admin-deny-shadows-network-policy] AdminNetworkPolicy/lock-api spec.ingress[0]"
        ),
        "{text}"
    );
}

/// An egress allowlist by name (`domainNames`) over the seed's default deny:
/// `explain --to-name` and a `verdicts` line's `dst_name` are matched against
/// it; without a name the rule is not evaluated.
#[test]
fn domain_name_peers_through_explain_and_verdicts() {
    let (_dir, anp) = temp_file(
        "anp.yaml",
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
         metadata: {name: allowlist}\nspec:\n  priority: 5\n  subject: {namespaces: {}}\n  \
         egress:\n  - {name: payments, action: Allow, to: [{domainNames: [\"*.stripe.test\"]}]}\n",
    );
    let default_deny = format!("{SEED}/policies/default-deny.yaml");
    let anp = anp.as_str();
    let explain = |names: &[&str]| {
        let mut args = vec![
            "explain",
            "--cluster",
            SEED,
            "--cluster",
            &default_deny,
            "--cluster",
            anp,
            "--from",
            "default/np-client",
            "--to",
            "203.0.113.7",
            "--port",
            "443",
        ];
        for name in names {
            args.extend(["--to-name", name]);
        }
        let out = netverdict(&args, "");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = explain(&["API.stripe.test."]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("resolved from api.stripe.test"), "{text}");
    assert!(
        text.contains("rule 0 \"payments\" (Allow) of AdminNetworkPolicy/allowlist"),
        "{text}"
    );
    let (code, text) = explain(&["evil.test"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("not evaluated"), "{text}");
    let (code, text) = explain(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("not evaluated: rule 0 \"payments\""),
        "{text}"
    );

    let out = netverdict(
        &[
            "verdicts",
            "--cluster",
            SEED,
            "--cluster",
            &default_deny,
            "--cluster",
            anp,
        ],
        concat!(
            r#"{"src":"default/np-client","dst":"203.0.113.7","port":443,"dst_name":"pay.stripe.test"}"#,
            "\n",
            r#"{"src":"default/np-client","dst":"203.0.113.7","port":443}"#,
        ),
    );
    let lines = json_lines(&out);
    assert_eq!(lines[0]["verdict"], "allow", "{lines:?}");
    assert_eq!(lines[0]["egress"]["admin_rule"]["name"], "payments");
    assert_eq!(lines[1]["verdict"], "deny", "{lines:?}");
    assert_eq!(lines[1]["egress"]["not_evaluated"][0]["name"], "payments");
}

/// `lint -f` on policy files alone, as before `kubectl apply`: a directory, a
/// `kind: List`, multi-document YAML and standard input. Two egress default
/// denies without DNS are flagged, no policy "selects no pod", a selector on
/// kube-system is not an unknown namespace, and the skipped checks are said
/// once; with the DNS allowance the run is clean.
#[test]
fn lint_reads_policy_files_alone_as_kubectl_does() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("deny.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: no-egress, namespace: shop}\n\
         spec:\n  podSelector: {}\n  policyTypes: [Egress]\n---\napiVersion: networking.k8s.io/v1\n\
         kind: NetworkPolicy\nmetadata: {name: lockdown, namespace: vault}\nspec:\n  podSelector: {}\n  \
         policyTypes: [Ingress, Egress]\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("web.json"),
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
        "metadata":{"name":"web-in","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},
        "ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}}}]}]}}]}"#,
    )
    .unwrap();
    std::fs::write(policies.join("notes.txt"), "not a manifest").unwrap();
    let dir_arg = policies.to_str().unwrap();
    let out = netverdict(&["lint", "-f", dir_arg, "-o", "json"], "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = findings.iter().filter_map(|f| f["code"].as_str()).collect();
    assert_eq!(
        codes,
        ["dns-egress-blocked", "dns-egress-blocked", "checks-skipped"],
        "{findings:#?}"
    );
    assert_eq!(findings[0]["policy"], "shop/no-egress");
    assert_eq!(findings[1]["policy"], "vault/lockdown");

    // The fix through standard input, beside the directory: clean.
    let fix = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: dns, namespace: NS}\n\
               spec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: \
               {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n      podSelector: {matchLabels: \
               {k8s-app: kube-dns}}\n    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]\n";
    let both = format!(
        "{}---\n{}",
        fix.replace("NS", "shop"),
        fix.replace("NS", "vault")
    );
    let out = netverdict(&["lint", "-f", dir_arg, "-f", "-"], &both);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("info[checks-skipped]"), "{text}");
    assert!(
        text.contains("no warnings (5 policies, 0 admin policies, 0 pods)"),
        "{text}"
    );

    // -f with --cluster: these policies applied to that cluster.
    let out = netverdict(
        &[
            "lint",
            "--cluster",
            &format!("{SEED}/cluster.yaml"),
            "-f",
            &format!("{SEED}/policies/default-deny.yaml"),
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        findings.iter().any(|f| f["code"] == "dns-egress-blocked"
            && f["message"].as_str().is_some_and(|m| m.contains("pods "))),
        "{findings:#?}"
    );
    assert!(
        findings.iter().all(|f| f["code"] != "checks-skipped"),
        "{findings:#?}"
    );
}
