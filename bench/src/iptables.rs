//! `sluice-bench iptables`: the iptables backend against the real kernel, for iptables-nft
//! and iptables-legacy, in network namespaces this run creates, in one run:
//!
//! 1. a cold full sync of 10,000 Services × 3 endpoints through the real backend
//!    (`IptablesBackend` running the iptables programs), next to a plain
//!    `iptables-restore --noflush` of the same ruleset text into another fresh namespace —
//!    what the kernel and the program cost anyway (goal: the proxy adds ≤ 10 %); both
//!    `--rounds` times, alternating, and the medians compared;
//! 2. one endpoint added to one Service at 10,000 and at 100 Services: the whole partial sync
//!    (feed, snapshot, render, one restore of the top-level chains and the Service's chains),
//!    median, and the large/small ratio;
//! 3. a periodic full resync with nothing changed (tables read back, only the top-level
//!    chains written);
//! 4. TCP connection set-up rate through a ClusterIP with 10,000 Services programmed vs the
//!    pod IP (kube-proxy's iptables mode walks `KUBE-SERVICES` linearly).
//!
//! The programs are wrapped in [`Timed`]; nothing is asserted about timings.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::IpNet;
use sluice_conntrack::NoConntrack;
use sluice_model::service::IpFamily;
use sluice_proxy_core::backend::{Backend as _, BackendOptions, LocalDetect};
use sluice_proxy_core::{ProxyState, TrackerConfig};
use sluice_proxy_iptables::exec::Writes;
use sluice_proxy_iptables::{Exec, ExecError, IptConfig, Iptables, IptablesBackend, Variant};
use sluice_testbed::NetNs;

use crate::nftables::{Bed, CLUSTER_CIDR, Rates, SERVER};
use crate::sync::{Scale, endpoint_ip, ms, service, slice, slice_of};

/// Flags of `sluice-bench iptables`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    scale: Scale,
    /// Single-Service changes measured per size.
    #[arg(long, default_value_t = 10)]
    changes: u32,
    /// Sequential TCP connections per destination.
    #[arg(long, default_value_t = 2_000)]
    connections: u32,
    /// Only this variant (nft or legacy); default both.
    #[arg(long)]
    variant: Option<String>,
    /// Cold full syncs and plain restores, alternating, each into a fresh namespace (the
    /// medians are compared: one restore of the same text swings by a third from run to run).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

/// Time spent in the iptables programs since the last [`Timed::take`].
#[derive(Clone, Debug, Default)]
struct ProgTime {
    restores: u32,
    restore: Duration,
    saves: u32,
    save: Duration,
    runs: u32,
    /// The last restore input.
    last_input: String,
}

/// An [`Iptables`] that clocks the one it wraps.
struct Timed<I> {
    inner: I,
    time: ProgTime,
}

impl<I> Timed<I> {
    fn take(&mut self) -> ProgTime {
        std::mem::take(&mut self.time)
    }
}

impl<I: Iptables> Iptables for Timed<I> {
    fn restore(&mut self, input: &str) -> Result<(), ExecError> {
        let start = Instant::now();
        let r = self.inner.restore(input);
        self.time.restore += start.elapsed();
        self.time.restores += 1;
        input.clone_into(&mut self.time.last_input);
        r
    }

    /// The full sync's streamed restore, clocked whole (the program's time includes the
    /// rendering it waited for), its input kept.
    fn restore_with(&mut self, write: &mut Writes<'_>) -> Result<(), ExecError> {
        let mut input = Vec::with_capacity(1 << 24);
        let start = Instant::now();
        let r = self.inner.restore_with(&mut |out: &mut dyn Write| {
            write(&mut Tee {
                out,
                copy: &mut input,
            })
        });
        self.time.restore += start.elapsed();
        self.time.restores += 1;
        self.time.last_input = String::from_utf8_lossy(&input).into_owned();
        r
    }

