//! `sluice-bench scale`: the real `sluice-proxy` binary, standalone (`--manifests-dir`), in
//! the connection bed's node namespace, at several cluster sizes and for each mode: what an
//! operator would see. Per size and mode it measures
//!
//! - **cold sync**: the proxy's first sync (its own `kubeproxy_sync_proxy_rules_duration`),
//!   and the wall time from the process start until that sync is done (parse included);
//! - **one change**: one endpoint of one Service changed (its manifest rewritten), the
//!   partial sync's duration as the proxy reports it, median;
//! - **RSS** (`VmRSS`) after the changes, and the peak (`VmHWM`) over the whole run;
//! - **idle CPU**: user + system time over a quiet window that includes one periodic full
//!   resync (the default 30 s `--sync-period`), as a share of one core;
//! - **ClusterIP / pod IP connection set-up ratio** through the node (as `nftables`), and
//!   the same for iperf3 TCP throughput;
//! - the 1-minute load average at the end of the run (the machine is shared).
//!
//! ebpf mode gets a child cgroup and a bpffs of its own ([`EbpfHome`]); its clients send from
//! inside that cgroup.
//!
//! It writes `scale.md` (a table) and one SVG plot per figure (plotters) into `--out`.
//! Nothing is asserted: the machine's load shows in the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use sluice_testbed::Process;

use crate::ebpf_home::EbpfHome;
use crate::nftables::{Bed, CLUSTER_CIDR, DIRECT_PORT, SERVER, TARGET_PORT};
use crate::sync::{service, slice, slice_of};

mod plot;

/// The modes this bench runs (ipvs mode needs a kernel with IPVS).
const SUPPORTED: [&str; 3] = ["nftables", "iptables", "ebpf"];

/// Flags of `sluice-bench scale`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Cluster sizes, in Services.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000,10000,25000"
    )]
    sizes: Vec<u32>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 3)]
    endpoints: u32,
    /// Proxy modes.
    #[arg(long, value_delimiter = ',', default_value = "nftables,iptables")]
    modes: Vec<String>,
    /// Largest size run in iptables mode: its full resync is still slow (see the `iptables`
    /// bench), so larger sizes would not fit the idle window.
    #[arg(long, default_value_t = 10_000)]
    iptables_max: u32,
    /// iptables variant of the iptables mode (`legacy`: iptables-nft takes minutes to
    /// restore 10,000 Services on this kernel).
    #[arg(long, default_value = "legacy")]
    iptables_variant: String,
    /// One-Service changes per run (median).
    #[arg(long, default_value_t = 5)]
    changes: u32,
    /// Quiet window for the idle CPU, seconds (one periodic full resync falls in it).
    #[arg(long, default_value_t = 30)]
    idle: u64,
    /// The proxy's `--sync-period`: `1s` with a long `--idle` makes the idle window a run
    /// of back-to-back full resyncs, for the RSS growth over them.
    #[arg(long, default_value = "30s")]
    sync_period: String,
    /// Sequential connections per destination for the connection set-up ratio.
    #[arg(long, default_value_t = 1_000)]
    connections: u32,
    /// iperf3 runs per destination (ClusterIP, pod IP), alternating; 0: no throughput figure.
    #[arg(long, default_value_t = 3)]
    iperf_rounds: u32,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 3)]
    iperf_seconds: u32,
    /// The `sluice-proxy` binary (default: next to this one).
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// Where the table and the plots go.
    #[arg(long, default_value = "scale-results")]
    out: PathBuf,
}

/// The figures of one mode at one size.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) mode: String,
    pub(crate) services: u32,
    pub(crate) cold_sync: Duration,
    pub(crate) cold_wall: Duration,
    pub(crate) one_change: Duration,
    pub(crate) rss_mib: f64,
    pub(crate) peak_mib: f64,
    pub(crate) idle_cpu: f64,
    /// Full resyncs in the idle window, and the RSS gained over it.
    pub(crate) idle_resyncs: f64,
    pub(crate) idle_rss_growth_mib: f64,
    pub(crate) conn_ratio: f64,
    /// Connections per second through the ClusterIP and to the pod IP.
    pub(crate) conn_rates: (f64, f64),
    /// iperf3 Gbit/s through the ClusterIP and to the pod IP (totals), and the median of the
    /// rounds' ratios; `None` without `--iperf-rounds`.
    pub(crate) iperf: Option<(f64, f64, f64)>,
    pub(crate) load: f64,
}

