//! A lab's life: `up` (first a `down` of any lab of the same name, then the
//! node, the pods, the rules, the servers, the DNS and the state file, and a
//! `down` again if any step fails), the changes made in place (`apply`,
//! `delete_policy`, `label`, `set_unenforced`), which all edit the objects and
//! then `reconcile` the running lab with them, and `down`, which finds
//! everything by name so that a crashed lab is cleaned too. Also the checks
//! before `up`, the list of labs on the machine and the guard that brings a
//! lab down when dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use netverdict_policy::manifest::K8sObject;
use netverdict_policy::{ClusterState, PodKey};
use serde::Serialize;

use super::enforce::Enforcement;
use super::state::{LabPod, STATE_ROOT, assign_pod_ips, check_name, prefix, state_error};
use super::{Error, Lab, Result, topology};
use crate::nft::Unenforced;
use crate::objects::{build_cluster, from_json, merge, object_id, read_objects};
use crate::sys;

/// How to bring a lab up.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub name: String,
    /// Run a cluster DNS (adds a kube-dns pod and Service when the manifests
    /// have none).
    pub dns: bool,
    /// The command that runs a server process: program and leading arguments;
    /// the [`ServeSpec`](crate::serve::ServeSpec) JSON is appended as the last
    /// argument.
    pub server_command: Vec<OsString>,
    pub unenforced: Unenforced,
    pub state_root: PathBuf,
    /// How many nodes (1 to [`MAX_NODES`](super::state::MAX_NODES)).
    pub nodes: usize,
    /// How NetworkPolicy is enforced.
    pub enforcement: Enforcement,
}

impl LabOptions {
    /// Options with DNS on, the default state root, nothing unenforced, one
    /// node and nftables enforcement.
    pub fn new(name: impl Into<String>, server_command: Vec<OsString>) -> Self {
        LabOptions {
            name: name.into(),
            dns: true,
            server_command,
            unenforced: Unenforced::default(),
            state_root: PathBuf::from(STATE_ROOT),
            nodes: 1,
            enforcement: Enforcement::Nftables,
        }
    }
}

/// What `down` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DownReport {
    pub namespaces: usize,
    pub processes: usize,
    pub state_removed: bool,
}

/// A lab found on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct LabListing {
    pub name: String,
    /// How many of its network namespaces exist (node included).
    pub namespaces: usize,
    /// Whether its state file exists (false: a crashed lab, for `down`).
    pub has_state: bool,
}

/// What a label change applies to.
#[derive(Clone, Debug)]
pub enum LabelTarget {
    Pod(PodKey),
    Namespace(String),
}

/// Brings lab `name` down when dropped (tests: also when they panic).
#[derive(Debug)]
pub struct DownOnDrop {
    pub name: String,
    pub state_root: PathBuf,
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Err(e) = down(&self.name, &self.state_root) {
            eprintln!("cleanup of lab {}: {e}", self.name);
        }
    }
}

/// How many namespaces each lab has, from namespace names (`nv.<lab>.<x>`).
fn count_lab_netns(names: &[String]) -> BTreeMap<String, usize> {
    let mut labs = BTreeMap::new();
    for n in names {
        let mut parts = n.splitn(3, '.');
        if let (Some("nv"), Some(lab), Some(rest)) = (parts.next(), parts.next(), parts.next())
            && !lab.is_empty()
            && !rest.is_empty()
        {
            *labs.entry(lab.to_string()).or_insert(0) += 1;
        }
    }
    labs
}

/// The labs on this machine: those with state and those with namespaces left.
pub fn list(state_root: &Path) -> Vec<LabListing> {
    let mut labs: BTreeMap<String, LabListing> = count_lab_netns(&sys::netns_with_prefix("nv."))
        .into_iter()
        .map(|(name, namespaces)| {
            let listing = LabListing {
                name: name.clone(),
                namespaces,
                has_state: false,
            };
            (name, listing)
        })
        .collect();
    for entry in std::fs::read_dir(state_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(name) = entry.file_name().into_string() {
            labs.entry(name.clone())
                .or_insert_with(|| LabListing {
                    name,
                    namespaces: 0,
                    has_state: false,
                })
                .has_state = entry.path().join("state.json").exists();
        }
    }
    labs.into_values().collect()
}

/// Checks root and the tools the lab runs (`tc` is part of iproute2, as `ip`).
pub fn preflight(dns: bool) -> Result<()> {
    if !sys::is_root() {
        return Err(Error::NotRoot);
    }
    let mut tools = vec![("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")];
    if dns {
        tools.push(("dnsmasq", "dnsmasq-base"));
    }
    for (program, package) in tools {
        if !sys::have_program(program) && !sys::have_program(&format!("/usr/sbin/{program}")) {
            return Err(Error::MissingTool { program, package });
        }
    }
    Ok(())
}

