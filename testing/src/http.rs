//! Plain HTTP GETs over a real socket, for the servers' HTTP ports
//! (`/metrics`, `/healthz`, `/readyz`): HTTP/1.0, so the body comes whole,
//! never chunked; any status is returned, for the test to judge.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a server answered.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header (lowercase; empty when none).
    pub content_type: String,
    /// The body.
    pub body: String,
}

/// GETs `path` from `addr`; fails the test when nothing answers or the
/// answer is not HTTP.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    conn.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    let mut raw = String::new();
    conn.read_to_string(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("reading {addr}{path}: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {addr}{path}: not an HTTP response: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {addr}{path}: no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    Response {
        status,
        content_type,
        body: body.to_string(),
    }
}
