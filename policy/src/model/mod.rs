//! The validated cluster model: namespaces, pods, NetworkPolicies and the
//! cluster-scoped admin policies, services,
//! endpoint slices and nodes as the engine needs them, converted from the
//! k8s-openapi types with every field checked; a conversion error names the
//! object and the field.
//!
//! - [`keys`]: how objects are named ([`PodKey`], and [`PolicyKey`] with its
//!   [`PolicyKind`], which can name cluster-scoped policy kinds too), and the
//!   [`Tier`]s policies are decided in;
//! - [`ports`]: [`Protocol`] and [`PortRef`], shared by pods, services and policies;
//! - [`policy`]: [`NetworkPolicy`], its rules, peers and ports, and [`Direction`];
//! - [`admin`]: [`AdminPolicy`], what AdminNetworkPolicy, BaselineAdminNetworkPolicy
//!   and ClusterNetworkPolicy become, with its [`Tier`] and ordered rules;
//! - [`workload`]: [`Namespace`], [`Pod`] and [`Node`];
//! - [`owner`]: who runs a pod: its controller ([`Owner`]), the ReplicaSets
//!   and Jobs between it and its workload ([`Controller`]), [`workload_name`];
//! - [`service`]: [`Service`] and [`EndpointSlice`];
//! - `validate`: the field checks the conversions share.
//!
//! Every type is re-exported here: `model::Pod` is `model::workload::Pod`.

pub mod admin;
pub mod keys;
pub mod owner;
pub mod policy;
pub mod ports;
pub mod service;
mod validate;
pub mod workload;

pub use admin::{AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject};
pub use keys::{PodKey, PolicyKey, PolicyKind, Tier};
pub use owner::{Controller, ControllerKind, Owner, workload_name};
pub use policy::{Direction, IpBlock, NamespaceMatch, NetworkPolicy, Peer, PortRule, Rule};
pub use ports::{PortRef, Protocol};
pub use service::{EndpointSlice, Service, ServicePort, SliceEndpoint};
pub use validate::DEFAULT_NAMESPACE;
pub use workload::{ContainerPort, NAMESPACE_NAME_LABEL, Namespace, Node, Pod};
