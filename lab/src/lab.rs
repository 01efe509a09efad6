//! A lab: one cluster of pods made of network namespaces, its servers, its
//! DNS and its nftables, and the operations on it (up, down, apply, label,
//! unenforce, probe, dns, matrix).
//!
//! Everything a lab creates lives in namespaces named `nv.<lab>.*`: one
//! namespace per node, `nv.<lab>.node`, `nv.<lab>.node1`... (the routers the
//! pods' traffic crosses, holding the nftables tables, joined pairwise by veth
//! pairs) and one namespace `nv.<lab>.<n>` per pod, joined to its node by a veth
//! pair whose both ends are inside the lab's namespaces. Two labs with
//! the same pod IPs therefore never meet, and the host's root namespace is never
//! touched. The lab's state (its objects, pods and processes) is a JSON file in
//! `<state root>/<lab>/state.json`; `down` works without it, by scanning names
//! and the processes inside the lab's namespaces.
//!
//! [`Lab`] is defined here; its parts live in one submodule each, and only
//! `sys` touches the system:
//!
//! ```text
//!  manifests ──► objects ──► state: pod IPs allocated, pods planned ──► ClusterState (the engine's view)
//!                                 │
//!  lifecycle (up, apply, label, unenforce, delete-policy: one `reconcile`; down; list)
//!     ├─► topology  node and pod namespaces, veths, routes, sysctls   ─┐
//!     ├─► enforce   nftables: Service DNAT + NetworkPolicy (`nft`)      │
//!     ├─► servers   echo servers on every containerPort (`serve`)       ├─► sys (ip, nft, setns,
//!     ├─► dns       dnsmasq in the kube-dns pod, resolv.conf, lookups   │        processes, files)
//!     └─► state     state.json                                          │
//!  matrix: probes from inside pods (`probe`), compared with the engine ─┘
//! ```

use std::path::PathBuf;

use netverdict_policy::manifest::K8sObject;
use netverdict_policy::{ClusterState, PodKey};

use crate::{objects, probe, sys};

mod dns;
mod enforce;
mod lifecycle;
mod matrix;
mod servers;
mod state;
mod topology;

pub use dns::{CLUSTER_DOMAIN, expand_name, search_list};
pub use enforce::Enforcement;
pub use lifecycle::{
    DownOnDrop, DownReport, LabListing, LabOptions, LabelTarget, down, list, preflight,
};
pub use matrix::{Difference, Matrix};
pub use state::{
    ALLOC_RANGE, DnsInfo, LabNode, LabPod, LabState, MAX_NODES, NODE_RANGE, OutsideName,
    STATE_ROOT, node_ip, node_name, node_netns, node_netns_of, prefix,
};
pub use topology::NODE_IP;

