//! Every lint check: it fires on the pitfall it names, with the policy and field,
//! and stays quiet on the corrected policy.

use std::path::Path;

use netverdict_policy::lint::{DnsTarget, Finding, LintOptions, Severity, lint, lint_with};
use netverdict_policy::{ClusterState, LoadOptions, Manifests};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: prod, labels: {app: api}}
spec:
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web, role: frontend}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
status: {podIP: 10.0.0.53}
"#;

fn findings(policy: &str) -> Vec<Finding> {
    let mut m = Manifests::default();
    m.read_str(Path::new("cluster.yaml"), CLUSTER);
    m.read_str(
        Path::new("policy.yaml"),
        &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: prod}}\nspec:\n{policy}"),
    );
    let (state, errors): (ClusterState, _) =
        ClusterState::from_manifests(m, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    lint(&state)
}

fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.code).collect()
}

#[test]
fn a_policy_selecting_no_pod() {
    let f = findings("  podSelector: {matchLabels: {app: apii}}\n  ingress: [{}]\n");
    assert_eq!(codes(&f), ["selects-no-pod"]);
    assert_eq!(f[0].field.as_deref(), Some("spec.podSelector"));
    assert!(f[0].message.contains("app=apii"), "{}", f[0].message);
    assert!(findings("  podSelector: {matchLabels: {app: api}}\n  ingress: [{}]\n").is_empty());
}

#[test]
fn a_peer_pod_selector_matching_nothing() {
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: frontnd}}}]\n",
    );
    assert_eq!(codes(&f), ["pod-selector-matches-nothing"]);
    assert_eq!(
        f[0].field.as_deref(),
        Some("spec.ingress[0].from[0].podSelector")
    );
}

#[test]
fn a_namespace_label_no_namespace_carries() {
    let f = findings(
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-sytem}}}]\n    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]\n",
    );
    let unknown: Vec<_> = f
        .iter()
        .filter(|f| f.code == "unknown-namespace-label")
        .collect();
    assert_eq!(unknown.len(), 1, "{f:?}");
    assert!(
        unknown[0]
            .message
            .contains("kubernetes.io/metadata.name=kube-sytem"),
        "{}",
        unknown[0].message
    );
    // The typo also breaks DNS, which the DNS check reports.
    assert!(codes(&f).contains(&"dns-egress-blocked"), "{f:?}");
}

#[test]
fn dns_allowed_on_udp_only_is_still_flagged_for_tcp() {
    let f = findings(
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]\n    ports: [{protocol: UDP, port: 53}]\n",
    );
    let dns: Vec<_> = f
        .iter()
        .filter(|f| f.code == "dns-egress-blocked")
        .collect();
    assert_eq!(dns.len(), 1, "{f:?}");
    assert!(dns[0].message.contains("(TCP/53)"), "{}", dns[0].message);
    assert!(
        dns[0].message.contains("pods api, web"),
        "{}",
        dns[0].message
    );
}

#[test]
fn a_named_port_no_selected_pod_defines() {
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - ports: [{port: https}]\n",
    );
    assert_eq!(codes(&f), ["named-port-undefined"]);
    assert_eq!(f[0].field.as_deref(), Some("spec.ingress[0].ports[0].port"));
    assert!(
        findings(
            "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - ports: [{port: http}]\n"
        )
        .is_empty()
    );
    // UDP http is not the TCP http port.
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - ports: [{port: http, protocol: UDP}]\n",
    );
    assert_eq!(codes(&f), ["named-port-undefined"]);
}

#[test]
fn separate_namespace_and_pod_selectors_look_like_a_mistaken_or() {
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: web}}\n    - podSelector: {matchLabels: {role: frontend}}\n",
    );
    assert_eq!(codes(&f), ["peers-or-not-and"]);
    assert_eq!(f[0].field.as_deref(), Some("spec.ingress[0].from"));
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: web}}\n      podSelector: {matchLabels: {role: frontend}}\n",
    );
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn an_and_that_matches_nothing_where_either_selector_would() {
    // frontend pods exist, kube-system exists, but no frontend is in kube-system.
    let f = findings(
        "  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n      podSelector: {matchLabels: {role: frontend}}\n",
    );
    assert!(codes(&f).contains(&"peer-and-matches-nothing"), "{f:?}");
    let and = f
        .iter()
        .find(|f| f.code == "peer-and-matches-nothing")
        .unwrap();
    assert_eq!(and.field.as_deref(), Some("spec.ingress[0].from[0]"));
}

// ---- the admin-tier pitfalls ---------------------------------------------------

