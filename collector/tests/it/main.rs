//! The collector crate's integration tests, in one binary: the agent on
//! replayed events, annotation, export, the observer (over mutual TLS too),
//! recycled pod IPs, a policy change while a flow is held and a short chaos soak of the
//! agent, one module each; [`tcp_events`] builds the TCP events they replay.

mod agent;
mod annotate;
mod export;
mod observer;
mod observer_tls;
mod policy_change;
mod recycled_ip;
mod soak;
mod tcp_events;
