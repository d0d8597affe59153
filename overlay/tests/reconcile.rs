//! Self-healing against the fake kernel: whatever is lost comes back in one reconcile, and a
//! converged kernel sees no operations.

mod common;

use std::net::IpAddr;

use common::{lease, networks, spec, sync};
use ipnet::IpNet;
use sluice_model::net_conf::BackendType;
use sluice_overlay::kernel::FakeKernel;
use sluice_overlay::reconcile::reconcile;
use sluice_overlay::{Desired, NextHop, Params, compute};

fn desired() -> Desired {
    let params = Params {
        backend: BackendType::Vxlan,
        vni: 1,
        direct_routing: false,
    };
    compute(&lease(1), &[lease(2), lease(3)], &params, |_| false).desired
}

#[tokio::test]
async fn first_reconcile_builds_everything_and_the_second_does_nothing() {
    let mut k = FakeKernel::default();
    let first = sync(&mut k, 1, &desired()).await;
    assert!(first.device_created);
    assert_eq!(first.operations, 6, "2 peers x (neighbour, FDB, route)");
    assert_eq!(k.state, desired());
    let second = sync(&mut k, 1, &desired()).await;
    assert!(second.was_converged(), "{second:?}");
}

#[tokio::test]
async fn a_deleted_device_is_recreated_with_all_peer_state() {
    let mut k = FakeKernel::default();
    sync(&mut k, 1, &desired()).await;
    k.lose_device("flannel.1");
    assert!(k.state.neighbors.is_empty() && k.state.routes.is_empty());
    let healed = sync(&mut k, 1, &desired()).await;
    assert!(healed.device_created);
    assert_eq!(k.state, desired(), "flannel leaves peers unprogrammed here");
}

#[tokio::test]
async fn lost_routes_neighbours_and_fdb_entries_come_back() {
    let mut k = FakeKernel::default();
    sync(&mut k, 1, &desired()).await;
    k.state.routes.pop_first();
    k.state.neighbors.pop_last();
    k.state.fdb.pop_first();
    let healed = sync(&mut k, 1, &desired()).await;
    assert_eq!(healed.operations, 3);
    assert_eq!(k.state, desired());
}

#[tokio::test]
async fn an_incompatible_device_is_replaced() {
    let mut k = FakeKernel::default();
    let mut old = spec(1);
    old.mtu = 1500;
    reconcile(&mut k, std::slice::from_ref(&old), &networks(), &desired())
        .await
        .unwrap();
    let out = sync(&mut k, 1, &desired()).await;
    assert!(out.device_replaced);
    assert_eq!(k.devices["flannel.1"].mtu, 1450);
    assert_eq!(k.state, desired());
}

#[tokio::test]
async fn routes_outside_the_pod_network_are_not_ours() {
    let mut k = FakeKernel::default();
    let default: IpNet = "0.0.0.0/0".parse().unwrap();
    let gw: IpAddr = "192.168.0.1".parse().unwrap();
    k.state
        .routes
        .insert(default, NextHop::Underlay { via: gw });
    sync(&mut k, 1, &desired()).await;
    assert_eq!(
        k.state.routes.get(&default),
        Some(&NextHop::Underlay { via: gw })
    );
}

#[tokio::test]
async fn host_gw_needs_no_device() {
    let mut k = FakeKernel::default();
    let mut peer = lease(2);
    peer.attrs.backend_type = "host-gw".into();
    let params = Params {
        backend: BackendType::HostGw,
        vni: 1,
        direct_routing: false,
    };
    let d = compute(&lease(1), [&peer], &params, |_| true).desired;
    let out = reconcile(&mut k, &[], &networks(), &d).await.unwrap();
    assert!(!out.device_created && k.devices.is_empty());
    assert_eq!(k.state.routes.len(), 1);
}
