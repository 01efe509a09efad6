//! The seam to the operating system: running `ip`, `nft` and other tools with
//! their stdin, starting the lab's long-running processes (servers, dnsmasq) and
//! reaping them, doing work inside a network namespace (a thread that `setns`es
//! into it), writing its sysctls and `/etc/netns` files, and finding, killing
//! and reaping the processes that live in a set of namespaces.
//!
//! Everything the lab does to the kernel or to other processes goes through
//! here, so the rest of the lab builds its scripts, command lines and files as
//! plain values (tested without root), and errors always name the command, its
//! arguments and its stderr.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// Where `ip netns exec` finds a namespace's own `/etc` files (`resolv.conf`).
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// Errors of the operating-system seam.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started (not installed, or not executable).
    #[error("cannot run `{command}`: {source}{hint}")]
    Spawn {
        command: String,
        /// What to install, for the tools the lab knows (else empty).
        hint: String,
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

/// The Debian package that provides one of the tools the lab runs.
pub fn package_of(program: &str) -> Option<&'static str> {
    match program.rsplit('/').next().unwrap_or(program) {
        "ip" => Some("iproute2"),
        "nft" => Some("nftables"),
        "dnsmasq" => Some("dnsmasq-base"),
        "tc" => Some("iproute2"),
        _ => None,
    }
}

fn spawn_error(program: &OsStr, command: String, source: std::io::Error) -> Error {
    let hint = package_of(&program.to_string_lossy())
        .map(|p| format!(" (install the Debian package `{p}`)"))
        .unwrap_or_default();
    Error::Spawn {
        command,
        hint,
        source,
    }
}

/// A command line for messages: long arguments (a JSON spec) and long lists
/// (dnsmasq's records) are cut short.
fn command_line<S: AsRef<OsStr>>(program: &OsStr, args: &[S]) -> String {
    const ARG: usize = 80;
    const LINE: usize = 400;
    let mut line = program.to_string_lossy().into_owned();
    for (i, arg) in args.iter().enumerate() {
        if line.len() > LINE {
            line.push_str(&format!(" … ({} more arguments)", args.len() - i));
            break;
        }
        let arg = arg.as_ref().to_string_lossy();
        line.push(' ');
        if arg.chars().count() > ARG {
            line.extend(arg.chars().take(ARG));
            line.push('…');
        } else {
            line.push_str(&arg);
        }
    }
    line
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
        .map_err(|source| spawn_error(program.as_ref(), command.clone(), source))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits early closes its stdin; its stderr says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| spawn_error(program.as_ref(), command.clone(), source))?;
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

