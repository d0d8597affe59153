//! `sluice-bench ebpf`: the eBPF backend's control plane against the real kernel maps, at 100
//! and 10,000 Services: cold sync (first apply: render, diff, map writes), one Service change
//! (p50, p99), a full resync with nothing changed (read the maps back, diff, write nothing),
//! the maps' kernel memory and this process's RSS.
//!
//! Both sizes are loaded at once (two map sets) and their changes interleaved, in rounds: a
//! change takes microseconds, so load from elsewhere on a shared machine would otherwise land
//! on one size and not the other. The 10k/100 ratio is given over all samples and per round
//! (its spread).
//!
//! The programs are loaded into a private bpffs with **nothing attached** (no cgroup, no
//! interface: `kernel::MapsOnly`), so the run touches nothing of the host's dataplane. The
//! objects are the ones `sluice-bench sync` feeds (the same ProxyState path as the daemon).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice_model::service::IpFamily;
use sluice_proxy_core::backend::Backend as _;
use sluice_proxy_core::{Changes, ProxyState, TrackerConfig};
use sluice_proxy_ebpf::kernel::{KernelMaps, MapsOnly};
use sluice_proxy_ebpf::{EbpfBackend, RenderConfig};

use crate::sync::{Scale, ms, peak_rss_kib, service, slice};

/// Flags of `sluice-bench ebpf`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    scale: Scale,
    /// Single-Service changes measured per size, interleaved between the two sizes.
    #[arg(long, default_value_t = 4000)]
    changes: u32,
    /// Rounds the changes are split into (the 10k/100 ratio's spread is over the rounds).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Full resyncs (nothing changed) measured per size.
    #[arg(long, default_value_t = 5)]
    resyncs: u32,
    /// Write map entries one system call each (as before batching), for comparison.
    #[arg(long)]
    no_batch: bool,
}

/// Figures of one size.
struct Run {
    services: u32,
    cold: Duration,
    change_p50: Duration,
    change_p99: Duration,
    resync_p50: Duration,
    map_memory: u64,
    map_entries: usize,
}

/// The 10k/100 ratio of the change's p50: over all samples, and per round.
struct Ratio {
    overall: f64,
    rounds: Vec<f64>,
}

/// A bpffs on a temporary directory, unmounted (dropping the pins) on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()?
            .success();
        anyhow::ensure!(ok, "mount -t bpf {}", dir.path().display());
        Ok(Self(dir))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// One loaded map set with its model: a backend holding `services` Services.
struct Loaded {
    services: u32,
    endpoints: u32,
    backend: EbpfBackend<MapsOnly>,
    state: ProxyState,
    cold: Duration,
    map_memory: u64,
    changes: u32,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    KernelMaps::object().context("sluice-bench was built without the eBPF programs")?;
    anyhow::ensure!(
        args.changes >= args.rounds && args.rounds > 0,
        "--changes must be at least --rounds (> 0)"
    );
    sluice_proxy_ebpf::kernel::BATCH_WRITES
        .store(!args.no_batch, std::sync::atomic::Ordering::Relaxed);
    let bpffs = Bpffs::new()?;
    let mut small = load(args, args.scale.small, &bpffs.0.path().join("small"), 0)?;
    let mut large = load(
        args,
        args.scale.services,
        &bpffs.0.path().join("large"),
        small.map_memory,
    )?;
    // Both map sets loaded; the changes alternate between them (which goes first alternates
    // too), so load from elsewhere falls on both sizes alike.
    let per_round = args.changes / args.rounds;
    let (mut all, mut ratio) = (
        [Vec::new(), Vec::new()],
        Ratio {
            overall: 0.0,
            rounds: Vec::new(),
        },
    );
    for round in 0..args.rounds {
        let mut times = [Vec::new(), Vec::new()];
        for k in 0..per_round {
            for j in 0..2 {
                let which = (j + k as usize + round as usize) % 2;
                let set = if which == 0 { &mut small } else { &mut large };
                times[which].push(change(set)?);
            }
        }
        let [s, l] = times.each_mut().map(|t| {
            t.sort();
            t[t.len() / 2]
        });
        ratio
            .rounds
            .push(l.as_secs_f64() / s.as_secs_f64().max(1e-9));
        for (a, t) in all.iter_mut().zip(times) {
            a.extend(t);
        }
    }
    ratio.rounds.sort_by(f64::total_cmp);
    let [small_times, large_times] = &mut all;
    let runs = [
        finish(&mut small, small_times, args.resyncs)?,
        finish(&mut large, large_times, args.resyncs)?,
    ];
    ratio.overall = runs[1].change_p50.as_secs_f64() / runs[0].change_p50.as_secs_f64().max(1e-9);
    print(args, &runs, &ratio, peak_rss_kib()?);
    Ok(())
}

