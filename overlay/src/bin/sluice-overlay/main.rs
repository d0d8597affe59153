//! `sluice-overlay`: the flannel-compatible overlay daemon.
//!
//! Leases this node a pod subnet (kube: the Node's podCIDR; etcd: flannel's leases), builds
//! the VXLAN (or host-gw) overlay to every peer, writes `/run/flannel/subnet.env` for the CNI
//! plugin, optionally masquerades pod traffic leaving the pod network, and then keeps
//! reconciling so whatever gets deleted comes back. The pieces live in the library; this
//! binary wires them for one subnet manager or the other.

mod common;
mod etcd_mode;
mod kube_mode;
mod kubeconfig;

use std::process::ExitCode;

use clap::Parser;
use sluice_overlay::flags::Flags;

fn main() -> ExitCode {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-overlay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if flags.kube_subnet_mgr {
            kube_mode::run(flags).await
        } else {
            etcd_mode::run(flags).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