/// Removes everything of lab `name`: processes inside its namespaces, the
/// namespaces (with their links, routes and nftables tables), their
/// /etc/netns files and the state directory. Works on a crashed lab.
pub fn down(name: &str, state_root: &Path) -> Result<DownReport> {
    check_name(name)?;
    let names = sys::netns_with_prefix(&prefix(name));
    let pids = sys::processes_in(&names);
    for &pid in &pids {
        sys::kill(pid);
    }
    for &pid in &pids {
        sys::reap_if_exited(pid);
    }
    if !names.is_empty() {
        let script = topology::netns_del_script(names.iter().map(String::as_str));
        // -force: go on past a namespace another `down` removed meanwhile.
        if let Err(e) = sys::ip_batch(None, &script, true) {
            let left = sys::netns_with_prefix(&prefix(name));
            if !left.is_empty() {
                return Err(e.into());
            }
        }
    }
    for n in &names {
        sys::remove_netns_etc(n);
    }
    let dir = state_root.join(name);
    let state_removed = dir.exists();
    if state_removed {
        std::fs::remove_dir_all(&dir).map_err(|e| state_error(&dir, e))?;
    }
    tracing::info!(
        lab = name,
        namespaces = names.len(),
        processes = pids.len(),
        "lab down"
    );
    Ok(DownReport {
        namespaces: names.len(),
        processes: pids.len(),
        state_removed,
    })
}

/// Label changes: `key=value` sets, `key-` removes.
fn parse_label_changes(changes: &[String]) -> Result<Vec<(String, Option<String>)>> {
    changes
        .iter()
        .map(|c| {
            let parsed = match c.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => match c.strip_suffix('-') {
                    Some(key) => (key.to_string(), None),
                    None => return Err(Error::BadLabel(c.clone())),
                },
            };
            if parsed.0.is_empty() {
                return Err(Error::BadLabel(c.clone()));
            }
            Ok(parsed)
        })
        .collect()
}

/// Applies label changes to the object of `target` in `objects`; a
/// namespace the cluster knows only through its pods or policies gets a
/// Namespace object first.
fn change_labels(
    objects: &mut Vec<K8sObject>,
    cluster: &ClusterState,
    target: &LabelTarget,
    changes: &[String],
) -> Result<()> {
    let parsed = parse_label_changes(changes)?;
    let wanted = match target {
        LabelTarget::Pod(key) => ("Pod", key.namespace.clone(), key.name.clone()),
        LabelTarget::Namespace(ns) => ("Namespace", String::new(), ns.clone()),
    };
    if !objects.iter().any(|o| object_id(o) == wanted) {
        match target {
            LabelTarget::Namespace(ns) if cluster.namespace_names().contains(ns) => {
                objects.push(K8sObject::Namespace(Box::new(from_json(
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns,
                            "labels": {"kubernetes.io/metadata.name": ns}}}),
                ))));
            }
            LabelTarget::Namespace(ns) => {
                return Err(Error::Unknown {
                    what: "namespace",
                    name: ns.clone(),
                });
            }
            LabelTarget::Pod(key) => {
                return Err(Error::Unknown {
                    what: "pod",
                    name: key.to_string(),
                });
            }
        }
    }
    for o in objects.iter_mut() {
        if object_id(o) != wanted {
            continue;
        }
        let meta = match o {
            K8sObject::Pod(p) => &mut p.metadata,
            K8sObject::Namespace(n) => &mut n.metadata,
            _ => continue,
        };
        let labels = meta.labels.get_or_insert_with(Default::default);
        for (k, v) in &parsed {
            match v {
                Some(v) => {
                    labels.insert(k.clone(), v.clone());
                }
                None => {
                    labels.remove(k);
                }
            }
        }
    }
    Ok(())
}

impl Lab {
    /// Brings a lab up from manifest files (see [`Lab::up_objects`]).
    pub fn up<P: AsRef<Path>>(paths: &[P], options: &LabOptions) -> Result<Lab> {
        let objects = read_objects(paths)?;
        Lab::up_objects(objects, options)
    }