/// Lints the cluster with extra objects (NetworkPolicies, admin policies).
fn findings_with(objects: &str) -> Vec<Finding> {
    let mut m = Manifests::default();
    m.read_str(Path::new("cluster.yaml"), CLUSTER);
    m.read_str(Path::new("policies.yaml"), objects);
    let (state, errors): (ClusterState, _) =
        ClusterState::from_manifests(m, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    lint(&state)
}

const PASS_TO_PROD: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: hand-over}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {team: web}}}
  ingress:
  - {name: to-owners, action: Pass, from: [{namespaces: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
"#;

#[test]
fn an_admin_pass_with_no_network_policy_behind_it() {
    let f = findings_with(PASS_TO_PROD);
    let pass: Vec<_> = f
        .iter()
        .filter(|f| f.code == "admin-pass-without-network-policy")
        .collect();
    assert_eq!(pass.len(), 1, "{f:#?}");
    assert_eq!(
        pass[0].policy.as_ref().map(|p| p.to_string()).as_deref(),
        Some("AdminNetworkPolicy/hand-over")
    );
    assert_eq!(pass[0].field.as_deref(), Some("spec.ingress[0]"));
    let m = &pass[0].message;
    assert!(m.contains("\"to-owners\"") && m.contains("prod/api"), "{m}");
    assert!(m.contains("BaselineAdminNetworkPolicy/default"), "{m}");
    // With a NetworkPolicy isolating both pods, the pass has somewhere to go.
    let isolated = format!(
        "{PASS_TO_PROD}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: all, namespace: prod}}\nspec: {{podSelector: {{}}, ingress: [{{}}]}}\n"
    );
    let f = findings_with(&isolated);
    assert!(
        !codes(&f).contains(&"admin-pass-without-network-policy"),
        "{f:#?}"
    );
}

#[test]
fn an_admin_deny_shadowing_a_network_policy_allow() {
    let objects = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 8080}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: lockdown}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}
  ingress:
  - name: no-web
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: frontend}}}}]
"#;
    let f = findings_with(objects);
    let shadow: Vec<_> = f
        .iter()
        .filter(|f| f.code == "admin-deny-shadows-network-policy")
        .collect();
    assert_eq!(shadow.len(), 1, "{f:#?}");
    assert_eq!(
        shadow[0].policy.as_ref().map(|p| p.to_string()).as_deref(),
        Some("ClusterNetworkPolicy/lockdown")
    );
    let m = &shadow[0].message;
    assert!(
        m.contains("prod/api-from-web") && m.contains("prod/web -> prod/api TCP/8080"),
        "{m}"
    );
    // A deny of other pods shadows nothing.
    let f = findings_with(&objects.replace("role: frontend", "role: backend"));
    assert!(
        !codes(&f).contains(&"admin-deny-shadows-network-policy"),
        "{f:#?}"
    );
}

#[test]
fn admin_policies_sharing_a_priority_and_pods() {
    let anp = |name: &str, priority: u32, app: &str| {
        format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
             metadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  subject: {{pods: {{namespaceSelector: {{}}, \
             podSelector: {{matchLabels: {{app: {app}}}}}}}}}\n  egress:\n  - {{action: Deny, to: [{{networks: [203.0.113.0/24]}}]}}\n"
        )
    };
    let f = findings_with(&(anp("b-second", 7, "api") + &anp("a-first", 7, "api")));
    let ties: Vec<_> = f
        .iter()
        .filter(|f| f.code == "admin-priority-tie")
        .collect();
    assert_eq!(ties.len(), 1, "{f:#?}");
    let m = &ties[0].message;
    assert!(
        m.contains("AdminNetworkPolicy/a-first and AdminNetworkPolicy/b-second share priority 7"),
        "{m}"
    );
    assert!(
        m.contains("decides AdminNetworkPolicy/a-first first"),
        "{m}"
    );
    // Other pods, or another priority: no tie.
    let f = findings_with(&(anp("b-second", 7, "api") + &anp("a-first", 7, "web")));
    assert!(!codes(&f).contains(&"admin-priority-tie"), "{f:#?}");
    let f = findings_with(&(anp("b-second", 7, "api") + &anp("a-first", 8, "api")));
    assert!(!codes(&f).contains(&"admin-priority-tie"), "{f:#?}");
}