    fn save(&mut self, table: &str) -> Result<String, ExecError> {
        let start = Instant::now();
        let r = self.inner.save(table);
        self.time.save += start.elapsed();
        self.time.saves += 1;
        r
    }

    fn run(&mut self, args: &[&str]) -> Result<bool, ExecError> {
        self.time.runs += 1;
        self.inner.run(args)
    }
}

/// A writer that keeps a copy of what passes.
struct Tee<'a> {
    out: &'a mut dyn Write,
    copy: &'a mut Vec<u8>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

type Backend = IptablesBackend<Timed<Exec>, NoConntrack>;

fn backend(variant: Variant) -> Backend {
    let opts = BackendOptions {
        local: LocalDetect::Cidrs(vec![IpNet::V4(CLUSTER_CIDR)]),
        ..BackendOptions::default()
    };
    let exec = Timed {
        inner: Exec::new(IpFamily::V4, variant),
        time: ProgTime::default(),
    };
    IptablesBackend::new(
        [(exec, IptConfig::of(&opts, IpFamily::V4, true, false))],
        NoConntrack,
    )
}

fn programs(b: &mut Backend) -> &mut Timed<Exec> {
    b.iptables(IpFamily::V4).expect("the IPv4 programs")
}

/// One variant's figures.
struct Figures {
    variant: Variant,
    cold: Duration,
    cold_restore: Duration,
    cold_rules: usize,
    plain_restore: Duration,
    change_large: Duration,
    change_large_restore: Duration,
    change_small: Duration,
    resync: Duration,
    resync_save: Duration,
    rates: Rates,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scale.services > 0 && args.scale.small > 0 && args.changes > 0,
        "sizes must be positive"
    );
    let variants = match args.variant.as_deref() {
        None => vec![Variant::Nft, Variant::Legacy],
        Some(v) => vec![Variant::parse(v).context("--variant is nft or legacy")?],
    };
    println!(
        "sluice-bench iptables: {} and {} Services x {} endpoints through IptablesBackend (the \
         iptables programs), in fresh network namespaces; {} changes per size, {} TCP \
         connections per destination\n",
        args.scale.services, args.scale.small, args.scale.endpoints, args.changes, args.connections
    );
    let mut all = Vec::new();
    for variant in variants {
        all.push(measure(args, variant)?);
    }
    print(args, &all);
    Ok(())
}

fn feed(state: &mut ProxyState, services: u32, n: u32, traffic: Option<u32>) -> anyhow::Result<()> {
    for i in 0..services {
        state.on_service(&service(i, 80))?;
        let s = match traffic {
            Some(t) if t == i => slice_of(i, std::iter::once(SERVER.0)),
            _ => slice(i, n, 0),
        };
        state.on_slice(&s)?;
    }
    Ok(())
}

/// The median partial sync of one endpoint added to one Service, and its restore.
fn changes(
    args: &Args,
    state: &mut ProxyState,
    b: &mut Backend,
    services: u32,
    skip: u32,
) -> anyhow::Result<(Duration, Duration)> {
    let n = args.scale.endpoints;
    let mut runs = Vec::new();
    for k in 0..args.changes {
        let i = (k * 7919 + 1) % services;
        if i == skip {
            continue;
        }
        let addrs = (0..n)
            .map(|j| endpoint_ip(i, n, j))
            .chain(std::iter::once(Ipv4Addr::from(0x0ac8_0000 + k)));
        let s = slice_of(i, addrs);
        programs(b).take();
        let start = Instant::now();
        state.on_slice(&s)?;
        let (snap, ch) = state.sync();
        b.apply(&snap, &ch)?;
        let total = start.elapsed();
        let t = programs(b).take();
        anyhow::ensure!(!ch.full && t.restores == 1, "one partial restore");
        runs.push((total, t.restore));
    }
    runs.sort();
    Ok(runs[runs.len() / 2])
}

