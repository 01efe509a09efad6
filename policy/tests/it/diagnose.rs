//! `diagnose` on the seed guide's cluster: each step of the guide's debugging
//! flow for one pair, the least-privilege fix (applied, it allows the flow),
//! the DNS fix on both protocols to the cluster DNS only, and the errors that
//! name what the request got wrong.

use std::path::Path;

use netverdict_policy::diagnose::{Destination, Diagnosis, Error, Request, diagnose};
use netverdict_policy::{ClusterState, Connection, Endpoint, PodKey, Protocol};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

fn seed_yaml(policies: &[&str]) -> String {
    let mut yaml = std::fs::read_to_string(Path::new(SEED).join("cluster.yaml")).expect("seed");
    for p in policies {
        yaml.push_str("\n---\n");
        let policy = std::fs::read_to_string(Path::new(SEED).join(format!("policies/{p}.yaml")))
            .expect("seed policy");
        // The lab applies the seed's policies to the default namespace.
        yaml.push_str(&policy.replacen("metadata:\n", "metadata:\n  namespace: default\n", 1));
    }
    yaml
}

fn state(yaml: &str) -> ClusterState {
    let mut manifests = netverdict_policy::Manifests::default();
    manifests.read_str(Path::new("seed.yaml"), yaml);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let (state, errors) =
        ClusterState::from_manifests(manifests, &netverdict_policy::LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    state
}

fn request(from: &str, to: &str, port: Option<u16>, protocol: Protocol) -> Request {
    let (ns, name) = from.split_once('/').expect("ns/pod");
    Request {
        from: Endpoint::Pod(PodKey::new(ns, name)),
        to: to.parse().expect("destination"),
        port,
        protocol,
    }
}

/// The state with the diagnosis's fix applied, as `kubectl apply` takes it.
fn with_fix(yaml: &str, diagnosis: &Diagnosis) -> ClusterState {
    let mut yaml = yaml.to_string();
    for policy in &diagnosis.fix.policies {
        yaml.push_str("\n---\n");
        yaml.push_str(&serde_yaml_ng::to_string(policy).expect("policy as YAML"));
    }
    state(&yaml)
}

fn allowed(state: &ClusterState, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
    let pod = |s: &str| {
        let (ns, name) = s.split_once('/').expect("ns/pod");
        Endpoint::Pod(PodKey::new(ns, name))
    };
    state
        .verdict(&Connection::new(pod(from), pod(to), port, protocol))
        .expect("valid flow")
        .allowed
}

/// The guide's denied flow: shop's frontend to the api once `api-from-web`
/// admits only the web team's frontends. Every step says what it found.
#[test]
fn the_denied_flow_of_the_seed_step_by_step_and_its_fix() {
    let yaml = seed_yaml(&["default-deny", "allow-dns-egress", "api-from-web"]);
    let state = state(&yaml);
    let d = diagnose(
        &state,
        &request("shop/np-client", "default/api", Some(8080), Protocol::Tcp),
    )
    .expect("diagnosis");
    assert!(!d.allowed);
    assert_eq!(d.destination.kind, "pod");
    assert_eq!(d.source.workload.as_deref(), Some("Pod/np-client"));
    // Steps 2 and 3: the policies of both namespaces, and whom they select.
    let namespaces: Vec<&str> = d.policies.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(namespaces, ["default", "shop"]);
    let default = &d.policies[0];
    let selecting: Vec<(String, Vec<String>)> = default
        .policies
        .iter()
        .map(|p| {
            (
                p.policy.name().to_string(),
                p.selects
                    .iter()
                    .map(|s| format!("{} {:?}", s.pod, s.direction))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        selecting,
        [
            ("allow-dns-egress".to_string(), vec![]),
            (
                "api-from-web".to_string(),
                vec!["default/api Ingress".to_string()]
            ),
            (
                "default-deny".to_string(),
                vec!["default/api Ingress".to_string()]
            ),
        ]
    );
    assert!(d.policies[1].policies.is_empty(), "shop has no policy");
    // Step 4: the labels the selectors read, on both pods and namespaces.
    let source = &d.labels[0];
    assert_eq!(source.role, "source");
    assert_eq!(
        source.that_matter.get("role"),
        Some(&Some("frontend".to_string()))
    );
    assert_eq!(source.that_matter.get("app"), Some(&None));
    assert_eq!(
        source.namespace_labels_that_matter.get("team"),
        Some(&Some("payments".to_string())),
        "the label api-from-web's namespaceSelector wants"
    );
    // Step 5: shop's egress is not isolated: DNS is not denied.
    let dns = d.dns.as_ref().expect("a pod source");
    assert!(!dns.isolated && dns.denied.is_empty() && dns.fix.is_empty());
    // Step 6: ingress denies, egress does not.
    assert_eq!(d.paths.len(), 1);
    assert_eq!(d.paths[0].verdict, "deny");
    assert!(!d.paths[0].egress.isolated);
    assert!(d.paths[0].ingress.isolated);
    // The fix: one ingress policy on the api from shop's frontend, on 8080/TCP.
    assert_eq!(d.fix.policies.len(), 1, "{:#?}", d.fix);
    let policy = serde_json::to_value(&d.fix.policies[0]).expect("json");
    assert_eq!(policy["metadata"]["namespace"], "default");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["app"], "api");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let from = &policy["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "shop"
    );
    assert_eq!(from["podSelector"]["matchLabels"]["role"], "frontend");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        serde_json::json!([{"port": 8080, "protocol": "TCP"}])
    );
    let fixed = with_fix(&yaml, &d);
    assert!(allowed(
        &fixed,
        "shop/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "shop/np-client",
        "default/api",
        5432,
        Protocol::Tcp
    ));
    // Fixed, the flow diagnoses as allowed, with no fix.
    let again = diagnose(
        &fixed,
        &request("shop/np-client", "default/api", Some(8080), Protocol::Tcp),
    )
    .expect("diagnosis");
    assert!(again.allowed && again.fix.policies.is_empty());
}

/// Through a Service, the flow is judged at each backend on its target
/// port; a flow denied on both sides gets a policy on each.
#[test]
fn a_service_destination_is_judged_at_its_backends_and_fixed_on_both_sides() {
    let yaml = seed_yaml(&["default-deny"]);
    let state = state(&yaml);
    let d = diagnose(
        &state,
        &request(
            "default/np-client",
            "default/svc/api",
            Some(5432),
            Protocol::Tcp,
        ),
    )
    .expect("diagnosis");
    assert_eq!(d.destination.kind, "service");
    assert_eq!(d.destination.service_port, Some(5432));
    assert_eq!(d.targets.len(), 1);
    assert_eq!(d.targets[0].port, 5432);
    assert!(d.paths[0].egress.isolated && d.paths[0].ingress.isolated);
    let sides: Vec<String> = d
        .fix
        .policies
        .iter()
        .map(|p| {
            let spec = p.spec.as_ref().expect("spec");
            spec.policy_types.as_ref().expect("types").join(",")
        })
        .collect();
    assert_eq!(sides, ["Egress", "Ingress"]);
    // np-client is the only pod its selector picks, but egress-isolating it
    // anew is said.
    let fixed = with_fix(&yaml, &d);
    assert!(allowed(
        &fixed,
        "default/np-client",
        "default/api",
        5432,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "default/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "shop/np-client",
        "default/api",
        5432,
        Protocol::Tcp
    ));
    // The node names where enforcement is looked for.
    assert_eq!(d.nodes, ["lab-node"]);
}

/// When the source's egress blocks DNS, the fix is the DNS egress policy:
/// UDP and TCP 53, to the cluster DNS pods only, whichever protocol was asked.
#[test]
fn blocked_dns_is_fixed_on_both_protocols_to_the_cluster_dns_only() {
    let yaml = seed_yaml(&["default-deny"]);
    let state = state(&yaml);
    let d = diagnose(
        &state,
        &request(
            "default/np-client",
            "kube-system/kube-dns",
            None,
            Protocol::Udp,
        ),
    )
    .expect("diagnosis");
    assert!(!d.allowed);
    let dns = d.dns.as_ref().expect("dns step");
    assert!(dns.isolated);
    assert_eq!(dns.denied, [Protocol::Udp, Protocol::Tcp]);
    assert_eq!(dns.egress_policies.len(), 1);
    assert_eq!(d.fix.policies.len(), 1, "{:#?}", d.fix);
    assert_eq!(
        dns.fix, d.fix.policies,
        "the DNS step proposes the same policy"
    );
    let policy = serde_json::to_value(&d.fix.policies[0]).expect("json");
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    let rule = &policy["spec"]["egress"][0];
    assert_eq!(
        rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(
        rule["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    let mut ports: Vec<String> = rule["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("")))
        .collect();
    ports.sort();
    assert_eq!(ports, ["53/TCP", "53/UDP"]);
    let fixed = with_fix(&yaml, &d);
    assert!(allowed(
        &fixed,
        "default/np-client",
        "kube-system/coredns",
        53,
        Protocol::Udp
    ));
    assert!(allowed(
        &fixed,
        "default/np-client",
        "kube-system/coredns",
        53,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "default/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "default/api",
        "kube-system/coredns",
        53,
        Protocol::Udp
    ));
}

/// An allowed flow: no fix, each direction said.
#[test]
fn an_allowed_flow_has_no_fix() {
    let yaml = seed_yaml(&[]);
    let state = state(&yaml);
    let d = diagnose(
        &state,
        &request(
            "default/np-client",
            "10.244.1.10",
            Some(8080),
            Protocol::Tcp,
        ),
    )
    .expect("diagnosis");
    assert!(d.allowed);
    assert_eq!(d.destination.name, "default/api");
    assert!(d.fix.policies.is_empty() && d.fix.notes.is_empty());
    assert_eq!(d.paths[0].verdict, "allow");
    assert!(d.policies.iter().all(|n| n.policies.is_empty()));
    let json = serde_json::to_value(&d).expect("json");
    assert_eq!(json["fix"]["policies"], serde_json::json!([]));
}

/// A request naming what the cluster does not hold, or ambiguous, is an
/// error saying so.
#[test]
fn requests_the_cluster_cannot_answer_are_errors_naming_the_problem() {
    let state = state(&seed_yaml(&[]));
    let err = |from: &str, to: &str, port: Option<u16>| {
        diagnose(&state, &request(from, to, port, Protocol::Tcp))
            .expect_err("an error")
            .to_string()
    };
    assert!(
        err("default/np-client", "default/nothing", Some(80)).contains("no pod and no Service")
    );
    assert!(err("default/np-client", "default/svc/nothing", Some(80)).contains("no such Service"));
    assert!(err("default/nobody", "default/api", Some(80)).contains("nobody"));
    let port = err("default/np-client", "default/api", None);
    assert!(
        port.contains("--port") && port.contains("5432") && port.contains("8080"),
        "{port}"
    );
    let service_port = err("default/np-client", "default/svc/api", Some(9999));
    assert!(
        service_port.contains("no TCP port 9999") && service_port.contains("8080/TCP"),
        "{service_port}"
    );
    let outside = err("default/np-client", "203.0.113.9", None);
    assert!(outside.contains("--port"), "{outside}");
    assert!(matches!(
        "a/b/c/d".parse::<Destination>(),
        Err(Error::BadDestination(_))
    ));
    assert!(matches!(
        "a/".parse::<Destination>(),
        Err(Error::BadDestination(_))
    ));
    assert_eq!(
        "ns/svc/web".parse::<Destination>().expect("service"),
        Destination::Service(PodKey::new("ns", "web"))
    );
}

/// An Admin-tier Deny is decided before NetworkPolicy: the fix says so and
/// writes nothing for that side. A Baseline-tier Deny is fixed by a
/// NetworkPolicy (it isolates the pod, and NetworkPolicy then decides).
#[test]
fn admin_denies_get_a_note_and_baseline_denies_a_network_policy() {
    let admin = r#"
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard-api}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: default}}}
  ingress:
  - {name: no-shop, action: Deny, from: [{namespaces: {matchLabels: {team: payments}}}]}
"#;
    let yaml = seed_yaml(&[]) + admin;
    let cluster = state(&yaml);
    let d = diagnose(
        &cluster,
        &request("shop/np-client", "default/api", Some(8080), Protocol::Tcp),
    )
    .expect("diagnosis");
    assert!(!d.allowed);
    assert!(d.fix.policies.is_empty(), "{:#?}", d.fix);
    assert!(
        d.fix
            .notes
            .iter()
            .any(|n| n.contains("guard-api") && n.contains("no NetworkPolicy can allow it")),
        "{:?}",
        d.fix.notes
    );

    let baseline = r#"
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
"#;
    let yaml = seed_yaml(&[]) + baseline;
    let cluster = state(&yaml);
    let d = diagnose(
        &cluster,
        &request("shop/np-client", "default/api", Some(8080), Protocol::Tcp),
    )
    .expect("diagnosis");
    assert!(!d.allowed);
    assert_eq!(d.fix.policies.len(), 1, "{:#?}", d.fix);
    let fixed = with_fix(&yaml, &d);
    assert!(allowed(
        &fixed,
        "shop/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &fixed,
        "shop/np-client",
        "default/api",
        5432,
        Protocol::Tcp
    ));
}
