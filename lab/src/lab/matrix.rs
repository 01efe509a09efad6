//! Probing the lab and comparing it with the policy engine: a probe from one
//! pod (`probe`), the reachability matrix of every pod pair on one port (all
//! sources in parallel, each within one timeout), and the comparison of a
//! matrix with the engine's verdicts, pair by pair. A cell counts as reached
//! when the connection succeeded or was refused (an answer came back); each
//! disagreement carries both answers and the engine's explanation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netverdict_policy::{ClusterState, Connection, Endpoint, PodKey, Protocol};
use serde::Serialize;

use super::state::LabPod;
use super::{Error, Lab, Result};
use crate::probe::{self, Outcome};
use crate::sys;

/// An observed reachability matrix: rows are sources, columns destinations.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    pub port: u16,
    pub protocol: Protocol,
    /// The pods (`namespace/name`), in row and column order.
    pub pods: Vec<String>,
    pub cells: Vec<Vec<Outcome>>,
}

impl Matrix {
    /// The truth table as text (`.` reached, `X` not reached), with a legend.
    pub fn render(&self) -> String {
        let mut out = format!(
            "reachability on {}/{} (rows: from, columns: to; . reached, X blocked)\n",
            self.protocol, self.port
        );
        for (i, p) in self.pods.iter().enumerate() {
            out.push_str(&format!("  {i:>3} {p}\n"));
        }
        out.push_str("     ");
        for j in 0..self.pods.len() {
            out.push_str(&format!("{:>4}", j));
        }
        out.push('\n');
        for (i, row) in self.cells.iter().enumerate() {
            out.push_str(&format!("{i:>4} "));
            for cell in row {
                out.push_str(if cell.reached() { "   ." } else { "   X" });
            }
            out.push('\n');
        }
        out
    }
}

/// One pair where the kernel and the engine disagree.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub observed: Outcome,
    pub engine_allowed: bool,
    pub explanation: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}: observed {}, engine says {}\n{}",
            self.from,
            self.to,
            self.protocol,
            self.port,
            self.observed,
            if self.engine_allowed {
                "allowed"
            } else {
                "denied"
            },
            self.explanation
        )
    }
}

/// A pod's key from `namespace/name` (a bare name is in no namespace).
fn pod_key(id: &str) -> PodKey {
    let (ns, name) = id.split_once('/').unwrap_or(("", id));
    PodKey::new(ns, name)
}

/// The port policy sees: ICMP has none (0), whatever was asked.
fn policy_port(port: u16, protocol: Protocol) -> u16 {
    if protocol.has_ports() { port } else { 0 }
}

fn pod_flow(from: &str, to: &str, port: u16, protocol: Protocol) -> Connection {
    Connection::new(
        Endpoint::Pod(pod_key(from)),
        Endpoint::Pod(pod_key(to)),
        policy_port(port, protocol),
        protocol,
    )
}

/// Whether the engine allows `from` to reach `to` (an engine error denies).
fn engine_allows(
    cluster: &ClusterState,
    from: &str,
    to: &str,
    port: u16,
    protocol: Protocol,
) -> bool {
    cluster
        .verdict(&pod_flow(from, to, port, protocol))
        .is_ok_and(|v| v.allowed)
}

/// The engine's verdict for one pair and its explanation.
fn engine_verdict(
    cluster: &ClusterState,
    from: &str,
    to: &str,
    port: u16,
    protocol: Protocol,
) -> (bool, String) {
    let flow = pod_flow(from, to, port, protocol);
    match cluster.verdict(&flow) {
        Ok(v) => (
            v.allowed,
            netverdict_policy::explain(cluster, &flow, &v).to_string(),
        ),
        Err(e) => (false, format!("engine error: {e}")),
    }
}

/// The cells of `matrix` where the observation differs from the engine, in
/// row then column order; the explanation is only computed for those.
fn differences(cluster: &ClusterState, matrix: &Matrix) -> Vec<Difference> {
    let mut out = Vec::new();
    for (from, row) in matrix.pods.iter().zip(&matrix.cells) {
        for (to, &observed) in matrix.pods.iter().zip(row) {
            if observed.reached() == engine_allows(cluster, from, to, matrix.port, matrix.protocol)
            {
                continue;
            }
            let (engine_allowed, explanation) =
                engine_verdict(cluster, from, to, matrix.port, matrix.protocol);
            out.push(Difference {
                from: from.clone(),
                to: to.clone(),
                port: matrix.port,
                protocol: matrix.protocol,
                observed,
                engine_allowed,
                explanation,
            });
        }
    }
    out
}

impl Lab {
    /// Connects from `from` to `ip:port` like `nc -vz`.
    pub fn probe(
        &self,
        from: &PodKey,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Outcome> {
        let pod = self.pod(from)?;
        let out = probe::probe_many(
            &pod.netns,
            &[(SocketAddr::new(ip, port), protocol)],
            timeout,
        )?;
        Ok(out.first().copied().unwrap_or(Outcome::Error))
    }

    /// Probes every pod pair on one port (ICMP: a ping, port 0), all sources
    /// in parallel.
    pub fn matrix(&self, port: u16, protocol: Protocol, timeout: Duration) -> Result<Matrix> {
        let port = policy_port(port, protocol);
        let pods: Vec<&LabPod> = self.pods();
        let targets: Vec<(SocketAddr, Protocol)> = pods
            .iter()
            .map(|p| (SocketAddr::new(p.ip, port), protocol))
            .collect();
        let rows: Vec<Result<Vec<Outcome>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pods
                .iter()
                .map(|p| {
                    let targets = &targets;
                    scope.spawn(move || probe::probe_many(&p.netns, targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| {
                            Err(probe::Error::Sys(sys::Error::Panicked {
                                netns: "matrix".into(),
                            }))
                        })
                        .map_err(Error::from)
                })
                .collect()
        });
        Ok(Matrix {
            port,
            protocol,
            pods: pods.iter().map(|p| p.key().to_string()).collect(),
            cells: rows.into_iter().collect::<Result<_>>()?,
        })
    }

