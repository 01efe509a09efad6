//! netverdict API server: flow ingest, ClickHouse and in-memory stores, queries
//!
//! Not built yet: see the open issues.
