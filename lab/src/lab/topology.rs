//! The lab's network plumbing: the node namespace, a router (`ip_forward`,
//! the pods' gateway [`NODE_IP`] on its loopback, a /32 route per pod), and one
//! namespace per pod joined to it by a veth pair (`p<index>` on the node,
//! `eth0` in the pod) with the pod's /32 and a default route via the node
//! `onlink`. Both ends of every veth are created inside the lab's namespaces.
//!
//! The `ip -batch` scripts and the sysctls are built here as text and run
//! through `sys`; this is where a multi-node lab would add its other node
//! namespaces, the links between nodes and the routes to each node's pods.

use std::net::Ipv4Addr;

use super::state::LabPod;
use super::{Error, Result};
use crate::{nft, sys};

/// The node's address on every pod link: the pods' gateway, and the node IP the
/// policy engine is told about (pod-to-node traffic is always allowed).
pub const NODE_IP: Ipv4Addr = nft::NODE_GATEWAY;

/// How many threads set pods up at once.
const SETUP_THREADS: usize = 8;

/// The node routes between its pods; hairpinned Service traffic leaves by the
/// link it came in on, so no redirects to the pods.
const NODE_SYSCTLS: [(&str, &str); 5] = [
    ("ipv4/ip_forward", "1"),
    ("ipv4/conf/all/rp_filter", "0"),
    ("ipv4/conf/default/rp_filter", "0"),
    ("ipv4/conf/all/send_redirects", "0"),
    ("ipv4/conf/default/send_redirects", "0"),
];

/// ICMP errors (UDP "refused") must not be rate limited in a pod, or a
/// refusal would look like a drop.
const POD_SYSCTLS: [(&str, &str); 3] = [
    ("ipv4/icmp_ratelimit", "0"),
    ("ipv4/icmp_msgs_per_sec", "100000"),
    ("ipv4/icmp_msgs_burst", "100000"),
];

/// `ip -batch` lines creating network namespaces.
pub(super) fn netns_add_script<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("netns add {n}\n"))
        .collect()
}

/// `ip -batch` lines deleting network namespaces.
pub(super) fn netns_del_script<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("netns del {n}\n"))
        .collect()
}

/// `ip -batch` lines run in the node namespace when it is made.
pub(super) fn node_script() -> String {
    format!("link set lo up\naddr add {NODE_IP}/32 dev lo\n")
}

/// `ip -batch` lines run in the node namespace to join `pods` to it: a veth
/// pair per pod (its peer made directly in the pod's namespace) and the /32
/// route to the pod.
pub(super) fn pod_links_script(pods: &[LabPod]) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "link add p{i} type veth peer name eth0 netns {ns}\nlink set p{i} up\nroute add {ip}/32 dev p{i}\n",
                i = p.index,
                ns = p.netns,
                ip = p.ip
            )
        })
        .collect()
}

/// `ip -batch` lines run in a pod's namespace: its address, and the node as
/// its gateway.
pub(super) fn pod_script(pod: &LabPod) -> String {
    format!(
        "link set lo up\naddr add {ip}/32 dev eth0\nlink set eth0 up\nroute add {NODE_IP}/32 dev eth0 scope link\nroute add default via {NODE_IP} dev eth0 onlink\n",
        ip = pod.ip
    )
}

/// Makes the node namespace `node`.
pub(super) fn create_node(node: &str) -> Result<()> {
    sys::ip_batch(None, &netns_add_script([node]), false)?;
    sys::write_net_sysctls(node, &NODE_SYSCTLS)?;
    sys::ip_batch(Some(node), &node_script(), false)?;
    Ok(())
}

/// Makes the namespaces of `pods` and joins them to the node `node` (pods
/// are set up in parallel).
pub(super) fn create_pods(node: &str, pods: &[LabPod]) -> Result<()> {
    if pods.is_empty() {
        return Ok(());
    }
    sys::ip_batch(
        None,
        &netns_add_script(pods.iter().map(|p| p.netns.as_str())),
        false,
    )?;
    sys::ip_batch(Some(node), &pod_links_script(pods), false)?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .chunks(pods.len().div_ceil(SETUP_THREADS))
            .map(|chunk| {
                scope.spawn(move || -> Result<()> {
                    for p in chunk {
                        sys::ip_batch(Some(&p.netns), &pod_script(p), false)?;
                        sys::write_net_sysctls(&p.netns, &POD_SYSCTLS)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Sys(sys::Error::Panicked {
                        netns: "pod setup".into(),
                    }))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(index: usize, ip: &str) -> LabPod {
        LabPod {
            namespace: "ns".into(),
            name: format!("p{index}"),
            index,
            netns: format!("nv.lab.{index}"),
            ip: ip.parse().unwrap(),
            served: Vec::new(),
        }
    }

    #[test]
    fn each_pod_gets_its_own_link_and_a_route_through_it() {
        let script = pod_links_script(&[pod(0, "10.244.1.10"), pod(7, "10.250.0.2")]);
        assert_eq!(
            script,
            "link add p0 type veth peer name eth0 netns nv.lab.0\n\
             link set p0 up\n\
             route add 10.244.1.10/32 dev p0\n\
             link add p7 type veth peer name eth0 netns nv.lab.7\n\
             link set p7 up\n\
             route add 10.250.0.2/32 dev p7\n"
        );
    }

    #[test]
    fn a_pod_has_its_address_and_the_node_as_gateway() {
        assert_eq!(
            pod_script(&pod(3, "10.250.0.9")),
            "link set lo up\n\
             addr add 10.250.0.9/32 dev eth0\n\
             link set eth0 up\n\
             route add 169.254.1.1/32 dev eth0 scope link\n\
             route add default via 169.254.1.1 dev eth0 onlink\n"
        );
        assert_eq!(
            node_script(),
            "link set lo up\naddr add 169.254.1.1/32 dev lo\n"
        );
    }

    #[test]
    fn namespaces_are_made_and_removed_by_name() {
        assert_eq!(
            netns_add_script(["nv.a.node", "nv.a.0"]),
            "netns add nv.a.node\nnetns add nv.a.0\n"
        );
        assert_eq!(netns_del_script(["nv.a.0"]), "netns del nv.a.0\n");
        assert_eq!(netns_add_script([]), "");
    }
}
