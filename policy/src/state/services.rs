//! Services and their EndpointSlices: by name, and services by cluster IP, so
//! that a connection addressed to a Service is resolved to its backends
//! ([`ClusterState::service_backends`](crate::ClusterState::service_backends)).

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::model::{EndpointSlice, Service};

/// A namespaced object's namespace and name.
type NamespacedName = (String, String);

#[derive(Clone, Debug, Default)]
pub(crate) struct Services {
    by_name: FxHashMap<NamespacedName, Service>,
    by_ip: FxHashMap<IpAddr, NamespacedName>,
    slices: FxHashMap<NamespacedName, EndpointSlice>,
}

impl Services {
    pub fn upsert(&mut self, svc: Service) {
        let key = (svc.namespace.clone(), svc.name.clone());
        self.remove(&svc.namespace, &svc.name);
        for ip in &svc.cluster_ips {
            self.by_ip.insert(*ip, key.clone());
        }
        self.by_name.insert(key, svc);
    }

    /// Removes a service; returns whether it was there.
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        match self
            .by_name
            .remove(&(namespace.to_string(), name.to_string()))
        {
            Some(svc) => {
                for ip in &svc.cluster_ips {
                    self.by_ip.remove(ip);
                }
                true
            }
            None => false,
        }
    }

    pub fn upsert_slice(&mut self, slice: EndpointSlice) {
        self.slices
            .insert((slice.namespace.clone(), slice.name.clone()), slice);
    }

    /// Removes an endpoint slice; returns whether it was there.
    pub fn remove_slice(&mut self, namespace: &str, name: &str) -> bool {
        self.slices
            .remove(&(namespace.to_string(), name.to_string()))
            .is_some()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.by_name.get(&(namespace.to_string(), name.to_string()))
    }

    /// The service owning a cluster IP.
    pub fn by_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.by_ip.get(&ip).and_then(|k| self.by_name.get(k))
    }

    /// Every service, in namespace/name order.
    pub fn sorted(&self) -> Vec<&Service> {
        let mut out: Vec<_> = self.by_name.values().collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Every endpoint slice, in no order.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }

    /// Every endpoint slice, in namespace/name order.
    pub fn sorted_slices(&self) -> Vec<&EndpointSlice> {
        let mut out: Vec<_> = self.slices.values().collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}