#[test]
fn a_domain_names_allow_without_a_deny_after_it() {
    let allowlist = |then: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
             metadata: {{name: registry}}\nspec:\n  priority: 5\n  subject: {{pods: {{namespaceSelector: {{}}, \
             podSelector: {{matchLabels: {{app: api}}}}}}}}\n  egress:\n  - {{name: registry, action: Allow, \
             to: [{{domainNames: [\"*.registry.test\"]}}], ports: [{{portNumber: {{port: 443}}}}]}}\n{then}"
        )
    };
    let f = findings_with(&allowlist(""));
    let open: Vec<_> = f
        .iter()
        .filter(|f| f.code == "admin-domain-names-without-deny")
        .collect();
    assert_eq!(open.len(), 1, "{f:#?}");
    assert_eq!(open[0].field.as_deref(), Some("spec.egress[0]"));
    let m = &open[0].message;
    assert!(m.contains("\"registry\"") && m.contains("prod/api"), "{m}");
    assert!(m.contains("TCP/443"), "{m}");
    // The allowlist completed by a Deny of the rest: nothing to say.
    let f = findings_with(&allowlist(
        "  - {name: rest, action: Deny, to: [{networks: [0.0.0.0/0, \"::/0\"]}]}\n",
    ));
    assert!(
        !codes(&f).contains(&"admin-domain-names-without-deny"),
        "{f:#?}"
    );
}

// ---- policy files alone (no pods, no namespaces), as before `kubectl apply` ----

/// Classic policies written for this test: an egress default deny, a deny of
/// everything, and the DNS allowance that fixes both.
const DEFAULT_DENY_EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: no-egress, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
const DENY_EVERYTHING: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: lockdown, namespace: vault}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n";
const ALLOW_WEB_FROM_SHOP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: web-from-shop, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n\
  ingress:\n  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}]\n";

fn allow_dns(namespace: &str, ports: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: dns, namespace: {namespace}}}\n\
         spec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: \
         {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}}\n      podSelector: {{matchLabels: \
         {{k8s-app: kube-dns}}}}\n    ports: {ports}\n"
    )
}

const DNS_PORTS: &str = "[{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]";

fn files_alone(docs: &[&str], options: &LintOptions) -> Vec<Finding> {
    let mut m = Manifests::default();
    m.read_str(Path::new("policies.yaml"), &docs.join("---\n"));
    let (state, errors) = ClusterState::from_manifests(m, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    lint_with(&state, options)
}

fn with_code<'a>(findings: &'a [Finding], code: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.code == code).collect()
}

#[test]
fn default_denies_without_dns_are_flagged_from_the_policy_files_alone() {
    let f = files_alone(
        &[DEFAULT_DENY_EGRESS, DENY_EVERYTHING],
        &LintOptions::default(),
    );
    let dns = with_code(&f, "dns-egress-blocked");
    assert_eq!(dns.len(), 2, "{f:#?}");
    for (finding, policy) in dns.iter().zip(["shop/no-egress", "vault/lockdown"]) {
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(
            finding.policy.as_ref().map(|p| p.to_string()).as_deref(),
            Some(policy)
        );
        assert!(
            finding.message.contains("(UDP/53 and TCP/53)")
                && finding
                    .message
                    .contains("kube-system pods labelled k8s-app=kube-dns")
                && finding.message.contains("the pods it selects"),
            "{}",
            finding.message
        );
    }
    // Nothing claims the policies select no pod; the skip is said once.
    assert!(with_code(&f, "selects-no-pod").is_empty(), "{f:#?}");
    let skipped = with_code(&f, "checks-skipped");
    assert_eq!(skipped.len(), 1, "{f:#?}");
    assert_eq!(skipped[0].severity, Severity::Info);
    assert!(
        skipped[0].message.contains("no pod") && skipped[0].message.contains("selects-no-pod"),
        "{}",
        skipped[0].message
    );
    assert_eq!(f.len(), 3, "{f:#?}");
}

#[test]
fn allowing_dns_to_kube_system_clears_the_finding_and_names_no_unknown_namespace() {
    let fix = allow_dns("shop", DNS_PORTS);
    let f = files_alone(
        &[DEFAULT_DENY_EGRESS, &fix, ALLOW_WEB_FROM_SHOP],
        &LintOptions::default(),
    );
    assert_eq!(
        f.iter().map(|f| f.code).collect::<Vec<_>>(),
        ["checks-skipped"],
        "{f:#?}"
    );
    // The named ports CoreDNS declares resolve against the stand-in too.
    let named = allow_dns(
        "shop",
        "[{protocol: UDP, port: dns}, {protocol: TCP, port: dns-tcp}]",
    );
    let f = files_alone(&[DEFAULT_DENY_EGRESS, &named], &LintOptions::default());
    assert!(with_code(&f, "dns-egress-blocked").is_empty(), "{f:#?}");
    // UDP alone is half a fix.
    let udp = allow_dns("shop", "[{protocol: UDP, port: 53}]");
    let f = files_alone(&[DEFAULT_DENY_EGRESS, &udp], &LintOptions::default());
    let dns = with_code(&f, "dns-egress-blocked");
    assert_eq!(dns.len(), 1, "{f:#?}");
    assert!(dns[0].message.contains("(TCP/53)"), "{}", dns[0].message);
    // The fix in another namespace does not help this one.
    let elsewhere = allow_dns("vault", DNS_PORTS);
    let f = files_alone(&[DEFAULT_DENY_EGRESS, &elsewhere], &LintOptions::default());
    assert_eq!(with_code(&f, "dns-egress-blocked").len(), 1, "{f:#?}");
}

