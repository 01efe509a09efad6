//! The API server crate's integration tests, in one binary: ingest and
//! queries over real gRPC on the memory store, mutual TLS, and the ClickHouse
//! store against the real server (over HTTPS too, with injected faults) and
//! on a local 2x2 cluster with ZooKeeper (cluster mode), and
//! `scripts/start-clickhouse.sh`, one module each. Shared
//! builders and servers come from `netverdict-testing`.

mod clickhouse_cluster;
mod clickhouse_durability;
mod clickhouse_faults;
mod clickhouse_filters;
mod clickhouse_health;
mod clickhouse_store;
mod clickhouse_tls;
mod fixtures;
mod ingest;
mod queries;
mod start_clickhouse_script;
mod store_conformance;
mod tls;
