use super::*;
use crate::error::errno;
use crate::ir::*;
use crate::state::fingerprint;

fn chain(name: &str) -> Op {
    Op::AddChain(ChainDef {
        name: name.into(),
        base: None,
    })
}

fn map(name: &str) -> Op {
    Op::AddSet(SetDef::verdict_map(
        name,
        vec![KeyType::Addr, KeyType::Proto, KeyType::Port],
    ))
}

fn key(ip: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::Addr(ip.parse().unwrap()),
        KeyValue::Proto(Proto::Tcp),
        KeyValue::Port(80),
    ]
}

fn elem(ip: &str, to: &str) -> Op {
    Op::AddElements {
        set: "svc".into(),
        elements: vec![Element::map(key(ip), Verdict::Goto(to.into()))],
    }
}

fn jump(from: &str, to: &str) -> Op {
    Op::AddRule {
        chain: from.into(),
        rule: Rule::new(vec![Stmt::Verdict(Verdict::Jump(to.into()))]),
    }
}

fn tx(ops: Vec<Op>) -> Transaction {
    let mut t = Transaction::new(Family::Ip, "sluice");
    t.ops = ops;
    t
}

fn base() -> FakeNft {
    let mut f = FakeNft::new();
    f.apply(&tx(vec![
        Op::AddTable {
            comment: Some("rules".into()),
        },
        chain("a"),
        chain("b"),
        map("svc"),
        jump("a", "b"),
        elem("10.96.0.1", "b"),
    ]))
    .unwrap();
    f
}

fn read(f: &mut FakeNft) -> TableState {
    f.read_table(Family::Ip, "sluice").unwrap().unwrap()
}

#[test]
fn a_refused_op_rolls_back_the_transaction_and_is_named() {
    let mut f = base();
    let before = read(&mut f);
    let err = f
        .apply(&tx(vec![chain("c"), jump("c", "missing"), chain("d")]))
        .unwrap_err();
    assert_eq!(err.errno(), Some(errno::ENOENT));
    assert_eq!(
        err.to_string(),
        "add rule ip sluice c jump missing: No such file or directory"
    );
    assert_eq!(read(&mut f), before);
    assert_eq!(f.applied(), 1);
}

#[test]
fn re_adding_existing_objects_is_fine_but_not_with_another_definition() {
    let mut f = base();
    f.apply(&tx(vec![
        Op::AddTable { comment: None },
        chain("a"),
        map("svc"),
    ]))
    .unwrap();
    let mut other = map("svc");
    if let Op::AddSet(s) = &mut other {
        s.key.pop();
    }
    let err = f.apply(&tx(vec![other])).unwrap_err();
    assert_eq!(err.errno(), Some(errno::EEXIST));
}

#[test]
fn map_keys_with_another_verdict_exist_already_and_the_same_one_is_fine() {
    let mut f = base();
    f.apply(&tx(vec![elem("10.96.0.1", "b")])).unwrap();
    let err = f.apply(&tx(vec![elem("10.96.0.1", "a")])).unwrap_err();
    assert_eq!(err.errno(), Some(errno::EEXIST));
    f.apply(&tx(vec![
        Op::DeleteElements {
            set: "svc".into(),
            elements: vec![Element::key(key("10.96.0.1"))],
        },
        elem("10.96.0.1", "a"),
    ]))
    .unwrap();
    let svc = read(&mut f).set("svc").unwrap().elements.clone();
    assert_eq!(svc[0].verdict, Some(Verdict::Goto("a".into())));
}

