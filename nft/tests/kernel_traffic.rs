//! Real traffic through rules programmed by netlink (as root, test-bed clusters): a
//! ClusterIP reaches pods on another node through the service-ips vmap, a service chain,
//! the shared numgen bucket map, endpoint chains and DNAT; endpoint changes are incremental.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use sluice_nft::*;
use sluice_testbed::cluster::Cluster;
use sluice_testbed::require_root;
use sluice_testbed::traffic::{self, EchoServer};

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

#[test]
fn the_data_layout_balances_and_changes_by_elements_alone() {
    require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let node = cluster.node(1).unwrap();
    let client = node.add_pod("client").unwrap();
    let pods: Vec<_> = ["web-a", "web-b", "web-c"]
        .iter()
        .map(|n| cluster.node(2).unwrap().add_pod(n).unwrap())
        .collect();
    let names = ["web-a", "web-b", "web-c"];
    let _tcp: Vec<_> = (pods.iter().zip(names))
        .map(|(p, n)| EchoServer::tcp(p.ns(), n, any(8080)).unwrap())
        .collect();
    let _udp: Vec<_> = (pods.iter().zip(names))
        .map(|(p, n)| EchoServer::udp(p.ns(), n, any(8080)).unwrap())
        .collect();
    let ips: Vec<String> = pods.iter().map(|p| p.ip().to_string()).collect();
    let mut tx = data_layout(
        Family::Ip,
        ["10.96.0.1", "10.96.0.2"],
        [&ips[0], &ips[1], &ips[2]],
    );
    // UDP too: the same Services on UDP port 80.
    let udp = |e: &Element| {
        let mut e = e.clone();
        e.key[1] = KeyValue::Proto(Proto::Udp);
        e
    };
    let extra: Vec<Op> = (tx.ops.iter())
        .filter_map(|op| match op {
            Op::AddElements { set, elements } => Some(Op::AddElements {
                set: set.clone(),
                elements: (set != "pick").then(|| elements.iter().map(udp).collect())?,
            }),
            _ => None,
        })
        .collect();
    tx.ops.extend(extra);
    apply(node.ns(), &tx).unwrap();

    for proto in [traffic::Proto::Tcp, traffic::Proto::Udp] {
        let three = traffic::tally(client.ns(), proto, sock("10.96.0.1", 80), 60, TIMEOUT).unwrap();
        assert_eq!(three.failures, 0, "{:?}", three.first_error);
        assert!(names.iter().all(|n| three.count(n) > 0), "{three:?}");
        let one = traffic::tally(client.ns(), proto, sock("10.96.0.2", 80), 10, TIMEOUT).unwrap();
        assert_eq!((one.failures, one.count("web-a")), (0, 10), "{one:?}");
    }

    // Down to one endpoint: the count element changes, no rule and no chain.
    let key = vec![
        addr("10.96.0.1"),
        KeyValue::Proto(Proto::Tcp),
        KeyValue::Port(80),
    ];
    let mut shrink = Transaction::new(Family::Ip, TABLE);
    shrink.push(Op::DeleteElements {
        set: "counts".into(),
        elements: vec![Element::key(key.clone())],
    });
    shrink.push(Op::AddElements {
        set: "counts".into(),
        elements: vec![Element::data(
            key,
            ElementData::Addr("0.0.0.1".parse().unwrap()),
        )],
    });
    assert!(
        shrink
            .ops
            .iter()
            .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. }))
    );
    apply(node.ns(), &shrink).unwrap();
    let t = traffic::tally(
        client.ns(),
        traffic::Proto::Tcp,
        sock("10.96.0.1", 80),
        10,
        TIMEOUT,
    )
    .unwrap();
    assert_eq!((t.failures, t.count("web-a")), (0, 10), "{t:?}");
}
