//! The demo's checks, in the order a reader would want to see them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use sluice_testbed::cluster::{Cluster, Pod};
use sluice_testbed::etcd::Etcd;
use sluice_testbed::traffic::{self, EchoServer, Proto};

use crate::report::Report;

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster and what runs in it; dropped (and so torn down) before the last check.
struct World {
    cluster: Cluster,
    pods: Vec<Pod>,
    _servers: Vec<EchoServer>,
}

/// Runs every check, recording each in `report`.
pub(crate) fn run(report: &mut Report) {
    let mut world = None;
    report.check("build 2 nodes, 4 pods, host-gw pod routes", || {
        let w = build()?;
        let detail = describe(&w);
        world = Some(w);
        Ok(detail)
    });
    if let Some(w) = &world {
        traffic_checks(report, w);
        crate::api::checks(report, &w.pods[0], &[&w.pods[2], &w.pods[3]]);
    }
    let names: Vec<String> = world.iter().flat_map(namespaces).collect();
    report.check("etcd on loopback: healthy, put/get a lease", etcd_check);
    drop(world);
    report.check("teardown: every namespace removed", || {
        let left: Vec<&String> = names
            .iter()
            .filter(|n| sluice_testbed::NetNs::exists(n))
            .collect();
        ensure!(left.is_empty(), "still present: {left:?}");
        Ok(format!("{} namespaces created and removed", names.len()))
    });
}

fn build() -> anyhow::Result<World> {
    let cluster = Cluster::with_pod_routes(2)?;
    let mut pods = Vec::new();
    let mut servers = Vec::new();
    for (node, name) in [(1, "web-1"), (1, "web-2"), (2, "web-3"), (2, "web-4")] {
        let pod = cluster.node(node)?.add_pod(name)?;
        let any = SocketAddr::from(([0, 0, 0, 0], PORT));
        servers.push(EchoServer::tcp(pod.ns(), name, any)?);
        servers.push(EchoServer::udp(pod.ns(), name, any)?);
        pods.push(pod);
    }
    Ok(World {
        cluster,
        pods,
        _servers: servers,
    })
}

fn describe(w: &World) -> String {
    let nodes: Vec<String> = w
        .cluster
        .nodes()
        .iter()
        .map(|n| format!("{}={}", n.name(), n.addr()))
        .collect();
    let pods: Vec<String> = w
        .pods
        .iter()
        .map(|p| format!("{}={}", p.name(), p.ip()))
        .collect();
    format!("nodes {}; pods {}", nodes.join(" "), pods.join(" "))
}

fn namespaces(w: &World) -> Vec<String> {
    let nodes = w.cluster.nodes().iter().map(|n| n.ns().name().to_owned());
    let pods = w.pods.iter().map(|p| p.ns().name().to_owned());
    let underlay = std::iter::once(w.cluster.underlay().ns().name().to_owned());
    nodes.chain(pods).chain(underlay).collect()
}

fn traffic_checks(report: &mut Report, w: &World) {
    let [a, b, c, d] = &w.pods[..] else { return };
    for (from, to, proto, what) in [
        (a, c, Proto::Tcp, "TCP pod web-1 (node 1) -> web-3 (node 2)"),
        (a, d, Proto::Udp, "UDP pod web-1 (node 1) -> web-4 (node 2)"),
        (d, b, Proto::Tcp, "TCP pod web-4 (node 2) -> web-2 (node 1)"),
        (
            a,
            b,
            Proto::Udp,
            "UDP pod web-1 -> web-2 (same node bridge)",
        ),
    ] {
        report.check(what, || one_request(from, to, proto));
    }
    report.check("20 TCP requests web-2 -> web-3, count answers", || {
        let to = SocketAddr::from((c.ip(), PORT));
        let t = traffic::tally(b.ns(), Proto::Tcp, to, 20, TIMEOUT)?;
        ensure!(
            t.count("web-3") == 20,
            "answers: {:?}, {:?}",
            t.counts,
            t.first_error
        );
        Ok(format!(
            "20/20 answered by web-3, sources seen {:?}",
            t.sources
        ))
    });
}

/// One request; passes when the right pod answers and saw the client's own address (no NAT).
fn one_request(from: &Pod, to: &Pod, proto: Proto) -> anyhow::Result<String> {
    let addr = SocketAddr::from((to.ip(), PORT));
    let reply = traffic::request(from.ns(), proto, addr, TIMEOUT)
        .with_context(|| format!("{} -> {addr}", from.name()))?;
    ensure!(reply.backend == to.name(), "answered by {}", reply.backend);
    ensure!(
        reply.seen_source.ip() == from.ip(),
        "source rewritten to {}",
        reply.seen_source
    );
    Ok(format!(
        "answered by {}, saw source {} (no NAT)",
        reply.backend, reply.seen_source
    ))
}

fn etcd_check() -> anyhow::Result<String> {
    let etcd = Etcd::start()?;
    let key = "/coreos.com/network/subnets/10.244.1.0-24";
    let lease = r#"{"PublicIP":"192.168.0.11","BackendType":"vxlan"}"#;
    etcd.put(key, lease)?;
    let got = etcd.get(key)?;
    ensure!(got.as_deref() == Some(lease), "read back {got:?}");
    Ok(format!(
        "etcd pid {} at {}, {key} stored",
        etcd.pid(),
        etcd.client_url()
    ))
}
