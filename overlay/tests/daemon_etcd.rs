//! The real `sluice-overlay` binary in etcd mode on test-bed nodes, with a real etcd on the
//! underlay: previous subnets re-acquired, flannel-format leases, pods talking across nodes,
//! a stopped node's lease expiring (short TTL) so its peers drop its routes, and an etcd
//! outage (frozen, or stopped and started again) that changes nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::etcd_lab::{EtcdLab, PREFIX};
use common::eventually;
use sluice_testbed::cluster::Pod;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{Process, require_root};

/// Both nodes' daemons (lease TTL 10 s), once node 1 routes to node 2.
fn routed_daemons(lab: &EtcdLab) -> Vec<Process> {
    let daemons: Vec<Process> = (lab.cluster.nodes().iter())
        .map(|n| lab.daemon(n, "10s"))
        .collect();
    eventually("both leases", Duration::from_secs(15), || lab.leases() == 2);
    eventually("node 1 routes to node 2", Duration::from_secs(10), || {
        !routes(lab).trim().is_empty()
    });
    daemons
}

/// Node 1's routes to its peers (the overlay's protocol 83).
fn routes(lab: &EtcdLab) -> String {
    let n1 = lab.cluster.node(1).unwrap();
    n1.ns().ip(["route", "show", "proto", "83"]).unwrap()
}

fn talks(from: &Pod, to: &Pod) -> bool {
    let addr = SocketAddr::new(to.ip().into(), 9000);
    traffic::tcp_request(from.ns(), addr, Duration::from_millis(300))
        .is_ok_and(|r| r.backend == to.name() && r.seen_source.ip() == IpAddr::from(from.ip()))
}

#[test]
fn etcd_mode_three_nodes_distinct_subnets_traffic_and_expiry() {
    require_root();
    let lab = EtcdLab::start(3);
    let nodes = lab.cluster.nodes();
    // Each node "had" its test-bed pod CIDR before (flannel's restart path: the previous
    // subnet.env's subnet is reused when free), so the leases are known in advance.
    nodes.iter().for_each(|n| lab.previous_run(n));
    let mut daemons: Vec<Process> = nodes.iter().map(|n| lab.daemon(n, "3s")).collect();
    eventually(
        "every node's lease in etcd",
        Duration::from_secs(15),
        || lab.leases() == 3,
    );
    let subnets: Vec<String> = nodes.iter().map(|n| lab.subnet_of(n)).collect();
    let wanted: Vec<String> = nodes.iter().map(|n| n.pod_cidr().to_string()).collect();
    assert_eq!(subnets, wanted, "each node re-acquired its previous subnet");

    // The leases are flannel's: key per subnet, JSON value with the node's public IP.
    let key = format!("{PREFIX}/subnets/{}", subnets[0].replace('/', "-"));
    let value = lab.etcd.get(&key).unwrap().unwrap();
    let want = r#"{"PublicIP":"192.168.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":""#;
    assert!(value.starts_with(want), "{value}");

    let a = nodes[0].add_pod("a").unwrap();
    let b = nodes[1].add_pod("b").unwrap();
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
    let has_route = || {
        !nodes[0]
            .ns()
            .ip(["route", "show", gone.as_str()])
            .unwrap()
            .trim()
            .is_empty()
    };
    // Node 1 may learn node 3's lease after the pods of nodes 1 and 2 already talk.
    eventually(
        "node 1 routes to node 3's subnet while it lives",
        Duration::from_secs(10),
        has_route,
    );
    daemons[2].stop();
    eventually(
        "node 3's route removed after its lease expired",
        Duration::from_secs(15),
        || !has_route(),
    );
    assert!(
        lab.etcd
            .get(&format!("{PREFIX}/subnets/{}", gone.replace('/', "-")))
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
    let lab = EtcdLab::start(2);
    let mut daemons = routed_daemons(&lab);
    let routes = || routes(&lab);
    let before = routes();

    lab.etcd.pause().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(routes(), before, "routes kept while etcd is away");
    lab.etcd.resume().unwrap();

    // Past the 10 s TTL of any lease granted before the outage: only renewals made after
    // it can keep the keys.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(lab.leases(), 2, "renewals resumed after the outage");
    assert_eq!(routes(), before, "routes never removed");
    for d in &mut daemons {
        assert!(
            d.try_wait().unwrap().is_none(),
            "daemon survived the outage:\n{}",
            d.log_tail(20)
        );
    }
}

/// etcd stopped (connections refused, not frozen) and started again on the same data: the
/// routes stay while it is down and the daemons keep running; once it is back the leases are
/// renewed past their TTL and a peer that appears afterwards is routed (the watch came back).
#[test]
fn etcd_stopped_and_started_keeps_routes_and_the_watch_resumes() {
    require_root();
    let mut lab = EtcdLab::start(2);
    let mut daemons = routed_daemons(&lab);
    let before = routes(&lab);

    lab.etcd.stop();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(routes(&lab), before, "routes kept while etcd is stopped");
    for d in &mut daemons {
        assert!(d.try_wait().unwrap().is_none(), "{}", d.log_tail(20));
    }
    lab.etcd.start_again().unwrap();

    // A peer that shows up after the restart is routed: the watch is back.
    let peer = r#"{"PublicIP":"192.168.0.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:4d"}}"#;
    let key = format!("{PREFIX}/subnets/10.244.77.0-24");
    lab.etcd.put(&key, peer).unwrap();
    eventually("a route to the new peer", Duration::from_secs(30), || {
        routes(&lab).contains("10.244.77.0/24")
    });
    // Past the 10 s TTL of any lease granted before the stop: renewals resumed.
    std::thread::sleep(Duration::from_secs(11));
    assert!(lab.leases() >= 2, "renewals resumed after the restart");
    assert!(
        routes(&lab).contains(before.lines().next().unwrap_or("")),
        "old routes kept"
    );
    for d in &mut daemons {
        assert!(
            d.try_wait().unwrap().is_none(),
            "daemon survived the restart:\n{}",
            d.log_tail(20)
        );
    }
}