#[test]
fn deleting_missing_or_referenced_objects_fails() {
    let mut f = base();
    for (op, want) in [
        (Op::DeleteChain("nope".into()), errno::ENOENT),
        (Op::DeleteSet("nope".into()), errno::ENOENT),
        (Op::DeleteChain("b".into()), errno::EBUSY),
        (
            Op::DeleteElements {
                set: "svc".into(),
                elements: vec![Element::key(key("10.96.0.9"))],
            },
            errno::ENOENT,
        ),
    ] {
        assert_eq!(f.apply(&tx(vec![op])).unwrap_err().errno(), Some(want));
    }
    // Once the rule and the element are gone, the chain can go.
    f.apply(&tx(vec![
        Op::FlushChain("a".into()),
        Op::FlushSet("svc".into()),
        Op::DeleteChain("b".into()),
    ]))
    .unwrap();
    assert!(read(&mut f).chain("b").is_none());
    let mut t = tx(vec![Op::DeleteTable]);
    f.apply(&t).unwrap();
    assert!(f.read_table(Family::Ip, "sluice").unwrap().is_none());
    t.ops = vec![Op::DeleteTable];
    assert_eq!(f.apply(&t).unwrap_err().errno(), Some(errno::ENOENT));
}

#[test]
fn read_back_gives_handles_comments_fingerprints_and_elements() {
    let mut f = base();
    let rule = Rule::new(vec![Stmt::Counter]).with_comment("ns/svc:http");
    f.apply(&tx(vec![Op::AddRule {
        chain: "b".into(),
        rule: rule.clone(),
    }]))
    .unwrap();
    let t = read(&mut f);
    assert_eq!(t.comment.as_deref(), Some("rules"));
    let b = &t.chain("b").unwrap().rules;
    assert_eq!(b[0].comment.as_deref(), Some("ns/svc:http"));
    assert_eq!(b[0].fingerprint, Some(fingerprint(Family::Ip, &rule)));
    let handle = b[0].handle;
    f.apply(&tx(vec![Op::DeleteRule {
        chain: "b".into(),
        handle,
    }]))
    .unwrap();
    assert!(read(&mut f).chain("b").unwrap().rules.is_empty());
}

#[test]
fn injected_failures_and_kernel_checks() {
    let mut f = base();
    f.fail_next(errno::EINVAL);
    assert_eq!(
        f.apply(&tx(vec![chain("c")])).unwrap_err().errno(),
        Some(errno::EINVAL)
    );
    f.apply(&tx(vec![chain("c")])).unwrap();
    // vmap needs a verdict map.
    f.apply(&tx(vec![Op::AddSet(SetDef::set(
        "plain",
        vec![KeyType::Addr],
    ))]))
    .unwrap();
    let vmap = Op::AddRule {
        chain: "c".into(),
        rule: Rule::new(vec![Stmt::Vmap {
            key: vec![Field::Daddr],
            map: "plain".into(),
        }]),
    };
    assert_eq!(
        f.apply(&tx(vec![vmap])).unwrap_err().errno(),
        Some(errno::EINVAL)
    );
    // Encoding errors come out the same as from the kernel side.
    let bad = Op::AddRule {
        chain: "c".into(),
        rule: Rule::new(vec![Stmt::Prefix {
            field: Field::Dport,
            net: "10.0.0.0/8".parse().unwrap(),
            negate: false,
        }]),
    };
    assert!(matches!(
        f.apply(&tx(vec![bad])),
        Err(NftError::Encode { .. })
    ));
}

#[test]
fn interval_elements_are_normalized_prefixes() {
    let mut f = base();
    f.apply(&tx(vec![
        Op::AddSet(SetDef {
            interval: true,
            ..SetDef::set("cidrs", vec![KeyType::Addr])
        }),
        Op::AddElements {
            set: "cidrs".into(),
            elements: vec![
                Element {
                    prefix: Some(8),
                    ..Element::key(vec![KeyValue::Addr("10.1.2.3".parse().unwrap())])
                },
                Element::key(vec![KeyValue::Addr("192.168.1.1".parse().unwrap())]),
            ],
        },
    ]))
    .unwrap();
    let t = read(&mut f);
    let e = &t.set("cidrs").unwrap().elements;
    assert_eq!(e[0].key, vec![KeyValue::Addr("10.0.0.0".parse().unwrap())]);
    assert_eq!((e[0].prefix, e[1].prefix), (Some(8), Some(32)));
}
