//! Privileged test (root): ICMP and ICMPv6 echo requests and replies are
//! reported one by one, without ports, with their identifier, sequence and IP
//! length; a dropped request says which echo it was; other ICMP messages
//! (neighbour discovery) are counted, not reported.

use crate::common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::FromRawFd;
use std::process::Command;
use std::time::Duration;

use common::*;
use netverdict_ebpf::{EchoKind, Event, IcmpEcho, IpProtocol, TrafficDirection};
use netverdict_testing::require_root;

/// The data of the test's echo requests (16 bytes).
const DATA: &[u8] = b"netverdict-probe";

/// Sends `count` echo requests (identifier `id`, sequence 1..=count) from
/// namespace `ns` to `dst` on a raw socket, each waiting up to `wait` for its
/// reply; returns the sequence numbers answered.
fn ping(ns: &str, dst: IpAddr, id: u16, count: u16, wait: Duration) -> Vec<u16> {
    in_netns(ns, move || {
        let (family, proto, reply) = if dst.is_ipv4() {
            (libc::AF_INET, libc::IPPROTO_ICMP, 0u8)
        } else {
            (libc::AF_INET6, libc::IPPROTO_ICMPV6, 129)
        };
        // SAFETY: a plain socket(2) call; the descriptor is owned right below.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new socket nothing else owns. A raw socket is a
        // datagram socket: UdpSocket's sendto/recvfrom work on it unchanged.
        let socket = unsafe { UdpSocket::from_raw_fd(fd) };
        socket.set_read_timeout(Some(wait)).unwrap();
        let mut answered = Vec::new();
        for seq in 1..=count {
            let m = netverdict_ebpf::icmp::build_echo_request(dst.is_ipv4(), id, seq, DATA);
            socket.send_to(&m, SocketAddr::new(dst, 0)).unwrap();
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let skip = if dst.is_ipv4() {
                    usize::from(buf[0] & 0x0f) * 4
                } else {
                    0
                };
                let icmp = &buf[skip.min(n)..n];
                if from.ip() == dst
                    && icmp.len() >= 8
                    && icmp[0] == reply
                    && icmp[4..6] == id.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                {
                    answered.push(seq);
                    break;
                }
            }
        }
        answered
    })
}

fn echoes(evs: &[Event], id: u16, kind: EchoKind) -> Vec<&Event> {
    evs.iter()
        .filter(|e| matches!(e, Event::Icmp { echo, .. } if echo.id == id && echo.kind == kind))
        .collect()
}

#[tokio::test]
async fn echo_requests_and_replies_are_reported_with_their_echo() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("icmp");
    let mut s = stream();
    let id = 0x4e56;
    let answered = ping(&lab.client, lab.server_v4, id, 3, Duration::from_secs(2));
    assert_eq!(answered, [1, 2, 3], "the server answers every echo");
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        echoes(e, id, EchoKind::Reply).len() >= 3
    })
    .await;
    let requests = echoes(&evs, id, EchoKind::Request);
    assert_eq!(requests.len(), 3, "one event per request: {evs:?}");
    for (seq, e) in (1..).zip(&requests) {
        let Event::Icmp {
            meta,
            tuple,
            echo,
            len,
        } = e
        else {
            unreachable!()
        };
        assert_eq!(tuple.protocol, IpProtocol::Icmp);
        assert_eq!(tuple.src, SocketAddr::new(lab.client_v4, 0), "no ports");
        assert_eq!(tuple.dst, SocketAddr::new(lab.server_v4, 0));
        assert_eq!(echo.seq, seq);
        assert_eq!(meta.netns, lab.client_ino);
        assert_eq!(meta.direction, TrafficDirection::Egress);
        assert_eq!(
            *len as usize,
            20 + 8 + DATA.len(),
            "the IP length, no link-layer header"
        );
    }
    let replies = echoes(&evs, id, EchoKind::Reply);
    assert!(
        replies.iter().all(|e| e.meta().netns == lab.server_ino
            && e.tuple().src.ip() == lab.server_v4
            && e.tuple().dst.ip() == lab.client_v4),
        "{replies:?}"
    );

    // ICMPv6: the same, with the protocol ICMPv6; neighbour discovery before
    // it is counted as ICMP that is not an echo.
    let answered = ping(
        &lab.client,
        lab.server_v6,
        id + 1,
        1,
        Duration::from_secs(2),
    );
    assert_eq!(answered, [1]);
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        echoes(e, id + 1, EchoKind::Reply).len() == 1
    })
    .await;
    let request = echoes(&evs, id + 1, EchoKind::Request);
    assert_eq!(request.len(), 1, "{evs:?}");
    assert_eq!(request[0].tuple().protocol, IpProtocol::Icmpv6);
    assert_eq!(request[0].tuple().dst, SocketAddr::new(lab.server_v6, 0));
    assert!(
        s.losses().unwrap().icmp_other > 0,
        "neighbour solicitations are counted"
    );
}

#[tokio::test]
async fn a_dropped_echo_request_names_its_echo_and_an_ignored_one_gets_no_reply() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("icmpdrop");
    let mut s = stream();
    lab.nft(
        &lab.server,
        "table inet nvtest {\n chain input {\n  type filter hook input priority 0;\n  \
         meta l4proto icmp drop\n }\n}\n",
    );
    let id = 0x4e57;
    let answered = ping(
        &lab.client,
        lab.server_v4,
        id,
        1,
        Duration::from_millis(500),
    );
    assert!(answered.is_empty(), "dropped by nftables");
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, Event::Drop { icmp: Some(i), .. } if i.id == id))
    })
    .await;
    let Some(Event::Drop {
        reason,
        tuple,
        meta,
        icmp,
        ..
    }) = evs
        .iter()
        .find(|e| matches!(e, Event::Drop { icmp: Some(i), .. } if i.id == id))
    else {
        unreachable!()
    };
    assert_eq!(reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(meta.netns, lab.server_ino);
    assert_eq!(tuple.protocol, IpProtocol::Icmp);
    assert_eq!(tuple.src, SocketAddr::new(lab.client_v4, 0));
    assert_eq!(
        *icmp,
        Some(IcmpEcho {
            kind: EchoKind::Request,
            id,
            seq: 1
        })
    );
    assert_eq!(
        echoes(&evs, id, EchoKind::Request).len(),
        1,
        "seen leaving the client"
    );

    // A host that ignores echo requests: no reply and no drop (the kernel
    // consumes the request).
    lab.nft(&lab.server, "delete table inet nvtest\n");
    let status = Command::new("ip")
        .args(["netns", "exec", &lab.server, "sysctl", "-qw"])
        .arg("net.ipv4.icmp_echo_ignore_all=1")
        .status()
        .expect("sysctl");
    assert!(status.success());
    let id = 0x4e58;
    let answered = ping(
        &lab.client,
        lab.server_v4,
        id,
        1,
        Duration::from_millis(500),
    );
    assert!(answered.is_empty(), "ignored");
    let evs = collect_for(&mut s, &lab, Duration::from_secs(1)).await;
    assert_eq!(echoes(&evs, id, EchoKind::Request).len(), 1, "{evs:?}");
    assert!(echoes(&evs, id, EchoKind::Reply).is_empty(), "{evs:?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Event::Drop { icmp: Some(i), .. } if i.id == id)),
        "{evs:?}"
    );
}
