//! The backend against the in-memory kernel (`FakeNft`, which refuses what the kernel
//! refuses): full and partial applies, drift repaired by the next full apply, a restart that
//! adopts the table without changing it, cleanup.

use sluice_model::service::{ServiceName, ServicePort, ServiceType};
use sluice_nft::{FakeNft, Family, NftKernel, Op, Transaction};

use super::*;
use sluice_conntrack::NoConntrack;
use sluice_proxy_core::Changes;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::fixture::{apply, ep, state, svc};

fn backend(fake: &FakeNft) -> NftablesBackend<FakeNft> {
    NftablesBackend::new(fake.clone(), NoConntrack, [NftConfig::new(Family::Ip)])
}

/// A Service that keeps chains of its own: one with a node port (`30000 + i`). The tests of
/// the machinery around chains (parts, drift, restarts) use these; a Service reached only
/// at its ClusterIP is map elements alone (`elements_only_*`).
fn chained(name: &str, cip: &str, i: u16) -> ServicePort {
    ServicePort {
        service_type: ServiceType::NodePort,
        node_port: Some(30000 + i),
        ..svc(name, cip)
    }
}

/// `n` chained Services `s<i>` at `172.30.1.<i>` with two endpoints each.
fn apply_many(st: &mut sluice_proxy_core::ProxyState, n: u8) {
    let services = (0..n)
        .map(|i| {
            let eps = vec![
                ep(&format!("10.180.1.{i}"), "node-b"),
                ep(&format!("10.180.2.{i}"), "node-b"),
            ];
            let name = format!("s{i}");
            (chained(&name, &format!("172.30.1.{i}"), u16::from(i)), eps)
        })
        .collect();
    apply(st, services);
}

