//! eBPF probes, loader and decoded kernel events (issue: eBPF probes).
//!
//! The kernel side is C (`bpf/*.bpf.c`, CO-RE, built by `build.rs` with clang);
//! it writes raw records ([`abi`]) into one ring buffer. User space checks its
//! preconditions and loads the probes ([`Probes`]), then reads them as an async
//! [`EventStream`] of typed [`Event`]s, with loss reports ([`StreamItem::Lost`],
//! [`LossCounters`]). Drop reasons are named from the kernel's BTF ([`btf`]).
//!
//! What the collector uses:
//! - [`Probes::load`]`(&`[`Config`]`)` checks [`check_preconditions`] (errors
//!   name what is missing: [`LoadError`]) and attaches the probes;
//! - [`Probes::into_stream`] gives the [`EventStream`]: `next().await` yields
//!   [`StreamItem::Event`]`(`[`Event`]`)` or [`StreamItem::Lost`]; or
//!   [`EventStream::spawn`] moves it to a task feeding a bounded channel;
//! - [`EventStream::losses`] returns the [`LossCounters`] (ring buffer full per
//!   kind, decode errors per kind, non-IP drops, ignored drops, DNS not
//!   captured);
//! - [`Event::meta`] (time, netns inode, ifindex, direction), [`Event::tuple`].
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let mut events = netverdict_ebpf::Probes::load(&Default::default())?.into_stream()?;
//! while let Ok(item) = events.next().await {
//!     println!("{}", serde_json::to_string(&item)?);
//! }
//! # Ok(()) }
//! ```

/// The oldest Linux the probes load on: BPF ring buffers, `CAP_BPF` and
/// `CAP_PERFMON` came in 5.8 (tp_btf programs in 5.5). Drop reasons are named
/// from 5.17 on ([`DropReasons`]); before that, drops are seen without one.
/// README.md ("What it needs") says the same for users; this is the one place
/// in code.
pub const MIN_KERNEL: &str = "5.8";

pub mod abi;
pub mod btf;
mod clock;
pub mod dns;
pub mod event;
pub mod icmp;
pub mod kallsyms;
pub mod loader;
pub mod stream;

pub use btf::DropReasons;
pub use clock::monotonic_ns;
pub use dns::{DnsMessage, Rcode};
pub use event::{
    DecodeError, Decoder, EchoKind, Event, EventKind, FiveTuple, IcmpEcho, IpProtocol, Meta,
    TcpOutcome, TrafficDirection,
};
pub use kallsyms::KernelSymbols;
pub use loader::{
    Config, LoadError, Preconditions, Probes, SYNTH_BATCH, SynthGenerator, check_preconditions,
};
pub use stream::{EventStream, KindCounts, LossCause, LossCounters, StreamError, StreamItem};

/// The lab's tc drop program (`bpf/lab_tc_drop.bpf.c`), an ELF object for
/// `tc filter ... bpf direct-action obj FILE sec tc`: it drops the packets
/// marked [`LAB_DENY_MARK`] on the tc egress hook it is attached to.
pub const LAB_TC_DROP_OBJECT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lab_tc_drop.bpf.o"));

/// The packet mark the lab's policy chains set on denied packets in its tc
/// enforcement mode (`NV_LAB_DENY_MARK` of `bpf/lab_tc_drop.bpf.c`).
pub const LAB_DENY_MARK: u32 = 0x6e76_0001;
