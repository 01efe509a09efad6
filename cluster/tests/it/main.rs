//! The cluster crate's integration tests, in one binary: the Kubernetes source
//! against the in-process list/watch API double ([`kube`]), the manifest source
//! on real files ([`manifests`]), and [`start`] with every source and sync policy.

mod kube;
mod manifests;
mod start;
mod support;
