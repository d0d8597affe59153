//! The masquerade ruleset on a real kernel, in test-bed namespaces: pod traffic leaving the
//! pod network is SNATed to the node, pod-to-pod traffic keeps its source, and reloading is
//! idempotent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sluice_overlay::masq::{MasqNets, TABLE, render, render_cleanup};
use sluice_testbed::cluster::Cluster;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{NetNs, require_root};

const T: Duration = Duration::from_secs(2);

fn nft(ns: &NetNs, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.nft");
    std::fs::write(&path, script).unwrap();
    ns.exec(["nft", "-f", path.to_str().unwrap()]).unwrap();
}

#[test]
fn pod_traffic_leaving_the_pod_network_is_masqueraded_and_nothing_else() {
    require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let pod = n1.add_pod("client").unwrap();
    let peer = n2.add_pod("peer").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let _peer_srv = EchoServer::tcp(peer.ns(), "peer", any).unwrap();
    // Node 2's own address is outside the pod network: a stand-in for "the internet".
    let _outside_srv = EchoServer::tcp(n2.ns(), "outside", any).unwrap();

    let nets = MasqNets {
        network: "10.244.0.0/16".parse().unwrap(),
        pod_cidr: n1.pod_cidr().into(),
    };
    nft(n1.ns(), &render(&nets));
    nft(n1.ns(), &render(&nets)); // a reconcile reloads the same table: no error, no duplicates
    let listed = n1.ns().exec(["nft", "list", "table", "ip", TABLE]).unwrap();
    assert_eq!(listed.matches("masquerade").count(), 2, "{listed}");

    let out = traffic::tcp_request(pod.ns(), (n2.addr(), 9000).into(), T).unwrap();
    assert_eq!(out.backend, "outside");
    assert_eq!(
        out.seen_source.ip(),
        IpAddr::from(n1.addr()),
        "SNAT to the node"
    );

    let inside = traffic::tcp_request(pod.ns(), (peer.ip(), 9000).into(), T).unwrap();
    assert_eq!(inside.backend, "peer");
    assert_eq!(
        inside.seen_source.ip(),
        IpAddr::from(pod.ip()),
        "no NAT inside the pod network"
    );

    nft(n1.ns(), &render_cleanup("ip"));
    nft(n1.ns(), &render_cleanup("ip")); // cleanup of a missing table succeeds too
    let tables = n1.ns().exec(["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains(TABLE), "{tables}");
    let direct = traffic::tcp_request(pod.ns(), (n2.addr(), 9000).into(), T).unwrap();
    assert_eq!(
        direct.seen_source.ip(),
        IpAddr::from(pod.ip()),
        "rules gone: no SNAT"
    );
}
