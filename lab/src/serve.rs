//! The pods' servers: a listener on every containerPort of every pod (TCP
//! accept-and-echo, UDP echo, SCTP where the kernel has it).
//!
//! `lab up` starts one server process per batch of pods (the caller's binary
//! re-executed with a [`ServeSpec`] in JSON); each listener thread enters its
//! pod's namespace before binding. The process prints `ready` on stdout once
//! every socket listens (unsupported protocols are listed on the same line), so
//! the lab waits on a condition, not a delay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use netverdict_policy::Protocol;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol as SockProto, Socket, Type};

use crate::sys;

/// Errors of the server process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec given on the command line is not valid JSON.
    #[error("invalid serve spec: {0}")]
    Spec(#[from] serde_json::Error),
    /// A port's protocol is not TCP, UDP or SCTP.
    #[error("pod {pod}: unknown protocol {protocol:?} for port {port}: use TCP, UDP or SCTP")]
    Protocol {
        pod: String,
        protocol: String,
        port: u16,
    },
    /// A listener could not be set up.
    #[error("pod {pod}: cannot listen on {protocol}/{port}: {message}")]
    Listen {
        pod: String,
        protocol: Protocol,
        port: u16,
        message: String,
    },
}

/// What one server process serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServeSpec {
    pub pods: Vec<PodPorts>,
}

/// One pod's namespace and ports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodPorts {
    /// `namespace/name`, for messages.
    pub pod: String,
    pub netns: String,
    /// Protocol (`TCP`, `UDP`, `SCTP`) and port.
    pub ports: Vec<(String, u16)>,
}

enum Bound {
    Ok,
    Unsupported(String),
    Failed(Error),
}

/// Runs the servers of `spec` until killed. Prints `ready` (and the unsupported
/// listeners) on stdout once every listener is bound.
pub fn serve(spec: &ServeSpec) -> Result<std::convert::Infallible, Error> {
    let mut listeners = Vec::new();
    for pod in &spec.pods {
        for (protocol, port) in &pod.ports {
            let parsed = protocol
                .parse::<Protocol>()
                .ok()
                .filter(|p| p.has_ports())
                .ok_or_else(|| Error::Protocol {
                    pod: pod.pod.clone(),
                    protocol: protocol.clone(),
                    port: *port,
                })?;
            listeners.push((pod, parsed, *port));
        }
    }
    let (tx, rx) = mpsc::channel();
    let expected = listeners.len();
    for (pod, protocol, port) in listeners {
        let tx = tx.clone();
        let pod = pod.clone();
        std::thread::spawn(move || listen(&pod, protocol, port, &tx));
    }
    let mut unsupported = Vec::new();
    for _ in 0..expected {
        match rx.recv() {
            Ok(Bound::Ok) => {}
            Ok(Bound::Unsupported(what)) => unsupported.push(what),
            Ok(Bound::Failed(e)) => return Err(e),
            Err(_) => break,
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", unsupported.join(" "));
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

fn listen(pod: &PodPorts, protocol: Protocol, port: u16, tx: &mpsc::Sender<Bound>) {
    let fail = |message: String| Error::Listen {
        pod: pod.pod.clone(),
        protocol,
        port,
        message,
    };
    if let Err(e) = sys::enter(&pod.netns) {
        let _ = tx.send(Bound::Failed(fail(e.to_string())));
        return;
    }
    let addr: SocketAddr = ([0, 0, 0, 0], port).into();
    match protocol {
        Protocol::Tcp | Protocol::Sctp => {
            let proto = if protocol == Protocol::Tcp {
                SockProto::TCP
            } else {
                SockProto::from(libc::IPPROTO_SCTP)
            };
            let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(proto)) {
                Ok(s) => s,
                Err(e) if protocol == Protocol::Sctp => {
                    eprintln!("{}: SCTP/{port} not served: {e}", pod.pod);
                    let _ = tx.send(Bound::Unsupported(format!("{}:SCTP/{port}", pod.pod)));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Bound::Failed(fail(e.to_string())));
                    return;
                }
            };
            let bound = socket
                .set_reuse_address(true)
                .and_then(|_| socket.bind(&addr.into()))
                .and_then(|_| socket.listen(4096));
            if let Err(e) = bound {
                let _ = tx.send(Bound::Failed(fail(e.to_string())));
                return;
            }
            let _ = tx.send(Bound::Ok);
            let listener: TcpListener = socket.into();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        // Not a port: the kernel answers echo requests (never parsed above).
        Protocol::Icmp => {
            let _ = tx.send(Bound::Ok);
        }
        Protocol::Udp => {
            let socket = match UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Bound::Failed(fail(e.to_string())));
                    return;
                }
            };
            let _ = tx.send(Bound::Ok);
            let mut buf = [0u8; 65536];
            loop {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_with_an_unknown_protocol_is_refused_before_anything_listens() {
        let spec = ServeSpec {
            pods: vec![PodPorts {
                pod: "a/p".into(),
                netns: "nv.none.0".into(),
                ports: vec![("TCP".into(), 80), ("QUIC".into(), 443)],
            }],
        };
        let Err(e) = serve(&spec);
        assert_eq!(
            e.to_string(),
            "pod a/p: unknown protocol \"QUIC\" for port 443: use TCP, UDP or SCTP"
        );
    }
}
