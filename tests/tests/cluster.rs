//! Kernel tests: clusters carry real traffic, and parallel clusters do not collide (need root).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use sluice_testbed::cluster::{Cluster, POD_BRIDGE};
use sluice_testbed::link::link_names;
use sluice_testbed::traffic::{self, EchoServer, Proto};
use sluice_testbed::{NetNs, require_root};

const T: Duration = Duration::from_secs(2);

#[test]
fn pods_on_two_nodes_exchange_tcp_and_udp_without_nat() -> Result<()> {
    require_root();
    let cluster = Cluster::with_pod_routes(2)?;
    let a = cluster.node(1)?.add_pod("pod-a")?;
    let b = cluster.node(2)?.add_pod("pod-b")?;
    assert_eq!(a.ip(), "10.244.1.2".parse::<std::net::Ipv4Addr>()?);
    assert_eq!(b.ip(), "10.244.2.2".parse::<std::net::Ipv4Addr>()?);
    let any: SocketAddr = "0.0.0.0:8080".parse()?;
    let _tcp_b = EchoServer::tcp(b.ns(), "pod-b", any)?;
    let _udp_b = EchoServer::udp(b.ns(), "pod-b", any)?;
    let _tcp_a = EchoServer::tcp(a.ns(), "pod-a", any)?;

    let reply = traffic::tcp_request(a.ns(), (b.ip(), 8080).into(), T)?;
    assert_eq!(reply.backend, "pod-b");
    assert_eq!(reply.seen_source.ip(), a.ip());
    let reply = traffic::udp_request(a.ns(), (b.ip(), 8080).into(), T)?;
    assert_eq!(reply.backend, "pod-b");
    assert_eq!(reply.seen_source.ip(), a.ip());
    let reply = traffic::tcp_request(b.ns(), (a.ip(), 8080).into(), T)?;
    assert_eq!(
        (reply.backend.as_str(), reply.seen_source.ip()),
        ("pod-a", b.ip().into())
    );

    let tally = traffic::tally(a.ns(), Proto::Udp, (b.ip(), 8080).into(), 20, T)?;
    assert_eq!((tally.count("pod-b"), tally.failures), (20, 0), "{tally:?}");
    assert_eq!(tally.sources, BTreeSet::from([a.ip().into()]));
    // Node to remote pod works too (host-gw routes are symmetric).
    let reply = traffic::tcp_request(cluster.node(1)?.ns(), (b.ip(), 8080).into(), T)?;
    assert_eq!(reply.seen_source.ip(), cluster.node(1)?.addr());
    Ok(())
}

#[test]
fn requests_to_nothing_fail_fast_and_are_counted() -> Result<()> {
    require_root();
    let cluster = Cluster::with_pod_routes(1)?;
    let a = cluster.node(1)?.add_pod("lonely")?;
    let err = traffic::tcp_request(a.ns(), (a.ip(), 9).into(), T).expect_err("nobody listens");
    assert!(err.to_string().contains("refused"), "{err}");
    let short = Duration::from_millis(100);
    let tally = traffic::tally(a.ns(), Proto::Udp, "10.244.1.250:9".parse()?, 2, short)?;
    assert_eq!((tally.answered(), tally.failures), (0, 2), "{tally:?}");
    assert!(tally.first_error.is_some());
    Ok(())
}

#[test]
fn pods_share_the_node_bridge_and_bare_pods_are_empty() -> Result<()> {
    require_root();
    let cluster = Cluster::new(1)?;
    let node = cluster.node(1)?;
    assert!(!link_names(node.ns())?.contains(&POD_BRIDGE.to_owned()));
    let p1 = node.add_pod("p1")?;
    let p2 = node.add_pod("p2")?;
    assert_eq!(p2.ip(), "10.244.1.3".parse::<std::net::Ipv4Addr>()?);
    let _srv = EchoServer::tcp(p2.ns(), "p2", "0.0.0.0:80".parse()?)?;
    let reply = traffic::tcp_request(p1.ns(), (p2.ip(), 80).into(), T)?;
    assert_eq!(reply.seen_source.ip(), p1.ip());
    let bare = node.bare_pod("bare")?;
    assert_eq!(link_names(bare.ns())?, vec!["lo".to_owned()]);
    assert!(bare.ns().path().exists());
    Ok(())
}

/// One complete cluster with a request across it; returns the namespace names it used.
fn one_cluster() -> Result<Vec<String>> {
    let cluster = Cluster::with_pod_routes(2)?;
    let a = cluster.node(1)?.add_pod("par-a")?;
    let b = cluster.node(2)?.add_pod("par-b")?;
    let _srv = EchoServer::tcp(b.ns(), "par-b", "0.0.0.0:80".parse()?)?;
    let reply = traffic::tcp_request(a.ns(), (b.ip(), 80).into(), T)?;
    assert_eq!(reply.seen_source.ip(), a.ip());
    let mut names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.ns().name().to_owned())
        .collect();
    names.extend([a.ns().name().to_owned(), b.ns().name().to_owned()]);
    names.push(cluster.underlay().ns().name().to_owned());
    Ok(names)
}

#[test]
fn parallel_clusters_with_the_same_addresses_do_not_collide() -> Result<()> {
    require_root();
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(one_cluster)).collect();
    let mut all = BTreeSet::new();
    for handle in handles {
        let names = handle.join().expect("cluster thread panicked")?;
        for name in names {
            assert!(all.insert(name.clone()), "{name} used twice");
        }
    }
    assert_eq!(all.len(), 4 * 5);
    for name in &all {
        assert!(!NetNs::exists(name), "{name} left behind");
    }
    Ok(())
}
