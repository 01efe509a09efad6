//! `netverdict lab soak`: the chaos soak. A lab of many pods makes traffic
//! (connections, random-subdomain DNS, port scans) that a collector exports
//! to an API server storing it in a ClickHouse server of the soak's own; at
//! random moments (seeded, the seed printed) one of the three is killed with
//! SIGKILL and restarted. It prints flows acknowledged against flows stored
//! (each acknowledged flow exactly once), the collector's and the API
//! server's peak and per-minute resident memory, the flows counted as lost
//! and why, and the time each fault took to recover.
//!
//! ```text
//! lab (traffic threads) ──> collector ──Ingest──> API server ──> ClickHouse
//!                               │ acked-ids log          │ spool (while CH is down)
//!                               └──────────── compared at the end ─────────┘
//! ```
//!
//! `stages` runs and kills the processes, `traffic` makes the lab's traffic,
//! `check` measures memory and losses and compares the acknowledged ids with
//! ClickHouse. Everything (children, lab, ClickHouse, work directory) is
//! removed by guards, on error and Ctrl-C too.

mod check;
mod stages;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_lab::lab::STATE_ROOT;
use netverdict_lab::{DownOnDrop, Lab, LabOptions};
use serde::Serialize;
use serde_json::json;

use crate::output::{self, Output};
use check::{Losses, Memory, Stored};
use stages::{Layout, Stage, Stages, http_get, metric};
use traffic::Traffic;

/// Arguments of `netverdict lab soak`.
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// How long the traffic and the faults last, in minutes (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// How many faults [default: 2.5 a minute, at least 3: 25 in 10 minutes].
    #[arg(long)]
    faults: Option<usize>,
    /// The seed of the fault schedule and the traffic [default: from the clock;
    /// printed, so a run can be repeated].
    #[arg(long)]
    seed: Option<u64>,
    /// How many lab pods make and receive the traffic.
    #[arg(long, default_value_t = 24)]
    pods: usize,
    /// Traffic actions a second (a connection, a DNS query, or a scan of 12 ports).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long a fault may take to recover before it counts as not recovered.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
    /// The lab's name [default: soak-<process id>].
    #[arg(long)]
    name: Option<String>,
    /// Where ClickHouse's data, the spool, the logs and the acknowledged-id
    /// log go [default: a new directory under the temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (logs, ClickHouse data) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// How to print: text, or json (one document at the end).
    #[arg(short, long, value_parser = output::parser(output::PROSE), default_value = "text")]
    output: Output,
}

/// A small seeded generator (SplitMix64): the fault schedule and the traffic
/// are repeatable from the printed seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One planned fault: when (after the start) and which stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Planned {
    pub at: Duration,
    pub stage: Stage,
}

/// The fault schedule: `faults` moments spread at random over the middle of
/// `length` (after the first tenth, before the last tenth), each stage in
/// turn then shuffled, so that with 3 faults or more each stage is killed.
pub(crate) fn schedule(rng: &mut Rng, length: Duration, faults: usize) -> Vec<Planned> {
    let mut stages: Vec<Stage> = (0..faults).map(|i| Stage::ALL[i % 3]).collect();
    for i in (1..stages.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        stages.swap(i, j);
    }
    let mut times: Vec<Duration> = (0..faults)
        .map(|_| length.mul_f64(0.1 + 0.8 * rng.unit()))
        .collect();
    times.sort();
    times
        .into_iter()
        .zip(stages)
        .map(|(at, stage)| Planned { at, stage })
        .collect()
}

/// One fault as it happened.
#[derive(Debug, Serialize)]
struct Fault {
    number: usize,
    stage: &'static str,
    /// Seconds after the start when it was killed.
    at_seconds: f64,
    pid: Option<u32>,
    /// Seconds until the killed process was gone (reaped).
    gone_seconds: f64,
    /// Seconds until the restarted stage answered (healthy).
    healthy_seconds: Option<f64>,
    /// Seconds until the stage was healthy again and flows were acknowledged
    /// again; None when it did not recover in time.
    recovered_seconds: Option<f64>,
    /// For a collector: the flows it held unacknowledged when killed (open
    /// aggregation windows and the exporter's queue), lost with it by design
    /// (the collector keeps no spool) and never acknowledged.
    unacked_at_kill: Option<u64>,
    /// Whether the kill was planned (else the stage died by itself and was restarted).
    planned: bool,
}

