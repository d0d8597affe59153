//! The real `sluice-overlay` binary, kube subnet manager, on two test-bed nodes: the test API
//! server is served on the underlay (192.168.0.1), each node's daemon runs in its namespace,
//! pods on different nodes talk over the overlay it builds, and it heals and restarts cleanly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_test_apiserver::{Config, TestApiServer};
use sluice_testbed::cluster::{Cluster, Node, Pod};
use sluice_testbed::link::Address;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{Process, require_root};

const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

/// Polls `check` every 50 ms for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn start_daemon(node: &Node, dir: &Path) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-overlay"));
    cmd.args([
        "--kube-subnet-mgr",
        "--iface",
        "eth0",
        "--reconcile-period",
        "1s",
    ])
    .arg("--kubeconfig")
    .arg(dir.join("kubeconfig"))
    .arg("--net-config-path")
    .arg(dir.join("net-conf.json"))
    .arg("--subnet-file")
    .arg(subnet_file(dir, node))
    .env("NODE_NAME", node.name())
    .env("RUST_LOG", "info");
    node.ns().spawn(&cmd).unwrap()
}

fn subnet_file(dir: &Path, node: &Node) -> PathBuf {
    dir.join(node.name()).join("subnet.env")
}

fn talks(from: &Pod, to: &Pod) -> bool {
    let addr = SocketAddr::new(to.ip().into(), 9000);
    traffic::tcp_request(from.ns(), addr, Duration::from_millis(300))
        .is_ok_and(|r| r.backend == to.name() && r.seen_source.ip() == IpAddr::from(from.ip()))
}

#[test]
fn kube_mode_overlay_connects_pods_heals_and_restarts_with_the_same_lease() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let underlay = cluster.underlay();
    let _api_addr = Address::new(
        underlay.ns(),
        underlay.bridge().name(),
        ipnet::Ipv4Net::new(API_IP, 24).unwrap(),
    )
    .unwrap();
    let config = Config {
        bind: API_IP.into(),
        ..Config::default()
    };
    let server = underlay
        .ns()
        .run(move || TestApiServer::start_with(config))
        .unwrap()
        .unwrap();
    for node in cluster.nodes() {
        let cidr = node.pod_cidr().to_string();
        server
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name()}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    server
        .write_kubeconfig(dir.path().join("kubeconfig"))
        .unwrap();
    std::fs::write(
        dir.path().join("net-conf.json"),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();

    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let mut d1 = start_daemon(n1, dir.path());
    let _d2 = start_daemon(n2, dir.path());
    eventually("subnet.env on both nodes", || {
        cluster
            .nodes()
            .iter()
            .all(|n| subnet_file(dir.path(), n).exists())
    });
    let env1 = std::fs::read_to_string(subnet_file(dir.path(), n1)).unwrap();
    assert_eq!(
        env1,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    );

    let node1 = server.get("nodes", "", n1.name()).unwrap();
    let ann = &node1["metadata"]["annotations"];
    assert_eq!(
        ann["flannel.alpha.coreos.com/public-ip"], "192.168.0.11",
        "{node1}"
    );
    let backend_data = ann["flannel.alpha.coreos.com/backend-data"]
        .as_str()
        .unwrap()
        .to_owned();

    let a = n1.add_pod("a").unwrap();
    let b = n2.add_pod("b").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let (_sa, _sb) = (
        EchoServer::tcp(a.ns(), "a", any).unwrap(),
        EchoServer::tcp(b.ns(), "b", any).unwrap(),
    );
    eventually("pod a -> pod b over the overlay", || talks(&a, &b));
    assert!(talks(&b, &a));

    // Someone deletes flannel.1: the next reconcile (1 s) brings it back with its peers.
    n1.ns().ip(["link", "del", "flannel.1"]).unwrap();
    eventually("overlay healed after flannel.1 was deleted", || {
        talks(&a, &b)
    });

    // A restart keeps the subnet and the VTEP MAC (so peers need no change).
    d1.stop();
    let mut d1 = start_daemon(n1, dir.path());
    eventually("restarted daemon reconciles", || {
        d1.logs().contains("lease acquired")
    });
    let node1 = server.get("nodes", "", n1.name()).unwrap();
    assert_eq!(
        node1["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"],
        backend_data.as_str()
    );
    assert_eq!(
        std::fs::read_to_string(subnet_file(dir.path(), n1)).unwrap(),
        env1
    );
    assert!(
        talks(&a, &b) && talks(&b, &a),
        "traffic survives the restart"
    );
    assert!(
        d1.try_wait().unwrap().is_none(),
        "daemon still running:\n{}",
        d1.log_tail(20)
    );
}
