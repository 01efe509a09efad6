//! Privileged tests (root): TCP attempts and outcomes in a namespace pair.

use crate::common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use netverdict_ebpf::{Event, IpProtocol, TcpOutcome, TrafficDirection};
use netverdict_testing::require_root;

fn attempt_to(evs: &[Event], dst: SocketAddr) -> Option<&Event> {
    evs.iter().find(|e| {
        matches!(e, Event::TcpAttempt { meta, tuple, .. }
            if tuple.dst == dst && meta.direction == TrafficDirection::Egress)
    })
}

/// The attempt and outcome to `dst` carry the same 5-tuple and socket id.
fn assert_same_connection(evs: &[Event], dst: SocketAddr) {
    let a = attempt_to(evs, dst).expect("attempt");
    let o = evs
        .iter()
        .find(|e| matches!(e, Event::TcpOutcome { tuple, .. } if tuple.dst == dst))
        .expect("outcome");
    assert_eq!(a.tuple(), o.tuple(), "attempt and outcome 5-tuples");
    assert_ne!(a.tuple().src.port(), 0, "source port known");
    let (Event::TcpAttempt { sock_id: a, .. }, Event::TcpOutcome { sock_id: o, .. }) = (a, o)
    else {
        unreachable!()
    };
    assert_eq!(a, o);
}

fn outcome_to(evs: &[Event], dst: SocketAddr) -> Option<TcpOutcome> {
    evs.iter().find_map(|e| match e {
        Event::TcpOutcome { tuple, outcome, .. } if tuple.dst == dst => Some(*outcome),
        _ => None,
    })
}

async fn allowed(v6: bool) {
    let lab = Lab::new(if v6 { "ok6" } else { "ok4" });
    let (cip, sip) = if v6 {
        (lab.client_v6, lab.server_v6)
    } else {
        (lab.client_v4, lab.server_v4)
    };
    let dst = sa(sip, 8080);
    let listener = in_netns(&lab.server, move || TcpListener::bind(dst).unwrap());
    let mut s = stream();
    let local = in_netns(&lab.client, move || {
        let c = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap();
        c.local_addr().unwrap()
    });
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        attempt_to(e, dst).is_some() && outcome_to(e, dst).is_some()
    })
    .await;
    let Event::TcpAttempt {
        meta,
        tuple,
        sock_id,
    } = attempt_to(&evs, dst).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(meta.netns, lab.client_ino);
    assert_eq!(tuple.protocol, IpProtocol::Tcp);
    assert_eq!(tuple.src, local, "attempt carries the chosen source port");
    assert_eq!(tuple.src.ip(), cip);
    assert_eq!(outcome_to(&evs, dst), Some(TcpOutcome::Established));
    assert_same_connection(&evs, dst);
    let out = evs
        .iter()
        .find(|e| matches!(e, Event::TcpOutcome { .. }))
        .unwrap();
    let Event::TcpOutcome {
        sock_id: id2,
        meta: m2,
        ..
    } = out
    else {
        unreachable!()
    };
    assert_eq!(id2, sock_id);
    assert_eq!(m2.netns, lab.client_ino);
    // The server side: inbound attempt and accepted, in the server namespace.
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        e.iter().any(|e| {
            matches!(e, Event::TcpOutcome { outcome: TcpOutcome::Accepted, meta, tuple, .. }
            if meta.netns == lab.server_ino && tuple.src == local && tuple.dst == dst)
        })
    })
    .await;
    assert!(!evs.is_empty());
    drop(listener);
}

