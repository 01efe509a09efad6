//! ClickHouse for tests: the shared server (`scripts/start-clickhouse.sh`,
//! 127.0.0.1:8123 unless `NETVERDICT_CLICKHOUSE_ADDR` says otherwise; a test
//! fails saying what to run when it does not answer), a uniquely named
//! database per test dropped by a guard ([`TestDb`]), and a clickhouse-server
//! process of the test's own that it can kill and restart ([`OwnServer`]),
//! and a local cluster of 2 shards x 2 replicas with ZooKeeper started by
//! `scripts/start-clickhouse-cluster.sh` ([`LocalCluster`]).

use netverdict_api::clickhouse::local_server::{LocalServerPorts, write_local_server_config};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netverdict_api::clickhouse::{ClickHouseConfig, ClickHouseStore};

/// The shared server (scripts/start-clickhouse.sh).
pub fn shared_addr() -> String {
    std::env::var("NETVERDICT_CLICKHOUSE_ADDR").unwrap_or_else(|_| "127.0.0.1:8123".into())
}

/// Runs `sql` over HTTP (blocking, no client library: usable in `Drop`);
/// the body of the answer, or the server's error.
pub fn http_sql(addr: &str, sql: &str) -> Result<String, String> {
    http_sql_in(addr, None, sql)
}

/// [`http_sql`] with `database` as the default database (as Grafana's
/// datasource runs its queries).
pub fn http_sql_in(addr: &str, database: Option<&str>, sql: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let path = match database {
        Some(d) => format!("/?database={d}"),
        None => "/".into(),
    };
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_string())
    } else {
        Err(format!("{sql}: {body}"))
    }
}

/// Fails with what to run when the shared server does not answer.
pub fn require_shared_server() -> String {
    let addr = shared_addr();
    if let Err(e) = http_sql(&addr, "SELECT 1") {
        panic!(
            "ClickHouse does not answer on {addr} ({e}): run scripts/start-clickhouse.sh \
             (needs Debian's clickhouse-server: scripts/install-deps.sh)"
        );
    }
    addr
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique name for a database or directory.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A uniquely named database, dropped when the guard goes (also on panic).
pub struct TestDb {
    /// The server's HTTP address (`host:port`).
    pub addr: String,
    /// The database's name.
    pub name: String,
    /// A spool directory for the store, removed with the guard.
    pub spool: tempfile::TempDir,
}

impl TestDb {
    /// A database of its own on the shared server (failing with what to run
    /// when it does not answer).
    pub fn shared() -> TestDb {
        TestDb::new(&require_shared_server())
    }

    /// A database of its own on the server at `addr` (created by the store's
    /// migrations at connect).
    pub fn new(addr: &str) -> TestDb {
        TestDb {
            addr: addr.to_string(),
            name: unique("nvtest"),
            spool: tempfile::tempdir().expect("a temporary spool directory"),
        }
    }

    /// A config for this database, with short batching delays.
    pub fn config(&self) -> ClickHouseConfig {
        ClickHouseConfig {
            batch_max_delay: Duration::from_millis(10),
            retry_backoff: Duration::from_millis(20),
            replay_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(10),
            ..ClickHouseConfig::new(
                format!("http://{}", self.addr),
                &self.name,
                self.spool.path(),
            )
        }
    }

    /// The ClickHouse store on this database (migrated at connect).
    pub async fn connect(&self) -> ClickHouseStore {
        ClickHouseStore::connect(self.config())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr))
    }

    /// Runs SQL in this database's server.
    pub fn sql(&self, sql: &str) -> String {
        http_sql(&self.addr, sql).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = http_sql(
            &self.addr,
            &format!("DROP DATABASE IF EXISTS {}", self.name),
        );
    }
}

fn free_port() -> u16 {
    crate::free_addr().port()
}

/// A clickhouse-server process of our own, with its own ports and data under
/// a temporary directory; killed and removed by the guard.
pub struct OwnServer {
    /// Its configuration, data and logs.
    pub dir: tempfile::TempDir,
    /// Its HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// The HTTPS port, when started with [`OwnServer::start_https`].
    pub https_port: Option<u16>,
    child: Option<Child>,
}

impl OwnServer {
    /// Starts a server (Debian's clickhouse-server, configured from
    /// /etc/clickhouse-server with free ports) and waits until it answers.
    pub fn start() -> OwnServer {
        OwnServer::start_with(None)
    }

    /// A server that also serves HTTPS with this certificate and key (PEM).
    pub fn start_https(cert: &Path, key: &Path) -> OwnServer {
        OwnServer::start_with(Some((cert, key)))
    }

