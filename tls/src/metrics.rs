//! The TLS counters of a server as Prometheus metrics: a prometheus-client
//! [`Collector`] reading [`TlsStats`] at each scrape, registered by the API
//! server and the collector under their own prefixes (`*_tls_*`); and the
//! accept loop's [`ConnectionCounters`] the same way.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use std::sync::atomic::Ordering;

use crate::server::{ConnectionCounters, TlsStats, TlsStatsSnapshot};

/// Encodes a server's [`TlsStats`] on each scrape.
#[derive(Debug)]
pub struct TlsCollector {
    stats: Arc<TlsStats>,
}

impl TlsCollector {
    /// A collector reading `stats`.
    pub fn new(stats: Arc<TlsStats>) -> Self {
        TlsCollector { stats }
    }
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_stats(&mut encoder, "", self.stats.snapshot())
    }
}

/// Encodes `stats` as counters named `{prefix}tls_*` (for a collector that
/// gathers its own snapshot at each scrape).
pub fn encode_stats(
    encoder: &mut DescriptorEncoder,
    prefix: &str,
    s: TlsStatsSnapshot,
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        ("tls_handshakes", "TLS handshakes completed", s.handshakes),
        (
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (plaintext to the TLS port, no or an untrusted client certificate)",
            s.handshake_failures,
        ),
        (
            "tls_reloads",
            "Times changed certificate files were loaded",
            s.reloads,
        ),
        (
            "tls_reload_failures",
            "Times changed certificate files could not be used (the previous ones stayed)",
            s.reload_failures,
        ),
    ] {
        let counter = ConstCounter::new(value);
        let name = format!("{prefix}{name}");
        let metric = encoder.encode_descriptor(&name, help, None, counter.metric_type())?;
        counter.encode(metric)?;
    }
    Ok(())
}

/// Encodes a server's [`ConnectionCounters`] on each scrape, as
/// `accept_errors_total` and `preface_timeouts_total`.
#[derive(Debug)]
pub struct ConnectionCollector {
    counters: Arc<ConnectionCounters>,
}

impl ConnectionCollector {
    /// A collector reading `counters`.
    pub fn new(counters: Arc<ConnectionCounters>) -> Self {
        ConnectionCollector { counters }
    }
}

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        for (name, help, value) in [
            (
                "accept_errors",
                "Connections the gRPC server could not accept (out of file descriptors...); it pauses after each, longer while they keep failing",
                c.accept_errors.load(Ordering::Relaxed),
            ),
            (
                "preface_timeouts",
                "gRPC connections closed for not sending the HTTP/2 preface within 10 s of connecting (or of their TLS handshake)",
                c.preface_timeouts.load(Ordering::Relaxed),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
