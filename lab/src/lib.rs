//! A Kubernetes-like cluster on one machine: every Pod of a set of manifests
//! becomes a network namespace with servers on its container ports, Services
//! are DNAT rules, a dnsmasq serves cluster DNS, and NetworkPolicy is enforced
//! by nftables, so that what the policy engine says can be checked against what
//! the kernel does.
//!
//! - [`generate`]: generated clusters (random, benchmark);
//! - [`lab`]: a lab and its parts (state, topology, enforcement, servers,
//!   DNS, matrix, lifecycle): bringing it up and down, changing it, probing it;
//! - [`objects`]: the cluster objects (manifests, pod IPs, DNS objects, engine state);
//! - [`nft`]: NetworkPolicy and Service translation into nftables;
//! - [`serve`]: the pods' echo servers;
//! - [`probe`]: connection and DNS probes from inside a pod;
//! - [`sys`]: the seam to the system (`ip`, `nft`, dnsmasq and the servers,
//!   network namespaces, sysctls): the only module that touches the kernel or
//!   starts processes.
//!
//! See `lab/README.md` for the design and how to add a scenario.

pub mod generate;
pub mod lab;
pub mod nft;
pub mod objects;
pub mod probe;
pub mod serve;
pub mod sys;

pub use lab::{
    DownOnDrop, Enforcement, Lab, LabNode, LabOptions, LabPod, LabState, LabelTarget, Matrix, down,
    preflight,
};
pub use nft::Unenforced;
pub use objects::read_objects;
pub use probe::{DnsAnswer, Outcome};
