//! Nodes and their addresses, and the addresses of the local node: traffic
//! between a pod and its own node is always allowed, whatever the policies say.

use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Node, Pod};

#[derive(Clone, Debug, Default)]
pub(crate) struct Nodes {
    by_name: FxHashMap<String, Node>,
    /// The node owning each address.
    by_ip: FxHashMap<IpAddr, String>,
    /// Addresses of the node every pod runs on, declared by the caller.
    local: FxHashSet<IpAddr>,
}

impl Nodes {
    pub fn upsert(&mut self, node: Node) {
        self.remove(&node.name);
        for ip in &node.ips {
            self.by_ip.insert(*ip, node.name.clone());
        }
        self.by_name.insert(node.name.clone(), node);
    }

    /// Removes a node; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.by_name.remove(name) {
            Some(node) => {
                for ip in &node.ips {
                    self.by_ip.remove(ip);
                }
                true
            }
            None => false,
        }
    }

    pub fn set_local_ips(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.local = ips.into_iter().collect();
    }

    /// Every node, in name order.
    pub fn sorted(&self) -> Vec<&Node> {
        let mut out: Vec<_> = self.by_name.values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `ip` belongs to the node `pod` runs on (or to the local node).
    pub fn is_node_of(&self, pod: &Pod, ip: IpAddr) -> bool {
        if self.local.contains(&ip) {
            return true;
        }
        match (&pod.node, self.by_ip.get(&ip)) {
            (Some(pod_node), Some(ip_node)) => pod_node == ip_node,
            _ => false,
        }
    }

    /// The node an address belongs to (the local node's declared addresses
    /// name no node object).
    pub fn node_of_ip(&self, ip: IpAddr) -> Option<&Node> {
        self.by_ip.get(&ip).and_then(|name| self.by_name.get(name))
    }

    /// Whether an IP belongs to any known node.
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        self.local.contains(&ip) || self.by_ip.contains_key(&ip)
    }
}
