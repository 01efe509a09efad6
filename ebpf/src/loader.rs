//! Checks what the probes need (privileges, kernel BTF), then loads the
//! embedded probe object with aya and attaches the programs. The result,
//! [`Probes`], is turned into an [`crate::EventStream`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::btf::{BtfError, DropReasons, VMLINUX_BTF};

/// The probe object built by build.rs from `bpf/netverdict.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netverdict.bpf.o"));

/// Name of the ring buffer map.
pub(crate) const EVENTS_MAP: &str = "NV_EVENTS";
/// Name of the per-CPU counters map (losses per kind, non-IP drops).
pub(crate) const STATS_MAP: &str = "NV_STATS";
/// Drop reasons not to emit.
const DROP_IGNORE_MAP: &str = "NV_DROP_IGNORE";
/// The probes' global: bytes waiting before the consumer is woken.
const WAKEUP_GLOBAL: &str = "nv_wakeup_bytes";
const TCP_CLOSE_RECORDS_GLOBAL: &str = "nv_tcp_close_records";
/// The synthetic event generator program (benchmark only).
pub(crate) const SYNTH_PROG: &str = "nv_synth";

/// Errors checking preconditions or loading the probes.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks capabilities the probes need.
    #[error(
        "missing capabilities: {}; run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN \
         (e.g. `sudo`, or `setcap cap_bpf,cap_perfmon,cap_net_admin+ep <binary>`)",
        missing.join(", ")
    )]
    Capabilities {
        /// Names of the missing capabilities.
        missing: Vec<&'static str>,
    },
    /// The kernel does not expose BTF: CO-RE and tp_btf programs cannot work.
    #[error(
        "kernel BTF not found at {path}: the node kernel must be Linux {} or later built \
         with CONFIG_DEBUG_INFO_BTF=y",
        crate::MIN_KERNEL
    )]
    BtfMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kernel's BTF could not be read for drop reason names.
    #[error("reading drop reasons from kernel BTF: {0}")]
    DropReasons(#[from] BtfError),
    /// aya could not parse the kernel's BTF.
    #[error("aya cannot parse kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    /// The configured ring buffer size is not usable.
    #[error("ring buffer size {0} bytes must be a power of two and a multiple of the page size")]
    RingSize(u32),
    /// The probe object could not be loaded (maps, relocations).
    #[error("loading the probe object: {0}")]
    Object(#[from] aya::EbpfError),
    /// The probe object lacks a map (build mismatch).
    #[error("the probe object has no map `{0}`")]
    MapMissing(&'static str),
    /// A map could not be opened or written.
    #[error("map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// The probe object lacks a program (build mismatch).
    #[error("the probe object has no program `{0}`")]
    ProgramMissing(&'static str),
    /// A program failed to load (verifier) or attach.
    #[error("program `{name}` on `{hook}`: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Hook it attaches to.
        hook: &'static str,
        /// aya's error (includes the verifier log).
        source: aya::programs::ProgramError,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, LoadError>;

/// Which probes to attach and how large the ring buffer is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// TCP attempts and outcomes (tp_btf/inet_sock_set_state,
    /// tp_btf/tcp_retransmit_skb).
    pub tcp: bool,
    /// Drops (tp_btf/kfree_skb).
    pub drops: bool,
    /// UDP flows and DNS messages leaving devices (tp_btf/net_dev_queue).
    pub packets: bool,
    /// Wake the consumer only when this many bytes wait in the ring buffer
    /// (0: on every event). Batching keeps the per-event cost low under load;
    /// the stream then also polls every `max_latency`. Capped at a quarter of
    /// the ring.
    pub wakeup_bytes: u32,
    /// Longest an event waits in the ring buffer when wake-ups are batched.
    pub max_latency: Duration,
    /// Drop reasons (names without `SKB_DROP_REASON_`) not to emit; they are
    /// counted in [`crate::LossCounters::ignored_drops`]. Names the running
    /// kernel does not have are skipped. Default: `QUEUE_PURGE` (a socket
    /// freeing its queues when closed, not a network drop).
    pub ignored_drop_reasons: Vec<String>,
    /// A measurement, for the benchmark only (off by default): one more
    /// record at every TCP close, with the connection's counts, to measure
    /// what byte and packet counts per TCP connection would cost. They decode
    /// as TCP outcomes `Failed` with errno -1 (so the consumer's cost is the
    /// real one): never set it outside the benchmark.
    pub tcp_close_records: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring_buffer_bytes: 8 << 20,
            tcp: true,
            drops: true,
            packets: true,
            wakeup_bytes: 32 << 10,
            max_latency: Duration::from_millis(20),
            ignored_drop_reasons: vec!["QUEUE_PURGE".to_string()],
            tcp_close_records: false,
        }
    }
}

/// What [`check_preconditions`] found.
#[derive(Debug, Clone)]
pub struct Preconditions {
    /// The kernel BTF file.
    pub btf: PathBuf,
    /// Where tracefs is mounted, if it is. The probes are all tp_btf and do
    /// not need it; it is reported for diagnosis only.
    pub tracefs: Option<PathBuf>,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Names the capabilities missing from an effective set (CAP_SYS_ADMIN stands
/// in for CAP_BPF and CAP_PERFMON, as in the kernel).
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

fn tracefs_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(dir))
    })
}

/// Checks privileges and kernel BTF; the error says exactly what is missing.
pub fn check_preconditions() -> Result<Preconditions> {
    let missing = missing_capabilities(effective_caps());
    if !missing.is_empty() {
        return Err(LoadError::Capabilities { missing });
    }
    let btf = PathBuf::from(VMLINUX_BTF);
    if !Path::new(&btf).exists() {
        return Err(LoadError::BtfMissing { path: btf });
    }
    Ok(Preconditions {
        btf,
        tracefs: tracefs_mount(),
    })
}

