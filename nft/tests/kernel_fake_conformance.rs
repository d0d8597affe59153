//! The fake answers like the kernel: each transaction below, applied after the
//! representative one, gets the same errno (or the same success) from `FakeNft` as from the
//! kernel (as root).

mod common;

use common::*;
use sluice_nft::*;
use sluice_testbed::{NetNs, require_root};

fn one(op: Op) -> Transaction {
    let mut tx = Transaction::new(Family::Ip, TABLE);
    tx.push(op);
    tx
}

fn cases() -> Vec<(&'static str, Transaction)> {
    let svc_elem = |v: Option<Verdict>| Element {
        verdict: v,
        ..Element::key(vec![
            addr("10.96.0.99"),
            KeyValue::Proto(Proto::Tcp),
            KeyValue::Port(80),
        ])
    };
    let mut missing_table = Transaction::new(Family::Ip, "absent");
    missing_table.push(Op::DeleteTable);
    let mut missing_table_chain = Transaction::new(Family::Ip, "absent");
    missing_table_chain.push(chain("x"));
    vec![
        (
            "delete missing chain",
            one(Op::DeleteChain("missing".into())),
        ),
        ("delete missing set", one(Op::DeleteSet("missing".into()))),
        (
            "delete set used by a rule",
            one(Op::DeleteSet("cluster-ips".into())),
        ),
        (
            "delete chain jumped to",
            one(Op::DeleteChain("mark-for-masquerade".into())),
        ),
        (
            "delete chain a map points to",
            one(Op::DeleteChain("service-web".into())),
        ),
        ("delete missing table", missing_table),
        ("chain in missing table", missing_table_chain),
        (
            "re-add set with another key",
            one(Op::AddSet(set("cluster-ips", vec![KeyType::Port], false))),
        ),
        (
            "re-add base chain with another priority",
            one(base("nat-output", ChainType::Nat, Hook::Output, -99)),
        ),
        (
            "re-add regular chain as base",
            one(base("services", ChainType::Filter, Hook::Input, 0)),
        ),
        (
            "rule in missing chain",
            one(rule("missing", vec![Stmt::Counter])),
        ),
        (
            "jump to missing chain",
            one(rule("services", vec![jump("missing")])),
        ),
        (
            "jump to base chain",
            one(rule("services", vec![jump("nat-output")])),
        ),
        (
            "lookup in missing set",
            one(rule(
                "services",
                vec![Stmt::InSet {
                    field: Field::Daddr,
                    set: "missing".into(),
                    negate: false,
                }],
            )),
        ),
        (
            "vmap on a plain set",
            one(rule(
                "services",
                vec![Stmt::Vmap {
                    key: vec![Field::Daddr],
                    map: "cluster-ips".into(),
                }],
            )),
        ),
        ("re-add base chain as regular", one(chain("nat-output"))),
        (
            "update on a set without timeout (accepted)",
            one(rule(
                "services",
                vec![Stmt::UpdateSaddr("cluster-ips".into())],
            )),
        ),
        (
            "elements of missing set",
            one(Op::AddElements {
                set: "missing".into(),
                elements: vec![Element::key(vec![addr("10.0.0.1")])],
            }),
        ),
        (
            "map element to missing chain",
            one(Op::AddElements {
                set: "service-ips".into(),
                elements: vec![svc_elem(Some(goto("missing")))],
            }),
        ),
        (
            "map element to base chain",
            one(Op::AddElements {
                set: "service-ips".into(),
                elements: vec![svc_elem(Some(goto("nat-output")))],
            }),
        ),
        (
            "map element without verdict",
            one(Op::AddElements {
                set: "service-ips".into(),
                elements: vec![svc_elem(None)],
            }),
        ),
        (
            "set element with verdict",
            one(Op::AddElements {
                set: "cluster-ips".into(),
                elements: vec![Element::map(vec![addr("10.96.0.99")], Verdict::Drop)],
            }),
        ),
        (
            "map key with another verdict",
            one(Op::AddElements {
                set: "service-ips".into(),
                elements: vec![Element::map(
                    vec![
                        addr("10.96.0.10"),
                        KeyValue::Proto(Proto::Tcp),
                        KeyValue::Port(80),
                    ],
                    goto("reject-chain"),
                )],
            }),
        ),
        (
            "delete missing element",
            one(Op::DeleteElements {
                set: "service-ips".into(),
                elements: vec![svc_elem(None)],
            }),
        ),
        (
            "delete missing rule handle",
            one(Op::DeleteRule {
                chain: "services".into(),
                handle: 999_999,
            }),
        ),
    ]
}

#[test]
fn the_fake_refuses_like_the_kernel() {
    require_root();
    let ns = NetNs::new("nft-conform").unwrap();
    apply(&ns, &representative()).unwrap();
    let mut fake = FakeNft::new();
    fake.apply(&representative()).unwrap();
    let mut mismatches = Vec::new();
    for (name, tx) in cases() {
        let kernel = apply(&ns, &tx).err().and_then(|e| e.errno());
        let ours = fake.apply(&tx).err().and_then(|e| e.errno());
        if kernel != ours {
            mismatches.push(format!("{name}: kernel {kernel:?}, fake {ours:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