fn measure(args: &Args, variant: Variant) -> anyhow::Result<Figures> {
    let n = args.scale.endpoints;
    // Small size first, in its own namespace.
    let small_ns = NetNs::new("ipt-small")?;
    let change_small = small_ns.run(|| -> anyhow::Result<Duration> {
        let mut b = backend(variant);
        let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
        feed(&mut state, args.scale.small, n, None)?;
        let (snap, ch) = state.sync();
        b.apply(&snap, &ch)?;
        Ok(changes(args, &mut state, &mut b, args.scale.small, u32::MAX)?.0)
    })??;
    drop(small_ns);

    let bed = Bed::new()?;
    let traffic = args.scale.services / 2;
    let (
        cold,
        cold_restore,
        cold_rules,
        input,
        change_large,
        change_large_restore,
        resync,
        resync_save,
    ) = bed.node.run(|| -> anyhow::Result<_> {
        let mut b = backend(variant);
        let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
        feed(&mut state, args.scale.services, n, Some(traffic))?;
        let (snap, ch) = state.sync();
        programs(&mut b).take();
        let start = Instant::now();
        b.apply(&snap, &ch)?;
        let cold = start.elapsed();
        let t = programs(&mut b).take();
        let rules = t
            .last_input
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        drop(snap);
        let (change, change_restore) =
            changes(args, &mut state, &mut b, args.scale.services, traffic)?;
        state.request_full_sync();
        let (snap, ch) = state.sync();
        let start = Instant::now();
        b.apply(&snap, &ch)?;
        let resync = start.elapsed();
        let r = programs(&mut b).take();
        Ok((
            cold,
            t.restore,
            rules,
            t.last_input,
            change,
            change_restore,
            resync,
            r.save,
        ))
    })??;
    // The same ruleset text restored by the program alone, alternating with more cold syncs.
    let (mut colds, mut plains) = (vec![(cold, cold_restore)], Vec::new());
    for round in 0..args.rounds.max(1) {
        plains.push(plain_restore(variant, &input)?);
        if round + 1 < args.rounds {
            colds.push(cold_sync(args, variant)?);
        }
    }
    let secs = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    println!(
        "iptables-{}: cold syncs (their restores) {} s; plain restores {} s",
        variant.as_str(),
        (colds.iter())
            .map(|(c, r)| format!("{} ({})", secs(c), secs(r)))
            .collect::<Vec<_>>()
            .join(", "),
        plains.iter().map(secs).collect::<Vec<_>>().join(", ")
    );
    let ((cold, cold_restore), plain_restore) = (median(colds), median(plains));
    let vip = SocketAddr::new(Ipv4Addr::from(0x0a60_0000 + traffic).into(), 80);
    let rates = bed.rates(args.connections, vip)?;
    Ok(Figures {
        variant,
        cold,
        cold_restore,
        cold_rules,
        plain_restore,
        change_large,
        change_large_restore,
        change_small,
        resync,
        resync_save,
        rates,
    })
}

/// One `iptables-restore --noflush` of `input` into a fresh namespace.
fn plain_restore(variant: Variant, input: &str) -> anyhow::Result<Duration> {
    let ns = NetNs::new("ipt-plain")?;
    ns.run(|| -> anyhow::Result<Duration> {
        let mut exec = Exec::new(IpFamily::V4, variant);
        let start = Instant::now();
        exec.restore(input)?;
        Ok(start.elapsed())
    })?
}

/// One cold full sync into a fresh namespace, and its restore's part.
fn cold_sync(args: &Args, variant: Variant) -> anyhow::Result<(Duration, Duration)> {
    let ns = NetNs::new("ipt-cold")?;
    ns.run(|| -> anyhow::Result<(Duration, Duration)> {
        let mut b = backend(variant);
        let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
        feed(&mut state, args.scale.services, args.scale.endpoints, None)?;
        let (snap, ch) = state.sync();
        programs(&mut b).take();
        let start = Instant::now();
        b.apply(&snap, &ch)?;
        let cold = start.elapsed();
        Ok((cold, programs(&mut b).take().restore))
    })?
}

