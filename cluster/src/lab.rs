//! The lab source (`--lab NAME`, feature `lab`): the cluster state of a lab
//! that is up (`netverdict lab up`), read once from the lab's saved state when
//! the source starts. Later `netverdict lab apply` calls are not followed: a
//! caller that changes the lab (the demo) updates the [`SharedState`] itself.
//!
//! The lab allocates pod IPs itself, so its objects are loaded without requiring
//! `status.podIP` in the manifests they came from; the saved objects carry the
//! IPs the lab gave.
//!
//! [`SharedState`]: crate::SharedState

use std::path::Path;

use netverdict_policy::{ClusterState, LoadErrors, LoadOptions, Manifests};

/// Errors of the lab source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab could not be opened: it is not up, or its saved state is unreadable.
    #[error("lab {name}: {source}")]
    Open {
        /// The lab's name.
        name: String,
        #[source]
        source: Box<netverdict_lab::lab::Error>,
    },
    /// Objects the lab holds are invalid for the policy engine (every one named).
    #[error("the objects of lab {name} are invalid: {errors}")]
    Invalid {
        /// The lab's name.
        name: String,
        errors: LoadErrors,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster state of lab `name` under `state_root`, as the engine sees it.
pub fn load(name: &str, state_root: &Path) -> Result<ClusterState> {
    let lab = netverdict_lab::Lab::open(name, state_root).map_err(|source| Error::Open {
        name: name.to_string(),
        source: Box::new(source),
    })?;
    state_of(lab.name(), &lab.state().objects)
}

/// The cluster state of a lab's saved objects (pods need no IP in them).
pub fn state_of(name: &str, objects: &[serde_json::Value]) -> Result<ClusterState> {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
    });
    let mut manifests = Manifests::default();
    let origin = Path::new("<lab>").join(name);
    manifests.read_str(&origin, &list.to_string());
    let (state, errors) = ClusterState::from_manifests(
        manifests,
        &LoadOptions {
            require_pod_ips: false,
        },
    );
    if !errors.is_empty() {
        return Err(Error::Invalid {
            name: name.to_string(),
            errors: LoadErrors(errors),
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netverdict_policy::PodKey;
    use serde_json::json;

    fn pod(name: &str, ip: Option<&str>) -> serde_json::Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "default", "name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        });
        if let Some(ip) = ip {
            pod["status"] = json!({"podIP": ip, "podIPs": [{"ip": ip}]});
        }
        pod
    }

    #[test]
    fn the_saved_objects_load_with_or_without_pod_ips() {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default"}});
        let state = state_of(
            "t1",
            &[
                namespace,
                pod("web", Some("10.0.0.2")),
                pod("pending", None),
            ],
        )
        .expect("valid objects");
        assert_eq!(state.pod_count(), 2);
        let web = state
            .pod(&PodKey::new("default", "web"))
            .expect("web is loaded");
        assert_eq!(web.ips, ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[test]
    fn an_invalid_object_is_named_with_the_lab() {
        let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "default", "name": "bad-cidr"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/99"}}]}]}});
        let error = state_of("t2", &[bad]).expect_err("the CIDR is invalid");
        let text = error.to_string();
        assert!(text.contains("lab t2"), "{text}");
        assert!(text.contains("bad-cidr"), "{text}");
        assert!(text.contains("<lab>/t2"), "{text}");
    }

    #[test]
    fn a_lab_that_is_not_up_is_named() {
        let root = tempfile::tempdir().expect("tempdir");
        let error = load("absent", root.path()).expect_err("no such lab");
        assert!(matches!(error, Error::Open { .. }), "{error:?}");
        assert!(error.to_string().contains("absent"), "{error}");
    }
}