    /// Brings a lab up: cleans up any previous lab of the same name, then creates
    /// the node, the pods, their servers, the service DNAT, the DNS and the
    /// policy enforcement.
    pub fn up_objects(objects: Vec<K8sObject>, options: &LabOptions) -> Result<Lab> {
        check_name(&options.name)?;
        preflight(options.dns)?;
        down(&options.name, &options.state_root)?;
        let started = Instant::now();
        let (mut lab, dns_pod) = Lab::prepare(objects, options)?;
        std::fs::create_dir_all(&lab.dir).map_err(|e| state_error(&lab.dir, e))?;
        if let Err(e) = lab.build(dns_pod) {
            // Leave nothing half-built behind.
            if let Err(cleanup) = down(&options.name, &options.state_root) {
                tracing::warn!(lab = options.name, error = %cleanup, "cleanup after a failed up");
            }
            return Err(e);
        }
        tracing::info!(
            lab = options.name,
            nodes = lab.state.nodes.len(),
            enforcement = lab.state.enforcement.as_str(),
            pods = lab.state.pods.len(),
            seconds = started.elapsed().as_secs_f64(),
            "lab up"
        );
        Ok(lab)
    }

    /// Creates the nodes, the pods, the rules, the servers and the DNS (in the
    /// kube-dns pod `dns_pod`, when given).
    fn build(&mut self, dns_pod: Option<String>) -> Result<()> {
        topology::create_nodes(&self.state.nodes)?;
        for node in &self.state.nodes {
            let links: Vec<String> = self
                .state
                .nodes
                .iter()
                .filter(|o| o.index != node.index)
                .map(|o| format!("n{}", o.index))
                .collect();
            self.attach_tc_drops(node, &links)?;
        }
        let new = self.add_pods()?;
        self.sync_rules()?;
        self.start_servers(&new, dns_pod.as_deref())?;
        if let Some(pod) = dns_pod {
            self.start_dns(&pod)?;
        }
        self.save()
    }

    /// Creates namespaces and links for every pod of the cluster the lab does
    /// not run yet, and records them; returns them.
    fn add_pods(&mut self) -> Result<Vec<LabPod>> {
        let new = self.plan_new_pods()?;
        topology::create_pods(&self.state.nodes, &new)?;
        for node in &self.state.nodes {
            let links: Vec<String> = new
                .iter()
                .filter(|p| p.node == node.index)
                .map(|p| format!("p{}", p.index))
                .collect();
            self.attach_tc_drops(node, &links)?;
        }
        self.write_resolv_confs(&new);
        self.record_pods(&new);
        Ok(new)
    }

    /// Fills the IPs of new pods and rebuilds the engine's cluster from the
    /// objects.
    fn refresh_cluster(&mut self) -> Result<()> {
        assign_pod_ips(&mut self.objects, &self.state.pods, &self.state.nodes)?;
        self.cluster = build_cluster(&self.objects)?;
        Ok(())
    }

    /// Brings the lab in line with its objects: new pods, rules, servers for
    /// new ports, DNS records; then saves the state.
    fn reconcile(&mut self) -> Result<()> {
        self.refresh_cluster()?;
        self.add_pods()?;
        self.sync_rules()?;
        // New pods, and ports added to existing pods.
        let pods: Vec<LabPod> = self.state.pods.values().cloned().collect();
        let dns_pod = self.state.dns.as_ref().map(|d| d.pod.clone());
        self.start_servers(&pods, dns_pod.as_deref())?;
        if let Some(dns) = self.state.dns.clone()
            && dns.records != self.dns_records()
        {
            self.start_dns(&dns.pod)?;
        }
        self.save()
    }

    /// Adds or replaces objects (policies, pods, labels of namespaces...) and
    /// updates the lab in place.
    pub fn apply_objects(&mut self, objects: Vec<K8sObject>) -> Result<()> {
        merge(&mut self.objects, objects);
        self.reconcile()
    }

    /// Applies manifest files.
    pub fn apply<P: AsRef<Path>>(&mut self, paths: &[P]) -> Result<()> {
        let objects = read_objects(paths)?;
        self.apply_objects(objects)
    }

    /// Removes a NetworkPolicy and updates the rules.
    pub fn delete_policy(&mut self, namespace: &str, name: &str) -> Result<bool> {
        let before = self.objects.len();
        self.objects
            .retain(|o| object_id(o) != ("NetworkPolicy", namespace.to_string(), name.to_string()));
        let removed = self.objects.len() != before;
        self.reconcile()?;
        Ok(removed)
    }

    /// Changes labels (`key=value` sets, `key-` removes) of a pod
    /// (`namespace/name`) or a namespace, and updates the rules.
    pub fn label(&mut self, target: &LabelTarget, changes: &[String]) -> Result<()> {
        change_labels(&mut self.objects, &self.cluster, target, changes)?;
        self.reconcile()
    }

