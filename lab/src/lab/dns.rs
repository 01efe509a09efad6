//! The cluster DNS: dnsmasq in the kube-dns pod answers for
//! `<svc>.<ns>.svc.cluster.local`, `kubernetes.default.svc.cluster.local` and
//! `<a-b-c-d>.<ns>.pod.cluster.local`, and the outside names the lab was
//! given ([`Lab::set_outside_name`]: addresses or CNAMEs, standing in for
//! internet names an upstream resolver would answer), with NXDOMAIN for
//! every other name, on UDP and TCP 53. Its records and command line, and each pod's resolv.conf,
//! are built here as text; dnsmasq is started (restarted when its records
//! change) through `sys` and waited on until it answers. Names are resolved
//! from inside a pod as its resolver would (search list, `ndots:5`), through
//! the kube-dns Service, so DNS obeys the pod's egress policy.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use netverdict_policy::{ClusterState, PodKey};

use super::state::{DnsInfo, LabPod, OutsideName};
use super::{Error, Lab, Result};
use crate::probe::{self, DnsAnswer};
use crate::sys;

/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The port the cluster DNS listens on (UDP and TCP).
pub(super) const DNS_PORT: u16 = 53;
/// The address `kubernetes.default` resolves to when the manifests have no
/// such Service.
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// How long dnsmasq may take to answer after it started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// dnsmasq's pid file and log, in the lab's directory.
const PID_FILE: &str = "dnsmasq.pid";
const LOG_FILE: &str = "dnsmasq.log";

/// The prefix of a CNAME record in [`records`] (`cname:alias,target`).
const CNAME: &str = "cname:";

/// The records the cluster DNS serves (`name,ip[,ip...]`, or
/// `cname:alias,target`; sorted): every Service with a cluster IP,
/// `kubernetes.default` (always), every pod, and the outside names.
fn records<'a>(
    cluster: &ClusterState,
    pods: impl IntoIterator<Item = &'a LabPod>,
    outside: &std::collections::BTreeMap<String, OutsideName>,
) -> Vec<String> {
    let mut records = Vec::new();
    let mut has_kubernetes = false;
    for svc in cluster.services() {
        if svc.cluster_ips.is_empty() {
            continue;
        }
        has_kubernetes |= svc.namespace == "default" && svc.name == "kubernetes";
        let ips: Vec<String> = svc.cluster_ips.iter().map(|i| i.to_string()).collect();
        records.push(format!(
            "{}.{}.svc.{CLUSTER_DOMAIN},{}",
            svc.name,
            svc.namespace,
            ips.join(",")
        ));
    }
    if !has_kubernetes {
        records.push(format!(
            "kubernetes.default.svc.{CLUSTER_DOMAIN},{KUBERNETES_SERVICE_IP}"
        ));
    }
    for p in pods {
        let dashed = p.ip.to_string().replace(['.', ':'], "-");
        records.push(format!(
            "{dashed}.{}.pod.{CLUSTER_DOMAIN},{}",
            p.namespace, p.ip
        ));
    }
    for (name, target) in outside {
        records.push(match target {
            OutsideName::Addresses(ips) => {
                let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                format!("{name},{}", ips.join(","))
            }
            OutsideName::Alias(target) => format!("{CNAME}{name},{target}"),
        });
    }
    records.sort();
    records
}

/// dnsmasq's command line: no upstream, no /etc/hosts, authoritative for the
/// cluster domain and NXDOMAIN for the rest (`--local`), one `--host-record`
/// per record.
fn dnsmasq_args(records: &[String], pid_file: &Path, log: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--keep-in-foreground".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--conf-file=/dev/null".into(),
        format!("--pid-file={}", pid_file.display()),
        "--user=root".into(),
        format!("--port={DNS_PORT}"),
        format!("--local=/{CLUSTER_DOMAIN}/"),
        "--local=/#/".into(),
        "--local-ttl=1".into(),
        format!("--log-facility={}", log.display()),
    ];
    args.extend(records.iter().map(|r| match r.strip_prefix(CNAME) {
        Some(cname) => format!("--cname={cname}"),
        None => format!("--host-record={r}"),
    }));
    args
}