/// The loaded, attached probes. Dropping it detaches them.
#[derive(Debug)]
pub struct Probes {
    pub(crate) ebpf: Ebpf,
    pub(crate) reasons: Arc<DropReasons>,
    /// The kernel's function symbols, naming drop locations.
    pub(crate) symbols: Arc<crate::KernelSymbols>,
    /// How often the stream polls the ring (wake-ups batched), if it must.
    pub(crate) poll_interval: Option<Duration>,
}

impl Probes {
    /// Checks preconditions, loads the probe object and attaches the
    /// configured programs.
    pub fn load(config: &Config) -> Result<Probes> {
        check_preconditions()?;
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(LoadError::RingSize(size));
        }
        let reasons = Arc::new(DropReasons::from_kernel()?);
        let btf = Btf::from_sys_fs()?;
        let wakeup_bytes = u64::from(config.wakeup_bytes.min(size / 4));
        let close_records = u8::from(config.tcp_close_records);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .set_max_entries(EVENTS_MAP, size)
            .set_global(WAKEUP_GLOBAL, &wakeup_bytes, true)
            .set_global(TCP_CLOSE_RECORDS_GLOBAL, &close_records, true)
            .load(OBJECT)?;
        if !config.ignored_drop_reasons.is_empty() {
            let mut ignore: aya::maps::Array<_, u8> = ebpf
                .map_mut(DROP_IGNORE_MAP)
                .ok_or(LoadError::MapMissing(DROP_IGNORE_MAP))?
                .try_into()
                .map_err(|source| LoadError::Map {
                    name: DROP_IGNORE_MAP,
                    source,
                })?;
            for name in &config.ignored_drop_reasons {
                let Some(value) = reasons.value(name) else {
                    tracing::debug!(reason = %name, "ignored drop reason unknown to this kernel");
                    continue;
                };
                if value < crate::abi::DROP_IGNORE_LEN {
                    ignore.set(value, 1, 0).map_err(|source| LoadError::Map {
                        name: DROP_IGNORE_MAP,
                        source,
                    })?;
                }
            }
        }
        let programs: [(bool, &'static str, &'static str); 4] = [
            // Packet probes first: once the TCP probe defers an attempt, the
            // probes that emit it at its SYN are already there.
            (config.packets, "nv_dev_queue", "net_dev_queue"),
            (config.drops, "nv_kfree_skb", "kfree_skb"),
            (config.tcp, "nv_tcp_retransmit", "tcp_retransmit_skb"),
            (config.tcp, "nv_tcp_state", "inet_sock_set_state"),
        ];
        for (enabled, name, hook) in programs {
            if !enabled {
                continue;
            }
            let err = |source| LoadError::Program { name, hook, source };
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(LoadError::ProgramMissing(name))?
                .try_into()
                .map_err(err)?;
            prog.load(hook, &btf).map_err(err)?;
            prog.attach().map_err(err)?;
        }
        tracing::debug!(reasons = reasons.len(), "netverdict probes attached");
        let poll_interval = if wakeup_bytes == 0 {
            None
        } else {
            Some(config.max_latency.max(Duration::from_millis(1)))
        };
        let symbols = Arc::new(crate::KernelSymbols::from_kernel());
        tracing::debug!(symbols = symbols.len(), "kernel symbols read");
        Ok(Probes {
            ebpf,
            reasons,
            symbols,
            poll_interval,
        })
    }

    /// The kernel's drop reason names.
    pub fn drop_reasons(&self) -> &Arc<DropReasons> {
        &self.reasons
    }

    /// Loads (never attaches) the synthetic event generator used by the
    /// benchmark; each [`SynthGenerator::run`] writes 64 UDP events.
    pub fn synthetic_generator(&mut self) -> Result<SynthGenerator> {
        let name = SYNTH_PROG;
        let hook = "BPF_PROG_TEST_RUN";
        let err = |source| LoadError::Program { name, hook, source };
        let prog: &mut RawTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(LoadError::ProgramMissing(name))?
            .try_into()
            .map_err(err)?;
        if prog.fd().is_err() {
            prog.load().map_err(err)?;
        }
        let fd = prog
            .fd()
            .map_err(err)?
            .try_clone()
            .map_err(|e| LoadError::Program {
                name,
                hook,
                source: aya::programs::ProgramError::IOError(e),
            })?;
        Ok(SynthGenerator { fd })
    }
}

/// Runs the synthetic generator program (benchmarks).
#[derive(Debug)]
pub struct SynthGenerator {
    fd: aya::programs::ProgramFd,
}

/// Events written by one [`SynthGenerator::run`].
pub const SYNTH_BATCH: u64 = 64;

impl SynthGenerator {
    /// Runs the program once through BPF_PROG_TEST_RUN: 64 events.
    pub fn run(&self) -> std::io::Result<()> {
        use std::os::fd::{AsFd, AsRawFd};
        /// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
        #[repr(C)]
        #[derive(Default)]
        struct TestRunAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            pad: u32,
        }
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: bpf(2) reads `size` bytes of the attr we own and may write
        // back `retval`/`duration` into it; no pointers are passed (all 0).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(
            missing_capabilities(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert!(missing_capabilities(u64::MAX).is_empty());
        let sys_admin_net_admin = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(sys_admin_net_admin).is_empty());
        let e = LoadError::Capabilities {
            missing: missing_capabilities(1 << CAP_BPF),
        };
        assert!(e.to_string().contains("CAP_PERFMON, CAP_NET_ADMIN"), "{e}");
    }
}
