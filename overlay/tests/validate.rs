//! Hostile and broken peer leases: each is skipped with its reason, counted, and never
//! affects the good peers; the reconcile loop stays healthy; a route someone else made is
//! never replaced.

mod common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use common::{lease, spec};
use ipnet::IpNet;
use sluice_model::net_conf::{BackendType, SubnetRange};
use sluice_overlay::allocate::Ranges;
use sluice_overlay::health;
use sluice_overlay::kernel::FakeKernel;
use sluice_overlay::sync::{Health, Node, SharedHealth};
use sluice_overlay::validate::{Bounds, Reason, select};
use sluice_overlay::{Lease, Params};

fn params() -> Params {
    Params {
        backend: BackendType::Vxlan,
        vni: 1,
        direct_routing: false,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Node 1's bounds: 10.244.0.0/16, underlay 192.168.0.11/24; etcd-mode ranges when asked.
fn bounds(etcd: bool) -> Bounds {
    let ranges = Ranges {
        ipv4: etcd.then(|| SubnetRange {
            subnet_len: 24,
            min: Ipv4Addr::new(10, 244, 1, 0),
            max: Ipv4Addr::new(10, 244, 255, 0),
        }),
        ipv6: None,
    };
    Bounds {
        networks: vec![net("10.244.0.0/16")],
        ranges,
        underlay: vec![net("192.168.0.11/24")],
    }
}

/// A VXLAN lease as flannel writes it, with any key, public IP and MAC.
fn raw(key: &str, public: &str, mac: &str) -> Lease {
    let value = format!(
        r#"{{"PublicIP":"{public}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    );
    Lease::from_etcd(key, &value).unwrap()
}

fn reasons(bounds: &Bounds, peers: &[Lease]) -> (Vec<String>, Vec<(String, Reason)>) {
    let s = select(bounds, &lease(1), peers, &params());
    let kept = s.peers.iter().map(Lease::label).collect();
    let skipped = s.skipped.into_iter().map(|s| (s.lease, s.reason)).collect();
    (kept, skipped)
}

#[test]
fn each_bad_lease_is_skipped_with_its_reason_and_the_good_ones_kept() {
    let cases = [
        (
            raw("10.250.1.7-24", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::HostBits,
        ),
        (
            raw("10.244.7.7-24", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::HostBits,
        ),
        (
            raw("0.0.0.0-0", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::OutsideNetwork,
        ),
        (
            raw("192.168.0.0-24", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::OutsideNetwork,
        ),
        (
            raw("10.244.8.0-25", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::SubnetLen,
        ),
        (
            raw("10.244.0.0-24", "192.168.0.50", "0a:00:00:00:00:50"),
            Reason::OutsideRange,
        ),
        (
            raw("10.244.8.0-24", "127.0.0.1", "0a:00:00:00:00:50"),
            Reason::PublicIp,
        ),
        (
            raw("10.244.8.0-24", "10.244.9.9", "0a:00:00:00:00:50"),
            Reason::PublicIp,
        ),
        (
            raw("10.244.8.0-24", "192.168.0.11", "0a:00:00:00:00:50"),
            Reason::PublicIp,
        ),
        (
            raw("10.244.8.0-24", "192.168.0.50", "00:00:00:00:00:00"),
            Reason::BackendData,
        ),
        (
            raw("10.244.8.0-24", "192.168.0.50", "01:00:5e:00:00:01"),
            Reason::BackendData,
        ),
    ];
    for (bad, reason) in cases {
        let label = bad.label();
        let (kept, skipped) = reasons(&bounds(true), &[lease(2), bad, lease(3)]);
        assert_eq!(kept, ["10.244.2.0-24", "10.244.3.0-24"], "{label}");
        assert_eq!(skipped, [(label.clone(), reason)], "{label}");
    }
    let mut no_ip = lease(4);
    no_ip.attrs.public_ip = None;
    let mut bad_data = lease(5);
    bad_data.attrs.backend_data = serde_json::json!({"VNI": "one"});
    let (kept, skipped) = reasons(&bounds(true), &[no_ip, bad_data, lease(2)]);
    assert_eq!(kept, ["10.244.2.0-24"]);
    assert_eq!(
        skipped,
        [
            ("10.244.4.0-24".into(), Reason::PublicIp),
            ("10.244.5.0-24".into(), Reason::BackendData)
        ]
    );
}

#[test]
fn the_underlay_and_this_nodes_subnet_are_never_a_peers() {
    // A pod network that (wrongly) holds the underlay: its /24 is still not a pod subnet.
    let wide = Bounds {
        networks: vec![net("192.168.0.0/16")],
        ..bounds(false)
    };
    let under = raw("192.168.0.0-24", "192.168.0.50", "0a:00:00:00:00:50");
    assert_eq!(
        reasons(&wide, &[under]).1,
        [("192.168.0.0-24".into(), Reason::Underlay)]
    );
    let inside_own = raw("10.244.1.128-25", "192.168.0.50", "0a:00:00:00:00:50");
    let same_as_own = raw("10.244.1.0-24", "192.168.0.50", "0a:00:00:00:00:50");
    let (kept, skipped) = reasons(&bounds(false), &[inside_own, same_as_own, lease(2)]);
    assert_eq!(kept, ["10.244.2.0-24"]);
    assert!(
        skipped.iter().all(|(_, r)| *r == Reason::OwnSubnet),
        "{skipped:?}"
    );
}

#[test]
fn two_leases_claiming_one_subnet_or_one_mac_are_both_skipped_and_nobody_else() {
    let a = raw("10.244.8.0-24", "192.168.0.50", "0a:00:00:00:00:50");
    let b = raw(
        "10.244.8.0-24&fd00::-64",
        "192.168.0.51",
        "0a:00:00:00:00:51",
    );
    let nested = raw("10.244.9.0-25", "192.168.0.52", "0a:00:00:00:00:52");
    let outer = raw("10.244.9.0-24", "192.168.0.53", "0a:00:00:00:00:53");
    let same_mac = raw("10.244.10.0-24", "192.168.0.54", "0a:00:00:00:00:50");
    let (kept, skipped) = reasons(&bounds(false), &[a, b, nested, outer, same_mac, lease(2)]);
    assert_eq!(kept, ["10.244.2.0-24"]);
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert!(
        skipped.iter().all(|(_, r)| *r == Reason::Conflict),
        "{skipped:?}"
    );
}

#[test]
fn families_this_node_does_not_run_are_dropped_not_skipped() {
    let mut dual = raw(
        "10.244.8.0-24&fd00:1::-64",
        "192.168.0.50",
        "0a:00:00:00:00:50",
    );
    dual.attrs.public_ipv6 = Some("fd00:192::50".parse().unwrap());
    let v6_only = raw("fd00:2::-64", "192.168.0.51", "0a:00:00:00:00:51");
    let s = select(&bounds(true), &lease(1), &[dual, v6_only], &params());
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    assert_eq!(s.peers.len(), 1);
    assert_eq!(
        (s.peers[0].subnet.is_some(), s.peers[0].ipv6_subnet),
        (true, None)
    );
}

fn node() -> Node<FakeKernel> {
    Node {
        kernel: FakeKernel::default(),
        params: params(),
        own: lease(1),
        devices: vec![spec(1)],
        networks: vec![net("10.244.0.0/16")],
        bounds: bounds(true),
        same_l2: Box::new(|_| false),
        masq: None,
    }
}

#[tokio::test]
async fn hostile_peers_keep_the_reconcile_healthy_and_are_counted() {
    let mut node = node();
    let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
    let peers = [
        lease(2),
        raw("0.0.0.0-0", "192.168.0.50", "0a:00:00:00:00:50"),
        raw("192.168.0.0-24", "192.168.0.51", "0a:00:00:00:00:51"),
        raw("10.244.7.7-24", "192.168.0.52", "0a:00:00:00:00:52"),
    ];
    let out = node.sync(&peers, &health).await.unwrap();
    assert!(out.failures.is_empty(), "{out:?}");
    let routes: Vec<IpNet> = node.kernel.state.routes.keys().copied().collect();
    assert_eq!(routes, [net("10.244.2.0/24")]);
    let again = node.sync(&peers, &health).await.unwrap();
    assert!(again.was_converged(), "no flapping: {again:?}");

    let (code, body) = health::verdict(
        &health,
        std::time::Duration::from_secs(10),
        tokio::time::Instant::now(),
    );
    assert_eq!(code.as_u16(), 200, "{body}");
    assert!(
        body.contains("skipping lease 10.244.7.7-24: subnet 10.244.7.7/24 has host bits set"),
        "{body}"
    );
    let metrics = health::metrics(&health);
    for line in [
        r#"sluice_overlay_skipped_leases{reason="outside-network"} 2"#,
        r#"sluice_overlay_skipped_leases{reason="host-bits"} 1"#,
        r#"sluice_overlay_skipped_leases{reason="conflict"} 0"#,
        "sluice_overlay_reconciles_total 2",
        "sluice_overlay_reconcile_failures_total 0",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn a_route_someone_else_made_is_left_alone_and_reported() {
    let mut node = node();
    // The kernel's connected route (protocol 2) where a valid lease wants a route.
    node.kernel.foreign.insert(net("10.244.2.0/24"), 2);
    let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
    let out = node.sync(&[lease(2), lease(3)], &health).await.unwrap();
    assert_eq!(out.blocked, [(net("10.244.2.0/24"), 2)]);
    assert!(!node.kernel.state.routes.contains_key(&net("10.244.2.0/24")));
    assert!(node.kernel.state.routes.contains_key(&net("10.244.3.0/24")));
    let skipped = health.lock().unwrap().skipped.clone();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason, Reason::RouteTaken);
    assert!(
        skipped[0].to_string().contains("protocol 2"),
        "{}",
        skipped[0]
    );
}
