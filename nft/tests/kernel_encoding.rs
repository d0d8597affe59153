//! The netlink encoding against the kernel (as root, in fresh namespaces): the same
//! transaction programmed through netlink and through `nft -f` of its text lists the same;
//! a refused op leaves the table as it was and is named; reading back gives the IR.

mod common;

use common::*;
use sluice_nft::*;
use sluice_testbed::{NetNs, require_root};

fn compare(tx: &Transaction) {
    let family = tx.family.unwrap();
    let ours = NetNs::new("nft-nl").unwrap();
    let theirs = NetNs::new("nft-cli").unwrap();
    apply(&ours, tx).unwrap();
    nft_f(&theirs, tx);
    let (a, b) = (list(&ours, family, TABLE), list(&theirs, family, TABLE));
    assert_eq!(a, b, "netlink:\n{a}\nnft -f:\n{b}");
}

#[test]
fn netlink_programs_what_nft_programs_from_the_same_text() {
    require_root();
    compare(&representative());
}

#[test]
fn netlink_programs_what_nft_programs_from_the_same_text_ipv6() {
    require_root();
    compare(&representative_v6());
}

#[test]
fn the_data_layout_is_programmed_as_nft_programs_it_and_reads_back() {
    require_root();
    let cases = [
        (
            Family::Ip,
            data_layout(
                Family::Ip,
                ["10.96.0.1", "10.96.0.2"],
                ["10.1.0.1", "10.1.0.2", "10.1.0.3"],
            ),
        ),
        (
            Family::Ip6,
            data_layout(
                Family::Ip6,
                ["fd00::1", "fd00::2"],
                ["fd01::1", "fd01::2", "fd01::3"],
            ),
        ),
    ];
    for (family, tx) in cases {
        compare(&tx);
        // The read-back decodes the data maps and their elements, as the fake holds them.
        let ns = NetNs::new("nft-data").unwrap();
        apply(&ns, &tx).unwrap();
        let got = read(&ns, family, TABLE).unwrap();
        let mut fake = FakeNft::new();
        fake.apply(&tx).unwrap();
        let want = fake.read_table(family, TABLE).unwrap().unwrap();
        assert_eq!(without_handles(got.clone()), without_handles(want));
        assert!(got.sets.iter().all(|s| !s.unrecognised), "{got:?}");
        let endpoints = got.set("endpoints").unwrap();
        assert_eq!(endpoints.elements.len(), 4);
        assert!(endpoints.elements.iter().all(|e| e.data.is_some()));
    }
}

#[test]
fn a_refused_op_leaves_the_table_as_it_was_and_is_named() {
    require_root();
    let ns = NetNs::new("nft-atomic").unwrap();
    apply(&ns, &representative()).unwrap();
    let before = list(&ns, Family::Ip, TABLE);
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(chain("new"));
    tx.push(rule("new", vec![Stmt::Counter]));
    tx.push(Op::FlushChain("service-web".into()));
    tx.push(rule("ghost", vec![Stmt::Counter]));
    tx.push(Op::DeleteSet("cluster-ips".into()));
    let err = apply(&ns, &tx).unwrap_err();
    assert_eq!(err.errno(), Some(2), "{err}");
    assert!(
        err.to_string()
            .starts_with("add rule ip sluice ghost counter: No such file or directory"),
        "{err}"
    );
    assert_eq!(list(&ns, Family::Ip, TABLE), before);

    // A map key that exists with another verdict is refused (EEXIST); deleting a chain a map
    // still points to is refused (EBUSY). The fake answers the same.
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::AddElements {
        set: "service-ips".into(),
        elements: vec![Element::map(
            vec![
                addr("10.96.0.10"),
                KeyValue::Proto(Proto::Tcp),
                KeyValue::Port(80),
            ],
            goto("reject-chain"),
        )],
    });
    let err = apply(&ns, &tx).unwrap_err();
    assert_eq!(err.errno(), Some(17), "{err}");
    assert_eq!(fake_errno(&tx), Some(17));
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::FlushChain("service-web".into()));
    tx.push(Op::DeleteChain("service-web".into()));
    let err = apply(&ns, &tx).unwrap_err();
    assert_eq!(err.errno(), Some(16), "{err}");
    assert!(
        err.to_string()
            .starts_with("delete chain ip sluice service-web"),
        "{err}"
    );
    assert_eq!(list(&ns, Family::Ip, TABLE), before);
}

/// What the fake answers to `tx` after the representative transaction.
fn fake_errno(tx: &Transaction) -> Option<i32> {
    let mut fake = FakeNft::new();
    fake.apply(&representative()).unwrap();
    fake.apply(tx).err().and_then(|e| e.errno())
}

