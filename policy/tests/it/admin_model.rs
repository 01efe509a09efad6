//! AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy
//! from manifests: invalid objects are rejected with the object and the
//! field; domain-name peers match the names a connection's source resolved
//! to its destination, and are reported as not evaluated on a connection
//! without names; explanations name the tier, the policy, the rule and its
//! action, and a Pass gives NetworkPolicy's outcome.

use std::path::Path;

use crate::common::state_from_manifests;
use netverdict_policy::{
    ClusterState, Connection, Endpoint, LoadOptions, Manifests, PodKey, Protocol, explain,
};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: tenant, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: tenant, labels: {app: app}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: tenant, labels: {app: db}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: tenant, labels: {app: other}}
status: {podIP: 10.0.0.3}
"#;

fn load_errors(yaml: &str) -> Vec<String> {
    let mut m = Manifests::default();
    m.read_str(Path::new("admin.yaml"), yaml);
    let (_, errors) = ClusterState::from_manifests(m, &LoadOptions::default());
    errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn invalid_admin_policies_name_the_object_and_field() {
    let anp = |spec: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: x}}\nspec:\n{spec}"
        )
    };
    let cases = [
        (
            anp("  priority: 1001\n  subject: {namespaces: {}}\n"),
            "AdminNetworkPolicy x: spec.priority: 1001 is outside 0-1000",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n  - {action: Allow, from: [{networks: [10.0.0.0/8]}]}\n"),
            "AdminNetworkPolicy x: spec.ingress[0].from[0].networks: networks peers are for egress rules only",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Allow, to: [{networks: [10.0.0.0/33]}]}\n"),
            "AdminNetworkPolicy x: spec.egress[0].to[0].networks[0]: invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Deny, to: [{domainNames: [example.com]}]}\n"),
            "AdminNetworkPolicy x: spec.egress[0].to[0].domainNames: domainNames peers are for Allow (Accept) rules only",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - {action: Block, to: [{namespaces: {}}]}\n"),
            "AdminNetworkPolicy x: spec.egress[0].action: unknown action \"Block\" (expected Allow, Deny or Pass)",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - action: Allow\n    to: [{namespaces: {}}]\n    ports: [{portRange: {start: 90, end: 80}}]\n"),
            "AdminNetworkPolicy x: spec.egress[0].ports[0].portRange.end: end 80 is below start 90",
        ),
        (
            anp("  priority: 1\n  subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}\n"),
            "AdminNetworkPolicy x: spec.subject: exactly one of namespaces and pods must be set",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: mine}\nspec: {subject: {namespaces: {}}}\n".to_string(),
            "BaselineAdminNetworkPolicy mine: metadata.name: a BaselineAdminNetworkPolicy must be named \"default\"",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{action: Pass, from: [{namespaces: {}}]}]\n".to_string(),
            "BaselineAdminNetworkPolicy default: spec.ingress[0].action: unknown action \"Pass\" (expected Allow, Deny)",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\nspec: {tier: Middle, priority: 1, subject: {namespaces: {}}}\n".to_string(),
            "ClusterNetworkPolicy c: spec.tier: unknown tier \"Middle\" (expected Admin or Baseline)",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  egress:\n  - action: Accept\n    to: [{nodes: {}}]\n    protocols: [{destinationNamedPort: web}]\n".to_string(),
            "ClusterNetworkPolicy c: spec.egress[0]: named ports cannot be used with networks, nodes or domainNames peers",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1beta1\nkind: AdminNetworkPolicy\nmetadata: {name: x}\nspec: {}\n".to_string(),
            "apiVersion: unsupported version \"policy.networking.k8s.io/v1beta1\"",
        ),
    ];
    for (yaml, expected) in cases {
        let errors = load_errors(&yaml);
        assert_eq!(errors.len(), 1, "{yaml}: {errors:?}");
        assert!(
            errors[0].contains(expected),
            "{yaml}\n  got: {}\n  expected: {expected}",
            errors[0]
        );
        assert!(
            errors[0].starts_with("admin.yaml (document 1): "),
            "{}",
            errors[0]
        );
    }
}

