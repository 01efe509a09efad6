//! A private ClickHouse server on this machine (the tests' own servers, the
//! chaos soak's): Debian's configuration with its own ports and every path
//! under one directory, so it runs beside the system's server and any other
//! private one, and can be killed and restarted at will.

use std::io;
use std::path::Path;

/// Where Debian's `clickhouse-server` package keeps its configuration.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/clickhouse-server";

/// The ports a private server listens on (127.0.0.1).
#[derive(Clone, Copy, Debug)]
pub struct LocalServerPorts {
    pub http: u16,
    pub tcp: u16,
    pub interserver: u16,
}

/// Writes `dir/config.xml` (the system's, with `ports` and every path under
/// `dir`) and `dir/users.xml` (the system's), and makes the directories the
/// server writes to. `adjust` changes the configuration text last (for
/// example to serve HTTPS). Run the server as `clickhouse-server
/// --config-file=dir/config.xml`.
pub fn write_local_server_config(
    dir: &Path,
    ports: LocalServerPorts,
    adjust: impl FnOnce(String) -> String,
) -> io::Result<()> {
    let system = Path::new(SYSTEM_CONFIG_DIR);
    let config = std::fs::read_to_string(system.join("config.xml")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "reading {SYSTEM_CONFIG_DIR}/config.xml: {e} (install clickhouse-server: scripts/install-deps.sh)"
            ),
        )
    })?;
    for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let d = dir.display();
    let config = config
        .replace(
            "<http_port>8123</http_port>",
            &format!("<http_port>{}</http_port>", ports.http),
        )
        .replace(
            "<tcp_port>9000</tcp_port>",
            &format!("<tcp_port>{}</tcp_port>", ports.tcp),
        )
        .replace(
            "<interserver_http_port>9009</interserver_http_port>",
            &format!(
                "<interserver_http_port>{}</interserver_http_port>",
                ports.interserver
            ),
        )
        .replace("<listen_host>::1</listen_host>", "")
        .replace(
            "<path>/var/lib/clickhouse/</path>",
            &format!("<path>{d}/data/</path>"),
        )
        .replace("/var/lib/clickhouse/tmp/", &format!("{d}/tmp/"))
        .replace(
            "/var/lib/clickhouse/user_files/",
            &format!("{d}/user_files/"),
        )
        .replace(
            "/var/lib/clickhouse/format_schemas/",
            &format!("{d}/format_schemas/"),
        )
        .replace("/var/log/clickhouse-server/", &format!("{d}/log/"));
    std::fs::write(dir.join("config.xml"), adjust(config))?;
    std::fs::copy(system.join("users.xml"), dir.join("users.xml"))?;
    Ok(())
}
