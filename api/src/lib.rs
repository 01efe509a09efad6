//! netverdict's API server: receives flows from every node's collector over
//! gRPC, stores them in ClickHouse or a bounded in-memory store, and answers
//! flow queries and incident reports.
//!
//! - [`store`]: the interface both stores implement;
//! - [`clickhouse`]: the ClickHouse store (migrations, exactly-once batched
//!   writes with a disk spool, SQL filters and reports);
//! - [`memory`]: the bounded in-memory store (time buckets, dedupe by flow id);
//! - [`report`]: the incident reports as pure functions over flows (the memory
//!   store's implementation, and the reference for the ClickHouse store);
//! - [`server`]: the gRPC services (Ingest, Observer, Query) over any store,
//!   and [`server::serve`], the library entry point;
//! - [`metrics`]: `netverdict_api_*` metrics and the HTTP endpoint (`/metrics`,
//!   `/healthz`, `/readyz`);
//! - [`health`]: the store's status, checked in the background for `/metrics`
//!   and `/readyz`;
//! - `fuzzing` (feature `fuzzing`, and in unit tests): the cargo-fuzz targets'
//!   entry points, used by `fuzz/`.
//!
//! Filters, the time window, flow validation and enum names come from
//! `netverdict_proto` (`filter`, `time`, `validate`, `names`), shared with the
//! collector and the CLI.

pub mod clickhouse;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod report;
pub mod server;
pub mod store;

pub use memory::{MemoryConfig, MemoryStore};
pub use report::CLUSTER_KINDS;
pub use server::{ApiConfig, ApiServer, ServeError, serve, serve_shared};
