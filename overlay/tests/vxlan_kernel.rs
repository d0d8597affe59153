//! The VXLAN overlay on a real kernel: two test-bed nodes, each reconciled through netlink,
//! pods on different nodes talking over `flannel.1`, and state restored after someone deletes
//! the device, a route or a neighbour entry.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{lease, mac, networks, spec, sync};
use sluice_model::net_conf::BackendType;
use sluice_overlay::kernel::Kernel;
use sluice_overlay::netlink_kernel::NetlinkKernel;
use sluice_overlay::{Desired, Lease, Params, compute};
use sluice_testbed::cluster::{Cluster, Node, node_pod_cidr};
use sluice_testbed::require_root;
use sluice_testbed::traffic::{self, EchoServer};

const T: Duration = Duration::from_secs(2);

fn desired(i: u8, peers: &[u8]) -> Desired {
    let params = Params {
        backend: BackendType::Vxlan,
        vni: 1,
        direct_routing: false,
    };
    let peers: Vec<Lease> = peers.iter().map(|p| lease(*p)).collect();
    compute(&lease(i), &peers, &params, |_| false).desired
}

/// A netlink kernel whose socket lives in the node's namespace.
fn kernel_of(node: &Node) -> NetlinkKernel {
    let rt = tokio::runtime::Handle::current();
    node.ns()
        .run(move || {
            let _entered = rt.enter();
            NetlinkKernel::connect()
        })
        .unwrap()
        .unwrap()
}

/// One reconcile of node `i` with `peer` as its only peer.
async fn sync_with(k: &mut NetlinkKernel, i: u8, peer: u8) -> sluice_overlay::reconcile::Outcome {
    sync(k, i, &desired(i, &[peer])).await
}

fn pod_to_pod(from: &sluice_testbed::cluster::Pod, to: &sluice_testbed::cluster::Pod) {
    let reply = traffic::tcp_request(from.ns(), SocketAddr::new(to.ip().into(), 9000), T)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.name(), to.name()));
    assert_eq!(reply.backend, to.name());
    assert_eq!(
        reply.seen_source.ip(),
        IpAddr::from(from.ip()),
        "no NAT across the overlay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_across_the_vxlan_and_the_overlay_heals() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    assert_eq!(n1.pod_cidr(), node_pod_cidr(1));
    let (mut k1, mut k2) = (kernel_of(n1), kernel_of(n2));
    assert!(sync_with(&mut k1, 1, 2).await.device_created);
    assert!(sync_with(&mut k2, 2, 1).await.device_created);
    let dev = k1.device("flannel.1").await.unwrap();
    assert_eq!(dev.as_ref(), Some(&spec(1)), "device reads back as created");
    let seen = k1
        .observe(&["flannel.1".to_owned()], &networks())
        .await
        .unwrap()
        .state;
    assert_eq!(seen, desired(1, &[2]), "state reads back as written");
    let again = sync_with(&mut k1, 1, 2).await;
    assert!(
        again.was_converged(),
        "second reconcile is a no-op: {again:?}"
    );

    let a = n1.add_pod("a").unwrap();
    let b = n2.add_pod("b").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let _sa = EchoServer::tcp(a.ns(), "a", any).unwrap();
    let _sb = EchoServer::tcp(b.ns(), "b", any).unwrap();
    pod_to_pod(&a, &b);
    pod_to_pod(&b, &a);

    // What flannel would program, checked through the real tools.
    let link = n1
        .ns()
        .exec(["ip", "-d", "link", "show", "flannel.1"])
        .unwrap();
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472") && link.contains("nolearning"),
        "{link}"
    );
    assert!(
        link.contains("mtu 1450") && link.contains(&mac(1).to_string()),
        "{link}"
    );
    let fdb = n1
        .ns()
        .exec(["bridge", "fdb", "show", "dev", "flannel.1"])
        .unwrap();
    assert!(
        fdb.contains(&format!("{} dst 192.168.0.12 self permanent", mac(2))),
        "{fdb}"
    );
    let route = n1
        .ns()
        .exec(["ip", "route", "show", "10.244.2.0/24"])
        .unwrap();
    assert!(
        route.contains("via 10.244.2.0 dev flannel.1") && route.contains("onlink"),
        "{route}"
    );

    // Someone deletes the device: one reconcile recreates it with all peer state.
    n1.ns().ip(["link", "del", "flannel.1"]).unwrap();
    assert!(traffic::tcp_request(a.ns(), SocketAddr::new(b.ip().into(), 9000), T).is_err());
    assert!(sync_with(&mut k1, 1, 2).await.device_created);
    pod_to_pod(&a, &b);

    // ... or a route and a neighbour entry.
    n1.ns().ip(["route", "del", "10.244.2.0/24"]).unwrap();
    n1.ns()
        .ip(["neigh", "del", "10.244.2.0", "dev", "flannel.1"])
        .unwrap();
    let healed = sync_with(&mut k1, 1, 2).await;
    assert_eq!(healed.operations, 2, "{healed:?}");
    pod_to_pod(&a, &b);

    // The peer leaves: its state goes, route first.
    let gone = sync(&mut k1, 1, &Desired::default()).await;
    assert_eq!(gone.operations, 3);
    let left = k1
        .observe(&["flannel.1".to_owned()], &networks())
        .await
        .unwrap()
        .state;
    assert_eq!(left, Desired::default());
}
