//! The validated cluster model: namespaces, pods, NetworkPolicies, services,
//! endpoint slices and nodes as the engine needs them, converted from the
//! k8s-openapi types with every field checked; a conversion error names the
//! object and the field.
//!
//! - [`keys`]: how objects are named ([`PodKey`], and [`PolicyKey`] with its
//!   [`PolicyKind`], which can name cluster-scoped policy kinds too);
//! - [`ports`]: [`Protocol`] and [`PortRef`], shared by pods, services and policies;
//! - [`policy`]: [`NetworkPolicy`], its rules, peers and ports, and [`Direction`];
//! - [`workload`]: [`Namespace`], [`Pod`] and [`Node`];
//! - [`service`]: [`Service`] and [`EndpointSlice`];
//! - `validate`: the field checks the conversions share.
//!
//! Every type is re-exported here: `model::Pod` is `model::workload::Pod`.

pub mod keys;
pub mod policy;
pub mod ports;
pub mod service;
mod validate;
pub mod workload;

pub use keys::{PodKey, PolicyKey, PolicyKind};
pub use policy::{Direction, IpBlock, NamespaceMatch, NetworkPolicy, Peer, PortRule, Rule};
pub use ports::{PortRef, Protocol};
pub use service::{EndpointSlice, Service, ServicePort, SliceEndpoint};
pub use validate::DEFAULT_NAMESPACE;
pub use workload::{ContainerPort, NAMESPACE_NAME_LABEL, Namespace, Node, Pod};
