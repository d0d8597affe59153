//! `sluice-lab soak --duration D`: a two-node lab under churn for D while clients keep
//! talking to Services whose endpoints are ready, to find what only time and repetition show —
//! a request lost while endpoints roll, memory or descriptors that grow, addresses, veths,
//! conntrack entries or rules left behind.
//!
//! Two stable Services (`soak-a`, `soak-b`: TCP 80 and UDP 53, two pods each) are hammered by
//! client threads in the lab's own pods; every failed request to them is a failure of the
//! soak. Meanwhile the churn rolls their pods (a new pod ready before an old one leaves, see
//! [`churn`]), adds and removes churn pods through CNI, and creates and deletes churn
//! Services. The daemons' memory and descriptors are sampled throughout. At the end every
//! soak object is removed and the nodes must be exactly as before the soak. The exit code is
//! 0 only when nothing failed, grew or leaked.

mod churn;
mod clients;
mod leaks;
mod pods;
mod sample;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_testbed::NetNs;

use self::churn::Churn;
use self::clients::{Clients, Target};
use self::sample::Samples;
use crate::daemons::{Binaries, SubnetManager};
use crate::labdir::LabDir;
use crate::up::{Lab, Options};

/// How often the daemons are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Client threads per client pod.
const THREADS_PER_POD: usize = 2;
/// How long the nodes may take to return to their state before the soak.
const SETTLE: Duration = Duration::from_secs(30);
/// How long the proxies may take to delete the UDP flows of the Services deleted at the end.
const FLOWS_DELETED: Duration = Duration::from_secs(10);

/// `soak`'s settings.
pub(crate) struct SoakOptions {
    pub(crate) name: String,
    pub(crate) proxy_mode: String,
    pub(crate) duration: Duration,
    /// Copy the lab's logs here before removing it.
    pub(crate) keep_logs: Option<std::path::PathBuf>,
}