const METRICS: &str = "127.0.0.1:10249";
/// The Service whose manifest the changes rewrite (its own file).
const CHANGED: u32 = 1;

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let proxy = proxy_binary(args.proxy.as_deref())?;
    for mode in &args.modes {
        anyhow::ensure!(
            SUPPORTED.contains(&mode.as_str()),
            "--modes {mode}: scale runs {SUPPORTED:?} (ipvs needs a kernel with IPVS)"
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let runs: Vec<(String, u32)> = (args.modes.iter())
        .flat_map(|m| args.sizes.iter().map(move |s| (m.clone(), *s)))
        .filter(|(m, s)| m != "iptables" || *s <= args.iptables_max)
        .collect();
    let bar = ProgressBar::new(runs.len() as u64 * 5);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
    )?);
    let (mut points, mut failed) = (Vec::new(), Vec::new());
    for (mode, services) in runs {
        // A size a mode cannot program is a result too: noted, and the run goes on.
        let point = match measure(args, &proxy, &mode, services, &bar) {
            Ok(point) => point,
            Err(e) => {
                let line = format!("{mode} at {services} Services failed: {e:#}");
                match bar.is_hidden() {
                    true => println!("{line}"),
                    false => bar.println(&line),
                }
                failed.push(line);
                continue;
            }
        };
        let line = format!(
            "{mode:>9} {services:>6}: cold {:.0} ms, one change {:.2} ms, RSS {:.0} MiB (peak {:.0}), idle {:.2} %, conn ratio {:.2}, iperf3 ratio {}, load {:.1}",
            ms(point.cold_sync),
            ms(point.one_change),
            point.rss_mib,
            point.peak_mib,
            point.idle_cpu * 100.0,
            point.conn_ratio,
            point.iperf.map_or("-".into(), |i| format!("{:.2}", i.2)),
            point.load
        );
        // A hidden bar (no terminal) prints nothing, not even its lines.
        match bar.is_hidden() {
            true => println!("{line}"),
            false => bar.println(line),
        }
        points.push(point);
    }
    bar.finish_with_message("done");
    let mut table = table(args, &points);
    for line in failed {
        table += &format!("\n{line}\n");
    }
    std::fs::write(args.out.join("scale.md"), &table)?;
    print!("{table}");
    plot::all(&args.out, &points)?;
    println!("\nplots and table in {}", args.out.display());
    Ok(())
}

/// `--proxy`, else the `sluice-proxy` next to this binary.
pub(crate) fn proxy_binary(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    let proxy = match arg {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?.with_file_name("sluice-proxy"),
    };
    anyhow::ensure!(
        proxy.exists(),
        "{} not found (build it, or pass --proxy)",
        proxy.display()
    );
    Ok(proxy)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(
    args: &Args,
    proxy: &Path,
    mode: &str,
    services: u32,
    bar: &ProgressBar,
) -> anyhow::Result<Point> {
    bar.set_message(format!("{mode} {services}: writing manifests"));
    let dir = tempfile::tempdir()?;
    write_manifests(dir.path(), services, args.endpoints, None)?;
    bar.inc(1);
    bar.set_message(format!("{mode} {services}: cold sync"));
    let bed = Bed::new()?;
    let home = (mode == "ebpf").then(EbpfHome::new).transpose()?;
    let mut cmd = proxy_command(proxy, mode, dir.path(), &args.sync_period, home.as_ref());
    if mode == "iptables" {
        cmd.args(["--iptables-variant", &args.iptables_variant]);
    }
    let start = Instant::now();
    let mut process = bed.node.spawn(&cmd)?;
    let cold = wait_syncs(&bed, &mut process, 1.0, Duration::from_secs(600))?;
    let cold_wall = start.elapsed();
    bar.inc(1);
    bar.set_message(format!("{mode} {services}: one-Service changes"));
    let mut times = Vec::new();
    let mut last = cold;
    for k in 0..args.changes.max(1) {
        write_json(
            &dir.path().join("changed.json"),
            &list((service(CHANGED, 80), slice(CHANGED, args.endpoints, k + 1)))?,
        )?;
        let now = wait_syncs(
            &bed,
            &mut process,
            last.count + 1.0,
            Duration::from_secs(300),
        )?;
        times.push(Duration::from_secs_f64(
            (now.partial_sum - last.partial_sum).max(0.0),
        ));
        last = now;
    }
    times.sort();
    bar.inc(1);
    bar.set_message(format!("{mode} {services}: idle {} s", args.idle));
    let pid = process.pid();
    let (rss0, _) = rss(pid)?;
    let syncs0 = syncs(&bed)?.count;
    let cpu0 = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(args.idle));
    let cpu1 = cpu_ticks(pid)?;
    let idle_cpu = (cpu1 - cpu0) as f64 / ticks_per_second()? / args.idle as f64;
    let (rss_mib, peak_mib) = rss(pid)?;
    let idle_resyncs = syncs(&bed)?.count - syncs0;
    bar.inc(1);
    bar.set_message(format!("{mode} {services}: connection set-up"));
    let vip = SocketAddr::new(std::net::Ipv4Addr::from(0x0a60_0000).into(), 80);
    let joined = home.as_ref().map(EbpfHome::join).transpose()?;
    let rates = bed.rates(args.connections, vip)?;
    let iperf = (args.iperf_rounds > 0)
        .then(|| iperf_ratio(&bed, vip, args.iperf_rounds, args.iperf_seconds))
        .transpose()?;
    drop(joined);
    bar.inc(1);
    process.stop();
    Ok(Point {
        mode: mode.to_owned(),
        services,
        cold_sync: Duration::from_secs_f64(cold.full_sum),
        cold_wall,
        one_change: times[times.len() / 2],
        rss_mib,
        peak_mib,
        idle_cpu,
        idle_resyncs,
        idle_rss_growth_mib: rss_mib - rss0,
        conn_ratio: rates.ratio,
        conn_rates: (rates.vip, rates.pod),
        iperf,
        load: load_average()?,
    })
}

