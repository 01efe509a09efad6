//! `netverdict lab ...` end to end, as root (skipped without root; as root,
//! fails naming what to install without the tools): the seed guide's
//! scenario through the CLI.

use std::process::Command;

use netverdict_testing::lab::TestLab;
use netverdict_testing::require_root;
use netverdict_testing::seed;

const BIN: &str = env!("CARGO_BIN_EXE_netverdict");

fn nv(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("lab")
        .args(args)
        .args(["--name", name])
        .output()
        .expect("run netverdict");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn seed_scenario_through_the_cli() {
    if !require_root() {
        return;
    }
    let test_lab = TestLab::new("cli");
    let name = test_lab.name();
    let cluster = seed::dir().join("cluster.yaml");
    let (code, out) = nv(name, &["up", "--cluster", cluster.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let probe = [
        "probe",
        "--from",
        "default/np-client",
        "--to",
        "api.default",
        "--port",
    ];
    let (code, out) = nv(name, &[&probe[..], &["8080"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out) = nv(
        name,
        &[
            "probe",
            "--from",
            "default/np-client",
            "--to",
            "default/api",
            "--port",
            "9",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused"), "{out}");

    let policies = seed::dir().join("policies");
    let (code, out) = nv(name, &["apply", policies.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = nv(
        name,
        &[&probe[..], &["8080", "--timeout", "300ms"]].concat(),
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("timed out"), "{out}");

    let dns = ["dns", "--from", "default/np-client"];
    let (code, out) = nv(
        name,
        &[&dns[..], &["kubernetes.default.svc.cluster.local"]].concat(),
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = nv(
        name,
        &[&dns[..], &["nope.default.svc.cluster.local"]].concat(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");

    // An outside name, then an alias of it: the pods resolve both (the
    // alias through its CNAME); a name inside the cluster domain is refused.
    let (code, out) = nv(name, &["outside-name", "edge.cdn.test", "203.0.113.7"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = nv(
        name,
        &[
            "outside-name",
            "api.example.test",
            "--alias",
            "edge.cdn.test",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = nv(name, &[&dns[..], &["api.example.test"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("203.0.113.7"), "{out}");
    let (code, out) = nv(
        name,
        &["outside-name", "x.default.svc.cluster.local", "203.0.113.9"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("outside name"), "{out}");

    let (code, out) = nv(
        name,
        &[
            "matrix",
            "--port",
            "8080",
            "--timeout",
            "300ms",
            "--expect",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json matrix");
    assert_eq!(v["matrix"]["pods"].as_array().map(Vec::len), Some(4));

    // The CNI does not enforce default: the kernel now disagrees with the engine.
    let (code, out) = nv(name, &["unenforce", "--namespace", "default"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = nv(
        name,
        &["matrix", "--port", "8080", "--timeout", "300ms", "--expect"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differences with the policy engine"), "{out}");

    let (code, out) = nv(name, &["down"]);
    assert_eq!(code, 0, "{out}");
    assert!(netverdict_lab::sys::netns_with_prefix(&netverdict_lab::lab::prefix(name)).is_empty());
}
