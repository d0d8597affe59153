//! The control loop with the fake kernel and a paused clock: nothing before the first peer
//! set, a reconcile per set, and periodic repair of lost state.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{lease, spec};
use futures::SinkExt;
use futures::channel::mpsc;
use sluice_model::net_conf::BackendType;
use sluice_overlay::Params;
use sluice_overlay::kernel::FakeKernel;
use sluice_overlay::sync::{Health, Node, run};
use sluice_overlay::validate::Bounds;

fn node() -> Node<FakeKernel> {
    Node {
        kernel: FakeKernel::default(),
        params: Params {
            backend: BackendType::Vxlan,
            vni: 1,
            direct_routing: false,
        },
        own: lease(1),
        devices: vec![spec(1)],
        networks: vec!["10.244.0.0/16".parse().unwrap()],
        bounds: Bounds {
            networks: vec!["10.244.0.0/16".parse().unwrap()],
            ..Bounds::default()
        },
        same_l2: Box::new(|_| false),
        masq: None,
    }
}

#[tokio::test(start_paused = true)]
async fn reconciles_on_peer_sets_and_periodically_and_never_before_the_first_set() {
    let health = Arc::new(Mutex::new(Health::default()));
    let (mut tx, rx) = mpsc::channel(4);
    let (_nudge, nudges) = mpsc::channel::<()>(1);
    let task = tokio::spawn(run(
        node(),
        rx,
        nudges,
        Duration::from_secs(10),
        health.clone(),
    ));

    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        health.lock().unwrap().reconciles,
        0,
        "no peers yet: nothing programmed"
    );

    tx.send(vec![lease(2)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(health.lock().unwrap().reconciles, 1);
    assert!(health.lock().unwrap().last_ok.is_some());

    tx.send(vec![lease(2), lease(3)]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(21)).await;
    let h = health.lock().unwrap().clone();
    assert!(h.reconciles >= 3, "one per set plus periodic ones: {h:?}");

    drop(tx);
    let done = task.await.unwrap();
    assert_eq!(done.kernel.state.routes.len(), 2);
    assert_eq!(
        done.kernel
            .log
            .iter()
            .filter(|l| l.starts_with("create"))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_nudge_reconciles_soon_and_a_burst_of_nudges_reconciles_once() {
    let health = Arc::new(Mutex::new(Health::default()));
    let (mut peers_tx, peers) = mpsc::channel(4);
    let (mut nudge, nudges) = mpsc::channel(16);
    let task = tokio::spawn(run(
        node(),
        peers,
        nudges,
        Duration::from_secs(3600),
        health.clone(),
    ));
    peers_tx.send(vec![lease(2)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let after_set = health.lock().unwrap().reconciles;
    for _ in 0..5 {
        nudge.send(()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        health.lock().unwrap().reconciles,
        after_set,
        "debounced, not yet"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        health.lock().unwrap().reconciles,
        after_set + 1,
        "one reconcile for the burst"
    );
    drop(peers_tx);
    task.await.unwrap();
}

/// Issue 11: the `--ip-masq` table is overlay state like the rest — each reconcile reads it
/// back and rebuilds it if someone deleted it or a rule.
#[tokio::test]
async fn every_reconcile_repairs_the_masquerade_table() {
    use sluice_nft::{FakeNft, Family, NftKernel};
    use sluice_overlay::masq::{self, MasqNets};
    use sluice_overlay::sync::Masquerade;

    let nft = FakeNft::new();
    let nets = MasqNets {
        network: "10.244.0.0/16".parse().unwrap(),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
    };
    let mut n = node();
    n.masq = Some(Masquerade {
        kernel: Box::new(nft.clone()),
        nets: vec![nets],
    });
    let health = Arc::new(Mutex::new(Health::default()));
    n.sync(&[lease(2)], &health).await.unwrap();
    assert_eq!(nft.tables(), [(Family::Ip, masq::TABLE.to_owned())]);
    n.sync(&[lease(2)], &health).await.unwrap();
    assert_eq!(nft.applied(), 1, "converged: read, not rewritten");

    nft.clone().apply(&masq::cleanup(Family::Ip)).unwrap();
    assert!(nft.tables().is_empty());
    n.sync(&[lease(2)], &health).await.unwrap();
    let table = nft.clone().read_table(Family::Ip, masq::TABLE).unwrap();
    assert!(table.is_some_and(|t| masq::matches(&t, &nets)), "rebuilt");

    nft.fail_next(1);
    nft.clone().apply(&masq::cleanup(Family::Ip)).unwrap_err();
    nft.clone().apply(&masq::cleanup(Family::Ip)).unwrap();
    nft.fail_next(1);
    let out = n.sync(&[lease(2)], &health).await.unwrap();
    assert_eq!(
        out.failures.len(),
        1,
        "a refused repair is a failure: {out:?}"
    );
    assert!(health.lock().unwrap().last_error.is_some());
    n.sync(&[lease(2)], &health).await.unwrap();
    assert_eq!(nft.tables().len(), 1, "and tried again next time");
}
