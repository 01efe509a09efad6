//! The soak's lab traffic: worker threads that, from random pods, connect to
//! other pods on TCP 80, ask the cluster DNS for random subdomains (each a
//! new name, as a DNS-tunnelling or misconfigured client does) and for pod
//! names, and port-scan pods (many ports at once, denied by the soak
//! cluster's policies), paced to a rate, until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netverdict_lab::Lab;
use netverdict_lab::probe::probe_many;
use netverdict_policy::Protocol;

use super::Rng;

/// What the traffic did so far.
#[derive(Debug, Default)]
pub(crate) struct TrafficCounts {
    /// TCP connections to a pod's port 80.
    pub connections: AtomicU64,
    /// DNS queries (random subdomains and pod names).
    pub dns_queries: AtomicU64,
    /// Ports probed by scans.
    pub scanned_ports: AtomicU64,
    /// Probes that failed to run (not: were denied).
    pub errors: AtomicU64,
}

/// Ports probed by one scan.
const SCAN_PORTS: usize = 12;

/// Running traffic; stopped (threads joined) on [`Traffic::stop`] or drop.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub counts: Arc<TrafficCounts>,
}

impl Traffic {
    /// Starts `workers` threads doing `rate` actions per second in all.
    pub fn start(lab: Arc<Lab>, seed: u64, rate: f64, workers: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(TrafficCounts::default());
        let period = Duration::from_secs_f64(workers as f64 / rate.max(0.1));
        let threads = (0..workers)
            .map(|w| {
                let (lab, stop, counts) = (lab.clone(), stop.clone(), counts.clone());
                let mut rng = Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9));
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        act(&lab, &mut rng, &counts);
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            threads,
            counts,
        }
    }

    /// Stops the threads and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One action from a random pod.
fn act(lab: &Lab, rng: &mut Rng, counts: &TrafficCounts) {
    let pods = lab.pods();
    let Some(from) = pods.get(rng.below(pods.len() as u64) as usize) else {
        return;
    };
    let to = pods[rng.below(pods.len() as u64) as usize];
    let roll = rng.below(100);
    let timeout = Duration::from_millis(300);
    let ok = if roll < 50 {
        counts.connections.fetch_add(1, Ordering::Relaxed);
        probe_many(
            &from.netns,
            &[(SocketAddr::new(to.ip, 80), Protocol::Tcp)],
            timeout,
        )
        .is_ok()
    } else if roll < 80 {
        counts.dns_queries.fetch_add(1, Ordering::Relaxed);
        let name = if roll < 72 {
            format!("{:012x}.soak.example.test", rng.next_u64() >> 16)
        } else {
            format!(
                "{}.{}.pod.cluster.local",
                to.ip.to_string().replace('.', "-"),
                to.namespace
            )
        };
        lab.dns(&from.key(), &name, timeout).is_ok()
    } else {
        counts
            .scanned_ports
            .fetch_add(SCAN_PORTS as u64, Ordering::Relaxed);
        let targets: Vec<(SocketAddr, Protocol)> = (0..SCAN_PORTS)
            .map(|_| {
                let port = 1024 + rng.below(60_000) as u16;
                (SocketAddr::new(to.ip, port), Protocol::Tcp)
            })
            .collect();
        probe_many(&from.netns, &targets, timeout).is_ok()
    };
    if !ok {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    }
}
