//! `netverdict lab soak` (as root), short: half a minute of lab traffic with
//! three faults, one kill -9 of each stage (ClickHouse, the API server, the
//! collector). Every acknowledged flow must be stored exactly once, every
//! fault must recover, and the soak must leave no lab and no work directory.

use std::process::Command;

use netverdict_testing::lab::TestLab;
use netverdict_testing::require_root;
use serde_json::Value;

#[test]
fn a_short_soak_stores_every_acknowledged_flow_once_and_recovers_from_each_fault() {
    if !require_root() {
        return;
    }
    let lab = TestLab::new("soak");
    let parent = tempfile::tempdir().unwrap();
    let work_dir = parent.path().join("soak");
    let out = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args([
            "lab",
            "soak",
            "--minutes",
            "0.5",
            "--faults",
            "3",
            "--seed",
            "7",
        ])
        .args(["--pods", "12", "--name", lab.name(), "-o", "json"])
        .arg("--work-dir")
        .arg(&work_dir)
        .output()
        .expect("netverdict runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
    let context = format!("report {report:#}\nstderr {stderr}");

    let faults = report["faults"].as_array().expect("faults");
    let mut stages: Vec<&str> = faults.iter().filter_map(|f| f["stage"].as_str()).collect();
    stages.sort_unstable();
    assert_eq!(stages, ["api", "clickhouse", "collector"], "{context}");
    for fault in faults {
        assert_eq!(fault["planned"], true, "no stage died by itself: {context}");
        assert!(fault["pid"].as_u64().is_some(), "{context}");
        let recovered = fault["recovered_seconds"].as_f64();
        assert!(
            recovered.is_some_and(|s| s > 0.0 && s < 60.0),
            "fault {fault} did not recover: {context}"
        );
    }
    let stored = &report["stored"];
    assert!(
        stored["acked"].as_u64().unwrap() > 100,
        "traffic was acknowledged: {context}"
    );
    assert_eq!(stored["acked"], stored["acked_distinct"], "{context}");
    assert_eq!(stored["lost"], 0, "acknowledged flows lost: {context}");
    assert_eq!(stored["duplicated_ids"], 0, "{context}");
    assert_eq!(report["duplicated"], 0, "{context}");
    assert_eq!(
        stored["rollup_flows"], stored["rollup_distinct_ids"],
        "{context}"
    );
    assert!(
        stored["stored_distinct"].as_u64() >= stored["acked_distinct"].as_u64(),
        "{context}"
    );
    assert_eq!(report["spool_drained"], true, "{context}");
    // The scans were denied and stored; the random subdomains too.
    assert!(stored["stored_denied"].as_u64().unwrap() > 0, "{context}");
    assert!(
        stored["stored_dns_names"].as_u64().unwrap() > 10,
        "{context}"
    );
    let traffic = &report["traffic"];
    for kind in ["connections", "dns_queries", "scanned_ports"] {
        assert!(traffic[kind].as_u64().unwrap() > 0, "{kind}: {context}");
    }
    assert!(
        report["memory"]["collector"]["peak_kib"].as_u64().unwrap() > 0,
        "{context}"
    );
    assert!(
        report["memory"]["api"]["peak_kib"].as_u64().unwrap() > 0,
        "{context}"
    );
    assert_eq!(report["passed"], true, "{context}");
    assert!(out.status.success(), "{context}");

    // Nothing is left behind: no lab, no work directory.
    let listed = Command::new(env!("CARGO_BIN_EXE_netverdict"))
        .args(["lab", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(lab.name()),
        "{context}"
    );
    assert!(!work_dir.exists(), "{}", work_dir.display());
}
