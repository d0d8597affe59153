//! `sluice-lab demo`: the README's main command. It runs `up` for a 2-node lab (each step a
//! row), checks the overlay between pods, creates a sample of Services with kubectl (ClusterIP
//! across nodes, UDP, NodePort from an external client, `externalTrafficPolicy: Local`,
//! session affinity, one with no endpoints), checks each with real traffic, resolves Services
//! by name through the cluster DNS, flips a pod's
//! readiness, breaks the overlay to watch it heal, and runs `down` — printing every result as
//! it finishes. Exits non-zero if any check fails.

mod checks;
mod report;
mod service_checks;
mod services;
mod traffic;

use std::process::ExitCode;

use anyhow::ensure;
use sluice_testbed::NetNs;

use self::checks::Ctx;
use self::report::Report;
use self::service_checks as sc;
use self::traffic::Proto;
use crate::daemons::{Binaries, SubnetManager};
use crate::labdir::LabDir;
use crate::up::{Lab, Options};

pub(crate) fn run(
    dir: LabDir,
    bins: Binaries,
    name: String,
    proxy_mode: String,
    image: Option<String>,
    manifest: std::path::PathBuf,
) -> ExitCode {
    let from = match image.as_deref() {
        Some("") => format!(" from the image of {}", manifest.display()),
        Some(i) => format!(" from image {i} (the DaemonSet of {})", manifest.display()),
        None => String::new(),
    };
    println!(
        "Sluice lab demo: 2 nodes running sluice-overlay and sluice-proxy ({proxy_mode}){from}, 4 \
         pods wired by the sluice CNI plugin, the API server with an EndpointSlice controller\n"
    );
    let mut report = Report::default();
    report.header();
    if dir.has_state() {
        if crate::down::owner_alive(&dir) {
            report.check("record the lab", || {
                anyhow::bail!(
                    "a lab is running in {} (another demo? use --lab-dir and --name)",
                    dir.root().display()
                )
            });
            report.finish();
            return ExitCode::FAILURE;
        }
        // A demo lab never outlives its demo: this one was killed; its record says what to
        // remove.
        let _ = crate::down::run(&dir);
    }
    let opts = Options {
        name,
        nodes: 2,
        pods_per_node: 2,
        proxy_mode,
        subnet_manager: SubnetManager::Kube,
        image,
        manifest,
    };
    match Lab::begin(dir.clone(), bins, opts) {
        Ok(mut lab) => {
            if up(&mut report, &mut lab) {
                let ctx = Ctx {
                    lab: &lab,
                    created: std::cell::Cell::new(None),
                };
                lab_checks(&mut report, &ctx);
            }
            teardown(&mut report, &dir, &lab);
            lab.reap_children();
        }
        Err(e) => drop(report.check("record the lab", || Err(e))),
    }
    if report.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `up`'s steps as rows; false when one failed.
fn up(report: &mut Report, lab: &mut Lab) -> bool {
    for (what, step) in lab.steps() {
        if !report.check(what, || step(lab)) {
            return false;
        }
    }
    true
}

fn lab_checks(report: &mut Report, c: &Ctx<'_>) {
    report.check("TCP web-1 (node1) -> web-3 (node2) pod IP", || {
        checks::pod_to_pod(c, "web-1", "web-3", Proto::Http)
    });
    report.check("UDP web-4 (node2) -> web-2 (node1) pod IP", || {
        checks::pod_to_pod(c, "web-4", "web-2", Proto::Udp)
    });
    if !report.check("kubectl create -f services.yaml (host)", || {
        checks::create_services(c)
    }) {
        return;
    }
    report.check("EndpointSlices written by the lab", || checks::slices(c));
    let mut svcs = sc::Services::new();
    if !report.check("ClusterIPs and NodePorts allocated", || {
        let api = c.lab.api()?;
        svcs = services::allocated(&api)?;
        let list: Vec<String> = svcs
            .iter()
            .map(|(n, a)| match a.node_port {
                Some(np) => format!("{n} {}:{np}", a.cluster_ip),
                None => format!("{n} {}", a.cluster_ip),
            })
            .collect();
        Ok(list.join(", "))
    }) {
        return;
    }
    let s = &svcs;
    report.check("ClusterIP web from web-1: pods on both nodes", || {
        sc::cluster_ip(c, s)
    });
    report.check("ClusterIP dns (UDP) from web-3", || sc::udp(c, s));
    report.check("NodePort web-np on node1 from client", || {
        sc::nodeport(c, s)
    });
    report.check("externalTrafficPolicy: Local on node2", || sc::local(c, s));
    report.check("sessionAffinity: ClientIP (sticky)", || sc::affinity(c, s));
    report.check("no endpoints (nothing): REJECT", || sc::reject(c, s));
    report.check("cluster DNS by name: new Service, curl web", || {
        sc::by_name(c, s)
    });
    report.check("web-4 not ready: out of the slice, rules", || {
        sc::not_ready(c, s)
    });
    report.check("someone deletes flannel.1 on node1: healed", || {
        checks::heal(c)
    });
}

/// `down`, then proof that nothing is left.
fn teardown(report: &mut Report, dir: &LabDir, lab: &Lab) {
    let namespaces = lab.state.namespaces.clone();
    let pids: Vec<u32> = lab.state.processes.iter().map(|p| p.pid).collect();
    let containers = lab.state.containers.clone();
    report.check("down: every namespace, process, file gone", || {
        let removed = crate::down::run(dir)?;
        let left: Vec<&String> = namespaces.iter().filter(|n| NetNs::exists(n)).collect();
        ensure!(left.is_empty(), "namespaces left: {left:?}");
        ensure!(
            pids.iter().all(|p| crate::down::gone(*p)),
            "lab daemon still running"
        );
        ensure!(!dir.root().exists(), "{} left", dir.root().display());
        let left: Vec<&String> = containers
            .iter()
            .filter(|c| crate::image::container_exists(c))
            .collect();
        ensure!(left.is_empty(), "containers left: {left:?}");
        let containers = match removed.containers {
            0 => String::new(),
            n => format!(", {n} containers"),
        };
        Ok(format!(
            "{} namespaces (and the daemons in them){containers}, the lab daemon, {}",
            removed.namespaces,
            dir.root().display()
        ))
    });
}