/// Runs `tc -n <netns> -batch -` with the given lines (stops at the first failure).
pub fn tc_batch(netns: &str, lines: &str) -> Result<String> {
    run("tc", &["-n", netns, "-batch", "-"], Some(lines))
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

/// Writes sysctls (`(name, value)`, names under /proc/sys/net) of network
/// namespace `netns`, in order; stops at the first failure.
pub fn write_net_sysctls(netns: &str, sysctls: &[(&str, &str)]) -> Result<()> {
    in_netns(netns, || -> Result<()> {
        for (name, value) in sysctls {
            write_net_sysctl(name, value)?;
        }
        Ok(())
    })?
}

/// Writes `/etc/netns/<netns>/<file>`: what programs run with `ip netns exec`
/// read in place of `/etc/<file>` (e.g. `resolv.conf`).
pub fn write_netns_etc(netns: &str, file: &str, text: &str) -> Result<()> {
    let dir = Path::new(NETNS_ETC_DIR).join(netns);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
}

/// Removes `/etc/netns/<netns>` and what it holds (nothing when absent).
pub fn remove_netns_etc(netns: &str) {
    let _ = std::fs::remove_dir_all(Path::new(NETNS_ETC_DIR).join(netns));
}

/// A long-running process the lab started (a server process, dnsmasq).
///
/// It is never left a zombie: [`Daemon::stop`] kills and reaps it, and
/// dropping the handle (or [`Daemon::detach`]) leaves it running with a
/// thread that reaps it when it exits.
#[derive(Debug)]
pub struct Daemon {
    /// Taken by `stop` and by the reaper.
    child: Option<Child>,
    command: String,
}

impl Daemon {
    fn new(child: Child, command: String) -> Self {
        Daemon {
            child: Some(child),
            command,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The command line it was started with (shortened), for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// When the process has exited: its exit status and what it wrote on
    /// stderr (when stderr was kept), as one message.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let err = err.trim();
        Some(if err.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {err}")
        })
    }

    /// Kills the process and waits for it.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves the process running; a thread reaps it when it exits.
    pub fn detach(self) {
        drop(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

/// Starts `program args` (stdin closed, stderr appended to `log`) and waits up
/// to `timeout` for the first line it prints on stdout. Returns the process and
/// that line (empty when it closed stdout or said nothing in time).
pub fn start_reading_first_line<S: AsRef<OsStr>>(
    program: &OsStr,
    args: &[S],
    log: &Path,
    timeout: Duration,
) -> Result<(Daemon, String)> {
    let command = command_line(program, args);
    tracing::debug!(%command, "start");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::Io {
            path: log.to_path_buf(),
            source,
        })?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|source| spawn_error(program, command.clone(), source))?;
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(stdout) = stdout {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(timeout).unwrap_or_default();
    Ok((Daemon::new(child, command), line))
}

/// Starts `program args` inside network namespace `netns` (stdin and stdout
/// closed, stderr kept for [`Daemon::exited`]).
pub fn start_in_netns<S: AsRef<OsStr> + Sync>(
    netns: &str,
    program: &OsStr,
    args: &[S],
) -> Result<Daemon> {
    let command = command_line(program, args);
    tracing::debug!(%command, netns, "start");
    let child = in_netns(netns, || {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    })?
    .map_err(|source| spawn_error(program, command.clone(), source))?;
    Ok(Daemon::new(child, command))
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

/// Reaps `pid` if it is an exited child of this process (without waiting);
/// other processes are reaped by their own parent or init.
pub fn reap_if_exited(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
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

/// Command-line arguments as OS strings.
pub fn os_args<S: AsRef<OsStr>>(args: &[S]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_in_messages_cut_long_arguments_and_long_lists() {
        let spec = format!("{{\"pods\":[{}]}}", "x".repeat(500));
        let line = command_line(OsStr::new("nv-lab"), &["serve", spec.as_str()]);
        assert!(line.starts_with("nv-lab serve {\"pods\":["), "{line}");
        assert!(line.ends_with('…'), "{line}");
        assert!(line.chars().count() < 100, "{line}");

        let records: Vec<String> = (0..100)
            .map(|i| format!("--host-record=pod-{i}.cluster.local,10.0.0.{i}"))
            .collect();
        let line = command_line(OsStr::new("dnsmasq"), &records);
        assert!(line.contains("--host-record=pod-0.cluster.local,10.0.0.0"));
        assert!(!line.contains("pod-99."), "{line}");
        assert!(line.ends_with("more arguments)"), "{line}");
    }

    #[test]
    fn spawn_errors_say_what_to_install_for_known_tools_only() {
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = spawn_error(
            OsStr::new("/usr/sbin/dnsmasq"),
            "dnsmasq -k".into(),
            missing(),
        );
        assert!(
            e.to_string()
                .ends_with("(install the Debian package `dnsmasq-base`)"),
            "{e}"
        );
        let e = spawn_error(
            OsStr::new("/opt/nv/netverdict"),
            "netverdict lab serve".into(),
            missing(),
        );
        assert!(!e.to_string().contains("install"), "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot run `netverdict lab serve`"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_tool_names_the_command_its_stderr_and_its_input() {
        let e = run(
            "sh",
            &["-c", "echo bad line >&2; exit 3"],
            Some("the script"),
        )
        .expect_err("exit 3 is a failure");
        let text = e.to_string();
        assert!(
            text.starts_with("`sh -c echo bad line >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.contains("bad line"), "{text}");
        assert!(text.contains("-- input --\nthe script"), "{text}");
    }

    #[test]
    fn a_started_process_reports_its_exit_and_its_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let (mut daemon, line) = start_reading_first_line(
            OsStr::new("sh"),
            &["-c", "echo ready x; echo oops >&2; exit 4"],
            &log,
            Duration::from_secs(10),
        )
        .expect("start sh");
        assert_eq!(line, "ready x\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exited = loop {
            if let Some(e) = daemon.exited() {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(exited.contains('4'), "{exited}");
        // Its stderr went to the log.
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "oops\n");
    }
}
