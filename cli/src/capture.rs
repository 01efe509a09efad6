//! `netverdict capture`: loads the eBPF probes and prints the decoded events
//! they see, one per line (a JSON object by default), until stopped or `--seconds` pass;
//! the tool for seeing what the probes see. Loss reports are printed as lines
//! too (`"kind":"lost"`), and a loss summary goes to stderr at the end.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use netverdict_ebpf::{Config, Event, Probes, StreamItem};

use crate::output::{self, Output};

/// Print the events the eBPF probes see (TCP attempts/outcomes, drops, UDP, DNS).
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Output format: jsonl (one JSON object per event) or compact (one short
    /// line per event).
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::EVENTS), default_value = "jsonl")]
    pub output: Output,
    /// Only events of this network namespace (inode, as in `ls -iL /run/netns/<name>`).
    #[arg(long)]
    pub netns: Option<u32>,
    /// Ring buffer size in KiB (power of two, at least 4).
    #[arg(long, default_value_t = 8192)]
    pub ring_kib: u32,
    /// Do not attach the UDP/DNS probe (net_dev_queue).
    #[arg(long)]
    pub no_packets: bool,
    /// Drop reasons not to print (counted only), e.g. `QUEUE_PURGE`; repeatable.
    /// Default: QUEUE_PURGE (sockets freeing their queues on close).
    #[arg(long = "ignore-reason", value_name = "REASON")]
    pub ignore_reasons: Vec<String>,
    /// Print drops of every reason (overrides --ignore-reason and the default).
    #[arg(long)]
    pub all_drops: bool,
}

/// Runs the capture on its own tokio runtime.
pub fn run(args: CaptureArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(capture(args))
}

async fn capture(args: CaptureArgs) -> anyhow::Result<()> {
    let defaults = Config::default();
    let ignored_drop_reasons = if args.all_drops {
        Vec::new()
    } else if args.ignore_reasons.is_empty() {
        defaults.ignored_drop_reasons.clone()
    } else {
        args.ignore_reasons.clone()
    };
    let config = Config {
        ignored_drop_reasons,
        ring_buffer_bytes: args
            .ring_kib
            .checked_mul(1024)
            .context("--ring-kib is too large")?,
        packets: !args.no_packets,
        ..defaults
    };
    let probes = Probes::load(&config).context("loading the eBPF probes")?;
    let mut events = probes.into_stream().context("opening the event stream")?;
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            r = events.next() => r.context("reading the probes' ring buffer")?,
            _ = &mut ctrl_c => break,
            _ = sleep_until(deadline) => break,
        };
        if let StreamItem::Event(e) = &item
            && args.netns.is_some_and(|n| n != e.meta().netns)
        {
            continue;
        }
        let line = match args.output {
            Output::Compact => text(&item),
            _ => serde_json::to_string(&item)?,
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing to stdout");
        }
    }
    let losses = events.losses().context("reading loss counters")?;
    eprintln!("losses: {}", serde_json::to_string(&losses)?);
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn text(item: &StreamItem) -> String {
    let e = match item {
        StreamItem::Lost { kind, count, cause } => {
            return format!("LOST {count} {kind:?} events ({cause:?})");
        }
        StreamItem::Event(e) => e,
    };
    let m = e.meta();
    let t = e.tuple();
    let head = format!(
        "{} netns={} if={} {:?} {:?} {} -> {}",
        humantime_short(m.time),
        m.netns,
        m.ifindex.unwrap_or(0),
        m.direction,
        t.protocol,
        t.src,
        t.dst
    );
    match e {
        Event::TcpAttempt { .. } => format!("{head} tcp_attempt"),
        Event::TcpOutcome {
            outcome,
            retransmits,
            errno,
            ..
        } => format!("{head} tcp_outcome={outcome:?} retransmits={retransmits} errno={errno}"),
        Event::Udp { packets, bytes, .. } => format!("{head} udp packets={packets} bytes={bytes}"),
        Event::Icmp { echo, len, .. } => format!(
            "{head} icmp {} id={} seq={} len={len}",
            echo_name(echo.kind),
            echo.id,
            echo.seq
        ),
        Event::Dns { message, .. } => format!(
            "{head} dns id={} {} {} type={} rcode={} answers={}",
            message.id,
            if message.response {
                "response"
            } else {
                "query"
            },
            message.name.as_deref().unwrap_or("?"),
            message.qtype.unwrap_or(0),
            message.rcode.name(),
            message.answers
        ),
        Event::Nat { original_dst, .. } => format!("{head} nat original_dst={original_dst}"),
        Event::Drop {
            reason,
            reason_code,
            location_symbol,
            dns,
            icmp,
            ..
        } => format!(
            "{head} drop reason={} at={}{}{}",
            reason
                .as_deref()
                .map_or_else(|| reason_code.to_string(), str::to_string),
            location_symbol.as_deref().unwrap_or("?"),
            dns.as_ref()
                .and_then(|d| d.name.as_deref())
                .map(|n| format!(" dns={n}"))
                .unwrap_or_default(),
            icmp.map(|i| format!(" icmp {} id={} seq={}", echo_name(i.kind), i.id, i.seq))
                .unwrap_or_default()
        ),
    }
}

/// An ICMP echo's half, as capture lines write it.
fn echo_name(kind: netverdict_ebpf::EchoKind) -> &'static str {
    match kind {
        netverdict_ebpf::EchoKind::Request => "echo_request",
        netverdict_ebpf::EchoKind::Reply => "echo_reply",
    }
}

/// Seconds since the epoch with microseconds (0 for earlier times).
fn humantime_short(t: std::time::SystemTime) -> String {
    let ns = netverdict_proto::time::UnixNanos::from_system(t)
        .as_i128()
        .max(0);
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1000)
}