#[test]
fn an_egress_policy_for_some_pods_needs_dns_for_those_pods() {
    // Egress for app=web only, to the database; DNS allowed for app=api only.
    let web = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-to-db, namespace: shop}\n\
spec:\n  podSelector: {matchLabels: {app: web}}\n  egress:\n  - to: [{podSelector: {matchLabels: {app: db}}}]\n";
    let api_dns = allow_dns("shop", DNS_PORTS)
        .replace("podSelector: {}", "podSelector: {matchLabels: {app: api}}");
    let f = files_alone(&[web, &api_dns], &LintOptions::default());
    let dns = with_code(&f, "dns-egress-blocked");
    assert_eq!(dns.len(), 1, "{f:#?}");
    assert_eq!(
        dns[0].policy.as_ref().map(|p| p.to_string()).as_deref(),
        Some("shop/web-to-db")
    );
    let web_dns = allow_dns("shop", DNS_PORTS)
        .replace("podSelector: {}", "podSelector: {matchLabels: {app: web}}");
    let f = files_alone(
        &[
            web,
            &api_dns,
            &web_dns.replace("name: dns,", "name: web-dns,"),
        ],
        &LintOptions::default(),
    );
    assert!(with_code(&f, "dns-egress-blocked").is_empty(), "{f:#?}");
}

#[test]
fn the_cluster_dns_can_be_elsewhere() {
    let fix = allow_dns("shop", DNS_PORTS);
    let options = LintOptions {
        dns: DnsTarget {
            namespace: "dns-system".into(),
            labels: [("app".to_string(), "coredns".to_string())].into(),
        },
    };
    let f = files_alone(&[DEFAULT_DENY_EGRESS, &fix], &options);
    let dns = with_code(&f, "dns-egress-blocked");
    assert_eq!(dns.len(), 1, "{f:#?}");
    assert!(
        dns[0]
            .message
            .contains("dns-system pods labelled app=coredns"),
        "{}",
        dns[0].message
    );
}

#[test]
fn the_namespaces_every_cluster_has_are_known() {
    // Namespaces declared, kube-system not among them: still known.
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: retail}}\n";
    let fix = allow_dns("shop", DNS_PORTS);
    let f = files_alone(&[ns, DEFAULT_DENY_EGRESS, &fix], &LintOptions::default());
    assert!(
        with_code(&f, "unknown-namespace-label").is_empty(),
        "{f:#?}"
    );
    assert!(
        with_code(&f, "namespace-selector-matches-nothing").is_empty(),
        "{f:#?}"
    );
    // The skip names the pods only: namespaces were given.
    let skipped = with_code(&f, "checks-skipped");
    assert_eq!(skipped.len(), 1);
    assert!(
        !skipped[0]
            .message
            .contains("namespace-selector-matches-nothing")
    );
    // A typo is still caught once namespaces are known.
    let typo = fix.replace("name: kube-system", "name: kube-sytem");
    let f = files_alone(&[ns, DEFAULT_DENY_EGRESS, &typo], &LintOptions::default());
    assert_eq!(with_code(&f, "unknown-namespace-label").len(), 1, "{f:#?}");
    assert_eq!(with_code(&f, "dns-egress-blocked").len(), 1, "{f:#?}");
    // Without declared namespaces, namespace labels are not judged at all.
    let f = files_alone(&[DEFAULT_DENY_EGRESS, &typo], &LintOptions::default());
    assert!(
        with_code(&f, "unknown-namespace-label").is_empty(),
        "{f:#?}"
    );
    let skipped = with_code(&f, "checks-skipped");
    assert!(
        skipped[0].message.contains("no namespace")
            && skipped[0].message.contains("unknown-namespace-label"),
        "{}",
        skipped[0].message
    );
}
