//! `sluice-bench ebpf`: the eBPF backend's control plane against the real kernel maps, at 100
//! and 10,000 Services: cold sync (first apply: render, diff, map writes), one Service change
//! (p50, p99), a full resync with nothing changed (read the maps back, diff, write nothing),
//! the maps' kernel memory and this process's RSS.
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
    /// Single-Service changes measured per run.
    #[arg(long, default_value_t = 2000)]
    changes: u32,
    /// Full resyncs (nothing changed) measured per run.
    #[arg(long, default_value_t = 5)]
    resyncs: u32,
    /// Write map entries one system call each (as before batching), for comparison.
    #[arg(long)]
    no_batch: bool,
}

/// Figures of one run.
struct Run {
    services: u32,
    cold: Duration,
    change_p50: Duration,
    change_p99: Duration,
    resync_p50: Duration,
    map_memory: u64,
    map_entries: usize,
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

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    KernelMaps::object().context("sluice-bench was built without the eBPF programs")?;
    sluice_proxy_ebpf::kernel::BATCH_WRITES
        .store(!args.no_batch, std::sync::atomic::Ordering::Relaxed);
    let bpffs = Bpffs::new()?;
    let small = measure(args, args.scale.small, &bpffs.0.path().join("small"))?;
    let large = measure(args, args.scale.services, &bpffs.0.path().join("large"))?;
    print(args, &[small, large], peak_rss_kib()?);
    Ok(())
}

fn measure(args: &Args, services: u32, pins: &Path) -> anyhow::Result<Run> {
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
    drop(snapshot);
    let mut times = Vec::with_capacity(args.changes as usize);
    for k in 0..args.changes {
        let i = k.wrapping_mul(7919) % services;
        let start = Instant::now();
        match k % 2 {
            0 => state.on_slice(&slice(i, args.scale.endpoints, k + 1))?,
            _ => state.on_service(&service(i, 1024 + (k % 60_000) as i32))?,
        };
        let (snapshot, changes) = state.sync();
        backend.apply(&snapshot, &changes)?;
        times.push(start.elapsed());
    }
    times.sort();
    let (snapshot, _) = state.sync();
    let mut resyncs = Vec::new();
    for _ in 0..args.resyncs.max(1) {
        let start = Instant::now();
        backend.apply_full(&snapshot, &Changes::default())?;
        resyncs.push(start.elapsed());
    }
    resyncs.sort();
    let programmed = backend.programmed();
    anyhow::ensure!(
        programmed.services.len() >= services as usize,
        "{} service entries for {services} Services",
        programmed.services.len()
    );
    Ok(Run {
        services,
        cold,
        change_p50: times[times.len() / 2],
        change_p99: times[times.len() * 99 / 100],
        resync_p50: resyncs[resyncs.len() / 2],
        map_memory: map_memory()?,
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

fn print(args: &Args, runs: &[Run], peak_kib: u64) {
    println!(
        "sluice-bench ebpf: the eBPF backend against the kernel maps (nothing attached), {} endpoints per Service, {} single-Service changes per run, map writes {}\n",
        args.scale.endpoints,
        args.changes,
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
        let ratio = large.change_p50.as_secs_f64() / small.change_p50.as_secs_f64().max(1e-9);
        println!(
            "\none change at {} vs {} Services (p50): {ratio:.2}x (goal <= 2); cold sync at {}: {} ms (goal <= 300 ms)",
            large.services,
            small.services,
            large.services,
            ms(large.cold)
        );
    }
    println!(
        "peak RSS (VmHWM) of this process (model + backend state + the benchmark's objects): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}
