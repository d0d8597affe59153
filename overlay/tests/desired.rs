//! Desired overlay state from leases, and plans between states.

mod common;

use std::net::IpAddr;

use common::lease_with_mac;
use ipnet::IpNet;
use proptest::prelude::*;
use sluice_model::net_conf::BackendType;
use sluice_overlay::{Desired, NextHop, Params, Plan, compute};

fn params(backend: BackendType, direct_routing: bool) -> Params {
    Params {
        backend,
        vni: 1,
        direct_routing,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn vxlan_peer_gets_one_neighbor_one_fdb_one_onlink_route() {
    let own = lease_with_mac(1, "aa:aa:aa:aa:aa:01");
    let peers = [own.clone(), lease_with_mac(2, "aa:aa:aa:aa:aa:02")];
    let c = compute(&own, &peers, &params(BackendType::Vxlan, false), |_| true);
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    let d = c.desired;
    let dev = "flannel.1".to_owned();
    let mac = "aa:aa:aa:aa:aa:02".parse().unwrap();
    assert_eq!(d.neighbors.len(), 1);
    assert_eq!(d.neighbors[&(dev.clone(), ip("10.244.2.0"))], mac);
    assert_eq!(d.fdb[&(dev.clone(), mac)], ip("192.168.0.12"));
    assert_eq!(
        d.routes[&net("10.244.2.0/24")],
        NextHop::Overlay {
            dev,
            via: ip("10.244.2.0")
        }
    );
}

#[test]
fn host_gw_and_direct_routing_use_plain_routes() {
    let own = lease_with_mac(1, "aa:aa:aa:aa:aa:01");
    let peer = lease_with_mac(2, "aa:aa:aa:aa:aa:02");
    let direct = compute(&own, [&peer], &params(BackendType::Vxlan, true), |_| true).desired;
    assert!(direct.neighbors.is_empty() && direct.fdb.is_empty());
    assert_eq!(
        direct.routes[&net("10.244.2.0/24")],
        NextHop::Underlay {
            via: ip("192.168.0.12")
        }
    );
    let routed = compute(&own, [&peer], &params(BackendType::Vxlan, true), |_| false).desired;
    assert_eq!(
        routed.fdb.len(),
        1,
        "DirectRouting falls back to VXLAN off the L2"
    );

    let mut hg = peer.clone();
    hg.attrs.backend_type = "host-gw".into();
    hg.attrs.backend_data = serde_json::Value::Null;
    let c = compute(&own, [&hg], &params(BackendType::HostGw, false), |_| false);
    assert_eq!(
        c.desired.routes[&net("10.244.2.0/24")],
        NextHop::Underlay {
            via: ip("192.168.0.12")
        }
    );
}

#[test]
fn peers_of_other_backends_or_without_data_are_skipped_with_a_reason() {
    let own = lease_with_mac(1, "aa:aa:aa:aa:aa:01");
    let mut wg = lease_with_mac(2, "aa:aa:aa:aa:aa:02");
    wg.attrs.backend_type = "wireguard".into();
    let mut nodata = lease_with_mac(3, "aa:aa:aa:aa:aa:03");
    nodata.attrs.backend_data = serde_json::Value::Null;
    let c = compute(
        &own,
        [&wg, &nodata],
        &params(BackendType::Vxlan, false),
        |_| false,
    );
    assert_eq!(c.desired, Desired::default());
    assert_eq!(c.skipped.len(), 2);
    assert!(c.skipped[0].contains("wireguard") && c.skipped[1].contains("10.244.3.0-24"));
}

#[test]
fn changed_mac_replaces_neighbor_and_deletes_the_old_fdb_entry() {
    let own = lease_with_mac(1, "aa:aa:aa:aa:aa:01");
    let p = params(BackendType::Vxlan, false);
    let before = compute(&own, [&lease_with_mac(2, "aa:aa:aa:aa:aa:02")], &p, |_| {
        false
    })
    .desired;
    let after = compute(&own, [&lease_with_mac(2, "bb:bb:bb:bb:bb:02")], &p, |_| {
        false
    })
    .desired;
    let plan = Plan::between(&before, &after);
    let old: sluice_overlay::Mac = "aa:aa:aa:aa:aa:02".parse().unwrap();
    assert_eq!(
        plan.del_fdb,
        vec![("flannel.1".to_owned(), old)],
        "flannel never deletes it"
    );
    assert_eq!(plan.set_neighbors.len(), 1);
    assert_eq!(plan.set_fdb.len(), 1);
    assert!(
        plan.del_routes.is_empty() && plan.set_routes.is_empty(),
        "route unchanged"
    );
}

#[test]
fn expired_peer_is_removed_route_first_and_no_op_plans_are_empty() {
    let own = lease_with_mac(1, "aa:aa:aa:aa:aa:01");
    let p = params(BackendType::Vxlan, false);
    let peers = [
        lease_with_mac(2, "aa:aa:aa:aa:aa:02"),
        lease_with_mac(3, "aa:aa:aa:aa:aa:03"),
    ];
    let both = compute(&own, &peers, &p, |_| false).desired;
    let one = compute(&own, &peers[..1], &p, |_| false).desired;
    let plan = Plan::between(&both, &one);
    assert_eq!(plan.del_routes, vec![net("10.244.3.0/24")]);
    assert_eq!(
        (plan.del_neighbors.len(), plan.del_fdb.len(), plan.len()),
        (1, 1, 3)
    );
    assert!(Plan::between(&both, &both).is_empty());
}

/// Arbitrary overlay states over a small key space, so states overlap.
fn state() -> impl Strategy<Value = Desired> {
    let key = 0u8..6;
    let mac = (0u8..3).prop_map(|b| sluice_overlay::Mac([2, 0, 0, 0, 0, b]));
    (
        proptest::collection::btree_map(key.clone(), mac.clone(), 0..6),
        proptest::collection::btree_map(mac, key.clone(), 0..3),
        proptest::collection::btree_map(key, any::<bool>(), 0..6),
    )
        .prop_map(|(n, f, r)| {
            let dev = || "flannel.1".to_owned();
            let addr = |i: u8| IpAddr::from([10, 244, i, 0]);
            let neighbors = n.into_iter().map(|(i, m)| ((dev(), addr(i)), m)).collect();
            let fdb = f
                .into_iter()
                .map(|(m, i)| ((dev(), m), IpAddr::from([192, 168, 0, i])))
                .collect();
            let routes = r
                .into_iter()
                .map(|(i, overlay)| {
                    let hop = if overlay {
                        NextHop::Overlay {
                            dev: dev(),
                            via: addr(i),
                        }
                    } else {
                        NextHop::Underlay {
                            via: IpAddr::from([192, 168, 0, i]),
                        }
                    };
                    (IpNet::new(addr(i), 24).unwrap(), hop)
                })
                .collect();
            Desired {
                neighbors,
                fdb,
                routes,
            }
        })
}

proptest! {
    #[test]
    fn applying_the_plan_reaches_the_desired_state(current in state(), desired in state()) {
        let plan = Plan::between(&current, &desired);
        let mut reached = current.clone();
        plan.apply_to(&mut reached);
        prop_assert_eq!(&reached, &desired);
        prop_assert!(Plan::between(&reached, &desired).is_empty());
    }
}