fn world(st: &mut sluice_proxy_core::ProxyState) {
    apply(
        st,
        (0..5)
            .map(|i| {
                (
                    chained(&format!("s{i}"), &format!("172.30.0.{i}"), i),
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

#[test]
fn a_full_sync_leaves_the_clients_of_affinity_sets_alone() {
    use sluice_model::service::SessionAffinity;
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    let mut sticky = svc("sticky", "172.30.0.7");
    sticky.session_affinity = Some(SessionAffinity::default());
    apply(&mut st, vec![(sticky, vec![ep("10.180.0.1", "node-b")])]);
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    let mut k = fake.clone();
    let set = k
        .read_table(Family::Ip, TABLE)
        .unwrap()
        .unwrap()
        .sets
        .iter()
        .find(|s| s.def.name.starts_with("affinity-"))
        .unwrap()
        .def
        .name
        .clone();
    // A client the packet path remembered.
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::AddElements {
        set: set.clone(),
        elements: vec![sluice_nft::Element::key(vec![sluice_nft::KeyValue::Addr(
            "192.0.2.7".parse().unwrap(),
        )])],
    });
    k.apply(&tx).unwrap();
    let before = fake.applied();
    b.apply_full(&snap, &changes).unwrap();
    assert_eq!(fake.applied(), before, "nothing to repair, nothing sent");
    let table = k.read_table(Family::Ip, TABLE).unwrap().unwrap();
    let kept = table.sets.iter().find(|s| s.def.name == set).unwrap();
    assert_eq!(kept.elements.len(), 1);
}

#[test]
fn an_external_ip_claimed_twice_or_moved_between_services_never_fails_a_sync() {
    let ext = |name: &str, cip: &str| {
        let mut p = svc(name, cip);
        p.external_ips = vec!["192.0.2.50".parse().unwrap()];
        p
    };
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    // Two new Services claim the same external IP and port in one sync: one keeps it.
    apply(
        &mut st,
        vec![
            (ext("a", "172.30.0.1"), vec![ep("10.180.0.1", "node-b")]),
            (ext("b", "172.30.0.2"), vec![ep("10.180.0.2", "node-b")]),
        ],
    );
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    b.apply_full(&snap, &changes).unwrap();
    drop(snap);
    // The external IP moves from a to b in one change: a's element goes, b's comes.
    apply(
        &mut st,
        vec![
            (svc("a", "172.30.0.1"), vec![ep("10.180.0.1", "node-b")]),
            (ext("b", "172.30.0.2"), vec![ep("10.180.0.2", "node-b")]),
        ],
    );
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    // b lost the claim earlier and was not re-rendered: the next full sync gives it the key.
    b.apply_full(&snap, &changes).unwrap();
    assert_eq!(holder_of_ext(&mut b), Some("ns/b/"));
    // Both change at once, the other way round: a takes the key in the same transaction
    // that b gives it up (deleted, then added).
    drop(snap);
    apply(
        &mut st,
        vec![
            (ext("a", "172.30.0.1"), vec![ep("10.180.0.1", "node-b")]),
            (svc("b", "172.30.0.2"), vec![ep("10.180.0.2", "node-b")]),
        ],
    );
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    assert_eq!(holder_of_ext(&mut b), Some("ns/a/"));
    b.apply_full(&snap, &changes).unwrap();
}

/// Which Service's chain 192.0.2.50:80 leads to.
fn holder_of_ext(b: &mut NftablesBackend<FakeNft>) -> Option<&'static str> {
    let t = b.kernel().read_table(Family::Ip, crate::TABLE).ok()??;
    let ext = sluice_nft::KeyValue::Addr("192.0.2.50".parse().unwrap());
    let e = (t.set("service-ips")?.elements.iter()).find(|e| e.key[0] == ext)?;
    match &e.verdict {
        Some(sluice_nft::Verdict::Goto(c)) if c.contains("ns/a/") => Some("ns/a/"),
        Some(sluice_nft::Verdict::Goto(c)) if c.contains("ns/b/") => Some("ns/b/"),
        _ => None,
    }
}

/// Found by the lab soak (issue 15): a Service whose TCP and UDP ports reach the same
/// endpoint port share one `hairpin` element (address . address . port has no protocol);
/// when the endpoint left, each port's piece deleted it, the kernel refused the second
/// delete (ENOENT), and the runner's isolation took the Service out of the dataplane for a
/// moment — the datagrams sent then were lost.
#[test]
fn an_element_two_ports_give_up_in_one_sync_is_deleted_once() {
    use sluice_model::service::{Protocol, ServicePortName};
    let both = |eps: &[&str]| {
        let name = ServiceName::new("ns", "dual");
        let tcp = svc("dual", "172.30.0.9");
        let mut udp = svc("dual", "172.30.0.9");
        udp.name = ServicePortName::new(&name, "dns", Protocol::Udp);
        udp.port = 53;
        let eps: Vec<_> = eps.iter().map(|ip| ep(ip, "node-b")).collect();
        vec![(tcp, eps.clone()), (udp, eps)]
    };
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    apply(&mut st, both(&["10.180.0.8", "10.180.0.9"]));
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    drop(snap);
    let before = fake.applied();
    apply(&mut st, both(&["10.180.0.8"]));
    let (snap, changes) = st.sync();
    assert!(!changes.full);
    b.apply(&snap, &changes)
        .expect("the partial sync that removes the shared element");
    assert_eq!(fake.applied(), before + 1, "one transaction");
    let mut k = fake.clone();
    let t = k.read_table(Family::Ip, TABLE).unwrap().unwrap();
    let text = format!("{t:?}");
    assert!(!text.contains("10.180.0.9"), "the endpoint is gone");
}

/// A periodic full sync reads the table back only when the ruleset's generation shows a
/// commit that was not the proxy's own (or its record was never checked, or a sync failed).
#[test]
fn a_full_sync_reads_the_table_back_only_after_someone_else_committed() {
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    // How many times one full sync read the table back.
    let read_backs = |b: &mut NftablesBackend<FakeNft>,
                      snap: &sluice_proxy_core::Snapshot,
                      changes: &sluice_proxy_core::Changes| {
        let before = fake.reads();
        b.apply_full(snap, changes).unwrap();
        fake.reads() - before
    };
    let mut st = state("node-a", None);
    world(&mut st);
    let (snap, changes) = st.sync();
    assert_eq!(
        read_backs(&mut b, &snap, &changes),
        1,
        "the first adopts what is there"
    );
    assert_eq!(read_backs(&mut b, &snap, &changes), 0, "nobody committed");

    // The proxy's own partial sync keeps the record trusted.
    drop(snap);
    apply(
        &mut st,
        vec![(
            chained("new", "172.30.0.9", 109),
            vec![ep("10.180.0.9", "node-b")],
        )],
    );
    let (snap, changes) = st.sync();
    assert!(!changes.full);
    b.apply(&snap, &changes).unwrap();
    assert_eq!(read_backs(&mut b, &snap, &changes), 0);

    // Someone flushes a chain: the generation moves, the full sync reads back and repairs.
    let mut k = fake.clone();
    let (svc_chain, rules) = chain_of(&mut k, "service-").unwrap();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::FlushChain(svc_chain.clone()));
    k.apply(&tx).unwrap();
    assert_eq!(read_backs(&mut b, &snap, &changes), 1);
    assert_eq!(chain_of(&mut k, &svc_chain).unwrap().1, rules, "repaired");
    assert_eq!(
        read_backs(&mut b, &snap, &changes),
        0,
        "the repair was its own commit"
    );

    // A commit to another table counts too (the generation is the namespace's).
    let mut other = Transaction::new(Family::Ip, "someone-else");
    other.push(Op::AddTable { comment: None });
    k.apply(&other).unwrap();
    assert_eq!(read_backs(&mut b, &snap, &changes), 1);

    // A failed sync is not trusted: the next full sync reads back.
    fake.fail_next(16);
    drop(snap);
    st.delete_service(&ServiceName::new("ns", "new"));
    let (snap, changes) = st.sync();
    assert!(b.apply(&snap, &changes).is_err());
    assert_eq!(read_backs(&mut b, &snap, &changes), 1);
    assert!(chain_of(&mut k, "ns/new/").is_none());

    // A periodic sync the generation vouches for is the partial sync of what changed: no
    // read-back; the change still lands.
    st.request_periodic_sync();
    apply(
        &mut st,
        vec![(
            chained("late", "172.30.0.10", 110),
            vec![ep("10.180.0.10", "node-b")],
        )],
    );
    drop(snap);
    let (snap, changes) = st.sync();
    assert!(changes.periodic);
    assert_eq!(read_backs(&mut b, &snap, &changes), 0);
    assert!(chain_of(&mut k, "ns/late/").is_some());
    let applied = fake.applied();
    st.request_periodic_sync();
    let (snap, changes) = st.sync();
    assert_eq!(read_backs(&mut b, &snap, &changes), 0);
    assert_eq!(fake.applied(), applied, "nothing changed, nothing sent");

    // And at least every read-back period, whatever the generation says.
    let mut every = backend(&fake).with_read_back_every(std::time::Duration::ZERO);
    assert_eq!(read_backs(&mut every, &snap, &changes), 1);
    assert_eq!(read_backs(&mut every, &snap, &changes), 1);
}

/// The fake, recording every transaction offered and the generation it was guarded by.
#[derive(Default)]
struct Recording {
    fake: FakeNft,
    sent: Vec<(Transaction, Option<u32>)>,
}

impl NftKernel for Recording {
    fn apply(&mut self, tx: &Transaction) -> Result<(), sluice_nft::NftError> {
        self.sent.push((tx.clone(), None));
        self.fake.apply(tx)
    }

    fn apply_at(&mut self, tx: &Transaction, g: u32) -> Result<(), sluice_nft::NftError> {
        self.sent.push((tx.clone(), Some(g)));
        self.fake.apply_at(tx, g)
    }

    fn generation(&mut self) -> Result<Option<u32>, sluice_nft::NftError> {
        self.fake.generation()
    }

    fn read_table(
        &mut self,
        family: Family,
        name: &str,
    ) -> Result<Option<sluice_nft::TableState>, sluice_nft::NftError> {
        self.fake.read_table(family, name)
    }
}

/// The table with its chains and every set's elements sorted and its rule handles left
/// out: what differs between a table written at once, in parts, or repaired.
fn table_of(fake: &mut FakeNft) -> sluice_nft::TableState {
    let mut t = fake.read_table(Family::Ip, TABLE).unwrap().unwrap();
    for set in &mut t.sets {
        set.elements.sort();
    }
    t.chains.sort_by(|a, b| a.def.name.cmp(&b.def.name));
    for rule in t.chains.iter_mut().flat_map(|c| &mut c.rules) {
        rule.handle = 0;
    }
    t
}

/// The Services whose chains `tx` creates, and those its `service-ips` elements jump to.
/// An operation creating a base chain at a netfilter hook.
fn is_hook(op: &Op) -> bool {
    matches!(op, Op::AddChain(def) if def.base.is_some())
}

fn services_in(tx: &Transaction) -> (Vec<String>, Vec<String>) {
    let (mut chains, mut targets) = (Vec::new(), Vec::new());
    for op in &tx.ops {
        match op {
            // Service port chains: `service-<hash>-<namespace>/<name>/<protocol>/<port>`.
            Op::AddChain(def) if def.name.starts_with("service-") && def.name.contains('/') => {
                chains.push(def.name.clone())
            }
            Op::AddElements { set, elements } if set == "service-ips" => {
                targets.extend(elements.iter().filter_map(|e| match &e.verdict {
                    Some(sluice_nft::Verdict::Goto(c) | sluice_nft::Verdict::Jump(c)) => {
                        Some(c.clone())
                    }
                    _ => None,
                }));
            }
            _ => {}
        }
    }
    chains.sort();
    targets.sort();
    (chains, targets)
}

#[test]
fn a_large_full_sync_goes_in_parts_of_whole_services() {
    let (_, snap, changes) = forty_services();
    let mut whole = NftablesBackend::new(FakeNft::new(), NoConntrack, [NftConfig::new(Family::Ip)])
        .with_part_ops(usize::MAX);
    whole.apply(&snap, &changes).unwrap();
    let expected = table_of(whole.kernel());

    let mut b = in_parts_of(20);
    b.apply(&snap, &changes).unwrap();
    assert!(
        table_of(&mut b.kernel().fake) == expected,
        "the tables differ"
    );
    let sent = std::mem::take(&mut b.kernel().sent);
    assert!(sent.len() >= 5, "{} transactions", sent.len());
    let mut seen = 0;
    for (i, (tx, at)) in sent.iter().enumerate() {
        // Each guarded by the generation the one before left.
        assert_eq!(*at, Some(i as u32), "transaction {i}");
        // Whole Services: every chain a part creates is entered by its own elements.
        let (chains, targets) = services_in(tx);
        assert_eq!(chains, targets, "transaction {i}");
        seen += chains.len();
        // The hooked chains, the table's only entries, come with the last part alone: the
        // kernel walks the graph once, and no Service works before all do.
        let hooks = tx.ops.iter().filter(|op| is_hook(op)).count();
        let last = i + 1 == sent.len();
        assert_eq!(hooks, if last { 8 } else { 0 }, "transaction {i}");
    }
    assert_eq!(seen, 40);

    // The generation after the last part is the backend's own: the periodic resync trusts
    // its record, reads nothing back and has nothing to send.
    let reads = b.kernel().fake.reads();
    let periodic = Changes {
        full: true,
        periodic: true,
        ..Default::default()
    };
    b.apply_full(&snap, &periodic).unwrap();
    assert_eq!(b.kernel().fake.reads(), reads);
    assert!(b.kernel().sent.is_empty());
}

#[test]
fn a_full_sync_refused_half_way_records_the_parts_applied() {
    let (mut st, snap, changes) = forty_services();
    let mut b = in_parts_of(20);
    b.kernel().fake.fail_after(2, 16);
    assert!(b.apply(&snap, &changes).is_err());
    let applied = b.kernel().sent[..2].to_vec();
    let (first, _) = services_in(&applied[1].0);
    assert!(!first.is_empty());

    // A partial sync of a Service the applied parts programmed plans against the record:
    // its chain is refilled (flushed first), not given its rules a second time.
    drop(snap);
    let name = first[0]
        .split('-')
        .nth(2)
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_owned();
    let i: usize = name[1..].parse().unwrap();
    let one = vec![ep("10.180.3.1", "node-b")];
    let port = chained(&name, &format!("172.30.1.{i}"), i as u16);
    apply(&mut st, vec![(port, one)]);
    let (snap, changes) = st.sync();
    assert!(!changes.full);
    b.apply_partial(&snap, &changes).unwrap();
    let full = Changes {
        full: true,
        ..Default::default()
    };
    let mut whole = NftablesBackend::new(FakeNft::new(), NoConntrack, [NftConfig::new(Family::Ip)]);
    whole.apply(&snap, &full).unwrap();
    let mut fake = b.kernel().fake.clone();
    let chain = format!("ns/{name}/");
    assert_eq!(
        chain_of(&mut fake, &chain),
        chain_of(whole.kernel(), &chain)
    );

    // The next full sync reads the table back and sends only what is missing.
    b.kernel().sent.clear();
    b.apply_full(&snap, &full).unwrap();
    let created = |sent: &[(Transaction, Option<u32>)]| -> usize {
        sent.iter().map(|(tx, _)| services_in(tx).0.len()).sum()
    };
    assert_eq!(created(&b.kernel().sent), 40 - created(&applied));
    assert!(
        table_of(&mut fake) == table_of(whole.kernel()),
        "the tables differ"
    );
}

/// The state of 40 Services, synced once: the snapshot and its changes.
fn forty_services() -> (
    sluice_proxy_core::ProxyState,
    sluice_proxy_core::Snapshot,
    Changes,
) {
    let mut st = state("node-a", None);
    apply_many(&mut st, 40);
    let (snap, changes) = st.sync();
    (st, snap, changes)
}

/// A backend over a recording fake kernel, sending full syncs in parts of ~`ops` operations.
fn in_parts_of(ops: usize) -> NftablesBackend<Recording> {
    NftablesBackend::new(
        Recording::default(),
        NoConntrack,
        [NftConfig::new(Family::Ip)],
    )
    .with_part_ops(ops)
}

#[test]
fn the_first_part_is_small_so_the_kernel_starts_early() {
    let (_, snap, changes) = forty_services();
    let mut b = in_parts_of(160);
    b.apply(&snap, &changes).unwrap();
    let sent = &b.kernel().sent;
    let services = |i: usize| services_in(&sent[i].0).0.len();
    // An eighth of a part: the base ruleset and a few Services, then full parts.
    assert!(sent.len() >= 3, "{} transactions", sent.len());
    assert!(
        4 * services(0) < services(1),
        "first part {} Services, second {}",
        services(0),
        services(1)
    );
}

fn record(b: &NftablesBackend<Recording>) -> &NftState {
    b.state_of(Family::Ip).unwrap()
}

#[test]
fn a_full_sync_refused_after_parts_were_recorded_keeps_every_claim() {
    let (mut st, snap, changes) = forty_services();
    let mut b = in_parts_of(20);
    b.apply(&snap, &changes).unwrap();
    assert!(record(&b).claims_match_pieces());
    let before = record(&b).believed();

    // Every Service moves to other endpoints; the full sync of that is refused at its
    // third part, after two were applied and recorded while it went on.
    drop(snap);
    let moved = (0..40u8)
        .map(|i| {
            let eps = vec![ep(&format!("10.181.1.{i}"), "node-b")];
            let name = format!("s{i}");
            (chained(&name, &format!("172.30.1.{i}"), u16::from(i)), eps)
        })
        .collect();
    apply(&mut st, moved);
    let (snap, _) = st.sync();
    let full = Changes {
        full: true,
        ..Default::default()
    };
    b.kernel().sent.clear();
    b.kernel().fake.fail_after(2, 16);
    assert!(b.apply_full(&snap, &full).is_err());
    assert_eq!(
        b.kernel().sent.len(),
        3,
        "two parts applied, the third refused"
    );
    let after = record(&b).believed();
    assert_ne!(
        after.elements, before.elements,
        "the applied parts are recorded"
    );
    assert!(
        record(&b).claims_match_pieces(),
        "the owners the sync did not get to keep their claims"
    );

    // The retry reads the table back and converges on what one transaction programs.
    b.apply_full(&snap, &full).unwrap();
    let mut whole = NftablesBackend::new(FakeNft::new(), NoConntrack, [NftConfig::new(Family::Ip)]);
    whole.apply(&snap, &full).unwrap();
    assert!(
        table_of(&mut b.kernel().fake) == table_of(whole.kernel()),
        "the tables differ"
    );
    assert!(record(&b).claims_match_pieces());
}

/// A read-back that starts over (the ruleset changed while it was read) leaves the diff's
/// "before" side with the last picture only: what the first one had and the second lacks is
/// not kept, so it is not taken as programmed.
#[test]
fn a_read_back_that_starts_over_keeps_only_the_last_picture() {
    use sluice_nft::{ChainDef, Element, KeyValue, Rule, SetDef, Stmt, TableSink};
    let mut fake = FakeNft::new();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::AddTable { comment: None });
    for name in ["a", "b"] {
        tx.push(Op::AddChain(ChainDef {
            name: name.into(),
            base: None,
        }));
    }
    tx.push(Op::AddRule {
        chain: "a".into(),
        rule: Rule::new(vec![Stmt::Counter]),
    });
    tx.push(Op::AddSet(SetDef::set(
        "s",
        vec![sluice_nft::KeyType::Port],
    )));
    let port = |p| Element::key(vec![KeyValue::Port(p)]);
    tx.push(Op::AddElements {
        set: "s".into(),
        elements: vec![port(1), port(2)],
    });
    fake.apply(&tx).unwrap();
    let first = fake.read_table(Family::Ip, TABLE).unwrap().unwrap();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::FlushChain("a".into()));
    tx.push(Op::DeleteChain("b".into()));
    tx.push(Op::DeleteElements {
        set: "s".into(),
        elements: vec![port(1)],
    });
    fake.apply(&tx).unwrap();
    let mut old = crate::print::Old::default();
    first.feed(&mut old);
    assert!(old.chains.contains_key("b"));
    // The second attempt: the kernel's picture after the change.
    assert!(fake.read_table_into(Family::Ip, TABLE, &mut old).unwrap());
    let chains: Vec<&str> = old.chains.keys().map(|c| &**c).collect();
    assert_eq!(chains, ["a"]);
    assert_eq!(old.chains["a"].len, 0);
    assert_eq!(old.elements.get_mut("s").map(|e| e.len()), Some(1));
    old.start();
    assert!(old.chains.is_empty() && old.elements.is_empty() && old.keys.is_empty());
}

