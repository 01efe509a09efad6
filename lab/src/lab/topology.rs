//! The lab's network plumbing: the node namespaces, each a router
//! (`ip_forward`, the pods' gateway [`NODE_IP`] and the node's own address on
//! its loopback, a /32 route per local pod), joined to each other by a veth
//! pair per pair of nodes (`n<j>` in node `i` is the link to node `j`, holding
//! node `i`'s address with node `j`'s as peer, so the nodes route to each
//! other like hosts of one network); one namespace per pod joined to its node
//! by a veth pair (`p<index>` on the node, `eth0` in the pod) with the pod's /32
//! and a default route via the node `onlink`; and on every other node a /32
//! route to the pod via its node. Both ends of every veth are created inside
//! the lab's namespaces.
//!
//! The `ip -batch` scripts and the sysctls are built here as text and run
//! through `sys`.

use std::net::Ipv4Addr;

use super::state::{LabNode, LabPod};
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

/// `ip -batch` lines run in a node namespace when it is made: the pods'
/// gateway and the node's address on its loopback.
pub(super) fn node_script(node: &LabNode) -> String {
    format!(
        "link set lo up\naddr add {NODE_IP}/32 dev lo\naddr add {ip}/32 dev lo\n",
        ip = node.ip
    )
}

/// `ip -batch` lines (run in the root namespace, touching only the lab's)
/// making one veth pair per pair of nodes: `n<j>` in node `i`, `n<i>` in node `j`.
pub(super) fn node_links_script(nodes: &[LabNode]) -> String {
    let mut out = String::new();
    for (k, a) in nodes.iter().enumerate() {
        for b in &nodes[k + 1..] {
            out.push_str(&format!(
                "link add n{j} netns {a_ns} type veth peer name n{i} netns {b_ns}\n",
                i = a.index,
                j = b.index,
                a_ns = a.netns,
                b_ns = b.netns
            ));
        }
    }
    out
}

/// `ip -batch` lines run in `node` to bring its links to the other nodes up:
/// its address on each, with the other node's as peer (which routes to it).
pub(super) fn node_addresses_script(node: &LabNode, nodes: &[LabNode]) -> String {
    nodes
        .iter()
        .filter(|other| other.index != node.index)
        .map(|other| {
            format!(
                "addr add {ip} peer {peer}/32 dev n{j}\nlink set n{j} up\n",
                ip = node.ip,
                peer = other.ip,
                j = other.index
            )
        })
        .collect()
}

/// `ip -batch` lines run in a node namespace to join `pods` (on that node)
/// to it: a veth pair per pod (its peer made directly in the pod's namespace)
/// and the /32 route to the pod.
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

/// `ip -batch` lines run in a node namespace to reach `pods` of another
/// node, `via`, over the link to it.
pub(super) fn remote_pod_routes_script(pods: &[LabPod], via: &LabNode) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "route add {ip}/32 via {node} dev n{j}\n",
                ip = p.ip,
                node = via.ip,
                j = via.index
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

/// Makes the node namespaces and the links between them.
pub(super) fn create_nodes(nodes: &[LabNode]) -> Result<()> {
    sys::ip_batch(
        None,
        &netns_add_script(nodes.iter().map(|n| n.netns.as_str())),
        false,
    )?;
    for node in nodes {
        sys::write_net_sysctls(&node.netns, &NODE_SYSCTLS)?;
        sys::ip_batch(Some(&node.netns), &node_script(node), false)?;
    }
    if nodes.len() > 1 {
        sys::ip_batch(None, &node_links_script(nodes), false)?;
        for node in nodes {
            sys::ip_batch(
                Some(&node.netns),
                &node_addresses_script(node, nodes),
                false,
            )?;
        }
    }
    Ok(())
}

/// Makes the namespaces of `pods`, joins each to its node and routes to it
/// from the other nodes (pods are set up in parallel).
pub(super) fn create_pods(nodes: &[LabNode], pods: &[LabPod]) -> Result<()> {
    if pods.is_empty() {
        return Ok(());
    }
    sys::ip_batch(
        None,
        &netns_add_script(pods.iter().map(|p| p.netns.as_str())),
        false,
    )?;
    for node in nodes {
        let local: Vec<LabPod> = pods
            .iter()
            .filter(|p| p.node == node.index)
            .cloned()
            .collect();
        if !local.is_empty() {
            sys::ip_batch(Some(&node.netns), &pod_links_script(&local), false)?;
        }
        let mut routes = String::new();
        for other in nodes.iter().filter(|o| o.index != node.index) {
            let there: Vec<LabPod> = pods
                .iter()
                .filter(|p| p.node == other.index)
                .cloned()
                .collect();
            routes.push_str(&remote_pod_routes_script(&there, other));
        }
        if !routes.is_empty() {
            sys::ip_batch(Some(&node.netns), &routes, false)?;
        }
    }
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
            node: 0,
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
        let nodes = super::super::state::plan_nodes("lab", 3);
        assert_eq!(
            node_script(&nodes[1]),
            "link set lo up\naddr add 169.254.1.1/32 dev lo\naddr add 10.249.0.2/32 dev lo\n"
        );
    }

    #[test]
    fn nodes_are_joined_pairwise_and_route_to_each_other_s_pods() {
        let nodes = super::super::state::plan_nodes("lab", 3);
        assert_eq!(
            node_links_script(&nodes),
            "link add n1 netns nv.lab.node type veth peer name n0 netns nv.lab.node1\n\
             link add n2 netns nv.lab.node type veth peer name n0 netns nv.lab.node2\n\
             link add n2 netns nv.lab.node1 type veth peer name n1 netns nv.lab.node2\n"
        );
        assert_eq!(
            node_addresses_script(&nodes[1], &nodes),
            "addr add 10.249.0.2 peer 10.249.0.1/32 dev n0\nlink set n0 up\n\
             addr add 10.249.0.2 peer 10.249.0.3/32 dev n2\nlink set n2 up\n"
        );
        let mut remote = pod(4, "10.250.0.9");
        remote.node = 2;
        assert_eq!(
            remote_pod_routes_script(&[remote], &nodes[2]),
            "route add 10.250.0.9/32 via 10.249.0.3 dev n2\n"
        );
        assert_eq!(node_links_script(&nodes[..1]), "");
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