fn conn(src: &str, dst: &str, port: u16) -> Connection {
    let ep = |s: &str| match s.parse() {
        Ok(ip) => Endpoint::Ip(ip),
        Err(_) => {
            let (ns, name) = s.split_once('/').unwrap();
            Endpoint::Pod(PodKey::new(ns, name))
        }
    };
    Connection::new(ep(src), ep(dst), port, Protocol::Tcp)
}

#[test]
fn domain_name_peers_are_reported_not_evaluated() {
    let state = state_from_manifests(&format!("{CLUSTER}---\n{REGISTRY_ALLOWLIST}"));
    let c = conn("tenant/app", "203.0.113.7", 443);
    let v = state.verdict(&c).unwrap();
    assert!(!v.allowed);
    assert_eq!(v.egress.not_evaluated.len(), 1);
    assert_eq!(
        v.egress.not_evaluated[0].name.as_deref(),
        Some("allow-registry")
    );
    let text = explain(&state, &c, &v).to_string();
    assert!(text.contains("not evaluated: rule 0 \"allow-registry\" (Allow) of AdminNetworkPolicy/egress-allowlist"), "{text}");
    assert!(text.contains("rule 1 \"deny-internet\" (Deny)"), "{text}");
    // The nearest miss is the domain-name rule, explained as unevaluable.
    let miss = v.egress.admin_nearest_miss.as_ref().unwrap();
    assert_eq!(miss.failures[0].kind(), "domain_names");
    assert!(text.contains("cannot evaluate"), "{text}");
    // Another port: the domain rule does not apply, nothing is unevaluated.
    let v = state
        .verdict(&conn("tenant/app", "203.0.113.7", 80))
        .unwrap();
    assert!(v.egress.not_evaluated.is_empty());
}

const REGISTRY_ALLOWLIST: &str = r#"apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: egress-allowlist}
spec:
  priority: 20
  subject: {namespaces: {matchLabels: {team: a}}}
  egress:
  - {name: allow-registry, action: Allow, to: [{domainNames: ["*.example.com", "registry.test."]}], ports: [{portNumber: {port: 443}}]}
  - {name: deny-internet, action: Deny, to: [{networks: [0.0.0.0/0]}]}
"#;

#[test]
fn domain_name_peers_match_the_names_the_source_resolved() {
    let state = state_from_manifests(&format!("{CLUSTER}---\n{REGISTRY_ALLOWLIST}"));
    let named =
        |names: &[&str]| conn("tenant/app", "203.0.113.7", 443).with_destination_names(names);
    // Subdomains of example.com, at any depth, in any case; the exact name
    // with or without its trailing dot.
    for names in [
        &["api.example.com"][..],
        &["A.B.Example.COM."],
        &["other.test", "registry.test"],
        &["registry.test."],
    ] {
        let c = named(names);
        let v = state.verdict(&c).unwrap();
        assert!(v.allowed, "{names:?}");
        let rule = v.egress.admin_rule.as_ref().unwrap();
        assert_eq!(rule.name.as_deref(), Some("allow-registry"), "{names:?}");
        assert!(v.egress.not_evaluated.is_empty(), "{names:?}");
        let text = explain(&state, &c, &v).to_string();
        assert!(text.contains("resolved from"), "{text}");
    }
    // Names that do not match: the Deny decides, and the nearest miss says
    // which names the destination had.
    for names in [
        &["example.com"][..],
        &["badexample.com"],
        &["registry.test.evil"],
    ] {
        let c = named(names);
        let v = state.verdict(&c).unwrap();
        assert!(!v.allowed, "{names:?}");
        assert_eq!(
            v.egress.admin_rule.as_ref().unwrap().name.as_deref(),
            Some("deny-internet")
        );
        assert!(v.egress.not_evaluated.is_empty(), "evaluated: {names:?}");
        let miss = v.egress.admin_nearest_miss.as_ref().unwrap();
        assert_eq!(miss.failures[0].kind(), "domain_names");
        let text = explain(&state, &c, &v).to_string();
        assert!(
            text.contains(&format!(
                "203.0.113.7 was resolved from {}",
                c.destination_names.join(", ")
            )),
            "{text}"
        );
        assert!(text.contains("*.example.com, registry.test"), "{text}");
    }
    // The port still has to match.
    let v = state
        .verdict(
            &conn("tenant/app", "203.0.113.7", 80).with_destination_names(&["api.example.com"]),
        )
        .unwrap();
    assert!(!v.allowed);
}