/// Loads a map set in `pins` and syncs `services` Services into it cold. `before`: the map
/// memory this process held before (the other set's).
fn load(args: &Args, services: u32, pins: &Path, before: u64) -> anyhow::Result<Loaded> {
    let mut backend = EbpfBackend::new(MapsOnly::load(pins)?, RenderConfig::default());
    let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
    for i in 0..services {
        state.on_service(&service(i, 80))?;
        state.on_slice(&slice(i, args.scale.endpoints, 0))?;
    }
    let (snapshot, changes) = state.sync();
    let start = Instant::now();
    backend.apply(&snapshot, &changes)?;
    let cold = start.elapsed();
    Ok(Loaded {
        services,
        endpoints: args.scale.endpoints,
        backend,
        state,
        cold,
        map_memory: map_memory()? - before,
        changes: 0,
    })
}

/// One Service change, the whole partial sync (feed, snapshot, apply): an endpoint-set
/// change and a Service spec change in turn.
fn change(set: &mut Loaded) -> anyhow::Result<Duration> {
    let k = set.changes;
    set.changes += 1;
    let i = k.wrapping_mul(7919) % set.services;
    let start = Instant::now();
    match k % 2 {
        0 => set.state.on_slice(&slice(i, set.endpoints, k + 1))?,
        _ => set
            .state
            .on_service(&service(i, 1024 + (k % 60_000) as i32))?,
    };
    let (snapshot, changes) = set.state.sync();
    set.backend.apply(&snapshot, &changes)?;
    Ok(start.elapsed())
}

/// The change percentiles of `times`, then full resyncs with nothing changed.
fn finish(set: &mut Loaded, times: &mut [Duration], resyncs: u32) -> anyhow::Result<Run> {
    times.sort();
    let (snapshot, _) = set.state.sync();
    let mut full = Vec::new();
    for _ in 0..resyncs.max(1) {
        let start = Instant::now();
        set.backend.apply_full(&snapshot, &Changes::default())?;
        full.push(start.elapsed());
    }
    full.sort();
    let programmed = set.backend.programmed();
    anyhow::ensure!(
        programmed.services.len() >= set.services as usize,
        "{} service entries for {} Services",
        programmed.services.len(),
        set.services
    );
    Ok(Run {
        services: set.services,
        cold: set.cold,
        change_p50: times[times.len() / 2],
        change_p99: times[times.len() * 99 / 100],
        resync_p50: full[full.len() / 2],
        map_memory: set.map_memory,
        map_entries: programmed.services.len() + programmed.slots.len(),
    })
}

/// The kernel memory (`memlock`) of every BPF map this process holds open (only the loaded
/// object's).
fn map_memory() -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        let memlock = text.lines().find_map(|l| l.strip_prefix("memlock:"));
        total += memlock
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn print(args: &Args, runs: &[Run], ratio: &Ratio, peak_kib: u64) {
    println!(
        "sluice-bench ebpf: the eBPF backend against the kernel maps (nothing attached), {} endpoints per Service, {} single-Service changes per size (interleaved between the sizes, in {} rounds), map writes {}\n",
        args.scale.endpoints,
        args.changes,
        args.rounds,
        if args.no_batch {
            "one by one"
        } else {
            "batched"
        }
    );
    println!(
        "{:>9} {:>12} {:>14} {:>14} {:>16} {:>12} {:>14}",
        "services",
        "cold ms",
        "change p50 µs",
        "change p99 µs",
        "full resync ms",
        "entries",
        "map mem MiB"
    );
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    for r in runs {
        println!(
            "{:>9} {:>12} {:>14} {:>14} {:>16} {:>12} {:>14.1}",
            r.services,
            ms(r.cold),
            us(r.change_p50),
            us(r.change_p99),
            ms(r.resync_p50),
            r.map_entries,
            r.map_memory as f64 / (1024.0 * 1024.0)
        );
    }
    if let [small, large] = runs {
        let r = &ratio.rounds;
        println!(
            "\none change at {} vs {} Services (p50 of all {} each, interleaved): {:.2}x (goal <= 2); \
             per-round ratio over {} rounds: median {:.2}, min {:.2}, max {:.2}, 10th-90th pct {:.2}-{:.2}\n\
             cold sync at {}: {} ms (goal <= 300 ms); load average {:.1}",
            large.services,
            small.services,
            args.changes / args.rounds * args.rounds,
            ratio.overall,
            r.len(),
            r[r.len() / 2],
            r[0],
            r[r.len() - 1],
            r[r.len() / 10],
            r[r.len() * 9 / 10],
            large.services,
            ms(large.cold),
            crate::scale::load_average().unwrap_or(f64::NAN)
        );
    }
    println!(
        "peak RSS (VmHWM) of this process (model + backend state + the benchmark's objects): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}
