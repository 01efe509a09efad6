//! The default ports of netverdict's servers, in one place. They stay clear
//! of Cilium and Hubble (4240 health, 4244 Hubble, 4245 hubble-relay, 4250
//! mutual auth, 9962-9965 metrics, 9879 and 9890-9893 health and gops) and of
//! the usual node daemons (kubelet 10248-10250, kube-proxy 10249/10256,
//! node-exporter 9100, Calico 9091/9099/5473), because the collector runs
//! on the host network next to them.

/// The API server's gRPC port (Ingest from collectors, Observer and Query).
pub const API_GRPC: u16 = 4255;
/// The API server's HTTP port (`/metrics`).
pub const API_METRICS: u16 = 9966;
/// The collector's Observer gRPC port.
pub const COLLECTOR_OBSERVER: u16 = 4254;
/// The collector's HTTP port (`/metrics`).
pub const COLLECTOR_METRICS: u16 = 9967;
