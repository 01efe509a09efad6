//! netverdict's API server: receives flows from every node's collector over
//! gRPC, stores them in ClickHouse or a bounded in-memory store, and answers
//! flow queries and incident reports.
//!
//! - [`store`]: the interface both stores implement.

pub mod clickhouse;
pub mod store;
