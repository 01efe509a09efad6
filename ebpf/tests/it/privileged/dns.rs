//! Privileged tests (root): DNS queries and responses, NXDOMAIN, and a query
//! dropped by nftables, against dnsmasq in a namespace pair.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use netverdict_ebpf::{Event, Rcode, TrafficDirection, dns};
use netverdict_testing::require_root;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Sends one query from the client namespace; returns the response if one
/// arrives within `wait`.
fn query(lab: &Lab, server: SocketAddr, id: u16, name: &str, wait: Duration) -> Option<Vec<u8>> {
    let q = dns::build_query(id, name, 1);
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    in_netns(&lab.client, move || {
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(&q, server).unwrap();
        let mut buf = [0u8; 1500];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    })
}

/// Starts dnsmasq in the server namespace and waits until it answers.
fn start_dnsmasq(lab: &mut Lab) -> SocketAddr {
    assert!(
        std::path::Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: apt-get install dnsmasq-base"
    );
    let server = sa(lab.server_v4, 53);
    let listen = format!("--listen-address={}", lab.server_v4);
    let pid = format!("--pid-file=/tmp/{}.dnsmasq.pid", lab.server);
    let ns = lab.server.clone();
    lab.spawn(
        &ns,
        &[
            DNSMASQ,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            &listen,
            &pid,
            "--address=/ok.nv.test/10.1.2.3",
            "--address=/nx.nv.test/",
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if query(
            lab,
            server,
            1,
            "ready.ok.nv.test",
            Duration::from_millis(200),
        )
        .is_some()
        {
            return server;
        }
    }
    panic!("dnsmasq did not answer within 10 s in {}", lab.server);
}

fn dns_of(evs: &[Event], id: u16, response: bool) -> Option<&Event> {
    evs.iter().find(|e| {
        matches!(e, Event::Dns { message, .. } if message.id == id && message.response == response)
    })
}

#[tokio::test]
async fn dns_answered() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("dnsok");
    let server = start_dnsmasq(&mut lab);
    let mut s = stream();
    let resp = query(
        &lab,
        server,
        0x4242,
        "www.ok.nv.test",
        Duration::from_secs(5),
    );
    assert!(resp.is_some(), "dnsmasq answered");
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        dns_of(e, 0x4242, false).is_some() && dns_of(e, 0x4242, true).is_some()
    })
    .await;
    let Event::Dns {
        meta,
        tuple,
        message,
    } = dns_of(&evs, 0x4242, false).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(meta.netns, lab.client_ino);
    assert_eq!(meta.direction, TrafficDirection::Egress);
    assert!(meta.ifindex.is_some());
    assert_eq!(tuple.dst, server);
    assert_eq!(message.name.as_deref(), Some("www.ok.nv.test"));
    assert_eq!(message.qtype, Some(1));
    let Event::Dns {
        meta,
        tuple,
        message,
    } = dns_of(&evs, 0x4242, true).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(meta.netns, lab.server_ino);
    assert_eq!(tuple.src, server);
    assert_eq!(message.rcode, Rcode::NOERROR);
    assert_eq!(message.answers, 1);
    assert_eq!(message.name.as_deref(), Some("www.ok.nv.test"));
}

#[tokio::test]
async fn dns_nxdomain() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("dnsnx");
    let server = start_dnsmasq(&mut lab);
    let mut s = stream();
    assert!(
        query(
            &lab,
            server,
            0x5151,
            "nope.nx.nv.test",
            Duration::from_secs(5)
        )
        .is_some()
    );
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        dns_of(e, 0x5151, false).is_some() && dns_of(e, 0x5151, true).is_some()
    })
    .await;
    let Event::Dns { message, .. } = dns_of(&evs, 0x5151, true).unwrap() else {
        unreachable!()
    };
    assert_eq!(message.rcode, Rcode::NXDOMAIN);
    assert_eq!(message.answers, 0);
    assert_eq!(message.name.as_deref(), Some("nope.nx.nv.test"));
}

#[tokio::test]
async fn dns_query_dropped_by_nftables() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("dnsdrop");
    let server = start_dnsmasq(&mut lab);
    lab.drop_port("udp", 53);
    let mut s = stream();
    let resp = query(
        &lab,
        server,
        0x6161,
        "lost.ok.nv.test",
        Duration::from_millis(1500),
    );
    assert!(resp.is_none(), "the query was dropped");
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        dns_of(e, 0x6161, false).is_some()
            && e.iter()
                .any(|e| matches!(e, Event::Drop { dns: Some(m), .. } if m.id == 0x6161))
    })
    .await;
    let Event::Dns { message, meta, .. } = dns_of(&evs, 0x6161, false).unwrap() else {
        unreachable!()
    };
    assert_eq!(message.name.as_deref(), Some("lost.ok.nv.test"));
    assert_eq!(meta.netns, lab.client_ino);
    let drop = evs
        .iter()
        .find(|e| matches!(e, Event::Drop { dns: Some(m), .. } if m.id == 0x6161))
        .unwrap();
    let Event::Drop {
        reason,
        dns,
        meta,
        tuple,
        ..
    } = drop
    else {
        unreachable!()
    };
    assert_eq!(reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(meta.netns, lab.server_ino);
    assert_eq!(tuple.dst, server);
    assert_eq!(
        dns.as_ref().unwrap().name.as_deref(),
        Some("lost.ok.nv.test")
    );
    // No response: none arrived at the client, and the probes saw none.
    let more = collect_for(&mut s, &lab, Duration::from_millis(500)).await;
    assert!(dns_of(&evs, 0x6161, true).is_none() && dns_of(&more, 0x6161, true).is_none());
}

#[tokio::test]
async fn dns_over_tcp_is_decoded_or_counted() {
    if !require_root() {
        return;
    }
    use std::io::{Read, Write};
    let mut lab = Lab::new("dnstcp");
    let server = start_dnsmasq(&mut lab);
    let mut s = stream();
    let answered = in_netns(&lab.client, move || {
        let q = dns::build_query(0x7171, "tcp.ok.nv.test", 1);
        let mut c = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        c.write_all(&msg).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).is_ok()
    });
    assert!(answered, "dnsmasq answered over TCP");
    // The connection is seen; the message is decoded when the kernel keeps it
    // in the packet's linear data, else counted as not captured (never silent).
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, Event::TcpOutcome { tuple, .. } if tuple.dst == server))
    })
    .await;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let decoded = dns_of(&evs, 0x7171, false).is_some();
        let counted = s.losses().unwrap().dns_without_payload > 0;
        if decoded || counted {
            break;
        }
        assert!(
            Instant::now() < end,
            "TCP DNS query neither decoded nor counted"
        );
        let _ = collect_for(&mut s, &lab, Duration::from_millis(100)).await;
    }
}