#[test]
fn verdicts_by_names_are_cached_apart() {
    let state = state_from_manifests(&format!("{CLUSTER}---\n{REGISTRY_ALLOWLIST}"));
    let c = |names: &[&str]| conn("tenant/app", "203.0.113.7", 443).with_destination_names(names);
    let (good, bad, none) = (c(&["api.example.com"]), c(&["evil.test"]), c(&[]));
    // Asked in every order, twice: each answer is its own, and repeated
    // questions get the same cached verdict.
    for round in 0..2 {
        for (conn, allowed) in [(&good, true), (&bad, false), (&none, false), (&good, true)] {
            let v = state.verdict(conn).unwrap();
            assert_eq!(v.allowed, allowed, "round {round}: {conn:?}");
            assert_eq!(*v, state.verdict_uncached(conn).unwrap(), "{conn:?}");
        }
    }
    let first = state.verdict(&good).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &state.verdict(&good).unwrap()),
        "cached"
    );
    assert_eq!(
        state.cached_verdicts(),
        3,
        "the unnamed key and two name sets"
    );
}

#[test]
fn invalid_domain_names_name_the_field() {
    let errors = load_errors(
        r#"apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: x}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Allow, to: [{domainNames: [ok.test, "a.*.test"]}]}
"#,
    );
    assert_eq!(
        errors,
        [
            "admin.yaml (document 1): AdminNetworkPolicy x: spec.egress[0].to[0].domainNames[1]: \"a.*.test\": '*' is only allowed as a leading \"*.\""
        ]
    );
}

#[test]
fn explanations_name_tier_policy_rule_and_action() {
    let state = state_from_manifests(&format!(
        "{CLUSTER}---\n{}",
        r#"apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tenants}
spec:
  tier: Admin
  priority: 3
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {name: owners-decide, action: Pass, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: app}}}}]}
  - {name: no-one-else, action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-app, namespace: tenant}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: app}}}], ports: [{port: 5432}]}]
"#
    ));
    // Passed, then NetworkPolicy denies port 80.
    let c = conn("tenant/app", "tenant/db", 80);
    let v = state.verdict(&c).unwrap();
    assert!(!v.allowed);
    let text = explain(&state, &c, &v).to_string();
    assert!(text.contains("passed by: rule 0 \"owners-decide\" (Pass) of ClusterNetworkPolicy/tenants (Admin tier, priority 3)"), "{text}");
    assert!(
        text.contains("nearest miss: rule 0 of tenant/db-from-app"),
        "{text}"
    );
    assert!(v.ingress.allowed_by.is_empty() && v.ingress.tier.is_some());
    // Passed, then allowed on 5432.
    let v = state
        .verdict(&conn("tenant/app", "tenant/db", 5432))
        .unwrap();
    assert!(v.allowed);
    assert!(
        explain(&state, &conn("tenant/app", "tenant/db", 5432), &v)
            .reason
            .contains("after rule 0 \"owners-decide\" (Pass)")
    );
    // Denied in the Admin tier: named with the rule.
    let c = conn("10.0.0.3", "tenant/db", 80);
    let v = state.verdict(&c).unwrap();
    let e = explain(&state, &c, &v);
    assert!(!v.allowed);
    let text = e.to_string();
    assert!(
        text.contains("ingress of tenant/db: Admin tier: DENIED"),
        "{text}"
    );
    assert!(
        e.reason
            .contains("denied by rule 1 \"no-one-else\" (Deny) of ClusterNetworkPolicy/tenants"),
        "{}",
        e.reason
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["ingress"]["tier"], "admin");
    assert_eq!(json["ingress"]["admin_rule"]["name"], "no-one-else");
    assert_eq!(json["ingress"]["admin_rule"]["action"], "deny");
}
