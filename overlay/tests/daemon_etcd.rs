//! The real `sluice-overlay` binary in etcd mode on three test-bed nodes, with a real etcd on
//! the underlay: distinct subnets, flannel-format leases, pods talking across nodes, and a
//! stopped node's lease expiring (short TTL) so its peers drop its routes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_testbed::cluster::{Cluster, Node, Pod};
use sluice_testbed::etcd::Etcd;
use sluice_testbed::link::Address;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{Process, require_root};

const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const PREFIX: &str = "/coreos.com/network";

fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn subnet_file(dir: &Path, node: &Node) -> PathBuf {
    dir.join(node.name()).join("subnet.env")
}

fn start_daemon(node: &Node, etcd: &Etcd, dir: &Path) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-overlay"));
    cmd.args([
        "--etcd-endpoints",
        etcd.client_url(),
        "--etcd-prefix",
        PREFIX,
    ])
    .args([
        "--iface",
        "eth0",
        "--reconcile-period",
        "1s",
        "--subnet-lease-ttl",
        "3s",
    ])
    .arg("--subnet-file")
    .arg(subnet_file(dir, node))
    .env("RUST_LOG", "info");
    node.ns().spawn(&cmd).unwrap()
}

fn talks(from: &Pod, to: &Pod) -> bool {
    let addr = SocketAddr::new(to.ip().into(), 9000);
    traffic::tcp_request(from.ns(), addr, Duration::from_millis(300))
        .is_ok_and(|r| r.backend == to.name() && r.seen_source.ip() == IpAddr::from(from.ip()))
}

/// The subnet a daemon wrote, as `10.244.x.0/24`.
fn subnet_of(dir: &Path, node: &Node) -> String {
    let env = std::fs::read_to_string(subnet_file(dir, node)).unwrap();
    let line = env
        .lines()
        .find(|l| l.starts_with("FLANNEL_SUBNET="))
        .unwrap();
    let net: ipnet::Ipv4Net = line["FLANNEL_SUBNET=".len()..].parse().unwrap();
    net.trunc().to_string()
}

#[test]
fn etcd_mode_three_nodes_distinct_subnets_traffic_and_expiry() {
    require_root();
    let cluster = Cluster::new(3).unwrap();
    let underlay = cluster.underlay();
    let bridge = underlay.bridge().name();
    let _ip = Address::new(
        underlay.ns(),
        bridge,
        ipnet::Ipv4Net::new(ETCD_IP, 24).unwrap(),
    )
    .unwrap();
    let etcd = Etcd::start_in(underlay.ns(), ETCD_IP).unwrap();
    etcd.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each node "had" its test-bed pod CIDR before (flannel's restart path: the previous
    // subnet.env's subnet is reused when free), so the leases are known in advance.
    for n in cluster.nodes() {
        let env = format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
            n.gateway()
        );
        std::fs::create_dir_all(subnet_file(dir.path(), n).parent().unwrap()).unwrap();
        std::fs::write(subnet_file(dir.path(), n).with_extension("prev"), env).unwrap();
        std::fs::rename(
            subnet_file(dir.path(), n).with_extension("prev"),
            subnet_file(dir.path(), n),
        )
        .unwrap();
    }
    let mut daemons: Vec<Process> = cluster
        .nodes()
        .iter()
        .map(|n| start_daemon(n, &etcd, dir.path()))
        .collect();
    eventually(
        "every node's lease in etcd",
        Duration::from_secs(15),
        || {
            let prefix = format!("{PREFIX}/subnets/");
            etcd.etcdctl(["get", "--prefix", "--keys-only", prefix.as_str()])
                .is_ok_and(|out| out.lines().filter(|l| !l.is_empty()).count() == 3)
        },
    );
    let subnets: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| subnet_of(dir.path(), n))
        .collect();
    let wanted: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.pod_cidr().to_string())
        .collect();
    assert_eq!(subnets, wanted, "each node re-acquired its previous subnet");

    // The leases are flannel's: key per subnet, JSON value with the node's public IP.
    let key = format!("{PREFIX}/subnets/{}", subnets[0].replace('/', "-"));
    let value = etcd.get(&key).unwrap().unwrap();
    assert!(value.starts_with(r#"{"PublicIP":"192.168.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":""#), "{value}");

    let a = cluster.node(1).unwrap().add_pod("a").unwrap();
    let b = cluster.node(2).unwrap().add_pod("b").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let (_sa, _sb) = (
        EchoServer::tcp(a.ns(), "a", any).unwrap(),
        EchoServer::tcp(b.ns(), "b", any).unwrap(),
    );
    eventually("pods talk across nodes", Duration::from_secs(10), || {
        talks(&a, &b) && talks(&b, &a)
    });

    // Node 3 stops; its 3 s lease expires and the others remove its route.
    let gone = &subnets[2];
    daemons[2].stop();
    let n1 = cluster.node(1).unwrap();
    let has_route = || {
        !n1.ns()
            .ip(["route", "show", gone.as_str()])
            .unwrap()
            .trim()
            .is_empty()
    };
    assert!(
        has_route(),
        "node 1 routes to node 3's subnet while it lives"
    );
    eventually(
        "node 3's route removed after its lease expired",
        Duration::from_secs(15),
        || !has_route(),
    );
    assert!(
        etcd.get(&format!("{PREFIX}/subnets/{}", gone.replace('/', "-")))
            .unwrap()
            .is_none()
    );
    for d in &mut daemons[..2] {
        assert!(
            d.try_wait().unwrap().is_none(),
            "renewals keep the others alive:\n{}",
            d.log_tail(20)
        );
    }
}

#[test]
fn etcd_outage_keeps_routes_and_renewals_resume() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let underlay = cluster.underlay();
    let bridge = underlay.bridge().name();
    let _ip = Address::new(
        underlay.ns(),
        bridge,
        ipnet::Ipv4Net::new(ETCD_IP, 24).unwrap(),
    )
    .unwrap();
    let etcd = Etcd::start_in(underlay.ns(), ETCD_IP).unwrap();
    etcd.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ttl = "10s";
    let mut daemons: Vec<Process> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-overlay"));
            cmd.args(["--etcd-endpoints", etcd.client_url(), "--iface", "eth0"])
                .args(["--reconcile-period", "1s", "--subnet-lease-ttl", ttl])
                .arg("--subnet-file")
                .arg(subnet_file(dir.path(), n));
            n.ns().spawn(&cmd).unwrap()
        })
        .collect();
    let keys = || {
        let prefix = format!("{PREFIX}/subnets/");
        etcd.etcdctl(["get", "--prefix", "--keys-only", prefix.as_str()])
            .map(|out| out.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    };
    eventually("both leases", Duration::from_secs(15), || keys() == 2);
    let n1 = cluster.node(1).unwrap();
    let routes = || n1.ns().ip(["route", "show", "proto", "83"]).unwrap();
    eventually("node 1 routes to node 2", Duration::from_secs(10), || {
        !routes().trim().is_empty()
    });
    let before = routes();

    etcd.pause().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(routes(), before, "routes kept while etcd is away");
    etcd.resume().unwrap();

    // Past the 10 s TTL of any lease granted before the outage: only renewals made after
    // it can keep the keys.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(keys(), 2, "renewals resumed after the outage");
    assert_eq!(routes(), before, "routes never removed");
    for d in &mut daemons {
        assert!(
            d.try_wait().unwrap().is_none(),
            "daemon survived the outage:\n{}",
            d.log_tail(20)
        );
    }
}
