//! The demo's checks, in the order a reader would want to see them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use sluice_testbed::apiserver::{Config, TestApiServer};
use sluice_testbed::cluster::{Cluster, Pod};
use sluice_testbed::etcd::Etcd;
use sluice_testbed::link::Address;
use sluice_testbed::traffic::{self, EchoServer, Proto};
use sluice_testbed::{NetNs, Process};

use super::api::{self, Kubectl};
use super::report::Report;
use crate::daemons::{Binaries, subnet_file};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(2);
/// The API server's address on the underlay, reachable from every node.
const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// The cluster and what runs in it; dropped (and so torn down) before the last check.
struct World {
    cluster: Cluster,
    server: TestApiServer,
    dir: tempfile::TempDir,
    daemons: Vec<Process>,
    pods: Vec<Pod>,
    _servers: Vec<EchoServer>,
    _api_addr: Address,
}

/// Runs every check, recording each in `report`.
pub(crate) fn run(report: &mut Report, bins: &Binaries) {
    let mut world = None;
    report.check("2 nodes, API server on the underlay", || {
        let w = cluster()?;
        let detail = format!("nodes 192.168.0.11, .12; API {}", w.server.url());
        world = Some(w);
        Ok(detail)
    });
    if let Some(w) = world.as_mut() {
        cluster_checks(report, w, bins);
    }
    let names: Vec<String> = world.iter().flat_map(namespaces).collect();
    let pids: Vec<u32> = world
        .iter()
        .flat_map(|w| w.daemons.iter().map(Process::pid))
        .collect();
    report.check("etcd on loopback: healthy, put/get a lease", etcd_check);
    drop(world);
    report.check("teardown: every namespace and process removed", || {
        let left: Vec<&String> = names.iter().filter(|n| NetNs::exists(n)).collect();
        ensure!(left.is_empty(), "still present: {left:?}");
        let alive: Vec<&u32> = pids
            .iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        ensure!(alive.is_empty(), "daemons still running: {alive:?}");
        Ok(format!(
            "{} namespaces and {} daemons gone",
            names.len(),
            pids.len()
        ))
    });
}

/// Everything that runs on the cluster, stopping early when a foundation step fails.
fn cluster_checks(report: &mut Report, w: &mut World, bins: &Binaries) {
    if !report.check("sluice-overlay on both nodes: leases, VXLAN", || {
        overlay(w, bins)
    }) {
        return;
    }
    if !report.check("4 pods with TCP and UDP echo servers", || pods(w)) {
        return;
    }
    traffic_checks(report, w);
    report.check("someone deletes flannel.1 on node 1: healed", || heal(w));
    let Ok(n1) = w.cluster.node(1) else { return };
    let k = Kubectl {
        ns: n1.ns(),
        dir: w.dir.path(),
    };
    api::checks(report, &w.server, &k, &w.pods[0], &[&w.pods[2], &w.pods[3]]);
}

fn cluster() -> anyhow::Result<World> {
    let cluster = Cluster::new(2)?;
    let underlay = cluster.underlay();
    let api_addr = Address::new(
        underlay.ns(),
        underlay.bridge().name(),
        ipnet::Ipv4Net::new(API_IP, 24)?,
    )?;
    let config = Config {
        bind: API_IP.into(),
        ..Config::default()
    };
    let server = underlay
        .ns()
        .run(move || TestApiServer::start_with(config))??;
    for node in cluster.nodes() {
        let cidr = node.pod_cidr().to_string();
        server.create(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name()},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        )?;
    }
    let dir = tempfile::tempdir()?;
    server.write_kubeconfig(dir.path().join("kubeconfig"))?;
    std::fs::write(dir.path().join("net-conf.json"), NET_CONF)?;
    Ok(World {
        cluster,
        server,
        dir,
        daemons: Vec::new(),
        pods: Vec::new(),
        _servers: Vec::new(),
        _api_addr: api_addr,
    })
}

/// Starts the overlay daemons and waits (bounded) until both wrote subnet.env.
fn overlay(w: &mut World, bins: &Binaries) -> anyhow::Result<String> {
    for node in w.cluster.nodes() {
        w.daemons.push(bins.start_overlay(node, w.dir.path())?);
    }
    let start = Instant::now();
    while !w
        .cluster
        .nodes()
        .iter()
        .all(|n| subnet_file(w.dir.path(), n).exists())
    {
        for d in &mut w.daemons {
            if d.try_wait()?.is_some() {
                bail!("sluice-overlay exited: {}", d.log_tail(5));
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no subnet.env after 10 s: {}", w.daemons[0].log_tail(5));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = std::fs::read_to_string(subnet_file(w.dir.path(), &w.cluster.nodes()[0]))?;
    let subnet = env
        .lines()
        .find(|l| l.starts_with("FLANNEL_SUBNET="))
        .unwrap_or_default();
    Ok(format!(
        "node1 {subnet}, flannel.1 MTU 1450, VTEPs published as Node annotations"
    ))
}

fn pods(w: &mut World) -> anyhow::Result<String> {
    for (node, name) in [(1, "web-1"), (1, "web-2"), (2, "web-3"), (2, "web-4")] {
        let pod = w.cluster.node(node)?.add_pod(name)?;
        let any = SocketAddr::from(([0, 0, 0, 0], PORT));
        w._servers.push(EchoServer::tcp(pod.ns(), name, any)?);
        w._servers.push(EchoServer::udp(pod.ns(), name, any)?);
        w.pods.push(pod);
    }
    let list: Vec<String> = w
        .pods
        .iter()
        .map(|p| format!("{}={}", p.name(), p.ip()))
        .collect();
    Ok(list.join(" "))
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
        (
            a,
            c,
            Proto::Tcp,
            "TCP web-1 (node 1) -> web-3 (node 2), VXLAN",
        ),
        (
            a,
            d,
            Proto::Udp,
            "UDP web-1 (node 1) -> web-4 (node 2), VXLAN",
        ),
        (
            d,
            b,
            Proto::Tcp,
            "TCP web-4 (node 2) -> web-2 (node 1), VXLAN",
        ),
        (a, b, Proto::Udp, "UDP web-1 -> web-2 (same node bridge)"),
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

/// One request; passes when the right pod answered and saw the client's own address (no NAT).
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

/// Deletes node 1's VXLAN device and times how long until cross-node traffic works again.
fn heal(w: &World) -> anyhow::Result<String> {
    let n1 = w.cluster.node(1)?;
    n1.ns().ip(["link", "del", "flannel.1"])?;
    let start = Instant::now();
    let to = SocketAddr::from((w.pods[2].ip(), PORT));
    while traffic::tcp_request(w.pods[0].ns(), to, Duration::from_millis(200)).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "not healed after 10 s"
        );
    }
    Ok(format!(
        "device, neighbour, FDB and route back; traffic after {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
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