/// Errors of lab operations, whichever part of the lab they come from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command or namespace operation failed.
    #[error(transparent)]
    Sys(#[from] sys::Error),
    /// A probe failed to run.
    #[error(transparent)]
    Probe(#[from] probe::Error),
    /// The lab needs root.
    #[error("the lab needs root (network namespaces and nftables); run as root")]
    NotRoot,
    /// A tool the lab needs is missing.
    #[error("`{program}` not found: install the Debian package `{package}`")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    /// The lab name is not usable.
    #[error("invalid lab name {0:?}: use 1-40 characters among a-z, 0-9 and '-'")]
    BadName(String),
    /// The number of nodes is out of range.
    #[error("invalid number of nodes {0}: a lab has 1 to {max} nodes", max = state::MAX_NODES)]
    BadNodes(usize),
    /// Manifests could not be read or are invalid.
    #[error(transparent)]
    Objects(#[from] objects::Error),
    /// A pod cannot be run by the lab.
    #[error("pod {pod}: {message}")]
    Pod { pod: String, message: String },
    /// The lab does not exist (no state file).
    #[error("lab {name:?} is not up (no {path})")]
    NotUp { name: String, path: PathBuf },
    /// The state file could not be read or written.
    #[error("lab state {path}: {message}")]
    State { path: PathBuf, message: String },
    /// A server process failed to start.
    #[error("servers of lab {lab} did not start: {message}")]
    Servers { lab: String, message: String },
    /// The cluster DNS failed to start.
    #[error("cluster DNS (dnsmasq in {pod}) did not start: {message}")]
    Dns { pod: String, message: String },
    /// A probe or label target does not exist.
    #[error("unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
    /// A label argument is not `key=value` or `key-`.
    #[error("invalid label change {0:?}: use key=value or key-")]
    BadLabel(String),
    /// An outside name given to the cluster DNS is not usable.
    #[error("outside name {name:?}: {message}")]
    BadOutsideName { name: String, message: String },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lab that is up (or, in unit tests, planned).
///
/// `objects` are the source of truth (manifests as applied, pod IPs filled in);
/// `cluster` is built from them after every change; `state` is what runs.
#[derive(Debug)]
pub struct Lab {
    /// `<state root>/<lab>`: state.json and the processes' logs.
    dir: PathBuf,
    state: LabState,
    cluster: ClusterState,
    objects: Vec<K8sObject>,
}

impl Lab {
    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The cluster as the policy engine sees it (IPs filled, node IP set).
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// The lab's saved state.
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// The lab's pods, in `namespace/name` order.
    pub fn pods(&self) -> Vec<&LabPod> {
        self.state.pods.values().collect()
    }

    /// The lab's nodes, by number.
    pub fn nodes(&self) -> &[LabNode] {
        &self.state.nodes
    }

    /// A node of the lab by name.
    pub fn node(&self, name: &str) -> Result<&LabNode> {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::Unknown {
                what: "node",
                name: name.to_string(),
            })
    }

    /// The network namespaces of each node: the node's own, then its pods',
    /// by pod number. What a collector of that node sees (its probes see every
    /// namespace of the machine; a lab collector keeps these only).
    pub fn namespaces_by_node(&self) -> Vec<(&LabNode, Vec<String>)> {
        self.state
            .nodes
            .iter()
            .map(|node| {
                let mut pods: Vec<&LabPod> = self
                    .state
                    .pods
                    .values()
                    .filter(|p| p.node == node.index)
                    .collect();
                pods.sort_by_key(|p| p.index);
                let names = std::iter::once(node.netns.clone())
                    .chain(pods.into_iter().map(|p| p.netns.clone()))
                    .collect();
                (node, names)
            })
            .collect()
    }

    /// A pod of the lab.
    pub fn pod(&self, key: &PodKey) -> Result<&LabPod> {
        self.state
            .pods
            .get(&key.to_string())
            .ok_or_else(|| Error::Unknown {
                what: "pod",
                name: key.to_string(),
            })
    }
}

/// Labs built without the system, for the unit tests of every part.
#[cfg(test)]
pub(crate) mod fixture {
    use std::path::{Path, PathBuf};

    use netverdict_policy::manifest::K8sObject;

    use super::{Enforcement, Lab, LabOptions};
    use crate::objects::read_objects;

    /// The seed scenario's directory (`lab/examples/seed`).
    pub fn seed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed")
    }

    /// The seed scenario's objects, with its three policies when `policies`.
    pub fn seed_objects(policies: bool) -> Vec<K8sObject> {
        let mut paths = vec![seed_dir().join("cluster.yaml")];
        if policies {
            paths.push(seed_dir().join("policies"));
        }
        read_objects(&paths).expect("the seed scenario loads")
    }

    /// Objects from one YAML document (a `List`).
    pub fn objects(yaml: &str) -> Vec<K8sObject> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, yaml).expect("write");
        read_objects(&[path]).expect("the test cluster loads")
    }

    /// The lab `up` would build from `objects` (pods planned and recorded, no
    /// namespace, rule or process made), with its state under `dir`.
    pub fn planned_in(objects: Vec<K8sObject>, dns: bool, dir: &Path) -> Lab {
        let mut options = LabOptions::new("unit", vec!["nv-lab".into(), "serve".into()]);
        options.dns = dns;
        options.state_root = dir.to_path_buf();
        let (mut lab, _) = Lab::prepare(objects, &options).expect("prepare");
        let pods = lab.plan_new_pods().expect("plan pods");
        lab.record_pods(&pods);
        lab
    }

    /// [`planned_in`] with a state directory that is never written.
    pub fn planned(objects: Vec<K8sObject>, dns: bool) -> Lab {
        planned_in(objects, dns, Path::new("/nonexistent/netverdict-unit"))
    }

    /// A planned lab with DNS, on `nodes` nodes, enforcing with `enforcement`.
    pub fn planned_on(objects: Vec<K8sObject>, nodes: usize, enforcement: Enforcement) -> Lab {
        let mut options = LabOptions::new("unit", vec!["nv-lab".into(), "serve".into()]);
        options.nodes = nodes;
        options.enforcement = enforcement;
        options.state_root = Path::new("/nonexistent/netverdict-unit").to_path_buf();
        let (mut lab, _) = Lab::prepare(objects, &options).expect("prepare");
        let pods = lab.plan_new_pods().expect("plan pods");
        lab.record_pods(&pods);
        lab
    }
}
