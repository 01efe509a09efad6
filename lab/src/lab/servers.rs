//! The pods' servers, from the lab's side: which ports of which pods still
//! need a listener (every containerPort, except port 53 of the kube-dns pod
//! when the lab runs dnsmasq there), one server process for the batch (the
//! lab's `server_command` with a `serve::ServeSpec`, see `serve`), started
//! through `sys` and waited on until it prints `ready` and the listeners the
//! kernel could not open.

use std::ffi::OsString;
use std::time::Duration;

use netverdict_policy::{ClusterState, PodKey, Protocol};

use super::dns::DNS_PORT;
use super::state::{LabPod, state_error};
use super::{Error, Lab, Result};
use crate::serve::{PodPorts, ServeSpec};
use crate::sys;

/// How long a server process may take to open every listener.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The log of the server processes, in the lab's directory.
const LOG_FILE: &str = "servers.log";

/// The ports a pod's server listens on: its container ports, without DNS
/// (UDP and TCP 53) when `skip_dns`.
fn pod_ports(cluster: &ClusterState, key: &PodKey, skip_dns: bool) -> Vec<(Protocol, u16)> {
    let mut ports: Vec<(Protocol, u16)> = cluster
        .pod(key)
        .map(|p| p.ports.iter().map(|c| (c.protocol, c.port)).collect())
        .unwrap_or_default();
    if skip_dns {
        ports.retain(|(proto, port)| {
            !(*port == DNS_PORT && matches!(proto, Protocol::Udp | Protocol::Tcp))
        });
    }
    ports.sort();
    ports.dedup();
    ports
}

/// What a server process must serve for `pods`: the ports not served yet;
/// `dns_pod` (`namespace/name`) is the pod whose port 53 is dnsmasq's.
fn serve_spec(cluster: &ClusterState, pods: &[LabPod], dns_pod: Option<&str>) -> ServeSpec {
    ServeSpec {
        pods: pods
            .iter()
            .map(|p| {
                let id = p.key().to_string();
                let skip = dns_pod == Some(id.as_str());
                PodPorts {
                    pod: id,
                    netns: p.netns.clone(),
                    ports: pod_ports(cluster, &p.key(), skip)
                        .into_iter()
                        .map(|(proto, port)| (proto.as_str().to_string(), port))
                        .filter(|port| !p.served.contains(port))
                        .collect(),
                }
            })
            .filter(|p| !p.ports.is_empty())
            .collect(),
    }
}

/// The listeners a server process could not open, from its first line
/// (`ready` then `pod:PROTO/port` words); `None` when it is not `ready`.
fn parse_ready(line: &str) -> Option<Vec<String>> {
    let rest = line.strip_prefix("ready")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    Some(rest.split_whitespace().map(str::to_string).collect())
}

impl Lab {
    /// Starts a server process for the ports of `pods` not served yet, waits
    /// until it is ready and records what it serves. `dns_pod` is the pod
    /// where the lab runs dnsmasq.
    pub(super) fn start_servers(&mut self, pods: &[LabPod], dns_pod: Option<&str>) -> Result<()> {
        let spec = serve_spec(&self.cluster, pods, dns_pod);
        if spec.pods.is_empty() {
            return Ok(());
        }
        let fail = |message: String| Error::Servers {
            lab: self.state.name.clone(),
            message,
        };
        let (program, args) = self
            .state
            .server_command
            .split_first()
            .ok_or_else(|| fail("no server command".into()))?;
        let spec_json = serde_json::to_string(&spec).map_err(|e| fail(e.to_string()))?;
        let mut args: Vec<OsString> = sys::os_args(args);
        args.push(spec_json.into());
        let log = self.dir.join(LOG_FILE);
        let (server, line) =
            sys::start_reading_first_line(program.as_ref(), &args, &log, READY_TIMEOUT).map_err(
                |e| match e {
                    sys::Error::Io { path, source } => state_error(&path, source),
                    other => fail(other.to_string()),
                },
            )?;
        let Some(unsupported) = parse_ready(&line) else {
            server.stop();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(fail(format!(
                "no `ready` from the server process; its log ({}):\n{log_text}",
                log.display()
            )));
        };
        self.state.unsupported.extend(unsupported);
        for served in &spec.pods {
            if let Some(pod) = self.state.pods.get_mut(&served.pod) {
                pod.served.extend(served.ports.iter().cloned());
            }
        }
        server.detach();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    fn ports(spec: &ServeSpec) -> Vec<(String, Vec<(String, u16)>)> {
        spec.pods
            .iter()
            .map(|p| (p.pod.clone(), p.ports.clone()))
            .collect()
    }

    fn tcp(port: u16) -> (String, u16) {
        ("TCP".to_string(), port)
    }

    #[test]
    fn every_container_port_is_served_but_dnsmasq_s_and_pods_without_ports_are_left_out() {
        let lab = fixture::planned(fixture::seed_objects(false), true);
        let pods: Vec<LabPod> = lab.pods().into_iter().cloned().collect();
        let spec = serve_spec(&lab.cluster, &pods, Some("kube-system/coredns"));
        assert_eq!(
            ports(&spec),
            vec![("default/api".to_string(), vec![tcp(5432), tcp(8080)])]
        );
        let netns = &lab.state.pods["default/api"].netns;
        assert_eq!(&spec.pods[0].netns, netns);
    }

    #[test]
    fn without_a_cluster_dns_the_dns_pod_s_ports_get_echo_servers() {
        let lab = fixture::planned(fixture::seed_objects(false), false);
        let pods: Vec<LabPod> = lab.pods().into_iter().cloned().collect();
        let spec = serve_spec(&lab.cluster, &pods, None);
        assert_eq!(
            ports(&spec),
            vec![
                ("default/api".to_string(), vec![tcp(5432), tcp(8080)]),
                (
                    "kube-system/coredns".to_string(),
                    vec![("TCP".to_string(), 53), ("UDP".to_string(), 53)]
                ),
            ]
        );
    }

    #[test]
    fn ports_already_served_are_not_served_twice() {
        let mut lab = fixture::planned(fixture::seed_objects(false), true);
        if let Some(api) = lab.state.pods.get_mut("default/api") {
            api.served.push(tcp(8080));
        }
        let pods: Vec<LabPod> = lab.pods().into_iter().cloned().collect();
        let spec = serve_spec(&lab.cluster, &pods, Some("kube-system/coredns"));
        assert_eq!(
            ports(&spec),
            vec![("default/api".to_string(), vec![tcp(5432)])]
        );
        if let Some(api) = lab.state.pods.get_mut("default/api") {
            api.served.push(tcp(5432));
        }
        let pods: Vec<LabPod> = lab.pods().into_iter().cloned().collect();
        assert!(
            serve_spec(&lab.cluster, &pods, Some("kube-system/coredns"))
                .pods
                .is_empty()
        );
    }

    #[test]
    fn the_ready_line_lists_what_the_kernel_could_not_serve() {
        assert_eq!(parse_ready("ready \n"), Some(vec![]));
        assert_eq!(
            parse_ready("ready a/p:SCTP/9 b/q:SCTP/10\n"),
            Some(vec!["a/p:SCTP/9".to_string(), "b/q:SCTP/10".to_string()])
        );
        assert_eq!(parse_ready(""), None);
        assert_eq!(parse_ready("readyx\n"), None);
        assert_eq!(parse_ready("error: cannot listen\n"), None);
    }
}