/// The proxy in `mode`, standalone on the manifests in `dir` (ebpf mode in `home`).
pub(crate) fn proxy_command(
    proxy: &Path,
    mode: &str,
    dir: &Path,
    sync_period: &str,
    home: Option<&EbpfHome>,
) -> Command {
    let mut cmd = Command::new(proxy);
    cmd.args(["--proxy-mode", mode, "--hostname-override", "node-0"])
        .args(["--cluster-cidr", &CLUSTER_CIDR.to_string()])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", METRICS])
        .args(["--min-sync-period", "100ms", "--sync-period", sync_period])
        .arg("--manifests-dir")
        .arg(dir)
        .env("RUST_LOG", "warn");
    if let Some(home) = home {
        cmd.args(home.proxy_flags());
    }
    cmd
}

/// iperf3 from the client pod through `vip` and straight to the server pod (its direct
/// port), in alternating runs: total Gbit/s of each and the median of the runs' ratios.
fn iperf_ratio(
    bed: &Bed,
    vip: SocketAddr,
    rounds: u32,
    seconds: u32,
) -> anyhow::Result<(f64, f64, f64)> {
    let pod = SocketAddr::new(SERVER.0.into(), DIRECT_PORT);
    let (mut sums, mut ratios) = ((0.0, 0.0), Vec::new());
    for round in 0..rounds {
        let mut g = [0.0; 2];
        for k in 0..2 {
            let which = (k + round as usize) % 2;
            let (port, target) = [(TARGET_PORT, vip), (DIRECT_PORT, pod)][which];
            g[which] = crate::iperf::gbits_to(&bed.server, port, &bed.client, target, seconds)?;
        }
        sums = (sums.0 + g[0], sums.1 + g[1]);
        ratios.push(g[0] / g[1].max(1e-9));
    }
    ratios.sort_by(f64::total_cmp);
    let n = f64::from(rounds);
    Ok((sums.0 / n, sums.1 / n, ratios[ratios.len() / 2]))
}

/// The 1-minute load average.
pub(crate) fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text.split_whitespace().next().context("loadavg")?.parse()?)
}