    /// Sets which namespaces and policies are left unenforced, and updates the rules.
    pub fn set_unenforced(&mut self, unenforced: Unenforced) -> Result<()> {
        self.state.unenforced = unenforced;
        self.sync_rules()?;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use netverdict_policy::Protocol;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn label_changes_set_with_equals_and_remove_with_a_trailing_dash() {
        assert_eq!(
            parse_label_changes(&strings(&["team=web", "role-", "empty=", "a=b-c"]))
                .expect("valid"),
            vec![
                ("team".to_string(), Some("web".to_string())),
                ("role".to_string(), None),
                ("empty".to_string(), Some(String::new())),
                ("a".to_string(), Some("b-c".to_string())),
            ]
        );
        for bad in ["team", "=web", "-", ""] {
            let err = parse_label_changes(&strings(&["ok=1", bad])).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("invalid label change {bad:?}: use key=value or key-")
            );
        }
    }

    #[test]
    fn labelling_shop_team_web_admits_its_frontend_to_the_api() {
        let mut lab = fixture::planned(fixture::seed_objects(true), true);
        let (shop, api) = ("shop/np-client", "default/api");
        assert!(!lab.verdict(shop, api, 8080, Protocol::Tcp).0);
        let api_chain = format!("chain i{} {{", lab.state.pods[api].index);
        let rule = "ip saddr { 10.244.1.20, 10.244.2.20 } tcp dport 8080 accept";
        assert!(!lab.ruleset().contains(rule));

        change_labels(
            &mut lab.objects,
            &lab.cluster,
            &LabelTarget::Namespace("shop".into()),
            &strings(&["team=web"]),
        )
        .expect("label");
        lab.refresh_cluster().expect("cluster");
        assert!(lab.verdict(shop, api, 8080, Protocol::Tcp).0);
        let script = lab.ruleset();
        let chain = &script[script.find(&api_chain).expect("api chain")..];
        assert!(chain.contains(rule), "{script}");

        // Relabelling the client out of role=frontend denies it again.
        change_labels(
            &mut lab.objects,
            &lab.cluster,
            &LabelTarget::Pod(PodKey::new("shop", "np-client")),
            &strings(&["role-"]),
        )
        .expect("label");
        lab.refresh_cluster().expect("cluster");
        assert!(!lab.verdict(shop, api, 8080, Protocol::Tcp).0);
        assert!(!lab.ruleset().contains("10.244.2.20 } tcp dport 8080"));
    }

    #[test]
    fn a_namespace_known_only_through_its_pods_gets_an_object_to_label() {
        let mut lab = fixture::planned(
            fixture::objects(
                "apiVersion: v1\nkind: List\nitems:\n\
                 - {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: implicit}, spec: {containers: [{name: c, image: x}]}}\n",
            ),
            false,
        );
        change_labels(
            &mut lab.objects,
            &lab.cluster,
            &LabelTarget::Namespace("implicit".into()),
            &strings(&["team=web"]),
        )
        .expect("label");
        let ns = lab
            .objects
            .iter()
            .find_map(|o| match o {
                K8sObject::Namespace(n) => Some(n),
                _ => None,
            })
            .expect("a Namespace object");
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(
            labels
                .get("kubernetes.io/metadata.name")
                .map(String::as_str),
            Some("implicit")
        );
    }

    #[test]
    fn labelling_what_does_not_exist_names_it() {
        let mut lab = fixture::planned(fixture::seed_objects(false), true);
        let before = lab.objects.len();
        let err = change_labels(
            &mut lab.objects,
            &lab.cluster,
            &LabelTarget::Pod(PodKey::new("shop", "ghost")),
            &strings(&["a=b"]),
        )
        .expect_err("no such pod");
        assert_eq!(err.to_string(), "unknown pod \"shop/ghost\"");
        let err = change_labels(
            &mut lab.objects,
            &lab.cluster,
            &LabelTarget::Namespace("nowhere".into()),
            &strings(&["a=b"]),
        )
        .expect_err("no such namespace");
        assert_eq!(err.to_string(), "unknown namespace \"nowhere\"");
        assert_eq!(lab.objects.len(), before);
    }

    #[test]
    fn labs_are_counted_from_their_namespace_names() {
        let names = strings(&[
            "nv.a.node",
            "nv.a.0",
            "nv.a.1",
            "nv.b-2.node",
            "nv.c",
            "nv..0",
            "other.a.0",
        ]);
        assert_eq!(
            count_lab_netns(&names),
            BTreeMap::from([("a".to_string(), 3), ("b-2".to_string(), 1)])
        );
    }
}
