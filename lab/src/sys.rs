//! The seam to the operating system: running `ip`, `nft` and other tools with
//! their stdin, doing work inside a network namespace (a thread that `setns`es
//! into it), and finding the processes that live in a set of namespaces.
//!
//! Everything the lab does to the kernel goes through here, so errors always name
//! the command, its arguments and its stderr.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Errors of the operating-system seam.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool could not be started (not installed, or not executable).
    #[error("cannot run `{command}`: {source} (install the Debian package `{package}`)")]
    Spawn {
        command: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}{input}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
        /// The start of the input it was given, when it was given one.
        input: String,
    },
    /// A network namespace could not be opened or entered.
    #[error("cannot enter network namespace {netns}: {message}")]
    Enter { netns: String, message: String },
    /// A thread working inside a namespace panicked.
    #[error("a thread working in network namespace {netns} panicked")]
    Panicked { netns: String },
    /// A file of the lab could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn package_of(program: &str) -> &'static str {
    match program {
        "ip" => "iproute2",
        "nft" => "nftables",
        "dnsmasq" | "/usr/sbin/dnsmasq" => "dnsmasq-base",
        _ => "(the one providing it)",
    }
}

/// Runs `program args` with `input` on stdin (when given); fails with its stderr.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    tracing::debug!(%command, "run");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            package: package_of(program),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits early closes its stdin; its stderr says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        command: command.clone(),
        package: package_of(program),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let input = match input {
            Some(text) => {
                let head: String = text.chars().take(2000).collect();
                format!("\n-- input --\n{head}")
            }
            None => String::new(),
        };
        Err(Error::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            input,
        })
    }
}

/// Runs `ip -batch -` with the given lines (one transaction per line, stops at
/// the first failure unless `force`).
pub fn ip_batch(netns: Option<&str>, lines: &str, force: bool) -> Result<String> {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    run("ip", &args, Some(lines))
}

/// Runs `nft -f -` with `script` inside `netns` (one atomic transaction).
pub fn nft_in(netns: &str, script: &str) -> Result<()> {
    in_netns(netns, || run("nft", &["-f", "-"], Some(script)))??;
    Ok(())
}

/// Runs `f` on a new thread that has entered network namespace `netns` (processes
/// spawned from that thread start inside it too).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(netns)?;
                Ok(f())
            })
            .join()
            .map_err(|_| Error::Panicked {
                netns: netns.to_string(),
            })?
    })
}

/// Moves the calling thread into network namespace `netns`.
pub fn enter(netns: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(netns);
    let file = std::fs::File::open(&path).map_err(|e| Error::Enter {
        netns: netns.to_string(),
        message: format!("open {}: {e}", path.display()),
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Enter {
        netns: netns.to_string(),
        message: format!("setns: {e}"),
    })
}

/// Writes a sysctl of the calling thread's network namespace (a path under
/// /proc/sys/net, e.g. `ipv4/ip_forward`).
pub fn write_net_sysctl(name: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys/net").join(name);
    std::fs::write(&path, value).map_err(|source| Error::Io { path, source })
}

/// The network namespaces (by `ip netns` name) whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// The processes with at least one thread inside one of these namespaces.
pub fn processes_in(netns: &[String]) -> Vec<i32> {
    let inodes: Vec<u64> = netns
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .map(|m| m.ino())
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("net:[{i}]")).collect();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let tasks = std::fs::read_dir(entry.path().join("task"));
        let inside = tasks.into_iter().flatten().flatten().any(|task| {
            std::fs::read_link(task.path().join("ns/net"))
                .ok()
                .and_then(|l| l.to_str().map(|s| wanted.iter().any(|w| w == s)))
                .unwrap_or(false)
        });
        if inside {
            pids.push(pid);
        }
    }
    pids
}

/// Sends SIGKILL to `pid` (ignoring a process that is already gone).
pub fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Waits until process `pid` has exited (gone, or a zombie), up to `timeout`;
/// returns whether it did.
pub fn wait_gone(pid: i32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `program` can be found on PATH (or is an existing path).
pub fn have_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

/// The OS string of a path, for command lines.
pub fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}
