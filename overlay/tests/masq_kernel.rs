//! The masquerade ruleset on a real kernel, in test-bed namespaces, programmed through
//! `sluice-nft` as the daemon does: pod traffic leaving the pod network is SNATed to the node,
//! pod-to-pod traffic keeps its source, a converged table is left alone, and what `nft` lists
//! is the ruleset the golden files hold.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sluice_nft::{Family, Netlink, NftKernel, Transaction};
use sluice_overlay::masq::{MasqNets, TABLE, cleanup, repair};
use sluice_testbed::cluster::Cluster;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{NetNs, require_root};

const T: Duration = Duration::from_secs(2);

/// nftables of `ns`, through a netlink socket opened there.
fn nft_of(ns: &NetNs) -> Netlink {
    ns.run(Netlink::open).unwrap().unwrap()
}

fn apply(ns: &NetNs, tx: &Transaction) {
    nft_of(ns).apply(tx).unwrap();
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
    let mut nft = nft_of(n1.ns());
    assert!(repair(&mut nft, &nets).unwrap(), "written");
    assert!(
        !repair(&mut nft, &nets).unwrap(),
        "read back as written: left alone"
    );
    let listed = n1.ns().exec(["nft", "list", "table", "ip", TABLE]).unwrap();
    assert_eq!(
        listed.matches("masquerade fully-random").count(),
        2,
        "{listed}"
    );
    assert!(
        listed.contains("meta mark & 0x00004000 == 0x00000000"),
        "{listed}"
    );

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

    apply(n1.ns(), &cleanup(Family::Ip));
    apply(n1.ns(), &cleanup(Family::Ip)); // cleanup of a missing table succeeds too
    let tables = n1.ns().exec(["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains(TABLE), "{tables}");
    let direct = traffic::tcp_request(pod.ns(), (n2.addr(), 9000).into(), T).unwrap();
    assert_eq!(
        direct.seen_source.ip(),
        IpAddr::from(pod.ip()),
        "rules gone: no SNAT"
    );
}
