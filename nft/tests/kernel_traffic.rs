//! Real traffic through rules programmed by netlink (as root, test-bed clusters): a
//! ClusterIP reaches pods on another node through the service-ips vmap, a service chain,
//! the shared numgen bucket map, endpoint chains and DNAT; endpoint changes are incremental;
//! conntrack deletion removes a real UDP flow's entry.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use sluice_nft::conntrack::{Conntrack, FlowFilter};
use sluice_nft::*;
use sluice_testbed::cluster::Cluster;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{NetNs, require_root};

const TIMEOUT: Duration = Duration::from_secs(2);

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn any(port: u16) -> SocketAddr {
    sock("0.0.0.0", port)
}

#[test]
fn a_cluster_ip_balances_over_endpoints_on_another_node() {
    require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let node = cluster.node(1).unwrap();
    let client = node.add_pod("client").unwrap();
    let a = cluster.node(2).unwrap().add_pod("web-a").unwrap();
    let b = cluster.node(2).unwrap().add_pod("web-b").unwrap();
    let _sa = EchoServer::tcp(a.ns(), "web-a", any(8080)).unwrap();
    let _sb = EchoServer::tcp(b.ns(), "web-b", any(8080)).unwrap();
    let (ia, ib) = (a.ip().to_string(), b.ip().to_string());

    let mut tx = Transaction::new(Family::Ip, TABLE);
    skeleton(&mut tx);
    service(
        &mut tx,
        "web",
        "10.96.0.10",
        80,
        &[(&ia, 8080), (&ib, 8080)],
    );
    apply(node.ns(), &tx).unwrap();

    let vip = sock("10.96.0.10", 80);
    let t = traffic::tally(client.ns(), traffic::Proto::Tcp, vip, 40, TIMEOUT).unwrap();
    assert_eq!(t.failures, 0, "{:?}", t.first_error);
    assert!(t.count("web-a") > 0 && t.count("web-b") > 0, "{t:?}");
    assert_eq!(
        t.sources.iter().collect::<Vec<_>>(),
        [&IpAddr::V4(client.ip())]
    );

    // Scale to one endpoint: only this service's chain and its hairpin element change.
    let mut shrink = Transaction::new(Family::Ip, TABLE);
    shrink.push(Op::FlushChain("service-web".into()));
    shrink.push(rule(
        "service-web",
        vec![
            Stmt::L4Proto(Proto::Tcp),
            Stmt::Dnat {
                addr: a.ip().into(),
                port: 8080,
            },
        ],
    ));
    shrink.push(Op::DeleteElements {
        set: "hairpin".into(),
        elements: vec![Element::key(vec![
            KeyValue::Addr(b.ip().into()),
            KeyValue::Addr(b.ip().into()),
            KeyValue::Port(8080),
        ])],
    });
    apply(node.ns(), &shrink).unwrap();
    let t = traffic::tally(client.ns(), traffic::Proto::Tcp, vip, 10, TIMEOUT).unwrap();
    assert_eq!((t.failures, t.count("web-a")), (0, 10), "{t:?}");
}

fn udp_entries(ns: &NetNs, vip: &str) -> usize {
    let out = ns.exec(["conntrack", "-L", "-p", "udp"]).unwrap();
    out.lines()
        .filter(|l| l.contains(&format!("dst={vip} ")))
        .count()
}

#[test]
fn conntrack_delete_removes_a_udp_flow_through_a_vip() {
    require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let node = cluster.node(1).unwrap();
    let client = node.add_pod("client").unwrap();
    let dns = cluster.node(2).unwrap().add_pod("dns").unwrap();
    let _udp = EchoServer::udp(dns.ns(), "dns", any(5353)).unwrap();
    let _tcp = EchoServer::tcp(dns.ns(), "dns", any(5353)).unwrap();
    let ip = dns.ip().to_string();

    let mut tx = Transaction::new(Family::Ip, TABLE);
    skeleton(&mut tx);
    service_proto(
        &mut tx,
        Proto::Udp,
        "dns-udp",
        "10.96.0.53",
        53,
        &[(&ip, 5353)],
    );
    service_proto(
        &mut tx,
        Proto::Tcp,
        "dns-tcp",
        "10.96.0.53",
        53,
        &[(&ip, 5353)],
    );
    apply(node.ns(), &tx).unwrap();

    let vip = sock("10.96.0.53", 53);
    let reply = traffic::udp_request(client.ns(), vip, TIMEOUT).unwrap();
    assert_eq!(reply.backend, "dns");
    traffic::tcp_request(client.ns(), vip, TIMEOUT).unwrap();
    assert_eq!(udp_entries(node.ns(), "10.96.0.53"), 1);

    let vip_ip: IpAddr = "10.96.0.53".parse().unwrap();
    let deleted = node
        .ns()
        .run(|| -> Result<(usize, usize), NftError> {
            let mut ct = Conntrack::open()?;
            // Another endpoint's flows: nothing to delete.
            let other =
                ct.delete(&FlowFilter::udp_to(vip_ip).reply_from("10.244.9.9".parse().unwrap()))?;
            let this = ct.delete(
                &FlowFilter::udp_to(vip_ip)
                    .port(53)
                    .reply_from(dns.ip().into()),
            )?;
            Ok((other, this))
        })
        .unwrap()
        .unwrap();
    assert_eq!(deleted, (0, 1));
    assert_eq!(udp_entries(node.ns(), "10.96.0.53"), 0);
    // The TCP flow to the same VIP is untouched.
    let tcp = node.ns().exec(["conntrack", "-L", "-p", "tcp"]).unwrap();
    assert!(tcp.contains("dst=10.96.0.53 "), "{tcp}");
}
