//! The API server crate's integration tests, in one binary: ingest and
//! queries over real gRPC on the memory store, and the ClickHouse store
//! against the real server, one module each, with shared helpers in
//! [`support`] and [`clickhouse_support`].

mod clickhouse_durability;
mod clickhouse_filters;
mod clickhouse_store;
mod clickhouse_support;
mod ingest;
mod queries;
mod support;