/// Builds the lab, soaks it, prints the figures, removes it.
pub(crate) fn run(dir: LabDir, bins: Binaries, opts: SoakOptions) -> ExitCode {
    println!(
        "Sluice lab soak: 2 nodes, sluice-proxy ({}), churn for {:?}\n",
        opts.proxy_mode, opts.duration
    );
    if dir.has_state() && !crate::down::owner_alive(&dir) {
        // A soak lab never outlives its soak: this one was killed.
        let _ = crate::down::run(&dir);
    }
    let options = Options {
        name: opts.name.clone(),
        nodes: 2,
        pods_per_node: 1,
        proxy_mode: opts.proxy_mode.clone(),
        subnet_manager: SubnetManager::Kube,
        image: None,
        manifest: crate::image::manifest::default_path(),
    };
    let mut lab = match Lab::begin(dir.clone(), bins, options) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("soak: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = up(&mut lab).and_then(|()| soak(&mut lab, opts.duration));
    if let Some(to) = &opts.keep_logs
        && let Err(e) = copy_logs(&dir, to)
    {
        eprintln!("soak: keeping the logs in {}: {e:#}", to.display());
    }
    let removed = crate::down::run(&dir);
    lab.reap_children();
    match (outcome, removed) {
        (Ok(true), Ok(_)) => {
            println!("\nsoak passed");
            ExitCode::SUCCESS
        }
        (Ok(false), _) => {
            println!("\nsoak FAILED");
            ExitCode::FAILURE
        }
        (Err(e), _) | (Ok(true), Err(e)) => {
            println!("\nsoak FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Copies every log of the lab into `to`.
fn copy_logs(dir: &LabDir, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(dir.path("logs"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn up(lab: &mut Lab) -> anyhow::Result<()> {
    for (what, step) in lab.steps() {
        let start = Instant::now();
        let detail = step(lab).with_context(|| what.to_owned())?;
        println!(
            "{what:<44} {:>7.0} ms  {detail}",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// The soak proper; `Ok(false)` when a check failed (the report says which).
fn soak(lab: &mut Lab, duration: Duration) -> anyhow::Result<bool> {
    let before = leaks::snapshot(lab)?;
    let client_pods: Vec<(NetNs, String)> = (lab.state.pods.iter())
        .map(|p| NetNs::open(&p.netns).map(|ns| (ns, p.name.clone())))
        .collect::<Result<_, _>>()?;
    let prober = client_pods.first().context("no client pod")?.0.clone();
    let t0 = Instant::now();
    let mut churn = Churn::new(lab, prober, t0);
    let mut targets = Vec::new();
    for group in ["a", "b"] {
        let ip = churn.stable_service(lab, group, 2)?;
        targets.push(Target {
            service: format!("soak-{group}"),
            ip,
            prefix: format!("s-{group}-"),
        });
    }
    let clients = Clients::start(&client_pods, THREADS_PER_POD, &targets, t0)?;
    let mut samples = Samples::default();
    let start = Instant::now();
    let mut last_sample: Option<Instant> = None;
    let mut step = 0_u64;
    let churned = loop {
        if last_sample.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
            samples.take(&lab.daemon_pids());
            last_sample = Some(Instant::now());
        }
        if start.elapsed() >= duration {
            break Ok(());
        }
        let result = match step % 3 {
            0 => churn.roll(lab, if step.is_multiple_of(2) { "a" } else { "b" }),
            1 => churn.churn_pod(lab),
            _ => churn.churn_service(lab),
        };
        step += 1;
        if let Err(e) = result {
            break Err(e);
        }
    };
    samples.take(&lab.daemon_pids());
    let tally = clients.stop();
    let elapsed = start.elapsed();
    churned.context("churn")?;
    churn.clean_up(lab)?;
    let after = settle(lab, &before)?;
    let (live, closing) = deleted_flows_gone(lab, &churn)?;
    let report = Report {
        elapsed,
        tally: &tally,
        churn: &churn,
        samples: &samples,
        leaks: leaks::leaks(&before, &after),
        conntrack_live: live,
        conntrack_closing: closing,
    };
    Ok(report.print())
}

/// The conntrack entries left once the proxies have had [`FLOWS_DELETED`] to delete the UDP
/// flows of the deleted Services: `(leaked, expiring)` as [`leaks::conntrack`] has them. A
/// proxy deletes them right after the Service's rules go (Sluice's addition to kube-proxy's
/// rule, which leaves them to expire), thousands one by one, so a first look as soon as the
/// rules are gone can still see some; what is left after that bound was missed.
fn deleted_flows_gone(lab: &Lab, churn: &Churn) -> anyhow::Result<(Vec<String>, usize)> {
    let start = Instant::now();
    loop {
        // Judged by when the look began: reading and judging tens of thousands of entries
        // takes seconds in a debug build on a loaded machine.
        let looked = start.elapsed();
        let (live, closing) = leaks::conntrack(lab, &churn.removed_ips, &churn.deleted_vips)?;
        let udp_left = live.iter().any(|l| l.contains(": udp"));
        if !udp_left || looked > FLOWS_DELETED {
            return Ok((live, closing));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the nodes are back to `before` (bounded), then reads them.
fn settle(lab: &Lab, before: &leaks::Baseline) -> anyhow::Result<leaks::Baseline> {
    let start = Instant::now();
    loop {
        let now = leaks::snapshot(lab)?;
        if leaks::leaks(before, &now).is_empty() || start.elapsed() > SETTLE {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything the soak prints.
struct Report<'a> {
    elapsed: Duration,
    tally: &'a clients::Tally,
    churn: &'a Churn,
    samples: &'a Samples,
    leaks: Vec<String>,
    conntrack_live: Vec<String>,
    conntrack_closing: usize,
}

impl Report<'_> {
    /// Prints the figures; true when every check passed.
    fn print(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let t = self.tally;
        let s = &self.churn.stats;
        let mut ok = true;
        println!("\nsoak ran {:.0} s", self.elapsed.as_secs_f64());
        println!(
            "requests to ready endpoints: {} (TCP {}, UDP {}), failed {}",
            t.requests(),
            t.tcp.load(Relaxed),
            t.udp.load(Relaxed),
            t.failed()
        );
        println!(
            "UDP requests answered only after their retransmission: {} (at most 1 in {} allowed)",
            t.retransmitted.load(Relaxed),
            clients::RETRANSMITS_PER
        );
        for r in t
            .retransmissions
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
        {
            println!("  retransmitted: {r}");
        }
        let retransmitted = t.retransmitted.load(Relaxed) > 0;
        ok &= t.retransmissions_ok();
        if t.failed() > 0 || retransmitted {
            ok &= t.failed() == 0;
            for f in t.failures.lock().map(|f| f.clone()).unwrap_or_default() {
                println!("  failed: {f}");
            }
            println!("  what the churn did meanwhile:");
            for (at, what) in &self.churn.events {
                println!("    {at:7.2} s {what}");
            }
        }
        println!(
            "churn: {} rolling updates, {} pods added and {} removed through CNI, {} Services created ({} answered) and {} deleted",
            s.rolls,
            s.pods_added,
            s.pods_removed,
            s.services_created,
            s.services_reached,
            s.services_deleted
        );
        for u in &s.services_unreached {
            ok = false;
            println!("  a churn Service never answered: {u}");
        }
        println!(
            "stale UDP flows (to a stable Service, answered by a pod no longer serving) left by the proxies: {}",
            s.stale_udp.len()
        );
        for f in &s.stale_udp {
            ok = false;
            println!("  stale: {f}");
        }
        ok &= self.print_samples();
        println!(
            "leaks: {} (rules, veths, IPAM reservations per node vs before the soak); conntrack: {} UDP flows to deleted Services or open TCP connections to removed pods or Services, {} closing TCP and forwarded UDP entries (the kernel expires them)",
            if self.leaks.is_empty() {
                "none"
            } else {
                "FOUND"
            },
            self.conntrack_live.len(),
            self.conntrack_closing
        );
        for l in self.leaks.iter().chain(self.conntrack_live.iter().take(10)) {
            println!("  leaked: {l}");
        }
        ok && self.leaks.is_empty() && self.conntrack_live.is_empty()
    }

    /// The memory and descriptor table; true when the overlay's and proxy's stay flat.
    fn print_samples(&self) -> bool {
        let mut ok = true;
        println!(
            "{:<16} {:>8} {:>8} {:>10} {:>10}   {:>5} {:>5} {:>9} {:>9}  flat",
            "daemon", "RSS MiB", "", "1st-qtr", "last-qtr", "fds", "", "1st-qtr", "last-qtr"
        );
        println!(
            "{:<16} {:>8} {:>8} {:>10} {:>10}   {:>5} {:>5} {:>9} {:>9}",
            "", "start", "end", "max", "max", "start", "end", "max", "max"
        );
        let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
        for (name, series) in &self.samples.daemons {
            let (Some(rss), Some(fds)) = (series.rss(), series.fds()) else {
                continue;
            };
            // The lab daemon is the API server, whose event history fills up to its bound by
            // design: reported, not judged.
            let judged = name.starts_with("proxy-") || name.starts_with("overlay-");
            let flat = rss.flat && fds.flat;
            ok &= flat || !judged;
            println!(
                "{name:<16} {:>8} {:>8} {:>10} {:>10}   {:>5} {:>5} {:>9} {:>9}  {}",
                mib(rss.start),
                mib(rss.end),
                mib(rss.first_max),
                mib(rss.last_max),
                fds.start,
                fds.end,
                fds.first_max,
                fds.last_max,
                match (judged, flat) {
                    (false, _) => "(not judged)",
                    (true, true) => "yes",
                    (true, false) => "NO",
                }
            );
        }
        ok
    }
}