    /// The policy engine's verdicts (`allowed`) for the matrix's pairs.
    pub fn expected(&self, matrix: &Matrix) -> Vec<Vec<bool>> {
        matrix
            .pods
            .iter()
            .map(|from| {
                matrix
                    .pods
                    .iter()
                    .map(|to| engine_allows(&self.cluster, from, to, matrix.port, matrix.protocol))
                    .collect()
            })
            .collect()
    }

    /// The engine's verdict for one pair (`namespace/name` each) and its
    /// explanation.
    pub fn verdict(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> (bool, String) {
        engine_verdict(&self.cluster, from, to, port, protocol)
    }

    /// The pairs where the observed matrix differs from the engine.
    pub fn differences(&self, matrix: &Matrix) -> Vec<Difference> {
        differences(&self.cluster, matrix)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    const POD_ORDER: [&str; 4] = [
        "default/api",
        "default/np-client",
        "kube-system/coredns",
        "shop/np-client",
    ];

    /// A matrix of the seed lab with every cell `observed`.
    fn uniform(lab: &Lab, port: u16, protocol: Protocol, observed: Outcome) -> Matrix {
        let pods: Vec<String> = lab.pods().iter().map(|p| p.key().to_string()).collect();
        assert_eq!(pods, POD_ORDER);
        Matrix {
            port,
            protocol,
            cells: vec![vec![observed; pods.len()]; pods.len()],
            pods,
        }
    }

    #[test]
    fn a_kernel_that_lets_everything_through_disagrees_where_the_policies_deny() {
        let lab = fixture::planned(fixture::seed_objects(true), true);
        let matrix = uniform(&lab, 8080, Protocol::Tcp, Outcome::Succeeded);
        let diffs = lab.differences(&matrix);
        let pairs: Vec<(&str, &str)> = diffs
            .iter()
            .map(|d| (d.from.as_str(), d.to.as_str()))
            .collect();
        // default-deny: the default pods send nothing (but to themselves) and
        // receive nothing, except the api from default's frontend on 8080,
        // which default-deny egress still stops at the client.
        let mut expected = Vec::new();
        for from in POD_ORDER {
            for to in POD_ORDER {
                let from_default = from.starts_with("default/");
                let to_default = to.starts_with("default/");
                if from != to && (from_default || to_default) {
                    expected.push((from, to));
                }
            }
        }
        assert_eq!(pairs, expected);
        for d in &diffs {
            assert!(!d.engine_allowed, "{d}");
            assert_eq!(d.observed, Outcome::Succeeded);
            assert!(!d.explanation.is_empty());
        }
        let text = diffs[0].to_string();
        assert!(
            text.starts_with(
                "default/api -> default/np-client TCP/8080: observed succeeded, engine says denied\n"
            ),
            "{text}"
        );
        assert!(text.contains("default-deny"), "{text}");
    }

    #[test]
    fn a_refusal_is_an_answer_and_a_timeout_where_the_engine_allows_is_reported() {
        let lab = fixture::planned(fixture::seed_objects(false), true);
        // No policy: the engine allows every pair. A refusal came back through
        // the network, so it agrees; a timeout does not.
        let mut matrix = uniform(&lab, 9999, Protocol::Tcp, Outcome::Refused);
        assert!(lab.differences(&matrix).is_empty());
        matrix.cells[3][0] = Outcome::TimedOut;
        let diffs = lab.differences(&matrix);
        assert_eq!(diffs.len(), 1);
        let d = &diffs[0];
        assert_eq!(
            (d.from.as_str(), d.to.as_str()),
            ("shop/np-client", "default/api")
        );
        assert!(d.engine_allowed);
        assert_eq!(d.observed, Outcome::TimedOut);
        assert_eq!(lab.expected(&matrix), vec![vec![true; 4]; 4]);
    }

    #[test]
    fn the_engine_s_expectation_follows_the_namespace_labels() {
        let lab = fixture::planned(fixture::seed_objects(true), true);
        let matrix = uniform(&lab, 8080, Protocol::Tcp, Outcome::TimedOut);
        let expected = lab.expected(&matrix);
        // Only what nobody isolates, and each pod to itself.
        let allowed: Vec<(usize, usize)> = (0..4)
            .flat_map(|i| (0..4).map(move |j| (i, j)))
            .filter(|&(i, j)| expected[i][j])
            .collect();
        assert_eq!(
            allowed,
            vec![(0, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]
        );
        let (allowed, why) = lab.verdict("shop/np-client", "default/api", 8080, Protocol::Tcp);
        assert!(!allowed);
        assert!(why.contains("api-from-web"), "{why}");
    }

    #[test]
    fn the_rendered_matrix_marks_reached_cells() {
        let matrix = Matrix {
            port: 80,
            protocol: Protocol::Tcp,
            pods: vec!["a/x".into(), "b/y".into()],
            cells: vec![
                vec![Outcome::Succeeded, Outcome::TimedOut],
                vec![Outcome::Refused, Outcome::Unreachable],
            ],
        };
        assert_eq!(
            matrix.render(),
            "reachability on TCP/80 (rows: from, columns: to; . reached, X blocked)\n\
             \x20   0 a/x\n\
             \x20   1 b/y\n\
             \x20       0   1\n\
             \x20  0    .   X\n\
             \x20  1    .   X\n"
        );
    }
}