/// `services.json`: every Service but [`CHANGED`] (Service 0's one endpoint is the bed's
/// server; with `node_port` it is a NodePort Service); `changed.json`: Service [`CHANGED`],
/// which the changes rewrite.
pub(crate) fn write_manifests(
    dir: &Path,
    services: u32,
    endpoints: u32,
    node_port: Option<i32>,
) -> anyhow::Result<()> {
    let mut items = Vec::with_capacity(2 * services as usize);
    for i in (0..services).filter(|i| *i != CHANGED) {
        let mut svc = service(i, 80);
        if let (0, Some(port), Some(spec)) = (i, node_port, svc.spec.as_mut()) {
            spec.type_ = Some("NodePort".into());
            (spec.ports.iter_mut().flatten()).for_each(|p| p.node_port = Some(port));
        }
        items.push(serde_json::to_value(svc)?);
        let s = match i {
            0 => slice_of(0, std::iter::once(SERVER.0)),
            _ => slice(i, endpoints, 0),
        };
        items.push(serde_json::to_value(s)?);
    }
    write_json(&dir.join("services.json"), &list_of(items))?;
    write_json(
        &dir.join("changed.json"),
        &list((service(CHANGED, 80), slice(CHANGED, endpoints, 0)))?,
    )
}

fn list((svc, slice): (Service, EndpointSlice)) -> anyhow::Result<Value> {
    Ok(list_of(vec![
        serde_json::to_value(svc)?,
        serde_json::to_value(slice)?,
    ]))
}

fn list_of(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Writes then renames, as an editor or a ConfigMap update does.
fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The sync counters of the proxy's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Syncs {
    pub(crate) count: f64,
    /// Failed syncs as the mode's failure counters count them.
    failures: f64,
    full_sum: f64,
    partial_sum: f64,
}

/// Polls `/metrics` until at least `count` syncs are done.
pub(crate) fn wait_syncs(
    bed: &Bed,
    process: &mut Process,
    count: f64,
    timeout: Duration,
) -> anyhow::Result<Syncs> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.try_wait()? {
            anyhow::bail!("sluice-proxy exited ({status}): {}", process.log_tail(20));
        }
        if let Ok(s) = syncs(bed) {
            if s.count >= count {
                return Ok(s);
            }
            anyhow::ensure!(
                s.failures == 0.0,
                "the proxy's syncs fail ({} failures counted before sync {count} was done)",
                s.failures
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no sync {count} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn syncs(bed: &Bed) -> anyhow::Result<Syncs> {
    let addr: SocketAddr = METRICS.parse()?;
    let text = bed.node.run(|| {
        sluice_testbed::http::request(addr, "GET", "/metrics", None, Duration::from_secs(5))
    })??;
    let metrics: BTreeMap<&str, f64> = (text.body.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name, value.parse().ok()?))
        })
        .collect();
    let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    Ok(Syncs {
        count: get("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        failures: (metrics.iter())
            .filter(|(name, _)| name.contains("_failures"))
            .map(|(_, v)| v)
            .sum(),
        full_sum: get("kubeproxy_sync_full_proxy_rules_duration_seconds_sum"),
        partial_sum: get("kubeproxy_sync_partial_proxy_rules_duration_seconds_sum"),
    })
}

/// User + system clock ticks of `pid`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the command.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn ticks_per_second() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// `VmRSS` and `VmHWM` of `pid`, MiB.
fn rss(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        let line = (status.lines().find(|l| l.starts_with(key))).context("no {key}")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("value")?
            .parse::<f64>()?
            / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

fn table(args: &Args, points: &[Point]) -> String {
    let mut out = format!(
        "sluice-proxy (release) standalone, {} endpoints per Service; iptables mode: {} (up to {} Services)\n\n\
         | mode | Services | cold sync (proxy) ms | start → programmed ms | one change p50 ms | RSS MiB | peak RSS MiB | idle CPU % of a core | full resyncs idle / RSS growth MiB | conn/s ClusterIP / pod IP | iperf3 ClusterIP / pod IP (Gbit/s) | load avg |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        args.endpoints, args.iptables_variant, args.iptables_max
    );
    for p in points {
        out += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} / {:+.1} | {:.2} ({:.0} / {:.0}) | {} | {:.1} |\n",
            p.mode,
            p.services,
            ms(p.cold_sync),
            ms(p.cold_wall),
            ms(p.one_change),
            p.rss_mib,
            p.peak_mib,
            p.idle_cpu * 100.0,
            p.idle_resyncs,
            p.idle_rss_growth_mib,
            p.conn_ratio,
            p.conn_rates.0,
            p.conn_rates.1,
            p.iperf
                .map_or("-".into(), |(v, d, r)| format!("{r:.2} ({v:.1} / {d:.1})")),
            p.load
        );
    }
    out
}
