//! Benchmarks of the eBPF event path (run as root: `cargo bench -p netverdict-ebpf`).
//!
//! 1. Drain + decode rate on one core: the synthetic generator program
//!    (`raw_tp/nv_synth`, run with BPF_PROG_TEST_RUN) fills a large ring buffer
//!    with real records; then one thread, pinned to one CPU, drains and decodes
//!    them through the `EventStream`. Also the decode-only rate from memory.
//! 2. Overhead: a loop of TCP connects on loopback (in a namespace created for
//!    the run), alternating phases without and with the probes attached (and
//!    drained); the ratio of connects/s with to without.
//!
//! Prints the two figures; `NV_BENCH_SECS` sets the length of each phase.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netverdict_ebpf::abi::{self, RawSkbEvent};
use netverdict_ebpf::{Config, Decoder, DropReasons, Probes, SYNTH_BATCH, StreamItem};

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Phases of the overhead run (odd: without, with, ..., without).
fn rounds() -> usize {
    std::env::var("NV_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21)
}

fn phase_secs() -> f64 {
    std::env::var("NV_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Decode-only rate (no kernel): records built in memory.
fn decode_only() -> f64 {
    let mut raw = RawSkbEvent::default();
    raw.hdr.kind = abi::KIND_UDP;
    raw.hdr.family = 2;
    raw.hdr.protocol = 17;
    raw.hdr.sport = 40000;
    raw.hdr.dport = 9;
    raw.packets = 1;
    let rec = abi::encode_skb(&raw, &[]);
    let dec = Decoder::new(Arc::new(DropReasons::default()));
    let n = 5_000_000u64;
    let t = Instant::now();
    let mut ok = 0u64;
    for _ in 0..n {
        if dec.decode(std::hint::black_box(&rec)).is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, n);
    n as f64 / t.elapsed().as_secs_f64()
}

/// Fills a 256 MiB ring with synthetic records, then drains and decodes them
/// on one pinned core. Returns (events, events/s).
fn drain_rate() -> (u64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = Config {
            ring_buffer_bytes: 256 << 20,
            tcp: false,
            drops: false,
            packets: false,
            ..Config::default()
        };
        let mut stream = Probes::load(&cfg)
            .expect("load probes")
            .into_stream()
            .unwrap();
        let generator = stream
            .probes_mut()
            .synthetic_generator()
            .expect("generator");
        // Each record takes 96 bytes + 8 of ring header: fill to ~90%.
        let runs = (256u64 << 20) * 9 / 10 / 104 / SYNTH_BATCH;
        for _ in 0..runs {
            generator.run().expect("BPF_PROG_TEST_RUN");
        }
        let lost = stream.losses().unwrap().ring_buffer_full.total();
        let expected = runs * SYNTH_BATCH - lost;
        pin_to_cpu(0);
        let t = Instant::now();
        let mut got = 0u64;
        while got < expected {
            match stream.next().await.unwrap() {
                StreamItem::Event(e) => {
                    std::hint::black_box(&e);
                    got += 1;
                }
                StreamItem::Lost { .. } => {}
            }
        }
        (got, got as f64 / t.elapsed().as_secs_f64())
    })
}

/// The probes of the overhead run: all, or those named in `NV_BENCH_PROBES`
/// (comma-separated `tcp`, `drops`, `packets`; `all`; anything else, e.g.
/// `none`: the consumer only); `close` adds a record at every TCP close with
/// the connection's counts (`Config::tcp_close_records`: what TCP byte and
/// packet counts would cost).
fn probe_config() -> Config {
    let close = std::env::var("NV_BENCH_PROBES").is_ok_and(|l| l.contains("close"));
    match std::env::var("NV_BENCH_PROBES") {
        Ok(list) if list != "all" && list != "all,close" => Config {
            tcp: list.contains("tcp"),
            drops: list.contains("drops"),
            packets: list.contains("packets"),
            tcp_close_records: close,
            ..Config::default()
        },
        _ => Config {
            tcp_close_records: close,
            ..Config::default()
        },
    }
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Runs `f` in a thread inside the namespace.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid fd; changes only this thread's namespace.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// Connects/s on loopback during `secs` (server closes first: no TIME_WAIT
/// on the client side, so ports do not run out).
/// CPU time (user + system) of the whole process so far, seconds.
fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the rusage we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One phase of the connect loop.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Connects per wall-clock second.
    per_sec: f64,
    /// Connects per CPU second of the whole process (client, server, and the
    /// consumer when attached; BPF programs run in their context): robust to
    /// other load on the machine.
    per_cpu_sec: f64,
}

fn connect_loop(ns: &str, port: u16, secs: f64) -> Phase {
    let dst = format!("127.0.0.1:{port}");
    let cpu0 = process_cpu_secs();
    let (n, wall) = in_netns(ns, move || {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut n = 0u64;
        let t = Instant::now();
        let mut buf = [0u8; 1];
        while Instant::now() < end {
            let mut c = TcpStream::connect(&dst).expect("connect");
            let _ = c.read(&mut buf);
            n += 1;
        }
        (n as f64, t.elapsed().as_secs_f64())
    })
    .join()
    .unwrap();
    let cpu = process_cpu_secs() - cpu0;
    Phase {
        per_sec: n / wall,
        per_cpu_sec: n / cpu.max(1e-9),
    }
}

fn overhead() -> (f64, f64, f64, f64) {
    let ns = Netns(format!("nvbench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip netns add failed (root and iproute2 needed)");
    Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    let listener = in_netns(&ns.0, || TcpListener::bind("127.0.0.1:0").unwrap())
        .join()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let secs = phase_secs();
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..rounds() {
        if round % 2 == 0 {
            off.push(connect_loop(&ns.0, port, secs));
            continue;
        }
        // Probes attached and drained by a consumer thread.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let consumer = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut s = Probes::load(&probe_config())
                        .expect("load")
                        .into_stream()
                        .unwrap();
                    ready_tx.send(()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(Ok(StreamItem::Event(_))) =
                            tokio::time::timeout(Duration::from_millis(50), s.next()).await
                        {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    s.losses().unwrap()
                })
            })
        };
        ready_rx.recv().unwrap();
        on.push(connect_loop(&ns.0, port, secs));
        stop.store(true, Ordering::Relaxed);
        let losses = consumer.join().unwrap();
        eprintln!(
            "  probes on: {} events drained, {} lost",
            seen.load(Ordering::Relaxed),
            losses.ring_buffer_full.total()
        );
    }
    // Medians: the machine is shared, and a burst of other work in one phase
    // should not decide the figure.
    let mean = |v: &[Phase], f: fn(&Phase) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        let m = x.len() / 2;
        if x.len() % 2 == 1 {
            x[m]
        } else {
            (x[m - 1] + x[m]) / 2.0
        }
    };
    let wall = |p: &Phase| p.per_sec;
    let cpu = |p: &Phase| p.per_cpu_sec;
    eprintln!(
        "  connects/s without: {:.0?}, with: {:.0?}",
        off.iter().map(wall).collect::<Vec<_>>(),
        on.iter().map(wall).collect::<Vec<_>>()
    );
    eprintln!(
        "  connects per CPU-second without: {:.0?}, with: {:.0?}",
        off.iter().map(cpu).collect::<Vec<_>>(),
        on.iter().map(cpu).collect::<Vec<_>>()
    );
    (
        mean(&off, wall),
        mean(&on, wall),
        mean(&on, wall) / mean(&off, wall),
        mean(&on, cpu) / mean(&off, cpu),
    )
}

fn main() {
    // `cargo test --benches` passes --bench-less args; only run under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: run with `cargo bench -p netverdict-ebpf` (as root)");
        return;
    }
    if let Err(e) = netverdict_ebpf::check_preconditions() {
        panic!("the eBPF benchmarks need root: {e}");
    }
    if std::env::var("NV_BENCH_OVERHEAD_ONLY").is_err() {
        let decode = decode_only();
        println!(
            "decode only (memory, one core): {:.2} M events/s",
            decode / 1e6
        );
        // On its own thread: the pinning must not leak into the overhead run.
        let (n, rate) = std::thread::spawn(drain_rate).join().unwrap();
        println!(
            "ring buffer drain + decode (one core, {n} synthetic events): {:.2} M events/s",
            rate / 1e6
        );
    }
    let (off, on, ratio, cpu_ratio) = overhead();
    println!(
        "TCP connect loop on loopback (medians): {off:.0}/s without probes, {on:.0}/s with: \
         throughput ratio {ratio:.3}; per CPU-second ratio {cpu_ratio:.3}"
    );
}