#[test]
fn big_batches_without_per_message_acks_still_name_the_refused_op() {
    require_root();
    let ns = NetNs::new("nft-bigatomic").unwrap();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::AddTable { comment: None });
    for i in 0..3000 {
        tx.push(chain(&format!("c{i}")));
        tx.push(rule(&format!("c{i}"), vec![Stmt::Counter]));
    }
    tx.push(Op::DeleteChain("missing".into()));
    for i in 3000..3100 {
        tx.push(chain(&format!("c{i}")));
    }
    let err = apply(&ns, &tx).unwrap_err();
    assert_eq!(
        err.to_string(),
        "delete chain ip sluice missing: No such file or directory"
    );
    assert!(read(&ns, Family::Ip, TABLE).is_none());
    tx.ops.retain(|op| !matches!(op, Op::DeleteChain(_)));
    apply(&ns, &tx).unwrap();
    assert_eq!(read(&ns, Family::Ip, TABLE).unwrap().chains.len(), 3100);
}

/// Handles differ between the kernel (one counter for all objects) and the fake.
fn without_handles(mut t: TableState) -> TableState {
    for c in &mut t.chains {
        for r in &mut c.rules {
            r.handle = 0;
        }
    }
    t
}

#[test]
fn read_back_equals_the_applied_ir_and_shows_external_changes() {
    require_root();
    let ns = NetNs::new("nft-read").unwrap();
    let tx = representative();
    apply(&ns, &tx).unwrap();
    let got = read(&ns, Family::Ip, TABLE).unwrap();

    // The kernel's picture is the fake's picture of the same transaction…
    let mut fake = FakeNft::new();
    fake.apply(&tx).unwrap();
    let want = fake.read_table(Family::Ip, TABLE).unwrap().unwrap();
    assert_eq!(without_handles(got.clone()), without_handles(want));

    // …and the IR: chain and set definitions, rule fingerprints in order.
    for op in &tx.ops {
        match op {
            Op::AddChain(def) if def.name != "stale" => {
                assert_eq!(&got.chain(&def.name).unwrap().def, def)
            }
            Op::AddSet(def) if def.name != "stale-set" => {
                assert_eq!(&got.set(&def.name).unwrap().def, def)
            }
            _ => {}
        }
    }
    let ep = got.chain("service-web").unwrap();
    let rules: Vec<&Rule> = tx
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::AddRule { chain, rule } if chain == "service-web" => Some(rule),
            _ => None,
        })
        .collect();
    let prints: Vec<Option<u64>> = ep.rules.iter().map(|r| r.fingerprint).collect();
    let expected: Vec<Option<u64>> = rules
        .iter()
        .map(|r| Some(fingerprint(Family::Ip, r)))
        .collect();
    assert_eq!(prints, expected);
    assert_eq!(ep.rules[1].comment.as_deref(), Some("ns/web:http"));
    assert!(read(&ns, Family::Ip, "absent").is_none());

    // Someone flushes a chain and adds a rule of their own: the read-back shows both.
    ns.exec(["nft", "flush", "chain", "ip", TABLE, "service-web"])
        .unwrap();
    ns.exec(["nft", "add", "rule", "ip", TABLE, "firewall-web", "counter"])
        .unwrap();
    let after = read(&ns, Family::Ip, TABLE).unwrap();
    assert!(after.chain("service-web").unwrap().rules.is_empty());
    let foreign = after
        .chain("firewall-web")
        .unwrap()
        .rules
        .last()
        .unwrap()
        .clone();
    assert_eq!((foreign.fingerprint, foreign.comment), (None, None));

    // Repair by handle: the foreign rule goes, the flushed chain is refilled.
    let mut repair = Transaction::new(Family::Ip, TABLE);
    repair.push(Op::DeleteRule {
        chain: "firewall-web".into(),
        handle: foreign.handle,
    });
    repair.push(Op::FlushChain("service-web".into()));
    for r in &rules {
        repair.push(Op::AddRule {
            chain: "service-web".into(),
            rule: (*r).clone(),
        });
    }
    apply(&ns, &repair).unwrap();
    assert_eq!(
        without_handles(read(&ns, Family::Ip, TABLE).unwrap()),
        without_handles(got)
    );
}

#[test]
fn host_elements_of_an_existing_interval_set_are_host_prefixes() {
    require_root();
    let ns = NetNs::new("nft-interval").unwrap();
    apply(&ns, &representative()).unwrap();
    // The set is not defined in this transaction: its interval flag is looked up.
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(Op::AddElements {
        set: "source-ranges".into(),
        elements: vec![Element::key(vec![addr("172.16.0.9")])],
    });
    apply(&ns, &tx).unwrap();
    let set = read(&ns, Family::Ip, TABLE)
        .unwrap()
        .set("source-ranges")
        .unwrap()
        .clone();
    let host = Element {
        prefix: Some(32),
        ..Element::key(vec![addr("172.16.0.9")])
    };
    assert!(set.elements.contains(&host), "{:?}", set.elements);
    let listed = list(&ns, Family::Ip, TABLE);
    assert!(
        listed.contains("172.16.0.9,") && !listed.contains("172.16.0.9-"),
        "{listed}"
    );
}

