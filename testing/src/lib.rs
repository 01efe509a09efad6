//! Builders and fixtures shared by netverdict's tests, written once: each
//! crate's integration test binary (`tests/it/main.rs`) takes what it needs
//! from here as a dev-dependency, so none of this is ever in a release build.
//!
//! Always there:
//! - [`flow`]: protobuf flows and endpoints (`flow("node-a/1/1").denied()...`);
//! - [`wait`]: waiting on a condition with a deadline (never sleep-and-hope);
//! - [`metrics`]: `GET /metrics` over HTTP, parsed into samples; [`http`]:
//!   any other GET (`/healthz`, `/readyz`);
//! - [`grpc`]: `GetFlows` and ingest `Push` streams over real sockets;
//! - [`privileged`]: [`require_root`], the first line of every test that needs
//!   root (eBPF, network namespaces, nftables);
//! - [`openssl`]: certificates made by the `openssl` CLI;
//! - [`free_addr`]: a loopback address nothing listens on.
//!
//! Behind features (so a crate's tests compile only what they use):
//! - `api`: [`api`], the API server over a given store on a loopback socket;
//! - `clickhouse`: [`clickhouse`], a uniquely named database dropped by a
//!   guard, and a clickhouse-server process of the test's own;
//! - `cluster`: [`objects`] (Kubernetes objects) and [`seed`] (the seed
//!   guide's cluster);
//! - `apiserver`: [`apiserver`], the in-process Kubernetes API server double
//!   (the real list/watch protocol; every request recorded as the RBAC
//!   access it needs), the one double of the test suite;
//! - `collector`: [`observation`], correlated connections as the collector's
//!   annotator takes them;
//! - `lab`: [`lab`], a lab with a unique name, brought down by a guard;
//! - `tls`: [`tls`], a CA in a temporary directory issuing the API
//!   server's, a collector's and a reader's certificates.

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "apiserver")]
pub mod apiserver;
#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod flow;
pub mod grpc;
pub mod http;
#[cfg(feature = "lab")]
pub mod lab;
pub mod metrics;
#[cfg(feature = "cluster")]
pub mod objects;
#[cfg(feature = "collector")]
pub mod observation;
pub mod openssl;
pub mod privileged;
#[cfg(feature = "cluster")]
pub mod seed;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wait;

pub use flow::{FlowBuilder, flow, pod, world};
pub use metrics::scrape;
pub use privileged::require_root;
pub use wait::{wait_until, wait_until_blocking};

/// A loopback address with a port nothing listens on (bound, then released):
/// for a server the test starts later, or one that must not answer.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