async fn dropped(v6: bool) {
    let lab = Lab::new(if v6 { "drop6" } else { "drop4" });
    let sip = if v6 { lab.server_v6 } else { lab.server_v4 };
    let dst = sa(sip, 8081);
    lab.drop_port("tcp", 8081);
    let mut s = stream();
    let client = lab.client.clone();
    let connect = std::thread::spawn(move || {
        in_netns(&client, move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(2500)).unwrap_err()
        })
    });
    // The attempt is reported while the connect is still pending (at the
    // first SYN retransmit), before its outcome.
    let mut evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        attempt_to(e, dst).is_some()
    })
    .await;
    assert_eq!(
        outcome_to(&evs, dst),
        None,
        "attempt reported while pending"
    );
    let err = connect.join().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    evs.extend(
        collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
            outcome_to(e, dst).is_some()
        })
        .await,
    );
    assert_eq!(outcome_to(&evs, dst), Some(TcpOutcome::NoAnswer));
    assert_same_connection(&evs, dst);
    let drops: Vec<_> = evs
        .iter()
        .filter(|e| {
            matches!(e, Event::Drop { reason, tuple, meta, .. }
            if reason.as_deref() == Some("NETFILTER_DROP") && tuple.dst == dst
               && meta.netns == lab.server_ino && tuple.protocol == IpProtocol::Tcp)
        })
        .collect();
    assert!(
        !drops.is_empty(),
        "no NETFILTER_DROP drop of the SYN: {evs:?}"
    );
    let Event::TcpAttempt { tuple, .. } = attempt_to(&evs, dst).unwrap() else {
        unreachable!()
    };
    assert_eq!(
        drops[0].tuple().src,
        tuple.src,
        "drop and attempt share the 5-tuple"
    );
    let Event::TcpOutcome { retransmits, .. } = evs
        .iter()
        .find(|e| matches!(e, Event::TcpOutcome { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(*retransmits >= 1, "SYN retransmitted");
}

/// A SYN dropped on its way out of the client (nftables output chain): the
/// attempt is reported at once, before the drop, and the drop is in the
/// client's namespace.
#[tokio::test]
async fn tcp_dropped_on_output_v4() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("out4");
    let dst = sa(lab.server_v4, 8083);
    lab.nft(
        &lab.client,
        "table inet nvtest {\n chain output {\n  type filter hook output priority 0;\n  \
         tcp dport 8083 drop\n }\n}\n",
    );
    let mut s = stream();
    let client = lab.client.clone();
    let connect = std::thread::spawn(move || {
        in_netns(&client, move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(1500)).unwrap_err()
        })
    });
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        attempt_to(e, dst).is_some()
            && e.iter()
                .any(|e| matches!(e, Event::Drop { tuple, .. } if tuple.dst == dst))
    })
    .await;
    let drop = evs
        .iter()
        .find(|e| matches!(e, Event::Drop { tuple, .. } if tuple.dst == dst))
        .unwrap();
    let Event::Drop {
        reason,
        meta,
        tuple,
        ..
    } = drop
    else {
        unreachable!()
    };
    assert_eq!(reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(meta.netns, lab.client_ino);
    assert_eq!(meta.direction, TrafficDirection::Egress);
    let attempt = attempt_to(&evs, dst).unwrap();
    assert_eq!(
        attempt.tuple(),
        tuple,
        "attempt and dropped SYN share the 5-tuple"
    );
    assert_eq!(
        outcome_to(&evs, dst),
        None,
        "attempt reported before the outcome"
    );
    connect.join().unwrap();
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        outcome_to(e, dst).is_some()
    })
    .await;
    assert_eq!(outcome_to(&evs, dst), Some(TcpOutcome::NoAnswer));
    let attempts = evs
        .iter()
        .filter(|e| attempt_to(std::slice::from_ref(e), dst).is_some());
    assert_eq!(attempts.count(), 0, "the attempt is not reported twice");
}

async fn refused(v6: bool) {
    let lab = Lab::new(if v6 { "ref6" } else { "ref4" });
    let sip = if v6 { lab.server_v6 } else { lab.server_v4 };
    let dst = sa(sip, 8082);
    let mut s = stream();
    let err = in_netns(&lab.client, move || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let evs = collect_until(&mut s, &lab, Duration::from_secs(10), |e| {
        attempt_to(e, dst).is_some() && outcome_to(e, dst).is_some()
    })
    .await;
    assert_eq!(outcome_to(&evs, dst), Some(TcpOutcome::Refused));
    assert_same_connection(&evs, dst);
}

#[tokio::test]
async fn tcp_allowed_v4() {
    if !require_root() {
        return;
    }
    allowed(false).await;
}

#[tokio::test]
async fn tcp_allowed_v6() {
    if !require_root() {
        return;
    }
    allowed(true).await;
}

#[tokio::test]
async fn tcp_nft_dropped_v4() {
    if !require_root() {
        return;
    }
    dropped(false).await;
}

#[tokio::test]
async fn tcp_nft_dropped_v6() {
    if !require_root() {
        return;
    }
    dropped(true).await;
}

#[tokio::test]
async fn tcp_refused_v4() {
    if !require_root() {
        return;
    }
    refused(false).await;
}

#[tokio::test]
async fn tcp_refused_v6() {
    if !require_root() {
        return;
    }
    refused(true).await;
}
