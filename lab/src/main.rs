//! `sluice-lab`: a whole cluster's dataplane on one machine — nodes and pods in network
//! namespaces, the real Sluice daemons in each node, the in-memory API server on the
//! underlay — in seconds, with no Docker. For now it has one command, `demo`, which builds
//! such a cluster, checks it with real traffic, prints a results table and tears it down.
//! Needs root.

mod daemons;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sluice's lab: a cluster's dataplane in network namespaces on this machine.
#[derive(Parser)]
#[command(name = "sluice-lab", version)]
struct Cli {
    /// Where the Sluice binaries are (default: next to this one, as cargo builds them).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a 2-node cluster, check it with real traffic, print the results, tear it down.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !sluice_testbed::is_root() {
        eprintln!("sluice-lab: must run as root (it builds network namespaces)");
        return ExitCode::FAILURE;
    }
    let bins = match daemons::Binaries::find(cli.bin_dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice-lab: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Demo => demo::run(&bins),
    }
}
