//! The event stream: drains the probes' ring buffer through tokio's `AsyncFd`,
//! decodes each record into an [`Event`], and turns rises of the loss counters
//! (ring buffer full in the kernel, undecodable records here) into
//! [`StreamItem::Lost`] items, so a consumer always knows what it missed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use serde::Serialize;
use tokio::io::unix::AsyncFd;

use crate::abi;
use crate::event::{Decoder, Event, EventKind};
use crate::loader::{EVENTS_MAP, Probes, STATS_MAP};

/// How often the kernel loss counters are read.
const LOSS_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Errors of the event stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A map the stream needs is not in the probe object.
    #[error("the probe object has no map `{0}`")]
    MapMissing(&'static str),
    /// A map could not be opened or read.
    #[error("map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// Registering or polling the ring buffer with tokio failed (no runtime?).
    #[error("polling the ring buffer: {0}")]
    Poll(#[from] std::io::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, StreamError>;

/// Why events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    /// The probe could not reserve space: the ring buffer was full (consumer
    /// too slow or stalled).
    RingBufferFull,
    /// The record could not be decoded (truncated or garbage).
    DecodeError,
}

/// One item of the stream. As JSON, an event is its own object (tagged by
/// `kind`); a loss is `{"kind":"lost","events":"dns","count":3,"cause":"ring_buffer_full"}`.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is an event: boxing it to shrink the rare `Lost` would cost an allocation per kernel event"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A decoded event.
    Event(Event),
    /// Events of `kind` were lost since the previous report.
    Lost {
        /// Which events.
        kind: EventKind,
        /// How many since the previous `Lost` of this kind and cause.
        count: u64,
        /// Why.
        cause: LossCause,
    },
}

impl Serialize for StreamItem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self {
            StreamItem::Event(e) => e.serialize(s),
            StreamItem::Lost { kind, count, cause } => {
                let mut st = s.serialize_struct("Lost", 4)?;
                st.serialize_field("kind", "lost")?;
                st.serialize_field("events", kind)?;
                st.serialize_field("count", count)?;
                st.serialize_field("cause", cause)?;
                st.end()
            }
        }
    }
}

/// Counts per event kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// TCP attempts/outcomes.
    pub tcp: u64,
    /// Drops.
    pub drop: u64,
    /// UDP flows.
    pub udp: u64,
    /// DNS messages.
    pub dns: u64,
    /// Translated destinations (NAT).
    pub nat: u64,
    /// ICMP echo requests and replies.
    pub icmp: u64,
    /// Records of unknown kind.
    pub unknown: u64,
}

impl KindCounts {
    /// The count of one kind.
    pub fn get(&self, k: EventKind) -> u64 {
        match k {
            EventKind::Tcp => self.tcp,
            EventKind::Drop => self.drop,
            EventKind::Udp => self.udp,
            EventKind::Dns => self.dns,
            EventKind::Nat => self.nat,
            EventKind::Icmp => self.icmp,
            EventKind::Unknown => self.unknown,
        }
    }

    fn slot(&mut self, k: EventKind) -> &mut u64 {
        match k {
            EventKind::Tcp => &mut self.tcp,
            EventKind::Drop => &mut self.drop,
            EventKind::Udp => &mut self.udp,
            EventKind::Dns => &mut self.dns,
            EventKind::Nat => &mut self.nat,
            EventKind::Icmp => &mut self.icmp,
            EventKind::Unknown => &mut self.unknown,
        }
    }

    /// Sum over kinds (saturating: the counts are the kernel's).
    pub fn total(&self) -> u64 {
        [
            self.drop,
            self.udp,
            self.dns,
            self.nat,
            self.icmp,
            self.unknown,
        ]
        .into_iter()
        .fold(self.tcp, u64::saturating_add)
    }
}

