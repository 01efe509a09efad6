//! The soak's three stages as child processes it can kill -9 and restart:
//! its own ClickHouse server (its own ports and data directory, never the
//! shared one on 8123), the API server (`netverdict api` over that
//! ClickHouse, spooling in the work directory) and the collector
//! (`netverdict collector --lab`, appending acknowledged ids to a log). Also
//! the plain HTTP the soak speaks to them: ClickHouse SQL and `/metrics`.
//! Every child is killed when [`Stages`] is dropped, on error or Ctrl-C too.

use netverdict_api::clickhouse::local_server::{LocalServerPorts, write_local_server_config};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A stage of the pipeline the soak kills and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    ClickHouse,
    Api,
    Collector,
}

impl Stage {
    /// Every stage, in start order.
    pub const ALL: [Stage; 3] = [Stage::ClickHouse, Stage::Api, Stage::Collector];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ClickHouse => "clickhouse",
            Stage::Api => "api",
            Stage::Collector => "collector",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where everything of one soak lives: ports, files, names.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The work directory (ClickHouse data, spool, logs, acked-id log).
    pub dir: PathBuf,
    /// This binary, for the API server and the collector.
    pub exe: PathBuf,
    /// The lab the collector collects for.
    pub lab: String,
    /// ClickHouse's HTTP address.
    pub clickhouse: SocketAddr,
    clickhouse_tcp: u16,
    clickhouse_interserver: u16,
    /// The API server's gRPC address (Ingest).
    pub api_grpc: SocketAddr,
    /// The API server's /metrics address.
    pub api_metrics: SocketAddr,
    collector_observer: SocketAddr,
    /// The collector's /metrics address.
    pub collector_metrics: SocketAddr,
    /// The collector's acknowledged-id log.
    pub acked_log: PathBuf,
    /// The ClickHouse database of the soak.
    pub database: String,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("finding a free port on 127.0.0.1")?
        .local_addr()?
        .port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Layout {
    /// A layout in `dir` with free ports.
    pub fn new(dir: &Path, lab: &str) -> Result<Layout> {
        Ok(Layout {
            dir: dir.to_path_buf(),
            exe: std::env::current_exe().context("locating this binary")?,
            lab: lab.to_string(),
            clickhouse: loopback(free_port()?),
            clickhouse_tcp: free_port()?,
            clickhouse_interserver: free_port()?,
            api_grpc: loopback(free_port()?),
            api_metrics: loopback(free_port()?),
            collector_observer: loopback(free_port()?),
            collector_metrics: loopback(free_port()?),
            acked_log: dir.join("acked-ids.log"),
            database: "soak".into(),
        })
    }

    fn clickhouse_dir(&self) -> PathBuf {
        self.dir.join("clickhouse")
    }

    /// Writes ClickHouse's configuration: the system's, with this soak's
    /// ports and directories.
    pub fn write_clickhouse_config(&self) -> Result<()> {
        let dir = self.clickhouse_dir();
        let ports = LocalServerPorts {
            http: self.clickhouse.port(),
            tcp: self.clickhouse_tcp,
            interserver: self.clickhouse_interserver,
        };
        write_local_server_config(&dir, ports, |config| config)
            .with_context(|| format!("writing ClickHouse's config in {}", dir.display()))
    }

    fn command(&self, stage: Stage) -> Command {
        match stage {
            Stage::ClickHouse => {
                let mut c = Command::new("clickhouse-server");
                c.arg(format!(
                    "--config-file={}",
                    self.clickhouse_dir().join("config.xml").display()
                ))
                .current_dir(self.clickhouse_dir());
                c
            }
            Stage::Api => {
                let mut c = Command::new(&self.exe);
                c.arg("api")
                    .arg("--listen")
                    .arg(self.api_grpc.to_string())
                    .arg("--metrics-listen")
                    .arg(self.api_metrics.to_string())
                    .arg("--clickhouse")
                    .arg(format!("http://{}", self.clickhouse))
                    .arg("--clickhouse-database")
                    .arg(&self.database)
                    .arg("--spool-dir")
                    .arg(self.dir.join("spool"))
                    .arg("--store-check-interval")
                    .arg("1s");
                c
            }
            Stage::Collector => {
                let mut c = Command::new(&self.exe);
                c.arg("collector")
                    .arg("--lab")
                    .arg(&self.lab)
                    .arg("--export")
                    .arg(format!("http://{}", self.api_grpc))
                    .arg("--observer-listen")
                    .arg(self.collector_observer.to_string())
                    .arg("--metrics-listen")
                    .arg(self.collector_metrics.to_string())
                    .arg("--acked-ids-log")
                    .arg(&self.acked_log);
                c
            }
        }
    }

    /// The log file of a stage's output.
    pub fn log(&self, stage: Stage) -> PathBuf {
        self.dir.join(format!("{}.log", stage.name()))
    }

    /// The acknowledged-id log's size in bytes (0 before the first ack):
    /// it grows whenever flows are acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        std::fs::metadata(&self.acked_log).map_or(0, |m| m.len())
    }
}