/// Elements of `set` in the fake kernel's table.
fn elements_of(fake: &mut FakeNft, set: &str) -> Vec<sluice_nft::Element> {
    let t = fake.read_table(Family::Ip, TABLE).unwrap().unwrap();
    t.set(set).map(|s| s.elements.clone()).unwrap_or_default()
}

/// Services reached only at their ClusterIP are map elements alone, and the machinery
/// treats those as it treats chains: an element someone deleted or changed is repaired by
/// the next full apply, a restart adopts them without a transaction, and an endpoint change
/// is a few element operations and nothing else.
#[test]
fn elements_only_services_are_repaired_adopted_and_changed_by_elements() {
    use sluice_nft::{Element, ElementData, KeyValue, Proto};
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    let services = |n: usize| -> Vec<_> {
        (0..5u8)
            .map(|i| {
                let eps = (0..n)
                    .map(|k| ep(&format!("10.180.{k}.{i}"), "node-b"))
                    .collect();
                (svc(&format!("e{i}"), &format!("172.30.2.{i}")), eps)
            })
            .collect()
    };
    apply(&mut st, services(2));
    let (snap, changes) = st.sync();
    b.apply(&snap, &changes).unwrap();
    let mut k = fake.clone();
    assert!(chain_of(&mut k, "ns/e").is_none(), "no chain of their own");
    assert_eq!(elements_of(&mut k, "service-counts").len(), 5);
    assert_eq!(elements_of(&mut k, "service-endpoints").len(), 10);

    // Someone deletes one count and changes another: the next full apply repairs both.
    let key = |i: u8| {
        vec![
            KeyValue::Addr(format!("172.30.2.{i}").parse().unwrap()),
            KeyValue::Proto(Proto::Tcp),
            KeyValue::Port(80),
        ]
    };
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::DeleteElements {
        set: "service-counts".into(),
        elements: vec![Element::key(key(1)), Element::key(key(2))],
    });
    tx.push(Op::AddElements {
        set: "service-counts".into(),
        elements: vec![Element::data(
            key(2),
            ElementData::Addr("0.0.0.7".parse().unwrap()),
        )],
    });
    k.apply(&tx).unwrap();
    b.apply_full(&snap, &changes).unwrap();
    let counts = elements_of(&mut k, "service-counts");
    assert_eq!(counts.len(), 5);
    let two = ElementData::Addr("0.0.0.2".parse().unwrap());
    assert!(counts.iter().all(|e| e.data == Some(two)), "{counts:?}");

    // A restarted proxy adopts them: its first (full) apply changes nothing.
    let before = fake.applied();
    let mut restarted = backend(&fake);
    restarted.apply(&snap, &changes).unwrap();
    assert_eq!(fake.applied(), before, "no transaction needed on restart");

    // A third endpoint everywhere: element operations only, no chain and no rule.
    drop(snap);
    apply(&mut st, services(3));
    let (snap, changes) = st.sync();
    let before = fake.applied();
    restarted.apply(&snap, &changes).unwrap();
    assert!(fake.applied() > before);
    let counts = elements_of(&mut k, "service-counts");
    let three = ElementData::Addr("0.0.0.3".parse().unwrap());
    assert!(counts.iter().all(|e| e.data == Some(three)), "{counts:?}");
    assert_eq!(elements_of(&mut k, "service-endpoints").len(), 15);
}