/// Everything that was not delivered as an event, since the stream started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossCounters {
    /// Events the probes could not submit because the ring buffer was full.
    pub ring_buffer_full: KindCounts,
    /// Records user space could not decode.
    pub decode_errors: KindCounts,
    /// Dropped packets that were not IP TCP/UDP/SCTP or an ICMP echo:
    /// counted, never emitted.
    pub non_ip_drops: u64,
    /// Drops not emitted because their reason is ignored
    /// ([`crate::Config::ignored_drop_reasons`]).
    pub ignored_drops: u64,
    /// DNS packets not emitted because their message was not in the packet's
    /// linear data (mostly DNS over TCP, whose payload sits in page fragments).
    pub dns_without_payload: u64,
    /// ICMP/ICMPv6 packets that left a device and were not echo requests or
    /// replies (errors, neighbour discovery): counted, never emitted.
    pub icmp_other: u64,
}

/// The decoded events of the probes, as an async stream (`next().await`).
/// Owns the probes: dropping it detaches them.
///
/// Events come in the order the probes wrote them, which is not always the
/// order of their times: an attempt reported with its outcome carries the
/// attempt's (earlier) time and may follow, say, the drop of its SYN. Order by
/// `Meta::mono_ns` where it matters.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    decoder: Decoder,
    counters: LossCounters,
    reported: LossCounters,
    pending: VecDeque<StreamItem>,
    next_loss_check: Instant,
    since_check: u32,
    probes: Probes,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or(StreamError::MapMissing(name))
}

impl Probes {
    /// Turns the probes into their event stream. Must be called inside a tokio
    /// runtime with IO and time enabled.
    pub fn into_stream(mut self) -> Result<EventStream> {
        let ring = RingBuf::try_from(take_map(&mut self.ebpf, EVENTS_MAP)?).map_err(|source| {
            StreamError::Map {
                name: EVENTS_MAP,
                source,
            }
        })?;
        let stats =
            PerCpuArray::try_from(take_map(&mut self.ebpf, STATS_MAP)?).map_err(|source| {
                StreamError::Map {
                    name: STATS_MAP,
                    source,
                }
            })?;
        // SAFETY: the RingBuf owns its map fd (MapData) and keeps it open and
        // unchanged until it is dropped, which only happens with the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| StreamError::Poll(e.into()))?;
        Ok(EventStream {
            ring,
            stats,
            decoder: Decoder::new(self.reasons.clone()).with_symbols(self.symbols.clone()),
            counters: LossCounters::default(),
            reported: LossCounters::default(),
            pending: VecDeque::new(),
            next_loss_check: Instant::now() + LOSS_CHECK_EVERY,
            since_check: 0,
            probes: self,
        })
    }
}

/// What taking one record from the ring gave.
#[allow(
    clippy::large_enum_variant,
    reason = "returned by value once per record: boxing the event would allocate per kernel event"
)]
enum Drained {
    /// A decoded event.
    Event(Event),
    /// A record that did not decode (counted).
    Undecodable,
    /// No record: the ring is empty.
    Empty,
}

