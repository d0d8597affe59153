//! The overlay's peer inputs: etcd lease keys and values (flannel's `subnets/<a.b.c.d>-<len>`
//! JSON) and the kube subnet manager's Node annotations and podCIDRs. Whatever they say,
//! validation must leave only state this node may program: no host bits, nothing outside
//! the pod network or on the underlay or this node's own subnet, no overlapping routes, and
//! peers reached at unicast addresses and MACs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use sluice_model::net_conf::{BackendType, SubnetRange};
use sluice_overlay::allocate::Ranges;
use sluice_overlay::etcd_entry::{self, Entry};
use sluice_overlay::lease::parse_subnet_key;
use sluice_overlay::node_lease::{peer_lease, pod_subnets};
use sluice_overlay::validate::{Bounds, select};
use sluice_overlay::{AnnotationKeys, Lease, NextHop, Params, Plan, compute};

/// Key and value lines, in pairs: each a lease (or garbage) in etcd.
pub fn etcd_leases(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let mut peers = Vec::new();
    let mut lines = text.lines();
    while let (Some(key), Some(value)) = (lines.next(), lines.next()) {
        let full = format!("/coreos.com/network/subnets/{key}");
        let entry = etcd_entry::parse(
            "/coreos.com/network/subnets/",
            full.as_bytes(),
            value.as_bytes(),
            1,
        );
        let Ok(lease) = Lease::from_etcd(key, value) else {
            assert!(!matches!(entry, (_, Entry::Lease(_))), "{key} {value}");
            continue;
        };
        assert!(matches!(&entry, (_, Entry::Lease(l)) if *l == lease));
        let label = lease.label();
        let subnets = parse_subnet_key(&label).expect("a label parses as a key");
        assert_eq!(subnets, (lease.subnet, lease.ipv6_subnet), "{label}");
        let again =
            Lease::from_etcd(&label, &lease.etcd_value()).expect("the value we write parses");
        assert_eq!(again, lease, "{label}");
        peers.push(lease);
        if peers.len() == 16 {
            break;
        }
    }
    let host_gw = data.first().is_some_and(|b| b % 2 == 1);
    check_selection(&bounds(true), &peers, host_gw);
}

/// First line the annotation prefix; `podCIDR=…` lines the Node's podCIDRs; `+suffix=value`
/// an annotation under the prefix, `key=value` any other.
pub fn node_annotations(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let mut lines = text.lines();
    let keys = AnnotationKeys::new(lines.next().unwrap_or_default());
    let (mut cidrs, mut annotations) = (Vec::new(), BTreeMap::new());
    for line in lines {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.strip_prefix('+') {
            _ if k == "podCIDR" => cidrs.push(v.to_owned()),
            Some(suffix) => drop(annotations.insert(keys.key(suffix), v.to_owned())),
            None => drop(annotations.insert(k.to_owned(), v.to_owned())),
        }
    }
    if let Ok(Some(attrs)) = keys.read("n", &annotations) {
        let published = keys.publish(&attrs);
        assert!(
            matches!(keys.read("n", &published), Ok(Some(_))),
            "{published:?}"
        );
    }
    let network = Some("10.244.0.0/16".parse().expect("literal"));
    if let Ok((v4, v6)) = pod_subnets("n", &cidrs, network, None) {
        assert!(v4.is_some_and(|n| network.is_some_and(|net| net.contains(&n))) && v6.is_none());
    }
    if let Ok(Some(lease)) = peer_lease(&keys, "n", &cidrs, &annotations) {
        assert!(lease.subnet.is_some() || lease.ipv6_subnet.is_some());
        check_selection(&bounds(false), &[lease], false);
    }
}

/// Node 1 of a dual-stack cluster: 10.244.1.0/24 and fd00:10:244:1::/64, underlay
/// 192.168.0.11/24 and fd00:192:168::11/64; etcd mode adds flannel's allocation ranges.
fn bounds(etcd: bool) -> Bounds {
    let ranges = Ranges {
        ipv4: etcd.then(|| SubnetRange {
            subnet_len: 24,
            min: Ipv4Addr::new(10, 244, 1, 0),
            max: Ipv4Addr::new(10, 244, 255, 0),
        }),
        ipv6: etcd.then(|| SubnetRange {
            subnet_len: 64,
            min: "fd00:10:244:1::".parse().expect("literal"),
            max: "fd00:10:244:ff::".parse().expect("literal"),
        }),
    };
    Bounds {
        networks: vec![net("10.244.0.0/16"), net("fd00:10:244::/48")],
        ranges,
        underlay: vec![net("192.168.0.11/24"), net("fd00:192:168::11/64")],
    }
}

fn net(text: &str) -> IpNet {
    text.parse().expect("literal")
}

fn own() -> Lease {
    let value = r#"{"PublicIP":"192.168.0.11","PublicIPv6":"fd00:192:168::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}}"#;
    Lease::from_etcd("10.244.1.0-24&fd00:10:244:1::-64", value).expect("literal lease")
}

/// Validation and the desired state for `peers` leave only what this node may program.
fn check_selection(bounds: &Bounds, peers: &[Lease], host_gw: bool) {
    let backend = if host_gw {
        BackendType::HostGw
    } else {
        BackendType::Vxlan
    };
    let params = Params {
        backend,
        vni: 1,
        direct_routing: false,
    };
    let own = own();
    let selection = select(bounds, &own, peers, &params);
    let again = select(bounds, &own, &selection.peers, &params);
    assert_eq!(again.peers, selection.peers, "selection is stable");
    assert!(again.skipped.is_empty(), "{:?}", again.skipped);
    let desired = compute(&own, &selection.peers, &params, |_| false).desired;
    let routes: Vec<IpNet> = desired.routes.keys().copied().collect();
    let mine = [own.subnet.map(IpNet::V4), own.ipv6_subnet.map(IpNet::V6)];
    for (i, dst) in routes.iter().enumerate() {
        assert_eq!(dst.addr(), dst.network(), "{dst} has host bits");
        assert!(bounds.networks.iter().any(|n| n.contains(dst)), "{dst}");
        let clash = |n: &IpNet| overlaps(n, dst);
        assert!(!bounds.underlay.iter().any(clash), "{dst} on the underlay");
        assert!(
            !mine.iter().flatten().any(clash),
            "{dst} on this node's subnet"
        );
        assert!(
            !routes[i + 1..].iter().any(clash),
            "{dst} overlaps another route"
        );
        match &desired.routes[dst] {
            NextHop::Overlay { via, .. } => assert_eq!(*via, dst.network()),
            NextHop::Underlay { via } => assert!(reachable(bounds, *via), "{dst} via {via}"),
        }
    }
    for ((_, mac), ip) in &desired.fdb {
        assert!(mac.0 != [0; 6] && mac.0[0] & 1 == 0, "FDB MAC {mac}");
        assert!(reachable(bounds, *ip), "FDB {mac} -> {ip}");
    }
    let mut reached = sluice_overlay::Desired::default();
    Plan::between(&reached, &desired).apply_to(&mut reached);
    assert_eq!(reached, desired);
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.addr().is_ipv4() == b.addr().is_ipv4()
        && (a.contains(&b.network()) || b.contains(&a.network()))
}

/// A peer underlay address: unicast, outside the pod networks, not this node's.
fn reachable(bounds: &Bounds, ip: IpAddr) -> bool {
    let unicast = match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast()),
    };
    let ours = [
        IpAddr::from([192, 168, 0, 11]),
        "fd00:192:168::11".parse().expect("literal"),
    ];
    unicast && !bounds.networks.iter().any(|n| n.contains(&ip)) && !ours.contains(&ip)
}