/// A Service that gains a node port moves from elements to chains, and back when it loses
/// it, each in one partial sync the kernel accepts (the fake refuses a chain deleted while
/// an element still enters it, as the kernel does); a proxy restarted over a table in the
/// other layout converges the same way (an upgrade).
#[test]
fn a_service_that_changes_kind_moves_between_elements_and_chains() {
    let fake = FakeNft::new();
    let mut b = backend(&fake);
    let mut st = state("node-a", None);
    let eps = vec![ep("10.180.0.1", "node-b"), ep("10.180.0.2", "node-b")];
    let plain = || (svc("m", "172.30.3.1"), eps.clone());
    let nodeport = || (chained("m", "172.30.3.1", 7), eps.clone());
    let mut k = fake.clone();
    let in_elements = |k: &mut FakeNft| {
        let counts = elements_of(k, "service-counts").len();
        let endpoints = elements_of(k, "service-endpoints").len();
        match (counts, endpoints, chain_of(k, "ns/m/").is_some()) {
            (1, 2, false) => true,
            (0, 0, true) => false,
            other => panic!("half of each: {other:?}"),
        }
    };
    for (port, elements) in [(plain(), true), (nodeport(), false), (plain(), true)] {
        apply(&mut st, vec![port]);
        let (snap, changes) = st.sync();
        b.apply(&snap, &changes).unwrap();
        assert_eq!(in_elements(&mut k), elements);
    }
    // The table holds the elements; a proxy restarted with the Service as a NodePort (or the
    // other way round) converges in its first, full, sync.
    // (A restarted proxy's first sync is a full one.)
    let full = Changes {
        full: true,
        ..Default::default()
    };
    for (port, elements) in [(nodeport(), false), (plain(), true)] {
        apply(&mut st, vec![port]);
        let (snap, _) = st.sync();
        backend(&fake).apply(&snap, &full).unwrap();
        assert_eq!(in_elements(&mut k), elements);
        let before = fake.applied();
        backend(&fake).apply(&snap, &full).unwrap();
        assert_eq!(fake.applied(), before, "converged");
    }
}
