//! `sluice-testbed-demo`: what the foundation can do, end to end, in a few seconds.
//!
//! Builds a two-node cluster of network namespaces on one machine, wires pods, sends real TCP
//! and UDP between them, starts a real etcd and the in-memory Kubernetes API server, feeds a
//! Service and its EndpointSlice through the shared model, and shows that everything is gone
//! afterwards. It is the closest real thing to the lab until the daemons exist, and it
//! exits non-zero if any check fails. Needs root.

mod api;
mod checks;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    if !sluice_testbed::is_root() {
        eprintln!("sluice-testbed-demo: must run as root (it builds network namespaces)");
        return ExitCode::from(1);
    }
    println!(
        "Sluice test bed demo: 2 nodes x 2 pods in network namespaces, etcd, test API server\n"
    );
    let mut report = report::Report::default();
    report.header();
    checks::run(&mut report);
    if report.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