/// `a - b` in ms, negative when `b` is longer.
fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:.3}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

/// The median (the upper one of an even count).
fn median<T: Ord>(mut runs: Vec<T>) -> T {
    runs.sort();
    runs.swap_remove(runs.len() / 2)
}

fn print(args: &Args, all: &[Figures]) {
    let row = |what: &str, cells: Vec<String>, goal: &str| {
        let cells: String = cells.iter().map(|c| format!("{c:>14}")).collect();
        println!("{what:<56}{cells}   {goal}");
    };
    let each = |f: &dyn Fn(&Figures) -> String| all.iter().map(f).collect::<Vec<_>>();
    row(
        "",
        each(&|f| format!("iptables-{}", f.variant.as_str())),
        "",
    );
    row(
        &format!(
            "cold full sync of {} Services, ms (median of {})",
            args.scale.services,
            args.rounds.max(1)
        ),
        each(&|f| ms(f.cold)),
        "",
    );
    row(
        "  of which the restore program ran, ms",
        each(&|f| ms(f.cold_restore)),
        "",
    );
    row("  rules restored", each(&|f| f.cold_rules.to_string()), "");
    row(
        "plain iptables-restore of the same text, ms (median)",
        each(&|f| ms(f.plain_restore)),
        "",
    );
    row(
        "  full sync / plain restore",
        each(&|f| {
            format!(
                "{:.2}x",
                f.cold.as_secs_f64() / f.plain_restore.as_secs_f64().max(1e-9)
            )
        }),
        "<= 1.1",
    );
    // The full sync renders while the program reads (its rendering hidden in the program's
    // run), so what it adds is the sync minus the plain restore; what it spends outside the
    // program (reading the tables back, bookkeeping) is given apart. The restore's own time
    // varies run to run (iptables-nft's by tens of seconds for the same text): medians.
    row(
        "  the proxy's own part (sync - plain restore), ms",
        each(&|f| signed_ms(f.cold, f.plain_restore)),
        "",
    );
    row(
        "  the proxy's own part / plain restore",
        each(&|f| {
            let own = f.cold.as_secs_f64() - f.plain_restore.as_secs_f64();
            format!(
                "{:.1} %",
                100.0 * own / f.plain_restore.as_secs_f64().max(1e-9)
            )
        }),
        "<= 10 %",
    );
    row(
        "  outside the restore program (sync - its run), ms",
        each(&|f| ms(f.cold.saturating_sub(f.cold_restore))),
        "",
    );
    row(
        &format!(
            "one endpoint added at {} Services, p50 ms",
            args.scale.services
        ),
        each(&|f| ms(f.change_large)),
        "",
    );
    row(
        "  of which iptables-restore, ms",
        each(&|f| ms(f.change_large_restore)),
        "",
    );
    row(
        &format!(
            "one endpoint added at {} Services, p50 ms",
            args.scale.small
        ),
        each(&|f| ms(f.change_small)),
        "",
    );
    row(
        "  large / small",
        each(&|f| {
            format!(
                "{:.1}x",
                f.change_large.as_secs_f64() / f.change_small.as_secs_f64().max(1e-9)
            )
        }),
        "",
    );
    row(
        "periodic full resync, nothing changed, ms",
        each(&|f| ms(f.resync)),
        "",
    );
    row(
        "  of which iptables-save (3 tables), ms",
        each(&|f| ms(f.resync_save)),
        "",
    );
    row(
        "TCP connections/s through the ClusterIP",
        each(&|f| format!("{:.0}", f.rates.vip)),
        "",
    );
    row(
        "TCP connections/s straight to the pod IP",
        each(&|f| format!("{:.0}", f.rates.pod)),
        "",
    );
    row(
        "  ClusterIP / pod IP (median of the rounds)",
        each(&|f| format!("{:.3}", f.rates.ratio)),
        "",
    );
}
