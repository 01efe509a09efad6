//! Shared helpers of the privileged tests: a uniquely named pair of network
//! namespaces joined by a veth (torn down by `Drop`, even on panic), running
//! commands and sockets inside them, and waiting on the event stream with a
//! deadline.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netverdict_ebpf::{Config, Event, EventStream, Probes, StreamItem};

/// Fails (never skips) when a test that passed `require_root` still cannot
/// run here (capabilities, kernel, tools), saying how to fix it.
pub fn require_privileges() {
    if let Err(e) = netverdict_ebpf::check_preconditions() {
        panic!(
            "privileged eBPF tests cannot run: {e}. Run them as root with every \
             capability: `sudo scripts/test.sh` or `sudo -E cargo test -p netverdict-ebpf`"
        );
    }
    for (tool, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        if Command::new(tool).arg("-V").output().is_err() {
            panic!("`{tool}` is missing: apt-get install {pkg}");
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A client and a server namespace joined by a veth pair, with IPv4
/// 10.<net>.0.1/24 (client), .2 (server) and IPv6 fd00:<net>::1/2.
pub struct Lab {
    pub client: String,
    pub server: String,
    pub client_ino: u32,
    pub server_ino: u32,
    pub client_v4: IpAddr,
    pub server_v4: IpAddr,
    pub client_v6: IpAddr,
    pub server_v6: IpAddr,
    children: Vec<Child>,
}

impl Lab {
    /// Creates the pair; `tag` is the test's short name.
    pub fn new(tag: &str) -> Lab {
        require_privileges();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("nvt-{pid}-{seq}-{tag}");
        let net = 100 + (pid.wrapping_mul(7).wrapping_add(seq) % 150);
        let mut lab = Lab {
            client: format!("{base}-c"),
            server: format!("{base}-s"),
            client_ino: 0,
            server_ino: 0,
            client_v4: format!("10.{net}.0.1").parse().unwrap(),
            server_v4: format!("10.{net}.0.2").parse().unwrap(),
            client_v6: format!("fd00:{net}::1").parse().unwrap(),
            server_v6: format!("fd00:{net}::2").parse().unwrap(),
            children: Vec::new(),
        };
        run(Command::new("ip").args(["netns", "add", &lab.client]));
        // From here on, Drop removes what exists.
        run(Command::new("ip").args(["netns", "add", &lab.server]));
        // The veth is created inside the namespaces: its names cannot collide.
        run(Command::new("ip").args([
            "-n",
            &lab.client,
            "link",
            "add",
            "nv0",
            "type",
            "veth",
            "peer",
            "name",
            "nv0",
            "netns",
            &lab.server,
        ]));
        for (ns, v4, v6) in [
            (lab.client.clone(), lab.client_v4, lab.client_v6),
            (lab.server.clone(), lab.server_v4, lab.server_v6),
        ] {
            run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
            run(Command::new("ip").args([
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                "nv0",
            ]));
            run(Command::new("ip").args([
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "nv0",
                "nodad",
            ]));
            run(Command::new("ip").args(["-n", &ns, "link", "set", "nv0", "up"]));
        }
        lab.client_ino = netns_inode(&lab.client);
        lab.server_ino = netns_inode(&lab.server);
        lab
    }

    /// Loads an nftables ruleset (text) into a namespace.
    pub fn nft(&self, ns: &str, ruleset: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops inbound traffic to a port in the server namespace (table nvtest).
    pub fn drop_port(&self, proto: &str, port: u16) {
        self.nft(
            &self.server,
            &format!(
                "table inet nvtest {{\n chain input {{\n  type filter hook input priority 0;\n  \
                 {proto} dport {port} drop\n }}\n}}\n"
            ),
        );
    }

    /// Starts a process inside a namespace, killed when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        self.children.push(child);
    }

    /// Whether an event belongs to this lab (its namespaces).
    pub fn owns(&self, ev: &Event) -> bool {
        let n = ev.meta().netns;
        n == self.client_ino || n == self.server_ino
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_file(format!("/tmp/{ns}.dnsmasq.pid"));
        }
    }
}

/// The inode number of a named network namespace (what the probes report).
pub fn netns_inode(name: &str) -> u32 {
    let m = std::fs::metadata(format!("/run/netns/{name}")).expect("netns file");
    u32::try_from(m.ino()).expect("netns inode fits u32")
}

/// Runs `f` on a thread that has entered network namespace `name`: sockets it
/// creates live in that namespace.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid fd we own; it changes only this thread's netns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// Loads the probes and returns their stream (small enough ring for tests).
pub fn stream() -> EventStream {
    // One retry: a load failed once, unreproduced, on a very busy machine;
    // the error is printed so it is not hidden.
    let probes = Probes::load(&Config::default()).or_else(|e| {
        eprintln!("loading the probes failed, retrying once: {e}");
        std::thread::sleep(Duration::from_millis(200));
        Probes::load(&Config::default())
    });
    let probes = probes.unwrap_or_else(|e| panic!("load probes: {e}"));
    probes.into_stream().expect("stream")
}

/// Collects the lab's events until `done` holds for the collected list, or
/// the deadline passes (then panics with what was seen).
pub async fn collect_until(
    s: &mut EventStream,
    lab: &Lab,
    deadline: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let end = Instant::now() + deadline;
    let mut seen = Vec::new();
    loop {
        if done(&seen) {
            return seen;
        }
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Ok(StreamItem::Event(ev))) if lab.owns(&ev) => seen.push(ev),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("stream error: {e}"),
            Err(_) => panic!(
                "condition not met within {deadline:?}; lab events seen:\n{}",
                seen.iter()
                    .map(|e| serde_json::to_string(e).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// Collects the lab's events for a fixed time (to check something is absent).
pub async fn collect_for(s: &mut EventStream, lab: &Lab, d: Duration) -> Vec<Event> {
    let end = Instant::now() + d;
    let mut seen = Vec::new();
    while let Ok(r) =
        tokio::time::timeout(end.saturating_duration_since(Instant::now()), s.next()).await
    {
        if let StreamItem::Event(ev) = r.expect("stream error")
            && lab.owns(&ev)
        {
            seen.push(ev);
        }
    }
    seen
}

/// `SocketAddr` helper.
pub fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}
