//! `scripts/start-clickhouse.sh` run the way callers that capture its output
//! run it (`out=$(scripts/start-clickhouse.sh)`, Python's `capture_output`):
//! its stdout and stderr are pipes, and the caller waits for them to close.
//! The script must return once the server answers, without the server (or a
//! shell waiting for it) holding those pipes open.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/start-clickhouse.sh")
}

/// Stops the server the script started (by the process id it recorded),
/// also when the test fails.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(&self.0) else {
            return;
        };
        let pid = pid.trim();
        let _ = Command::new("kill").arg(pid).status();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if proc.exists() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

#[test]
fn a_caller_capturing_the_output_gets_it_back_once_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let _stop = Stop(dir.path().join("clickhouse-server.pid"));
    let mut child = Command::new("bash")
        .arg(script())
        .env("NETVERDICT_CLICKHOUSE_DIR", dir.path())
        .env("NETVERDICT_CLICKHOUSE_HTTP_PORT", http_port.to_string())
        .env("NETVERDICT_CLICKHOUSE_TCP_PORT", free_port().to_string())
        .env(
            "NETVERDICT_CLICKHOUSE_INTERSERVER_PORT",
            free_port().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running bash scripts/start-clickhouse.sh");
    // What `$(...)` does: read both pipes to their end.
    let (tx, rx) = mpsc::channel();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut output = String::new();
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(text) => output.push_str(&text),
            Err(_) => panic!(
                "the script's output pipes were still open after 90 s: a process it \
                 started holds them (output so far: {output:?})"
            ),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the script failed: {output}");
    assert!(
        output.contains(&format!(
            "ClickHouse answers on http://127.0.0.1:{http_port}/"
        )),
        "{output}"
    );
    // The server it started runs on after the script returned.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("Ok.\n"), "{answer}");
}
