//! Privileged test (root): UDP flows are reported by 5-tuple, with counts.

use crate::common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use netverdict_ebpf::{Event, IpProtocol, TrafficDirection};
use netverdict_testing::require_root;

#[tokio::test]
async fn udp_flow_reported_once_then_counted() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("udp");
    let dst = sa(lab.server_v4, 9999);
    let server = in_netns(&lab.server, move || UdpSocket::bind(dst).unwrap());
    let mut s = stream();
    let src = in_netns(&lab.client, move || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            c.send_to(b"hello", dst).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1100));
        c.send_to(b"again", dst).unwrap(); // > 1 s later: a second event with counts
        c.local_addr().unwrap().port()
    });
    let flow = |e: &Event| {
        matches!(e, Event::Udp { tuple, meta, .. }
            if tuple.dst == dst && tuple.src.port() == src && meta.netns == lab.client_ino)
    };
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        e.iter().filter(|e| flow(e)).count() >= 2
    })
    .await;
    let flows: Vec<_> = evs.iter().filter(|e| flow(e)).collect();
    let Event::Udp {
        meta,
        tuple,
        packets,
        bytes,
    } = flows[0]
    else {
        unreachable!()
    };
    assert_eq!(tuple.protocol, IpProtocol::Udp);
    assert_eq!(tuple.src.ip(), lab.client_v4);
    assert_eq!(meta.direction, TrafficDirection::Egress);
    assert_eq!(*packets, 1, "first packet of the flow");
    // IP length: 20 (IPv4) + 8 (UDP) + 5 bytes of data; no Ethernet header.
    assert_eq!(*bytes, 33, "the first packet's IP length");
    let Event::Udp { packets, bytes, .. } = flows[1] else {
        unreachable!()
    };
    assert_eq!(*packets, 5, "the 4 other packets and the late one");
    assert_eq!(*bytes, 5 * 33, "their IP lengths");
    drop(server);
}

#[tokio::test]
async fn spawned_stream_delivers_through_a_channel() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("chan");
    let dst = sa(lab.server_v4, 7777);
    let (mut rx, task) = stream().spawn(1024);
    let src = in_netns(&lab.client, move || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.send_to(b"x", dst).unwrap();
        c.local_addr().unwrap()
    });
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = rx.recv().await {
            if let netverdict_ebpf::StreamItem::Event(Event::Udp { tuple, meta, .. }) =
                item.expect("stream")
                && tuple.dst == dst
                && tuple.src.port() == src.port()
                && meta.netns == lab.client_ino
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "UDP event through the channel within 10 s");
    drop(rx);
    task.await.unwrap();
}
