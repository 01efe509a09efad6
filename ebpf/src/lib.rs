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

pub mod abi;
pub mod btf;
mod clock;
pub mod dns;
pub mod event;
pub mod loader;
pub mod stream;

pub use btf::DropReasons;
pub use clock::monotonic_ns;
pub use dns::{DnsMessage, Rcode};
pub use event::{
    DecodeError, Decoder, Event, EventKind, FiveTuple, IpProtocol, Meta, TcpOutcome,
    TrafficDirection,
};
pub use loader::{
    Config, LoadError, Preconditions, Probes, SYNTH_BATCH, SynthGenerator, check_preconditions,
};
pub use stream::{EventStream, KindCounts, LossCause, LossCounters, StreamError, StreamItem};