/// The running stages.
pub(crate) struct Stages {
    pub layout: Layout,
    children: [Option<Child>; 3],
}

impl Stages {
    pub fn new(layout: Layout) -> Stages {
        Stages {
            layout,
            children: [None, None, None],
        }
    }

    /// Starts a stage (its output appended to its log); does not wait.
    pub fn start(&mut self, stage: Stage) -> Result<()> {
        if self.children[stage.index()].is_some() {
            bail!("{} is already running", stage.name());
        }
        let path = self.layout.log(stage);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut command = self.layout.command(stage);
        if std::env::var_os("RUST_LOG").is_none() {
            // What they did around each fault, in their logs.
            command.env("RUST_LOG", "info");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches the
            // soak only, which then stops its children itself.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", stage.name()))?;
        self.children[stage.index()] = Some(child);
        Ok(())
    }

    /// The process id of a running stage.
    pub fn pid(&self, stage: Stage) -> Option<u32> {
        self.children[stage.index()].as_ref().map(Child::id)
    }

    /// Kills a stage with SIGKILL and reaps it; returns its pid.
    pub fn kill9(&mut self, stage: Stage) -> Option<u32> {
        let mut child = self.children[stage.index()].take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        Some(pid)
    }

    /// Stops a stage with SIGTERM, waiting up to `timeout` (then SIGKILL);
    /// whether it exited by itself in time.
    pub fn terminate(&mut self, stage: Stage, timeout: Duration) -> bool {
        let Some(mut child) = self.children[stage.index()].take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// A stage that exited by itself: its exit status.
    pub fn exited(&mut self, stage: Stage) -> Option<std::process::ExitStatus> {
        let child = self.children[stage.index()].as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.children[stage.index()] = None;
        Some(status)
    }

    /// Whether a stage answers: ClickHouse runs `SELECT 1`, the API server
    /// answers /healthz, the collector's push stream is open.
    pub fn healthy(&self, stage: Stage) -> bool {
        let quick = Duration::from_secs(2);
        match stage {
            Stage::ClickHouse => sql(self.layout.clickhouse, "SELECT 1", quick).is_ok(),
            Stage::Api => {
                matches!(
                    http_get(self.layout.api_metrics, "/healthz", quick),
                    Ok((200, _))
                )
            }
            Stage::Collector => http_get(self.layout.collector_metrics, "/metrics", quick)
                .ok()
                .is_some_and(|(_, body)| {
                    metric(&body, "netverdict_collector_export_connected") == Some(1.0)
                }),
        }
    }

    /// The last lines of a stage's log, for an error message.
    pub fn log_tail(&self, stage: Stage) -> String {
        let text = std::fs::read_to_string(self.layout.log(stage)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        for stage in [Stage::Collector, Stage::Api, Stage::ClickHouse] {
            self.kill9(stage);
        }
    }
}

/// One HTTP/1.0 exchange (the answer comes whole, never chunked): status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes())
        .with_context(|| format!("{method} {addr}{path}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("{addr}{path}: not an HTTP answer");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// GETs `path`: status and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http(addr, "GET", path, "", timeout)
}

/// Runs a ClickHouse query over HTTP; its output, or the server's error.
pub(crate) fn sql(addr: SocketAddr, query: &str, timeout: Duration) -> Result<String> {
    let (status, body) = http(addr, "POST", "/", query, timeout)?;
    if status != 200 {
        bail!("ClickHouse answered {status} to `{query}`: {}", body.trim());
    }
    Ok(body)
}

/// The samples of a Prometheus text exposition: (series with labels, family
/// name without labels, value).
pub(crate) fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let name = series.split('{').next().unwrap_or(series);
            Some((series, name, value))
        })
}

/// The sum of a metric family's samples (`name` or `name_total`), if any.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    let total = format!("{name}_total");
    let values: Vec<f64> = samples(text)
        .filter(|(_, n, _)| *n == name || *n == total)
        .map(|(_, _, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_family_with_or_without_total() {
        let text = "# HELP a x\na_total{cause=\"x\"} 2\na_total{cause=\"y\"} 3\nb 1\n";
        assert_eq!(metric(text, "a"), Some(5.0));
        assert_eq!(metric(text, "b"), Some(1.0));
        assert_eq!(metric(text, "c"), None);
        let series: Vec<_> = samples(text).map(|(s, _, _)| s).collect();
        assert_eq!(
            series,
            ["a_total{cause=\"x\"}", "a_total{cause=\"y\"}", "b"]
        );
    }
}
