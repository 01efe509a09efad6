//! Privileged test (root): a dropped SCTP packet is reported with its ports.
//! The kernel here has no SCTP stack, so the packet is sent on a raw socket.

use crate::common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use netverdict_ebpf::{Event, IpProtocol};
use netverdict_testing::require_root;

/// Sends an SCTP common header (+ an empty DATA-less INIT-like chunk) on a raw
/// IPv4 socket from the current thread's namespace.
fn send_raw_sctp(dst: IpAddr, sport: u16, dport: u16) {
    let IpAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&sport.to_be_bytes());
    pkt.extend_from_slice(&dport.to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // verification tag, checksum
    pkt.extend_from_slice(&[1, 0, 0, 4]); // chunk: INIT, flags, length 4
    // SAFETY: plain socket/sendto/close calls on buffers we own; the fd is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 132);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let n = libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(n, pkt.len() as isize, "sendto: {err}");
    }
}

#[tokio::test]
async fn sctp_drop_has_ports() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("sctp");
    lab.drop_port("sctp", 6000);
    let mut s = stream();
    let dst = lab.server_v4;
    in_netns(&lab.client, move || send_raw_sctp(dst, 5000, 6000));
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, Event::Drop { tuple, .. } if tuple.protocol == IpProtocol::Sctp))
    })
    .await;
    let drop = evs
        .iter()
        .find(|e| matches!(e, Event::Drop { tuple, .. } if tuple.protocol == IpProtocol::Sctp))
        .unwrap();
    let Event::Drop {
        tuple,
        reason,
        meta,
        ..
    } = drop
    else {
        unreachable!()
    };
    assert_eq!(tuple.src, sa(lab.client_v4, 5000));
    assert_eq!(tuple.dst, sa(lab.server_v4, 6000));
    assert_eq!(reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(meta.netns, lab.server_ino);
}
