//! `sluice-bench`: standalone benchmarks that measure Sluice against the thing it replaces,
//! in one run on one machine, and print ratios (never asserted: timings vary by machine).

mod cni;
mod ebpf;
mod ebpf_home;
mod iperf;
mod iptables;
mod nftables;
mod nodeport;
mod overlay;
mod scale;
mod sync;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sluice's standalone benchmarks (`overlay`, `cni` and `nftables` run as root: they build network
/// namespaces).
#[derive(Parser)]
#[command(name = "sluice-bench", version)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// iperf3 pod→pod over the Sluice VXLAN and host-gw overlays vs a hand-programmed
    /// flannel-equivalent VXLAN and the plain underlay.
    Overlay(overlay::Args),
    /// Sequential ADD+DEL cycles of the `sluice` CNI plugin vs Debian's bridge + host-local.
    Cni(cni::Args),
    /// The proxy control plane at 100 and 10,000 Services: first snapshot, one Service change,
    /// peak RSS (no root needed).
    Sync(sync::Args),
    /// The nftables backend against the kernel in network namespaces: cold sync of 10,000
    /// Services, one Service change at 10,000 and 100, full resync, ClusterIP connection rate.
    /// `dataplane` is the name for its connection-rate half.
    #[command(alias = "dataplane")]
    Nftables(nftables::Args),
    /// The iptables backend (iptables-nft and iptables-legacy) against the kernel: cold sync
    /// of 10,000 Services vs a plain iptables-restore of the same rules, one Service change at
    /// 10,000 and 100, full resync, ClusterIP connection rate.
    Iptables(iptables::Args),
    /// The eBPF backend against the real kernel maps (loaded in a private bpffs, nothing
    /// attached): cold sync, one Service change at 10,000 and 100, full resync, map memory.
    Ebpf(ebpf::Args),
    /// NodePort connection set-up rate from outside the node, ebpf vs nftables mode, both
    /// programmed with 10,000 Services at once (real sluice-proxy binaries), alternating rounds.
    Nodeport(nodeport::Args),
    /// The real sluice-proxy binary at 100 to 25,000 Services per mode: cold sync, one
    /// change, RSS, idle CPU, connection set-up ratio; a table and SVG plots.
    Scale(scale::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let needs_root = match &cli.bench {
        Bench::Sync(args) => args.needs_root(),
        _ => true,
    };
    if needs_root && !sluice_testbed::is_root() {
        eprintln!("sluice-bench: must run as root (it builds network namespaces)");
        return ExitCode::FAILURE;
    }
    let result = match cli.bench {
        Bench::Overlay(args) => overlay::run(&args),
        Bench::Cni(args) => cni::run(&args),
        Bench::Sync(args) => sync::run(&args),
        Bench::Nftables(args) => nftables::run(&args),
        Bench::Iptables(args) => iptables::run(&args),
        Bench::Ebpf(args) => ebpf::run(&args),
        Bench::Nodeport(args) => nodeport::run(&args),
        Bench::Scale(args) => scale::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
