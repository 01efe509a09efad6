//! The CLI crate's integration tests, in one binary: the `netverdict`
//! commands as processes, the collector's exporter against the API server,
//! the dashboards against ClickHouse, and (`privileged`: they need root)
//! the demo, the lab commands, the collector on a lab and a short chaos
//! soak. Shared builders,
//! servers and the test lab come from `netverdict-testing`.

mod api_clickhouse;
mod dashboards;
mod dashboards_support;
mod export_ingest;
mod live_cluster;
mod policy_cli;
mod query_cli;
mod rbac;
mod recommend_cli;
mod support;
mod tls_cli;
mod whatif_cli;

/// Tests that need root (eBPF probes, network namespaces, nftables).
mod privileged {
    mod collector_lab;
    mod demo;
    mod lab_cli;
    mod rbac;
    mod soak;
    mod two_nodes;
}
