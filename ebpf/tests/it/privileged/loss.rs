//! Privileged test (root): a stalled consumer makes the ring buffer overflow;
//! the probes count what they could not submit and the stream reports it.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use netverdict_ebpf::{Config, LossCause, Probes, StreamItem, dns};
use netverdict_testing::require_root;

#[tokio::test]
async fn loss_counter_rises_when_consumer_stalls() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("loss");
    // 16 KiB: about 45 DNS events.
    let cfg = Config {
        ring_buffer_bytes: 16 << 10,
        ..Config::default()
    };
    let mut s = Probes::load(&cfg)
        .expect("load")
        .into_stream()
        .expect("stream");
    // The consumer is stalled: nothing reads `s` while 2000 DNS queries go out
    // (each one a DNS event, plus a NO_SOCKET drop in the server namespace).
    let server = sa(lab.server_v4, 53);
    in_netns(&lab.client, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..2000u16 {
            let _ = sock.send_to(&dns::build_query(i, "flood.nv.test", 1), server);
        }
    });
    let end = Instant::now() + Duration::from_secs(10);
    let mut lost = 0u64;
    while lost == 0 {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Ok(StreamItem::Lost {
                count,
                cause: LossCause::RingBufferFull,
                ..
            })) => lost = count,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("stream: {e}"),
            Err(_) => panic!("no Lost item within 10 s"),
        }
    }
    let counters = s.losses().expect("losses");
    assert!(counters.ring_buffer_full.total() >= lost, "{counters:?}");
    assert!(
        counters.ring_buffer_full.dns + counters.ring_buffer_full.drop > 0,
        "{counters:?}"
    );
}
