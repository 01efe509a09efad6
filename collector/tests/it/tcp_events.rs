//! Decoded kernel events of one TCP connection, as the probes report them from
//! the initiator's socket (egress), for tests that replay them through the
//! pipeline: the attempt, then its outcome.

use std::net::SocketAddr;
use std::time::SystemTime;

use netverdict_ebpf::{
    Event, FiveTuple, IpProtocol, Meta, StreamItem, TcpOutcome, TrafficDirection,
};

fn meta(time: SystemTime, mono_ns: u64) -> Meta {
    Meta {
        time,
        mono_ns,
        netns: 4026532000,
        ifindex: None,
        direction: TrafficDirection::Egress,
    }
}

fn tuple(src: SocketAddr, dst: SocketAddr) -> FiveTuple {
    FiveTuple {
        protocol: IpProtocol::Tcp,
        src,
        dst,
    }
}

/// Socket `sock_id` connects from `src` to `dst` at `time`.
pub fn attempt(time: SystemTime, sock_id: u64, src: SocketAddr, dst: SocketAddr) -> StreamItem {
    StreamItem::Event(Event::TcpAttempt {
        meta: meta(time, sock_id * 1000),
        tuple: tuple(src, dst),
        sock_id,
    })
}

/// The attempt of socket `sock_id` ends with `outcome` at `time`.
pub fn outcome(
    time: SystemTime,
    sock_id: u64,
    src: SocketAddr,
    dst: SocketAddr,
    outcome: TcpOutcome,
) -> StreamItem {
    let (retransmits, new_state) = match outcome {
        TcpOutcome::Established => (0, 1),
        _ => (2, 7),
    };
    StreamItem::Event(Event::TcpOutcome {
        meta: meta(time, sock_id * 1000 + 1),
        tuple: tuple(src, dst),
        sock_id,
        outcome,
        errno: 0,
        retransmits,
        old_state: 2,
        new_state,
    })
}
