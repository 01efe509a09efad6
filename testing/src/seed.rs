//! The seed guide's cluster (`lab/examples/seed`): the scenario most tests
//! tell their story on, loaded from its manifests with some of its policies.

use std::path::{Path, PathBuf};

use netverdict_policy::ClusterState;

/// The directory of the seed scenario (`cluster.yaml`, `policies/*.yaml`).
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/examples/seed")
}

/// The manifests of the seed cluster with these policies (file names in
/// `policies/` without `.yaml`, e.g. `default-deny`, `api-from-web`,
/// `allow-dns-egress`).
pub fn paths(policies: &[&str]) -> Vec<PathBuf> {
    let dir = dir();
    let mut paths = vec![dir.join("cluster.yaml")];
    paths.extend(
        policies
            .iter()
            .map(|p| dir.join("policies").join(format!("{p}.yaml"))),
    );
    paths
}

/// The seed cluster's state with these policies (see [`paths`]).
pub fn cluster(policies: &[&str]) -> ClusterState {
    ClusterState::load_paths(&paths(policies))
        .unwrap_or_else(|e| panic!("the seed cluster with {policies:?}: {e}"))
}
