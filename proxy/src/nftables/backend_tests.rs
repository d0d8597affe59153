//! The backend against the in-memory kernel (`FakeNft`, which refuses what the kernel
//! refuses): full and partial applies, drift repaired by the next full apply, a restart that
//! adopts the table without changing it, cleanup.

use sluice_model::service::ServiceName;
use sluice_nft::{FakeNft, Family, NftKernel, Op, Transaction};

use super::*;
use crate::backend::Backend;
use crate::fixture::{apply, ep, state, svc};

fn backend(fake: &FakeNft) -> NftablesBackend<FakeNft> {
    NftablesBackend::new(fake.clone(), NoConntrack, [NftConfig::new(Family::Ip)])
}

fn world(st: &mut crate::state::ProxyState) {
    apply(
        st,
        (0..5)
            .map(|i| {
                (
                    svc(&format!("s{i}"), &format!("172.30.0.{i}")),
                    vec![ep(&format!("10.180.0.{i}"), "node-b")],
                )
            })
            .collect(),
    );
}

fn chain_of(fake: &mut FakeNft, needle: &str) -> Option<(String, usize)> {
    let t = fake.read_table(Family::Ip, TABLE).unwrap()?;
    t.chains
        .iter()
        .find(|c| c.def.name.contains(needle))
        .map(|c| (c.def.name.clone(), c.rules.len()))
}

#[test]
fn applies_repairs_drift_adopts_on_restart_and_cleans_up() {
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    world(&mut st);
    let (snap, changes) = st.sync();
    assert!(changes.full);
    b.apply(&snap, &changes).unwrap();
    let mut k = fake.clone();
    let (svc_chain, rules) = chain_of(&mut k, "service-").unwrap();
    assert!(rules > 0);

    // Someone flushes a service chain: the next full apply refills it.
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::FlushChain(svc_chain.clone()));
    k.apply(&tx).unwrap();
    assert_eq!(chain_of(&mut k, &svc_chain).unwrap().1, 0);
    b.apply_full(&snap, &changes).unwrap();
    assert_eq!(chain_of(&mut k, &svc_chain).unwrap().1, rules);

    // Someone deletes the whole table: repaired too.
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::DeleteTable);
    k.apply(&tx).unwrap();
    b.apply_full(&snap, &changes).unwrap();
    assert_eq!(chain_of(&mut k, &svc_chain).unwrap().1, rules);

    // A restarted proxy adopts the table: its first (full) apply changes nothing.
    let before = fake.applied();
    let mut restarted = backend(&fake);
    restarted.apply(&snap, &changes).unwrap();
    assert_eq!(fake.applied(), before, "no transaction needed on restart");

    // A partial apply after a delete touches that Service only and leaves it gone.
    drop(snap);
    st.delete_service(&ServiceName::new("ns", "s3"));
    let (snap, changes) = st.sync();
    restarted.apply(&snap, &changes).unwrap();
    assert!(chain_of(&mut k, "ns/s3/").is_none());
    assert!(chain_of(&mut k, "ns/s4/").is_some());

    restarted.cleanup().unwrap();
    assert!(k.read_table(Family::Ip, TABLE).unwrap().is_none());
    restarted.cleanup().unwrap();
}

#[test]
fn a_refused_transaction_changes_nothing_and_the_next_full_apply_recovers() {
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    world(&mut st);
    let (snap, changes) = st.sync();
    fake.fail_next(16);
    assert!(b.apply(&snap, &changes).is_err());
    let mut k = fake.clone();
    assert!(k.read_table(Family::Ip, TABLE).unwrap().is_none());
    b.apply_full(&snap, &changes).unwrap();
    assert!(chain_of(&mut k, "ns/s0/").is_some());
}