/// Set by Ctrl-C or SIGTERM: every wait of the soak checks it.
static STOP: AtomicBool = AtomicBool::new(false);

fn interrupted() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted: stopping the soak and cleaning up");
    }
    Ok(())
}

/// Watches for Ctrl-C and SIGTERM on a thread of its own.
fn watch_signals() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            STOP.store(true, Ordering::Relaxed);
        });
    });
    Ok(())
}

/// Removes the work directory on drop (unless kept).
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What runs during the soak, and what it measured so far.
struct Soak {
    stages: Stages,
    started: Instant,
    memory: [Memory; 2],
    losses: [Losses; 2],
    faults: Vec<Fault>,
    text: bool,
    recovery_timeout: Duration,
}

/// Index of the collector and API server in the per-process measures.
fn measured(stage: Stage) -> Option<usize> {
    match stage {
        Stage::Collector => Some(0),
        Stage::Api => Some(1),
        Stage::ClickHouse => None,
    }
}

impl Soak {
    /// Samples memory and scrapes loss counters of the running processes.
    fn tick(&mut self) {
        let minute = (self.started.elapsed().as_secs() / 60) as usize;
        for stage in [Stage::Collector, Stage::Api] {
            let Some(i) = measured(stage) else { continue };
            if let Some(pid) = self.stages.pid(stage) {
                self.memory[i].sample(pid, minute);
            }
            self.scrape(stage);
        }
    }

    fn metrics_addr(&self, stage: Stage) -> std::net::SocketAddr {
        match stage {
            Stage::Collector => self.stages.layout.collector_metrics,
            _ => self.stages.layout.api_metrics,
        }
    }

    fn scrape(&mut self, stage: Stage) {
        let Some(i) = measured(stage) else { return };
        if let Ok((200, body)) =
            http_get(self.metrics_addr(stage), "/metrics", Duration::from_secs(2))
        {
            self.losses[i].observe(&body);
        }
    }