/// A batch carrying the generation it was planned at is applied only while nobody else has
/// committed (`NFNL_BATCH_GENID`): the kernel refuses it whole with `ERESTART` otherwise,
/// and after an accepted one the generation is exactly the next.
#[test]
fn a_batch_at_a_stale_generation_is_refused_whole() {
    require_root();
    let ns = NetNs::new("nft-gen").unwrap();
    let (first, second, stale) = ns
        .run(|| -> Result<_, NftError> {
            let mut nl = Netlink::open()?;
            let g = nl.generation()?.expect("the kernel reports a generation");
            nl.apply_at(&representative(), g)?;
            let after = nl.generation()?.unwrap();
            // Someone else commits (another socket, as another process would).
            let mut other = Transaction::new(Family::Ip, "someone-else");
            other.push(Op::AddTable { comment: None });
            Netlink::open()?.apply(&other)?;
            let mut tx = Transaction::new(Family::Ip, TABLE);
            tx.push(chain("late"));
            let refused = nl.apply_at(&tx, after).unwrap_err();
            // A batch too large to acknowledge message by message is refused the same way.
            let mut big = Transaction::new(Family::Ip, TABLE);
            for i in 0..=sluice_netlink::socket::ACK_EACH_MAX {
                big.push(chain(&format!("late-{i}")));
            }
            let big_refused = nl.apply_at(&big, after).unwrap_err();
            assert_eq!(big_refused.errno(), Some(85), "ERESTART: {big_refused}");
            Ok(((g, after), nl.generation()?.unwrap(), refused))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        first.1,
        next_generation(first.0),
        "our commit is the next generation"
    );
    assert_eq!(second, next_generation(first.1), "theirs moved it on");
    assert_eq!(stale.errno(), Some(85), "ERESTART: {stale}");
    assert!(
        stale
            .to_string()
            .contains("another process changed the ruleset"),
        "{stale}"
    );
    let table = read(&ns, Family::Ip, TABLE).unwrap();
    assert!(
        table.chains.iter().all(|c| !c.def.name.starts_with("late")),
        "nothing applied"
    );
}

/// What a streaming read hands over, in order.
struct Calls {
    log: Vec<String>,
    table: Collect,
}

impl TableSink for Calls {
    fn start(&mut self) {
        self.log.push("start".into());
        self.table.start();
    }

    fn table(&mut self, comment: Option<String>) {
        self.log.push("table".into());
        self.table.table(comment);
    }

    fn chain(&mut self, chain: ChainState) {
        self.log
            .push(format!("chain {} {}", chain.def.name, chain.rules.len()));
        self.table.chain(chain);
    }

    fn set(&mut self, set: &SetState) {
        self.log.push(format!("set {}", set.def.name));
        self.table.set(set);
    }

    fn elements(&mut self, set: &str, elements: Vec<Element>) {
        self.log.push(format!("elements {set} {}", elements.len()));
        self.table.elements(set, elements);
    }
}

/// Reading back streams: the table first, chains in kernel order with their rules, each set
/// before its elements, and a large set's elements a message at a time (never the set whole);
/// collected, it is what `read_table` returns.
#[test]
fn a_table_read_back_streams_its_elements_a_message_at_a_time() {
    require_root();
    let ns = NetNs::new("nft-stream").unwrap();
    let mut tx = representative();
    tx.push(Op::AddSet(set("big", vec![KeyType::Addr], false)));
    let big: Vec<Element> = (0..3000u32)
        .map(|i| {
            Element::key(vec![KeyValue::Addr(
                std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
            )])
        })
        .collect();
    tx.push(Op::AddElements {
        set: "big".into(),
        elements: big,
    });
    apply(&ns, &tx).unwrap();
    let mut calls = Calls {
        log: Vec::new(),
        table: Collect::new(Family::Ip, TABLE),
    };
    let found = ns
        .run(|| Netlink::open()?.read_table_into(Family::Ip, TABLE, &mut calls))
        .unwrap()
        .unwrap();
    assert!(found);
    let log = &calls.log;
    assert_eq!(&log[..2], ["start", "table"], "{log:#?}");
    let at = |prefix: &str| log.iter().position(|l| l.starts_with(prefix)).unwrap();
    assert!(at("chain ") < at("set "), "{log:#?}");
    let big_calls: Vec<usize> = (log.iter())
        .filter_map(|l| l.strip_prefix("elements big ")?.parse().ok())
        .collect();
    assert!(big_calls.len() > 1, "{log:#?}");
    assert_eq!(big_calls.iter().sum::<usize>(), 3000);
    assert!(at("set big") < at("elements big"));
    assert_eq!(calls.table.finish(), read(&ns, Family::Ip, TABLE));
    // A table that is not there: found is false and the sink has only started.
    let mut none = Calls {
        log: Vec::new(),
        table: Collect::new(Family::Ip, "absent"),
    };
    let found = ns
        .run(|| Netlink::open()?.read_table_into(Family::Ip, "absent", &mut none))
        .unwrap()
        .unwrap();
    assert!(!found);
    assert_eq!(none.log, ["start"]);
}