/// A pod's resolv.conf, as kubelet writes it for the cluster DNS at `dns`.
fn resolv_conf(dns: IpAddr, namespace: &str) -> String {
    format!(
        "nameserver {dns}\nsearch {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
    )
}

fn dnsmasq_program() -> &'static str {
    if sys::have_program("dnsmasq") {
        "dnsmasq"
    } else {
        "/usr/sbin/dnsmasq"
    }
}

/// The names a pod's resolver tries for `name` (search list, `ndots:5`).
///
/// ```
/// let names = netverdict_lab::lab::search_list("api.default", "shop");
/// assert_eq!(names[0], "api.default.shop.svc.cluster.local");
/// assert_eq!(names[1], "api.default.svc.cluster.local");
/// ```
pub fn search_list(name: &str, namespace: &str) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![absolute.to_string()];
    }
    // Names in the cluster domain are taken as complete (a resolver with
    // ndots:5 would first try them under the search domains, in vain).
    if name.ends_with(&format!(".{CLUSTER_DOMAIN}")) {
        return vec![name.to_string()];
    }
    let search = [
        format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}"),
        format!("{name}.svc.{CLUSTER_DOMAIN}"),
        format!("{name}.{CLUSTER_DOMAIN}"),
    ];
    if name.matches('.').count() >= 5 {
        std::iter::once(name.to_string()).chain(search).collect()
    } else {
        search
            .into_iter()
            .chain(std::iter::once(name.to_string()))
            .collect()
    }
}

/// `svc.ns` → `svc.ns.svc.cluster.local`; `svc` → `svc.<ns>.svc.cluster.local`;
/// a name ending in the cluster domain is kept.
pub fn expand_name(name: &str, from_namespace: &str) -> String {
    let name = name.trim_end_matches('.');
    if name.ends_with(CLUSTER_DOMAIN) {
        return name.to_string();
    }
    match name.matches('.').count() {
        0 => format!("{name}.{from_namespace}.svc.{CLUSTER_DOMAIN}"),
        1 => format!("{name}.svc.{CLUSTER_DOMAIN}"),
        _ if name.ends_with(".svc") => format!("{name}.{CLUSTER_DOMAIN}"),
        _ => name.to_string(),
    }
}

impl Lab {
    /// The kube-dns Service's cluster IP, when the cluster has one.
    pub(super) fn dns_service_ip(&self) -> Option<IpAddr> {
        self.cluster
            .service("kube-system", "kube-dns")
            .and_then(|s| s.cluster_ips.first().copied())
    }

    /// The records the cluster DNS must serve now.
    pub(super) fn dns_records(&self) -> Vec<String> {
        records(
            &self.cluster,
            self.state.pods.values(),
            &self.state.outside_names,
        )
    }

