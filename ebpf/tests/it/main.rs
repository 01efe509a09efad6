//! The eBPF crate's integration tests, in one binary: the probes loaded into
//! the kernel, watching a namespace pair per test (`privileged`: they need
//! root), with the pair and the event helpers in [`common`].

mod common;

/// Tests that need root (eBPF probes, network namespaces, nftables).
mod privileged {
    mod dns;
    mod icmp;
    mod loss;
    mod sctp;
    mod tcp;
    mod udp;
}
