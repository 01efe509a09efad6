//! The custom resources of the Kubernetes network-policy-api project
//! (`policy.networking.k8s.io`), written after its CRD schema: v1alpha1
//! [`AdminNetworkPolicy`] and [`BaselineAdminNetworkPolicy`], and v1alpha2
//! [`ClusterNetworkPolicy`] (which holds both an Admin and a Baseline tier).
//!
//! They derive kube's `CustomResource` (the `Resource` the Kubernetes watchers
//! need; no schema is generated: netverdict reads these resources, it does
//! not install them). Fields the upstream schema requires are `Option`s here
//! all the same, so that an object missing one still deserializes and
//! `model::AdminPolicy` can reject it with an error naming the object and the
//! field; unknown fields are ignored (as a newer CRD may add some).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_derive::CustomResource;
use serde::{Deserialize, Serialize};

/// The API group of the three kinds.
pub const GROUP: &str = "policy.networking.k8s.io";

/// The pods a policy applies to: exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods this selects in the namespaces it selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by namespace selector AND pod selector (empty selects all).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// A peer of a rule: exactly one field is set (ingress peers only know
/// `namespaces` and `pods`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Every pod of the namespaces this selects (not host-network pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod selector (not host-network pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// The addresses (status.addresses) of the nodes this selects by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDRs (egress only); pod addresses fall in them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Domain names, `*.` wildcard prefix allowed (egress Allow/Accept rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

pub mod v1alpha1 {
    //! AdminNetworkPolicy and BaselineAdminNetworkPolicy
    //! (`policy.networking.k8s.io/v1alpha1`).

    use super::*;

    /// The spec of an AdminNetworkPolicy: a cluster-scoped policy decided
    /// before NetworkPolicy, lowest `priority` first.
    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[kube(
        group = "policy.networking.k8s.io",
        version = "v1alpha1",
        kind = "AdminNetworkPolicy",
        plural = "adminnetworkpolicies",
        shortname = "anp",
        schema = "disabled",
        crates(kube_core = "::kube_core")
    )]
    #[serde(rename_all = "camelCase")]
    pub struct AdminNetworkPolicySpec {
        /// 0 to 1000: lower values are decided first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub priority: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub subject: Option<Subject>,
        /// Rules on traffic into the subject's pods, in precedence order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ingress: Vec<Rule>,
        /// Rules on traffic out of the subject's pods, in precedence order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub egress: Vec<Rule>,
    }

    /// The spec of a BaselineAdminNetworkPolicy (at most one, named
    /// `default`): decided for pods no NetworkPolicy isolates.
    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[kube(
        group = "policy.networking.k8s.io",
        version = "v1alpha1",
        kind = "BaselineAdminNetworkPolicy",
        plural = "baselineadminnetworkpolicies",
        shortname = "banp",
        schema = "disabled",
        crates(kube_core = "::kube_core")
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BaselineAdminNetworkPolicySpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub subject: Option<Subject>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ingress: Vec<Rule>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub egress: Vec<Rule>,
    }

    /// An ingress (`from`) or egress (`to`) rule of either kind.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Rule {
        /// For people and tools (at most 100 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// `Allow`, `Deny` or (AdminNetworkPolicy only) `Pass`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
        /// Ingress rules' peers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub from: Option<Vec<Peer>>,
        /// Egress rules' peers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub to: Option<Vec<Peer>>,
        /// Destination ports; absent: every port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ports: Option<Vec<Port>>,
    }

    /// One destination port: exactly one field is set.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Port {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port_number: Option<PortNumber>,
        /// A container port name of the destination pod.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub named_port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port_range: Option<PortRange>,
    }

    /// A protocol (TCP when absent) and port.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PortNumber {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<i32>,
    }

    /// A protocol (TCP when absent) and an inclusive port range.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PortRange {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub start: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub end: Option<i32>,
    }
}

pub mod v1alpha2 {
    //! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`).

    use super::*;

    /// The spec of a ClusterNetworkPolicy: `tier` Admin (decided before
    /// NetworkPolicy) or Baseline (for pods NetworkPolicy does not isolate),
    /// lowest `priority` first within its tier.
    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[kube(
        group = "policy.networking.k8s.io",
        version = "v1alpha2",
        kind = "ClusterNetworkPolicy",
        plural = "clusternetworkpolicies",
        shortname = "cnp",
        schema = "disabled",
        crates(kube_core = "::kube_core")
    )]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterNetworkPolicySpec {
        /// `Admin` or `Baseline`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tier: Option<String>,
        /// 0 to 1000: lower values are decided first within the tier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub priority: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub subject: Option<Subject>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ingress: Vec<Rule>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub egress: Vec<Rule>,
    }

    /// An ingress (`from`) or egress (`to`) rule.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Rule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// `Accept`, `Deny` or `Pass`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub from: Option<Vec<Peer>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub to: Option<Vec<Peer>>,
        /// Protocol matches; absent: every protocol and port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocols: Option<Vec<ProtocolMatch>>,
    }

    /// One protocol match: exactly one field is set.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ProtocolMatch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tcp: Option<ProtocolPorts>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub udp: Option<ProtocolPorts>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sctp: Option<ProtocolPorts>,
        /// A container port name of the destination pod.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub destination_named_port: Option<String>,
    }

    /// The ports of one protocol (absent: every port).
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ProtocolPorts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub destination_port: Option<Port>,
    }

    /// A port number or a range: exactly one field is set.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Port {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub number: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub range: Option<PortRange>,
    }

    /// An inclusive range of ports.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PortRange {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub start: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub end: Option<i32>,
    }
}

pub use v1alpha1::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
pub use v1alpha2::ClusterNetworkPolicy;
