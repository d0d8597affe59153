//! `sluice-lab demo`: what works today, end to end, in a few seconds. Builds a two-node
//! cluster of network namespaces, serves the Kubernetes API on the underlay, runs the real
//! `sluice-overlay` in each node (which builds the VXLAN overlay from the Node objects), wires
//! pods, sends real TCP and UDP between them, feeds a Service created with kubectl through the
//! shared model, starts a real etcd, and shows that everything is gone afterwards. Exits
//! non-zero if any check fails.

mod api;
mod checks;
mod report;

use std::process::ExitCode;

use crate::daemons::Binaries;

pub(crate) fn run(bins: &Binaries) -> ExitCode {
    println!("Sluice lab demo: 2 nodes running sluice-overlay, 4 pods, the API server, etcd\n");
    let mut report = report::Report::default();
    report.header();
    checks::run(&mut report, bins);
    if report.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