    /// Waits until `done` holds, ticking; false after `timeout`.
    fn wait(&mut self, timeout: Duration, mut done: impl FnMut(&mut Soak) -> bool) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut last_tick = Instant::now();
        loop {
            interrupted()?;
            if done(self) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                self.tick();
                last_tick = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a stage and waits until it is healthy, or fails with its log.
    fn start(&mut self, stage: Stage) -> Result<()> {
        self.stages.start(stage)?;
        let ok = self.wait(Duration::from_secs(120), |s| s.stages.healthy(stage))?;
        if !ok {
            bail!(
                "{} did not become healthy within 120 s; the end of {}:\n{}",
                stage.name(),
                self.stages.layout.log(stage).display(),
                self.stages.log_tail(stage)
            );
        }
        Ok(())
    }

    /// The API server's count of rows inserted into ClickHouse (this run).
    fn rows_inserted(&self) -> Option<f64> {
        let (_, body) = http_get(
            self.stages.layout.api_metrics,
            "/metrics",
            Duration::from_secs(2),
        )
        .ok()?;
        metric(&body, "netverdict_api_clickhouse_rows_inserted")
    }

    /// Kills `stage` with SIGKILL (`planned`), restarts it and measures the
    /// time until it is healthy again and flows are acknowledged again (for
    /// ClickHouse: and the API server inserts into it again).
    fn fault(&mut self, stage: Stage, planned: bool) -> Result<()> {
        let mut unacked_at_kill = None;
        if stage == Stage::Collector
            && let Ok((200, body)) = http_get(
                self.stages.layout.collector_metrics,
                "/metrics",
                Duration::from_secs(2),
            )
        {
            let held = metric(&body, "netverdict_collector_held_flows").unwrap_or(0.0)
                + metric(&body, "netverdict_collector_export_queue_depth").unwrap_or(0.0);
            unacked_at_kill = Some(held as u64);
        }
        if let Some(i) = measured(stage) {
            self.scrape(stage);
            self.losses[i].bank();
        }
        let at = self.started.elapsed();
        let killed = Instant::now();
        let pid = if planned {
            self.stages.kill9(stage)
        } else {
            None
        };
        let gone = killed.elapsed();
        self.stages.start(stage)?;
        let timeout = self.recovery_timeout;
        let mut recovered = self.wait(timeout, |s| s.stages.healthy(stage))?;
        let healthy = recovered.then(|| killed.elapsed().as_secs_f64());
        if recovered && stage == Stage::ClickHouse {
            let before = self.rows_inserted().unwrap_or(0.0);
            recovered = self.wait(timeout.saturating_sub(killed.elapsed()), |s| {
                s.rows_inserted().is_some_and(|now| now > before)
            })?;
        }
        if recovered {
            let acked = self.stages.layout.acked_bytes();
            recovered = self.wait(timeout.saturating_sub(killed.elapsed()), |s| {
                s.stages.layout.acked_bytes() > acked
            })?;
        }
        let fault = Fault {
            number: self.faults.len() + 1,
            stage: stage.name(),
            at_seconds: at.as_secs_f64(),
            pid,
            gone_seconds: gone.as_secs_f64(),
            healthy_seconds: healthy,
            recovered_seconds: recovered.then(|| killed.elapsed().as_secs_f64()),
            unacked_at_kill,
            planned,
        };
        if self.text {
            let what = if planned {
                format!("kill -9 {} (pid {})", stage.name(), pid.unwrap_or(0))
            } else {
                format!("{} died by itself, restarted", stage.name())
            };
            match fault.recovered_seconds {
                Some(s) => println!(
                    "  fault {:>2} at {:>6.1}s: {what}: recovered in {s:.2}s (gone {:.2}s, healthy {:.2}s)",
                    fault.number,
                    fault.at_seconds,
                    fault.gone_seconds,
                    fault.healthy_seconds.unwrap_or_default()
                ),
                None => println!(
                    "  fault {:>2} at {:>6.1}s: {what}: NOT recovered within {:?}",
                    fault.number, fault.at_seconds, timeout
                ),
            }
        }
        self.faults.push(fault);
        Ok(())
    }
}

/// Runs `netverdict lab soak`.
pub fn run(args: SoakArgs) -> Result<ExitCode> {
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        bail!("--minutes {}: must be a positive number", args.minutes);
    }
    if args.pods < 3 {
        bail!("--pods {}: the soak needs 3 pods at least", args.pods);
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate {}: must be a positive number", args.rate);
    }
    netverdict_lab::preflight(true).context(
        "the soak builds a lab and runs the collector: run it as root with iproute2, nftables and dnsmasq-base (scripts/install-deps.sh)",
    )?;
    watch_signals()?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    let faults = args
        .faults
        .unwrap_or_else(|| ((args.minutes * 2.5).ceil() as usize).max(3));
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("soak-{}", std::process::id()));
    let text = args.output == Output::Text;
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("netverdict-soak-{name}")),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _work_dir = WorkDir {
        path: dir.clone(),
        keep: args.keep,
    };
    let mut rng = Rng::new(seed);
    let plan = schedule(&mut rng, length, faults);
    if text {
        println!(
            "soak: {:.1} min, {faults} faults, seed {seed}, lab {name} ({} pods), work dir {}",
            args.minutes,
            args.pods,
            dir.display()
        );
    }

    // The lab first (removed by its guard), then the stages.
    let _lab_down = DownOnDrop {
        name: name.clone(),
        state_root: PathBuf::from(STATE_ROOT),
    };
    let options = LabOptions::new(&name, crate::lab::server_command()?);
    let lab = Lab::up_objects(netverdict_lab::generate::soak_cluster(args.pods), &options)
        .with_context(|| format!("building lab {name}"))?;
    let lab = Arc::new(lab);
    let layout = Layout::new(&dir, &name)?;
    layout.write_clickhouse_config()?;
    let mut soak = Soak {
        stages: Stages::new(layout),
        started: Instant::now(),
        memory: Default::default(),
        losses: Default::default(),
        faults: Vec::new(),
        text,
        recovery_timeout: args.recovery_timeout,
    };
    for stage in Stage::ALL {
        soak.start(stage)?;
    }
    let mut traffic = Traffic::start(lab.clone(), rng.next_u64(), args.rate, 4);
    let first_ack = soak.wait(Duration::from_secs(60), |s| {
        s.stages.layout.acked_bytes() > 0
    })?;
    if !first_ack {
        bail!(
            "no flow was acknowledged within 60 s of traffic; the end of the collector's log:\n{}",
            soak.stages.log_tail(Stage::Collector)
        );
    }
    if text {
        println!("pipeline up, first flows acknowledged: soaking");
    }

    soak.started = Instant::now();
    let mut next = 0;
    let mut last_tick = Instant::now();
    let mut last_minute = 0;
    while soak.started.elapsed() < length {
        interrupted()?;
        if last_tick.elapsed() >= Duration::from_secs(1) {
            soak.tick();
            last_tick = Instant::now();
        }
        for stage in Stage::ALL {
            if let Some(status) = soak.stages.exited(stage) {
                if text {
                    println!("  {} exited by itself ({status}): restarting", stage.name());
                }
                soak.fault(stage, false)?;
            }
        }
        if let Some(planned) = plan.get(next)
            && soak.started.elapsed() >= planned.at
        {
            soak.fault(planned.stage, true)?;
            next += 1;
        }
        let minute = (soak.started.elapsed().as_secs() / 60) as usize;
        if text && minute > last_minute {
            last_minute = minute;
            let kib = |m: &Memory| m.per_minute_kib.get(minute - 1).copied().unwrap_or(0);
            println!(
                "  minute {minute}: collector RSS {} MiB, API server RSS {} MiB, {} KiB of acked ids",
                kib(&soak.memory[0]) / 1024,
                kib(&soak.memory[1]) / 1024,
                soak.stages.layout.acked_bytes() / 1024
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Faults whose moment the recoveries pushed past the end still happen.
    while let Some(planned) = plan.get(next) {
        soak.fault(planned.stage, true)?;
        next += 1;
    }
    let soaked = soak.started.elapsed();
    traffic.stop();
    let counts = &traffic.counts;

    // Drain: the collector flushes what it holds and stops; the API server
    // replays its spool into ClickHouse, then stops.
    soak.scrape(Stage::Collector);
    soak.losses[0].bank();
    let collector_clean = soak
        .stages
        .terminate(Stage::Collector, Duration::from_secs(60));
    let drained = soak.wait(Duration::from_secs(180), |s| {
        http_get(
            s.stages.layout.api_metrics,
            "/metrics",
            Duration::from_secs(2),
        )
        .ok()
        .and_then(|(_, body)| metric(&body, "netverdict_api_clickhouse_spool_pending_rows"))
            == Some(0.0)
    })?;
    soak.scrape(Stage::Api);
    soak.losses[1].bank();
    let api_clean = soak.stages.terminate(Stage::Api, Duration::from_secs(60));
    let stored = check::stored(
        soak.stages.layout.clickhouse,
        &soak.stages.layout.database,
        &soak.stages.layout.acked_log,
    )?;
    soak.stages
        .terminate(Stage::ClickHouse, Duration::from_secs(30));
    drop(lab);
    netverdict_lab::down(&name, std::path::Path::new(STATE_ROOT))
        .with_context(|| format!("tearing lab {name} down"))?;

    let recovered = soak.faults.iter().all(|f| f.recovered_seconds.is_some());
    let planned_faults = soak.faults.iter().filter(|f| f.planned).count();
    let flat: Vec<Option<bool>> = soak.memory.iter().map(Memory::flat).collect();
    let passed = stored.lost == 0
        && stored.duplicated() == 0
        && recovered
        && drained
        && flat.iter().all(|f| *f != Some(false));
    let losses = |i: usize| soak.losses[i].totals();
    let report = json!({
        "seed": seed,
        "lab": name,
        "minutes": soaked.as_secs_f64() / 60.0,
        "faults_planned": faults,
        "faults": soak.faults,
        "all_recovered": recovered,
        "traffic": {
            "connections": counts.connections.load(Ordering::Relaxed),
            "dns_queries": counts.dns_queries.load(Ordering::Relaxed),
            "scanned_ports": counts.scanned_ports.load(Ordering::Relaxed),
            "errors": counts.errors.load(Ordering::Relaxed),
        },
        "stored": stored,
        "collector_unacked_at_kills": soak.faults.iter().filter_map(|f| f.unacked_at_kill).sum::<u64>(),
        "duplicated": stored.duplicated(),
        "spool_drained": drained,
        "clean_shutdown": {"collector": collector_clean, "api": api_clean},
        "memory": {"collector": soak.memory[0], "api": soak.memory[1]},
        "memory_flat_after_first_minute": {"collector": flat[0], "api": flat[1]},
        "losses": {"collector": losses(0), "api": losses(1)},
        "passed": passed,
    });
    if text {
        print_text(&soak, &stored, planned_faults, &report, passed);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(
    soak: &Soak,
    stored: &Stored,
    planned: usize,
    report: &serde_json::Value,
    passed: bool,
) {
    let recoveries: Vec<f64> = soak
        .faults
        .iter()
        .filter_map(|f| f.recovered_seconds)
        .collect();
    let max = recoveries.iter().copied().fold(0.0, f64::max);
    let mean = recoveries.iter().sum::<f64>() / recoveries.len().max(1) as f64;
    println!("== soak result (seed {})", report["seed"]);
    println!(
        "traffic: {} connections, {} DNS queries, {} ports scanned ({} probe errors)",
        report["traffic"]["connections"],
        report["traffic"]["dns_queries"],
        report["traffic"]["scanned_ports"],
        report["traffic"]["errors"]
    );
    for stage in Stage::ALL {
        let of: Vec<&Fault> = soak
            .faults
            .iter()
            .filter(|f| f.stage == stage.name())
            .collect();
        println!(
            "faults {:<10} {:>2} kill -9, recovered {:>2}, recovery max {:.2}s",
            stage.name(),
            of.len(),
            of.iter().filter(|f| f.recovered_seconds.is_some()).count(),
            of.iter()
                .filter_map(|f| f.recovered_seconds)
                .fold(0.0, f64::max)
        );
    }
    println!(
        "faults: {planned} planned, {} in all, all recovered: {}; recovery mean {mean:.2}s, max {max:.2}s",
        soak.faults.len(),
        report["all_recovered"]
    );
    println!(
        "flows: {} acknowledged ({} distinct, {} refused in acks), {} stored rows ({} distinct ids)",
        stored.acked,
        stored.acked_distinct,
        stored.acked_refused,
        stored.stored_rows,
        stored.stored_distinct
    );
    println!(
        "stored by kind: {} denied by policy, {} DNS ({} distinct names)",
        stored.stored_denied, stored.stored_dns, stored.stored_dns_names
    );
    println!(
        "exactly once: {} acknowledged flows lost ({} dead-lettered), {} duplicated (ids with >1 row: {}, rollup flows {} vs distinct ids {})",
        stored.lost,
        stored.lost_dead_lettered,
        stored.duplicated(),
        stored.duplicated_ids,
        stored.rollup_flows,
        stored.rollup_distinct_ids
    );
    if !stored.lost_examples.is_empty() {
        println!("  lost, e.g.: {}", stored.lost_examples.join(", "));
    }
    if !stored.duplicated_examples.is_empty() {
        println!(
            "  duplicated, e.g.: {}",
            stored.duplicated_examples.join(", ")
        );
    }
    let unacked: u64 = soak.faults.iter().filter_map(|f| f.unacked_at_kill).sum();
    println!(
        "  held unacknowledged by the collector when killed (lost with it, never acknowledged): {unacked}"
    );
    println!(
        "  stored but not in the acked log (acked as the collector was killed): {}; spool drained: {}",
        stored.stored_not_in_log, report["spool_drained"]
    );
    for (i, who) in ["collector", "api server"].iter().enumerate() {
        let m = &soak.memory[i];
        let minutes: Vec<String> = m
            .per_minute_kib
            .iter()
            .map(|k| format!("{}", k / 1024))
            .collect();
        println!(
            "memory {who}: peak RSS (VmHWM) {} MiB; max RSS per minute (MiB): {}; flat after minute 1: {}",
            m.peak_kib / 1024,
            minutes.join(" "),
            match m.flat() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a (too short)",
            }
        );
        let runs: Vec<String> = m
            .peak_per_run_kib
            .iter()
            .map(|k| format!("{}", k / 1024))
            .collect();
        println!("  peak RSS of each run (MiB): {}", runs.join(" "));
    }
    for (i, who) in ["collector", "api server"].iter().enumerate() {
        let totals = soak.losses[i].totals();
        if totals.is_empty() {
            println!("counted as lost by the {who}: nothing");
        } else {
            println!("counted as lost by the {who}:");
            for (series, value) in totals {
                println!("  {series} {value}");
            }
        }
    }
    println!("{}", if passed { "PASSED" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_seeded_sorted_inside_the_window_and_kills_every_stage() {
        let length = Duration::from_secs(600);
        let a = schedule(&mut Rng::new(7), length, 25);
        assert_eq!(a, schedule(&mut Rng::new(7), length, 25));
        assert_ne!(a, schedule(&mut Rng::new(8), length, 25));
        assert_eq!(a.len(), 25);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(
            a.iter()
                .all(|p| p.at >= length / 10 && p.at <= length * 9 / 10)
        );
        let three = schedule(&mut Rng::new(1), length, 3);
        let mut stages: Vec<Stage> = three.iter().map(|p| p.stage).collect();
        stages.sort();
        assert_eq!(stages, Stage::ALL);
    }
}
