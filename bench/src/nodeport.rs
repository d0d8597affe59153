//! `sluice-bench nodeport`: the NodePort connection set-up rate from outside the node, ebpf
//! mode vs nftables mode, side by side in one run. Two beds (a node namespace with a client
//! pod, a server pod and a host outside the node), each running the real `sluice-proxy`
//! standalone on the same manifests (`--services` Services × `--endpoints`, Service 0 a
//! NodePort whose one endpoint is the server pod), both programmed at once. The outside host
//! connects to each node's address:nodePort — ebpf mode's tc path (DNAT + SNAT on the node's
//! interfaces), nftables mode's DNAT + masquerade — and, as the reference, straight to the pod
//! IP routed through the node; the four series alternate in every round, and the ratios are
//! medians of the rounds' ratios.
//!
//! The ebpf proxy attaches its socket programs to a child cgroup of its own ([`EbpfHome`]),
//! which no client joins here: the connections come from outside the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::ebpf_home::EbpfHome;
use crate::nftables::{Bed, DIRECT_PORT, OUTSIDE, SERVER, burst};
use crate::scale::{load_average, proxy_binary, proxy_command, wait_syncs, write_manifests};

/// Flags of `sluice-bench nodeport`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Services programmed in each mode.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 3)]
    endpoints: u32,
    /// Alternating rounds.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Sequential connections per series over all rounds (at most 10,000: TIME_WAIT).
    #[arg(long, default_value_t = 2_000)]
    connections: u32,
    /// The `sluice-proxy` binary (default: next to this one).
    #[arg(long)]
    proxy: Option<PathBuf>,
}

const NODE_PORT: u16 = 30080;
const MODES: [&str; 2] = ["nftables", "ebpf"];

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=10_000).contains(&args.connections) && args.rounds > 0,
        "--connections must be 1..=10000 and --rounds positive"
    );
    let proxy = proxy_binary(args.proxy.as_deref())?;
    let dir = tempfile::tempdir()?;
    write_manifests(
        dir.path(),
        args.services,
        args.endpoints,
        Some(i32::from(NODE_PORT)),
    )?;
    let home = EbpfHome::new()?;
    let beds = [Bed::with_outside()?, Bed::with_outside()?];
    let mut procs = Vec::new();
    for (mode, bed) in MODES.iter().zip(&beds) {
        let ebpf = (*mode == "ebpf").then_some(&home);
        // No periodic resync during the rounds (nftables' costs ~1 s of CPU at 10,000).
        let mut cmd = proxy_command(&proxy, mode, dir.path(), "1h", ebpf);
        cmd.args(["--bind-address", &OUTSIDE.1.to_string()]);
        let mut process = bed.node.spawn(&cmd)?;
        wait_syncs(bed, &mut process, 1.0, Duration::from_secs(600))?;
        procs.push(process);
    }
    let _servers = (beds.iter().map(Bed::servers)).collect::<Result<Vec<_>, _>>()?;
    let node_port = SocketAddr::new(OUTSIDE.1.into(), NODE_PORT);
    let pod = SocketAddr::new(SERVER.0.into(), DIRECT_PORT);
    // Series i: bed i % 2, destination i / 2 (node port, pod IP).
    let series = |i: usize, n: u32| -> anyhow::Result<Duration> {
        let outside = (beds[i % 2].outside.as_ref()).context("a bed without its outside host")?;
        outside.run(|| burst([node_port, pod][i / 2], n))?
    };
    for i in 0..4 {
        series(i, 50)?;
    }
    let per_round = (args.connections / args.rounds).max(1);
    let mut rounds = Vec::new();
    for round in 0..args.rounds as usize {
        let mut times = [Duration::ZERO; 4];
        for k in 0..4 {
            let i = (k + round) % 4;
            times[i] = series(i, per_round)?;
        }
        rounds.push(times);
    }
    drop(procs);
    print(args, &rounds, per_round);
    Ok(())
}

fn print(args: &Args, rounds: &[[Duration; 4]], per_round: u32) {
    let rate = |t: Duration| f64::from(per_round) / t.as_secs_f64().max(1e-9);
    let median = |f: &dyn Fn(&[Duration; 4]) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    println!(
        "sluice-bench nodeport: {} Services x {} endpoints in each mode, both programmed at \
         once; {} rounds of {per_round} sequential TCP connections per series from a host \
         outside the node; load average {:.1}\n",
        args.services,
        args.endpoints,
        args.rounds,
        load_average().unwrap_or(f64::NAN)
    );
    println!("| series | conn/s, median of the rounds (min–max) |\n|---|---|");
    for (i, name) in [
        "nftables: node IP:nodePort",
        "ebpf: node IP:nodePort",
        "nftables bed: pod IP through the node",
        "ebpf bed: pod IP through the node",
    ]
    .iter()
    .enumerate()
    {
        let (lo, mid, hi) = median(&|r| rate(r[i]));
        println!("| {name} | {mid:.0} ({lo:.0}–{hi:.0}) |");
    }
    let ratios = [
        ("NodePort ebpf / nftables", 1, 0),
        ("ebpf: NodePort / pod IP", 1, 3),
        ("nftables: NodePort / pod IP", 0, 2),
    ];
    println!("\n| ratio of rates | median (min–max over rounds) |\n|---|---|");
    for (name, a, b) in ratios {
        let (lo, mid, hi) = median(&|r| r[b].as_secs_f64() / r[a].as_secs_f64().max(1e-9));
        println!("| {name} | {mid:.2} ({lo:.2}–{hi:.2}) |");
    }
}