    fn start_with(https: Option<(&Path, &Path)>) -> OwnServer {
        let bin = which("clickhouse-server").unwrap_or_else(|| {
            panic!(
                "clickhouse-server is not installed: run scripts/install-deps.sh \
                 (apt-get install clickhouse-server clickhouse-client)"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let https_port = https.map(|_| free_port());
        let ports = LocalServerPorts {
            http: http_port,
            tcp: free_port(),
            interserver: free_port(),
        };
        write_local_server_config(dir.path(), ports, |config| match (https, https_port) {
            (Some((cert, key)), Some(port)) => config
                .replace(
                    "<!--\n    <https_port>8443</https_port>",
                    &format!("<https_port>{port}</https_port>\n    <!--"),
                )
                .replace(
                    "/etc/clickhouse-server/server.crt",
                    &cert.display().to_string(),
                )
                .replace(
                    "/etc/clickhouse-server/server.key",
                    &key.display().to_string(),
                )
                .replace(
                    "<dhParamsFile>/etc/clickhouse-server/dhparam.pem</dhParamsFile>",
                    "",
                ),
            _ => config,
        })
        .unwrap_or_else(|e| panic!("a private ClickHouse server's config: {e}"));
        let _ = bin;
        let mut server = OwnServer {
            dir,
            http_port,
            https_port,
            child: None,
        };
        server.restart();
        server
    }

    /// Its HTTP address (`127.0.0.1:port`).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Starts the process (again) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("log/stdout.log")).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_sql(&self.addr(), "SELECT 1").is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "clickhouse-server exited with {status}: see {}",
                    self.log_hint()
                );
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer on {} within 60 s: see {}",
                self.addr(),
                self.log_hint()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_hint(&self) -> String {
        let err = self.dir.path().join("log/clickhouse-server.err.log");
        let tail = std::fs::read_to_string(&err).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        format!("{}: {}", err.display(), tail.join(" | "))
    }

    /// Kills the process (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| Path::new(p).exists())
    })
}

/// One server of a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct ClusterServer {
    /// `s<shard>r<replica>`, e.g. `s1r2`.
    pub name: String,
    /// Its shard (1 or 2).
    pub shard: u32,
    /// Its HTTP address (`127.0.0.1:port`).
    pub addr: String,
}

/// The cluster `scripts/start-clickhouse-cluster.sh` starts in a temporary
/// directory of the test's own, on free ports: ZooKeeper and four
/// clickhouse-server processes (2 shards x 2 replicas) in the cluster
/// [`LocalCluster::NAME`]. Killed, by the ids the script recorded, when the
/// guard goes (also on panic).
pub struct LocalCluster {
    /// Data, configuration and logs of every process.
    pub dir: tempfile::TempDir,
    /// The four servers, `s1r1`, `s1r2`, `s2r1`, `s2r2`.
    pub servers: Vec<ClusterServer>,
    port_base: u16,
}

impl LocalCluster {
    /// The cluster's name in the servers' `remote_servers`.
    pub const NAME: &'static str = "netverdict";

    fn script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(name)
    }

    /// Starts the cluster and waits until every server answers and reaches
    /// ZooKeeper; fails saying what to install when a package is missing.
    pub fn start() -> LocalCluster {
        let dir = tempfile::tempdir().expect("a temporary cluster directory");
        // 13 ports from the base (see the script): a base whose every port
        // is free now.
        let port_base = (0..200)
            .map(|k| 20_000 + ((std::process::id() as u16 % 97) + k) % 200 * 100)
            .find(|&base| {
                (0..=43)
                    .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
            })
            .expect("a free range of 44 loopback ports");
        let mut cluster = LocalCluster {
            dir,
            servers: Vec::new(),
            port_base,
        };
        let out = cluster.run_start_script();
        let servers = out
            .lines()
            .filter_map(|line| {
                // server <name> shard <s> replica <r> http <port> tcp <port> pid <pid>
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.first() == Some(&"server") && words.len() >= 8).then(|| ClusterServer {
                    name: words[1].to_string(),
                    shard: words[3].parse().expect("a shard number"),
                    addr: format!("127.0.0.1:{}", words[7]),
                })
            })
            .collect::<Vec<_>>();
        assert_eq!(
            servers.len(),
            4,
            "four servers in the script's output:\n{out}"
        );
        cluster.servers = servers;
        cluster
    }

    fn run_start_script(&self) -> String {
        let out = Command::new("bash")
            .arg(LocalCluster::script("start-clickhouse-cluster.sh"))
            .env("NETVERDICT_CLUSTER_DIR", self.dir.path())
            .env("NETVERDICT_CLUSTER_NAME", LocalCluster::NAME)
            .env("NETVERDICT_CLUSTER_PORT_BASE", self.port_base.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/start-clickhouse-cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "scripts/start-clickhouse-cluster.sh failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The server named `name` (`s1r1` ...).
    pub fn server(&self, name: &str) -> &ClusterServer {
        self.servers
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name} in the cluster"))
    }

    /// Kills server `name` with SIGKILL, as a crash would (by its recorded
    /// process id), and waits until it is gone.
    pub fn kill(&self, name: &str) {
        let status = Command::new("bash")
            .arg(LocalCluster::script("stop-clickhouse-cluster.sh"))
            .arg(self.dir.path())
            .arg("--kill")
            .arg(name)
            .status()
            .expect("running scripts/stop-clickhouse-cluster.sh");
        assert!(status.success(), "stopping {name}");
    }

    /// Starts again every server that is not running (the script is
    /// idempotent) and waits until they answer.
    pub fn restart_stopped(&self) {
        self.run_start_script();
    }
}

impl Drop for LocalCluster {
    /// Kills every process (its data goes with the directory).
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(LocalCluster::script("stop-clickhouse-cluster.sh"))
            .arg(self.dir.path())
            .arg("--kill")
            .status();
    }
}
