//! The lab crate's integration tests, in one binary: the lab on real
//! network namespaces and nftables, compared with the policy engine
//! (`privileged`: they need root).

/// Tests that need root (eBPF probes, network namespaces, nftables).
mod privileged {
    mod lab;
}