impl EventStream {
    /// The next event, or a loss report. Waits for the probes; never returns
    /// `None`: the stream ends only when dropped. Cancel-safe (usable in
    /// `tokio::select!`): an item is taken from the ring only when returned.
    pub async fn next(&mut self) -> Result<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(item);
            }
            self.since_check += 1;
            if self.since_check >= 1024 {
                self.since_check = 0;
                if Instant::now() >= self.next_loss_check {
                    self.refresh_losses()?;
                    continue;
                }
            }
            match self.drain_one() {
                Drained::Event(ev) => return Ok(StreamItem::Event(ev)),
                // More records may be queued behind it: read on rather than
                // wait for a wake-up that already came (its loss is
                // reported with the next loss check).
                Drained::Undecodable => continue,
                Drained::Empty => {}
            }
            if !self.pending.is_empty() {
                continue;
            }
            // The ring is empty: report losses when due, else wait for data
            // (a wake-up, or the poll timer when the probes batch wake-ups).
            let now = Instant::now();
            if now >= self.next_loss_check {
                self.refresh_losses()?;
                if !self.pending.is_empty() {
                    continue;
                }
            }
            let mut wait = self.next_loss_check.saturating_duration_since(now);
            if let Some(poll) = self.probes.poll_interval {
                wait = wait.min(poll);
            }
            match tokio::time::timeout(wait, self.ring.readable_mut()).await {
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(e)) => return Err(StreamError::Poll(e)),
                Err(_elapsed) => {}
            }
        }
    }

    /// Decodes the next record, if any; an undecodable one is counted and
    /// skipped.
    fn drain_one(&mut self) -> Drained {
        let ring = self.ring.get_mut();
        let Some(record) = ring.next() else {
            return Drained::Empty;
        };
        match self.decoder.decode(&record) {
            Ok((ev, then)) => {
                if let Some(then) = then {
                    self.pending.push_front(StreamItem::Event(then));
                }
                Drained::Event(ev)
            }
            Err(e) => {
                let kind = EventKind::from_abi(abi::kind_of(&record));
                drop(record);
                let slot = self.counters.decode_errors.slot(kind);
                *slot = slot.saturating_add(1);
                tracing::debug!(?kind, error = %e, "undecodable probe record");
                Drained::Undecodable
            }
        }
    }

    /// Reads the kernel loss counters now and queues `Lost` items for any rise.
    fn refresh_losses(&mut self) -> Result<()> {
        self.next_loss_check = Instant::now() + LOSS_CHECK_EVERY;
        for kind in EventKind::ALL {
            let n = self.read_stat(u32::from(kind.abi()))?;
            *self.counters.ring_buffer_full.slot(kind) = n;
        }
        self.counters.non_ip_drops = self.read_stat(abi::STAT_NONIP_DROPS)?;
        self.counters.ignored_drops = self.read_stat(abi::STAT_IGNORED_DROPS)?;
        self.counters.dns_without_payload = self.read_stat(abi::STAT_DNS_NO_PAYLOAD)?;
        self.counters.icmp_other = self.read_stat(abi::STAT_ICMP_OTHER)?;
        for kind in EventKind::ALL.into_iter().chain([EventKind::Unknown]) {
            for (cause, now, seen) in [
                (
                    LossCause::RingBufferFull,
                    self.counters.ring_buffer_full.get(kind),
                    self.reported.ring_buffer_full.slot(kind),
                ),
                (
                    LossCause::DecodeError,
                    self.counters.decode_errors.get(kind),
                    self.reported.decode_errors.slot(kind),
                ),
            ] {
                if now > *seen {
                    self.pending.push_back(StreamItem::Lost {
                        kind,
                        count: now - *seen,
                        cause,
                    });
                    *seen = now;
                }
            }
        }
        Ok(())
    }

    fn read_stat(&self, index: u32) -> Result<u64> {
        let values = self
            .stats
            .get(&index, 0)
            .map_err(|source| StreamError::Map {
                name: STATS_MAP,
                source,
            })?;
        Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// The loss counters, with the kernel's read now.
    pub fn losses(&mut self) -> Result<LossCounters> {
        for kind in EventKind::ALL {
            let n = self.read_stat(u32::from(kind.abi()))?;
            *self.counters.ring_buffer_full.slot(kind) = n;
        }
        self.counters.non_ip_drops = self.read_stat(abi::STAT_NONIP_DROPS)?;
        self.counters.ignored_drops = self.read_stat(abi::STAT_IGNORED_DROPS)?;
        self.counters.dns_without_payload = self.read_stat(abi::STAT_DNS_NO_PAYLOAD)?;
        self.counters.icmp_other = self.read_stat(abi::STAT_ICMP_OTHER)?;
        Ok(self.counters)
    }

    /// Moves the stream to a tokio task that sends its items into a bounded
    /// channel (e.g. for `tokio_stream::wrappers::ReceiverStream`). A full
    /// channel stalls the task, so the ring buffer fills and the loss shows up
    /// as `Lost` items, as with a slow direct consumer. The task ends when the
    /// receiver is dropped or after sending an error.
    pub fn spawn(
        mut self,
        capacity: usize,
    ) -> (
        tokio::sync::mpsc::Receiver<Result<StreamItem>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = self.next() => item,
                    () = tx.closed() => return,
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        (rx, task)
    }

    /// The decoder in use (drop reason names, clock offset).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The probes (e.g. for [`Probes::synthetic_generator`]).
    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }
}
