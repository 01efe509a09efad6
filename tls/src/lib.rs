//! netverdict's transport security: every gRPC server and client of the
//! project goes through this crate, so TLS, authentication and authorization
//! are decided in one place.
//!
//! How a connection is secured:
//!
//! ```text
//! server: TcpListener ─> server::incoming (TLS handshake with ServerTls, reloaded
//!         from its files) ─> Connection{Peer} ─> tonic ─> authz::RequireGroup per service
//! client: client::Target (address + rules) ─> Connector (TCP, TLS from the files
//!         as they are at each connect) ─> tonic Channel
//! ```
//!
//! - [`server`]: the server's rustls configuration from files, reloaded when
//!   they change without dropping open streams, and the accept loop;
//! - [`accept`]: accepting with a backoff when accepts fail (every server's);
//! - [`client`]: addresses, the plaintext/TLS rules, the connector;
//! - [`identity`]: who a client is (certificate CN and O, Kubernetes-style);
//! - [`authz`]: which groups may call which service;
//! - [`policy`]: where plaintext is allowed (loopback, or `--insecure`);
//! - [`certs`]: a CA and the certificates netverdict needs (`netverdict certs`);
//! - [`pem`]: reading PEM files with errors naming the file;
//! - [`metrics`]: the TLS counters as Prometheus metrics.
//!
//! The crypto provider is rustls' ring provider everywhere, chosen
//! explicitly, so it does not matter which providers other crates enable.

pub mod accept;
pub mod authz;
pub mod certs;
pub mod client;
pub mod identity;
pub mod metrics;
pub mod pem;
pub mod policy;
pub mod server;

pub use client::{ClientTlsFiles, Target};
pub use identity::{Authentication, Identity, Peer};
pub use server::{ServerTls, ServerTlsFiles, incoming};