    /// Makes the cluster DNS answer for `name` (outside the cluster domain)
    /// with `target`, as an upstream resolver would for an internet name;
    /// restarts it when it runs. TTLs are dnsmasq's `--local-ttl` (1 s).
    pub fn set_outside_name(&mut self, name: &str, target: OutsideName) -> Result<()> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let invalid = |message: String| Error::BadOutsideName {
            name: name.clone(),
            message,
        };
        let valid = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if !valid(&name) || name.ends_with(CLUSTER_DOMAIN) {
            return Err(invalid(format!("not a DNS name outside {CLUSTER_DOMAIN}")));
        }
        match &target {
            OutsideName::Addresses(ips) if ips.is_empty() => {
                return Err(invalid("no address".into()));
            }
            OutsideName::Alias(to) if !valid(to) => {
                return Err(invalid(format!("alias target {to:?} is not a DNS name")));
            }
            _ => {}
        }
        self.state.outside_names.insert(name, target);
        if let Some(dns) = self.state.dns.clone()
            && dns.records != self.dns_records()
        {
            self.start_dns(&dns.pod)?;
        }
        self.save()
    }

    /// Writes the resolv.conf of `pods` (what `ip netns exec` shows programs)
    /// when the cluster has a kube-dns Service. Only programs run that way
    /// read it (the lab's own probes ask the Service directly), so a failure
    /// is a warning.
    pub(super) fn write_resolv_confs(&self, pods: &[LabPod]) {
        let Some(dns) = self.dns_service_ip() else {
            return;
        };
        for p in pods {
            let text = resolv_conf(dns, &p.namespace);
            if let Err(e) = sys::write_netns_etc(&p.netns, "resolv.conf", &text) {
                tracing::warn!(pod = %p.key(), error = %e, "cannot write the pod's resolv.conf");
            }
        }
    }

    /// Starts (or restarts) dnsmasq in the kube-dns pod and waits until it answers.
    pub(super) fn start_dns(&mut self, pod_id: &str) -> Result<()> {
        let fail = |message: String| Error::Dns {
            pod: pod_id.to_string(),
            message,
        };
        let pod = self
            .state
            .pods
            .get(pod_id)
            .cloned()
            .ok_or_else(|| fail("the pod is not in the lab".into()))?;
        let service_ip = self
            .dns_service_ip()
            .ok_or_else(|| fail("no Service kube-system/kube-dns with a cluster IP".into()))?;
        // A restart: stop the previous dnsmasq (the only process of the pod's
        // namespace besides the server threads, which are in another process's
        // main namespace).
        let pid_file = self.dir.join(PID_FILE);
        if let Ok(old) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = old.trim().parse::<i32>()
        {
            sys::kill(pid);
            // Its port 53 is free once it has exited (it may not be our child).
            sys::wait_gone(pid, Duration::from_secs(5));
        }
        let records = self.dns_records();
        let args = dnsmasq_args(&records, &pid_file, &self.dir.join(LOG_FILE));
        let mut dnsmasq = sys::start_in_netns(&pod.netns, OsStr::new(dnsmasq_program()), &args)
            .map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT);
        let name = format!("kubernetes.default.svc.{CLUSTER_DOMAIN}");
        loop {
            if let Some(exit) = dnsmasq.exited() {
                return Err(fail(format!("dnsmasq exited ({exit})")));
            }
            let answer = sys::in_netns(&pod.netns, || {
                probe::dns_query_here(
                    server,
                    &name,
                    RecordType::A,
                    false,
                    Duration::from_millis(200),
                )
            })??;
            if matches!(answer, DnsAnswer::Addresses(ref a) if !a.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                dnsmasq.stop();
                return Err(fail(format!(
                    "no answer for {name} within {}s (last: {answer})",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::write(&pid_file, dnsmasq.pid().to_string());
        dnsmasq.detach();
        self.state.dns = Some(DnsInfo {
            pod: pod_id.to_string(),
            service_ip,
            records,
        });
        Ok(())
    }

    /// Resolves a probe target: `namespace/pod`, an IP, or a DNS name (`svc.ns`,
    /// `svc` in the source's namespace, or a full name) through the cluster DNS
    /// from the source pod, as a program in the pod would.
    pub fn resolve_target(&self, from: &PodKey, target: &str, timeout: Duration) -> Result<IpAddr> {
        if let Ok(ip) = target.parse::<IpAddr>() {
            return Ok(ip);
        }
        if let Some((ns, name)) = target.split_once('/') {
            return Ok(self.pod(&PodKey::new(ns, name))?.ip);
        }
        let name = expand_name(target, &from.namespace);
        if self.state.dns.is_none() {
            // No cluster DNS: the Service's cluster IP from the lab's state.
            let mut parts = name.split('.');
            let (svc, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            return self
                .cluster
                .service(ns, svc)
                .and_then(|s| s.cluster_ips.first().copied())
                .ok_or_else(|| Error::Unknown {
                    what: "service",
                    name: format!("{ns}/{svc}"),
                });
        }
        match self.lookup(from, target, RecordType::A, false, timeout)? {
            (_, DnsAnswer::Addresses(a)) if !a.is_empty() => Ok(a[0]),
            (name, other) => Err(Error::Unknown {
                what: "host",
                name: format!("{target} ({name}: {other})"),
            }),
        }
    }

    /// Resolves `name` as a program in pod `from` would with its resolv.conf
    /// (search `<ns>.svc.cluster.local svc.cluster.local cluster.local`,
    /// `ndots:5`): NXDOMAIN goes on to the next candidate, any other answer
    /// (or a timeout) ends the search. Returns the name asked last and its answer.
    pub fn lookup(
        &self,
        from: &PodKey,
        name: &str,
        record: RecordType,
        tcp: bool,
        timeout: Duration,
    ) -> Result<(String, DnsAnswer)> {
        let mut last = (name.to_string(), DnsAnswer::NxDomain);
        for candidate in search_list(name, &from.namespace) {
            let answer = self.dns_with(from, &candidate, record, tcp, timeout)?;
            let done = !matches!(answer, DnsAnswer::NxDomain);
            last = (candidate, answer);
            if done {
                break;
            }
        }
        Ok(last)
    }

    /// Resolves `name` (A record) through the cluster DNS from pod `from` (UDP).
    pub fn dns(&self, from: &PodKey, name: &str, timeout: Duration) -> Result<DnsAnswer> {
        self.dns_with(from, name, RecordType::A, false, timeout)
    }

    /// Resolves `name` through the cluster DNS from pod `from`.
    pub fn dns_with(
        &self,
        from: &PodKey,
        name: &str,
        record: RecordType,
        tcp: bool,
        timeout: Duration,
    ) -> Result<DnsAnswer> {
        let pod = self.pod(from)?;
        let server = self
            .state
            .dns
            .as_ref()
            .map(|d| d.service_ip)
            .ok_or_else(|| Error::Unknown {
                what: "cluster DNS of lab",
                name: self.state.name.clone(),
            })?;
        let server = SocketAddr::new(server, DNS_PORT);
        Ok(sys::in_netns(&pod.netns, || {
            probe::dns_query_here(server, name, record, tcp, timeout)
        })??)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn the_seed_dns_serves_its_services_kubernetes_and_every_pod() {
        let lab = fixture::planned(fixture::seed_objects(false), true);
        assert_eq!(
            lab.dns_records(),
            [
                "10-244-0-10.kube-system.pod.cluster.local,10.244.0.10",
                "10-244-1-10.default.pod.cluster.local,10.244.1.10",
                "10-244-1-20.default.pod.cluster.local,10.244.1.20",
                "10-244-2-20.shop.pod.cluster.local,10.244.2.20",
                "api.default.svc.cluster.local,10.96.1.10",
                "kube-dns.kube-system.svc.cluster.local,10.96.0.10",
                "kubernetes.default.svc.cluster.local,10.96.0.1",
            ]
        );
        assert_eq!(lab.dns_service_ip(), Some("10.96.0.10".parse().unwrap()));
    }

    #[test]
    fn a_kubernetes_service_of_the_manifests_wins_and_headless_services_have_no_record() {
        let lab = fixture::planned(
            fixture::objects(
                r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- apiVersion: v1
  kind: Service
  metadata: {name: kubernetes, namespace: default}
  spec: {clusterIP: 10.0.0.1, ports: [{port: 443}]}
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: default}
  spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
"#,
            ),
            true,
        );
        let records = lab.dns_records();
        assert!(
            records.contains(&"kubernetes.default.svc.cluster.local,10.0.0.1".to_string()),
            "{records:?}"
        );
        assert!(
            !records
                .iter()
                .any(|r| r.contains("10.96.0.1,") || r.ends_with(",10.96.0.1"))
        );
        assert!(!records.iter().any(|r| r.starts_with("db.")), "{records:?}");
        // The lab added its kube-dns Service and pod (with an allocated IP).
        assert!(
            records
                .iter()
                .any(|r| r.starts_with("kube-dns.kube-system.svc.cluster.local,10.96.0.")),
            "{records:?}"
        );
        assert!(
            records
                .iter()
                .any(|r| r.ends_with(".kube-system.pod.cluster.local,10.250.0.2")),
            "{records:?}"
        );
    }

    #[test]
    fn dnsmasq_answers_only_for_its_records_and_knows_no_upstream() {
        let records = vec![
            "api.default.svc.cluster.local,10.96.1.10".to_string(),
            "kubernetes.default.svc.cluster.local,10.96.0.1".to_string(),
        ];
        let args = dnsmasq_args(
            &records,
            Path::new("/run/x/dnsmasq.pid"),
            Path::new("/run/x/dnsmasq.log"),
        );
        for flag in [
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--port=53",
            "--local=/cluster.local/",
            "--local=/#/",
            "--pid-file=/run/x/dnsmasq.pid",
            "--log-facility=/run/x/dnsmasq.log",
            "--keep-in-foreground",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        let hosts: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("--host-record="))
            .collect();
        assert_eq!(
            hosts,
            [
                "--host-record=api.default.svc.cluster.local,10.96.1.10",
                "--host-record=kubernetes.default.svc.cluster.local,10.96.0.1"
            ]
        );
        assert!(!args.iter().any(|a| a.starts_with("--server")), "{args:?}");
    }

    #[test]
    fn outside_names_become_host_records_and_cnames() {
        let mut outside = std::collections::BTreeMap::new();
        outside.insert(
            "edge.cdn.test".to_string(),
            OutsideName::Addresses(vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ]),
        );
        outside.insert(
            "api.example.test".to_string(),
            OutsideName::Alias("edge.cdn.test".into()),
        );
        let cluster = ClusterState::default();
        let records = records(&cluster, [], &outside);
        assert!(
            records.contains(&"edge.cdn.test,203.0.113.7,2001:db8::7".to_string()),
            "{records:?}"
        );
        assert!(
            records.contains(&"cname:api.example.test,edge.cdn.test".to_string()),
            "{records:?}"
        );
        let args = dnsmasq_args(&records, Path::new("/p"), Path::new("/l"));
        assert!(args.contains(&"--cname=api.example.test,edge.cdn.test".to_string()));
        assert!(args.contains(&"--host-record=edge.cdn.test,203.0.113.7,2001:db8::7".to_string()));
    }

    #[test]
    fn bad_outside_names_are_refused_before_anything_changes() {
        let mut lab = fixture::planned(fixture::seed_objects(false), true);
        for (name, target) in [
            (
                "api.default.svc.cluster.local",
                OutsideName::Addresses(vec!["203.0.113.1".parse().unwrap()]),
            ),
            (
                "bad name.test",
                OutsideName::Addresses(vec!["203.0.113.1".parse().unwrap()]),
            ),
            ("empty.test", OutsideName::Addresses(vec![])),
            ("alias.test", OutsideName::Alias("no good".into())),
        ] {
            let e = lab.set_outside_name(name, target).unwrap_err().to_string();
            assert!(e.starts_with("outside name"), "{e}");
        }
        assert!(lab.state.outside_names.is_empty());
    }

    #[test]
    fn a_pod_s_resolv_conf_searches_its_namespace_first() {
        assert_eq!(
            resolv_conf("10.96.0.10".parse().unwrap(), "shop"),
            "nameserver 10.96.0.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn the_search_list_follows_ndots_5() {
        assert_eq!(
            search_list("api", "shop"),
            [
                "api.shop.svc.cluster.local",
                "api.svc.cluster.local",
                "api.cluster.local",
                "api"
            ]
        );
        // Absolute names and names in the cluster domain are asked as they are.
        assert_eq!(search_list("example.com.", "shop"), ["example.com"]);
        assert_eq!(
            search_list("api.default.svc.cluster.local", "shop"),
            ["api.default.svc.cluster.local"]
        );
        // Five dots or more: the name itself first.
        assert_eq!(search_list("a.b.c.d.e.f", "ns")[0], "a.b.c.d.e.f");
        assert_eq!(search_list("a.b.c.d.e", "ns")[3], "a.b.c.d.e");
    }

    #[test]
    fn short_names_expand_like_kubernetes_services() {
        assert_eq!(expand_name("api", "shop"), "api.shop.svc.cluster.local");
        assert_eq!(
            expand_name("api.default", "shop"),
            "api.default.svc.cluster.local"
        );
        assert_eq!(
            expand_name("api.default.svc", "shop"),
            "api.default.svc.cluster.local"
        );
        assert_eq!(
            expand_name("api.default.svc.cluster.local.", "shop"),
            "api.default.svc.cluster.local"
        );
        assert_eq!(expand_name("www.example.com", "shop"), "www.example.com");
    }
}
