//! Shared pieces of the kernel tests: a representative ClusterIP-style transaction using every
//! op and statement, and running netlink or `nft` inside a test namespace.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write;
use std::time::Duration;

use sluice_nft::*;
use sluice_testbed::NetNs;

pub(crate) const TABLE: &str = "sluice";

pub(crate) fn chain(name: &str) -> Op {
    Op::AddChain(ChainDef {
        name: name.into(),
        base: None,
    })
}

pub(crate) fn base(name: &str, kind: ChainType, hook: Hook, priority: i32) -> Op {
    Op::AddChain(ChainDef {
        name: name.into(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
    })
}

pub(crate) fn rule(chain: &str, stmts: Vec<Stmt>) -> Op {
    Op::AddRule {
        chain: chain.into(),
        rule: Rule::new(stmts),
    }
}

pub(crate) fn commented(chain: &str, stmts: Vec<Stmt>, comment: &str) -> Op {
    Op::AddRule {
        chain: chain.into(),
        rule: Rule::new(stmts).with_comment(comment),
    }
}

pub(crate) fn set(name: &str, key: Vec<KeyType>, verdict_map: bool) -> SetDef {
    SetDef {
        verdict_map,
        ..SetDef::set(name, key)
    }
}

pub(crate) fn addr(s: &str) -> KeyValue {
    KeyValue::Addr(s.parse().unwrap())
}

pub(crate) fn goto(c: &str) -> Verdict {
    Verdict::Goto(c.into())
}

pub(crate) fn jump(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Jump(c.into()))
}

pub(crate) fn prefix(field: Field, net: &str, negate: bool) -> Stmt {
    Stmt::Prefix {
        field,
        net: net.parse().unwrap(),
        negate,
    }
}

/// The static part of a kube-proxy-shaped table: base chains, service maps, masquerading.
pub(crate) fn skeleton(tx: &mut Transaction) {
    use ChainType::*;
    use Hook::*;
    tx.push(Op::AddTable {
        comment: Some("rules for sluice".into()),
    });
    tx.push(base("nat-prerouting", Nat, Prerouting, -100));
    tx.push(base("nat-output", Nat, Output, -100));
    tx.push(base("nat-postrouting", Nat, Postrouting, 100));
    tx.push(base("filter-forward", Filter, Forward, 0));
    for c in ["services", "mark-for-masquerade", "masquerading"] {
        tx.push(chain(c));
    }
    let svc_key = vec![KeyType::Addr, KeyType::Proto, KeyType::Port];
    tx.push(Op::AddSet(SetDef {
        comment: Some("ClusterIP, ExternalIP and LoadBalancer IP traffic".into()),
        ..set("service-ips", svc_key, true)
    }));
    tx.push(Op::AddSet(SetDef {
        comment: Some("endpoints reaching themselves".into()),
        ..set(
            "hairpin",
            vec![KeyType::Addr, KeyType::Addr, KeyType::Port],
            false,
        )
    }));
    tx.push(rule("nat-prerouting", vec![jump("services")]));
    tx.push(rule("nat-output", vec![jump("services")]));
    tx.push(rule("nat-postrouting", vec![jump("masquerading")]));
    tx.push(rule(
        "services",
        vec![Stmt::Vmap {
            key: vec![Field::Daddr, Field::L4Proto, Field::Dport],
            map: "service-ips".into(),
        }],
    ));
    tx.push(rule("mark-for-masquerade", vec![Stmt::MarkOr(0x4000)]));
    tx.push(rule(
        "masquerading",
        vec![Stmt::MarkClear(0x4000), Stmt::Verdict(Verdict::Return)],
    ));
    tx.push(rule(
        "masquerading",
        vec![
            Stmt::InConcat {
                key: vec![Field::Saddr, Field::Daddr, Field::Dport],
                set: "hairpin".into(),
            },
            Stmt::MarkOr(0x4000),
        ],
    ));
    tx.push(rule("masquerading", vec![Stmt::MarkXor(0x4000)]));
    tx.push(rule(
        "masquerading",
        vec![Stmt::Masquerade { fully_random: true }],
    ));
}

/// One ClusterIP service `vip:port/tcp` balanced over `endpoints`.
pub(crate) fn service(
    tx: &mut Transaction,
    name: &str,
    vip: &str,
    port: u16,
    endpoints: &[(&str, u16)],
) {
    service_proto(tx, Proto::Tcp, name, vip, port, endpoints);
}

/// One ClusterIP service `vip:port/proto` balanced over `endpoints`, as the proxy renders
/// it: endpoint i of n is `numgen random mod (n-i) == 0 … dnat to` in the service chain,
/// and each endpoint is in the hairpin set.
pub(crate) fn service_proto(
    tx: &mut Transaction,
    proto: Proto,
    name: &str,
    vip: &str,
    port: u16,
    endpoints: &[(&str, u16)],
) {
    let svc = format!("service-{name}");
    tx.push(chain(&svc));
    tx.push(Op::FlushChain(svc.clone()));
    let mut hairpin = Vec::new();
    for (i, (ip, eport)) in endpoints.iter().enumerate() {
        let mut stmts = Vec::new();
        if i + 1 < endpoints.len() {
            stmts.push(Stmt::Numgen {
                modulus: (endpoints.len() - i) as u32,
            });
        }
        stmts.extend([
            Stmt::L4Proto(proto),
            Stmt::Dnat {
                addr: ip.parse().unwrap(),
                port: *eport,
            },
        ]);
        tx.push(commented(&svc, stmts, &format!("ns/{name}:http")));
        hairpin.push(Element::key(vec![
            addr(ip),
            addr(ip),
            KeyValue::Port(*eport),
        ]));
    }
    tx.push(Op::AddElements {
        set: "hairpin".into(),
        elements: hairpin,
    });
    tx.push(Op::AddElements {
        set: "service-ips".into(),
        elements: vec![Element::map(
            vec![addr(vip), KeyValue::Proto(proto), KeyValue::Port(port)],
            goto(&svc),
        )],
    });
}

/// Every op and statement kind on top of the skeleton and one service.
pub(crate) fn representative() -> Transaction {
    let mut tx = Transaction::new(Family::Ip, TABLE);
    skeleton(&mut tx);
    service(
        &mut tx,
        "web",
        "10.96.0.10",
        80,
        &[("10.244.1.2", 8080), ("10.244.2.2", 8080)],
    );
    for c in ["cluster-ips-check", "reject-chain", "firewall-web", "stale"] {
        tx.push(chain(c));
    }
    tx.push(Op::AddSet(SetDef {
        comment: Some("Active ClusterIPs".into()),
        ..set("cluster-ips", vec![KeyType::Addr], false)
    }));
    tx.push(Op::AddSet(set(
        "service-nodeports",
        vec![KeyType::Proto, KeyType::Port],
        true,
    )));
    tx.push(Op::AddSet(set(
        "no-endpoint-services",
        vec![KeyType::Addr, KeyType::Proto, KeyType::Port],
        true,
    )));
    tx.push(Op::AddSet(SetDef {
        timeout: Some(Duration::from_secs(10800)),
        ..set("affinity-web", vec![KeyType::Addr], false)
    }));
    tx.push(Op::AddSet(SetDef {
        interval: true,
        ..set("source-ranges", vec![KeyType::Addr], false)
    }));
    tx.push(Op::AddSet(set("stale-set", vec![KeyType::Port], false)));
    tx.push(rule(
        "services",
        vec![
            Stmt::FibLocal(Field::Daddr),
            Stmt::Vmap {
                key: vec![Field::L4Proto, Field::Dport],
                map: "service-nodeports".into(),
            },
        ],
    ));
    tx.push(rule(
        "filter-forward",
        vec![Stmt::CtStateNew, jump("cluster-ips-check")],
    ));
    tx.push(commented(
        "cluster-ips-check",
        vec![
            Stmt::InSet {
                field: Field::Daddr,
                set: "cluster-ips".into(),
                negate: false,
            },
            Stmt::Reject { tcp_reset: false },
        ],
        "Reject traffic to invalid ports of ClusterIPs",
    ));
    tx.push(commented(
        "cluster-ips-check",
        vec![
            prefix(Field::Daddr, "10.96.0.0/12", false),
            Stmt::Verdict(Verdict::Drop),
        ],
        "Drop traffic to unallocated ClusterIPs",
    ));
    tx.push(rule("reject-chain", vec![Stmt::Reject { tcp_reset: true }]));
    tx.push(rule(
        "reject-chain",
        vec![Stmt::Counter, Stmt::Reject { tcp_reset: false }],
    ));
    tx.push(rule(
        "firewall-web",
        vec![
            Stmt::InSet {
                field: Field::Saddr,
                set: "source-ranges".into(),
                negate: true,
            },
            prefix(Field::Saddr, "10.0.0.0/9", true),
            Stmt::FibLocal(Field::Saddr),
            Stmt::Verdict(Verdict::Drop),
        ],
    ));
    tx.push(rule(
        "firewall-web",
        vec![
            Stmt::IifName {
                name: "cni0".into(),
                prefix: false,
                negate: true,
            },
            Stmt::IifName {
                name: "veth".into(),
                prefix: true,
                negate: false,
            },
            Stmt::Verdict(Verdict::Return),
        ],
    ));
    tx.push(rule(
        "firewall-web",
        vec![
            Stmt::InSet {
                field: Field::Saddr,
                set: "affinity-web".into(),
                negate: false,
            },
            Stmt::UpdateSaddr("affinity-web".into()),
            prefix(Field::Daddr, "10.96.0.0/16", false),
            Stmt::Verdict(Verdict::Accept),
        ],
    ));
    tx.push(Op::AddElements {
        set: "cluster-ips".into(),
        elements: vec![Element::key(vec![addr("10.96.0.10")])],
    });
    tx.push(Op::AddElements {
        set: "service-nodeports".into(),
        elements: vec![Element::map(
            vec![KeyValue::Proto(Proto::Tcp), KeyValue::Port(30080)],
            goto("service-web"),
        )],
    });
    let dns = vec![
        addr("10.96.0.11"),
        KeyValue::Proto(Proto::Udp),
        KeyValue::Port(53),
    ];
    tx.push(Op::AddElements {
        set: "no-endpoint-services".into(),
        elements: vec![
            Element {
                comment: Some("ns/dns:dns".into()),
                ..Element::map(dns.clone(), goto("reject-chain"))
            },
            Element::map(
                vec![
                    addr("10.96.0.12"),
                    KeyValue::Proto(Proto::Sctp),
                    KeyValue::Port(9),
                ],
                Verdict::Drop,
            ),
            Element::map(
                vec![
                    addr("10.96.0.13"),
                    KeyValue::Proto(Proto::Tcp),
                    KeyValue::Port(9),
                ],
                Verdict::Jump("reject-chain".into()),
            ),
        ],
    });
    tx.push(Op::AddElements {
        set: "source-ranges".into(),
        elements: vec![
            Element {
                prefix: Some(8),
                ..Element::key(vec![addr("10.0.0.0")])
            },
            Element {
                prefix: Some(24),
                comment: Some("office".into()),
                ..Element::key(vec![addr("192.168.1.0")])
            },
            Element::key(vec![addr("172.16.0.1")]),
        ],
    });
    tx.push(Op::AddElements {
        set: "stale-set".into(),
        elements: vec![Element::key(vec![KeyValue::Port(1)])],
    });
    tx.push(Op::DeleteElements {
        set: "no-endpoint-services".into(),
        elements: vec![Element::key(vec![
            addr("10.96.0.13"),
            KeyValue::Proto(Proto::Tcp),
            KeyValue::Port(9),
        ])],
    });
    tx.push(Op::FlushSet("stale-set".into()));
    tx.push(Op::DeleteSet("stale-set".into()));
    tx.push(rule("stale", vec![Stmt::Counter]));
    tx.push(Op::FlushChain("stale".into()));
    tx.push(Op::DeleteChain("stale".into()));
    tx
}

/// An IPv6 table exercising the family-dependent encodings.
pub(crate) fn representative_v6() -> Transaction {
    let mut tx = Transaction::new(Family::Ip6, TABLE);
    skeleton(&mut tx);
    service(
        &mut tx,
        "web6",
        "fd00:96::10",
        80,
        &[("fd00:244:1::2", 8080)],
    );
    tx.push(chain("checks"));
    tx.push(Op::AddSet(SetDef {
        interval: true,
        ..set("ranges6", vec![KeyType::Addr], false)
    }));
    tx.push(Op::AddElements {
        set: "ranges6".into(),
        elements: vec![Element {
            prefix: Some(48),
            ..Element::key(vec![addr("fd00:1::")])
        }],
    });
    tx.push(rule(
        "checks",
        vec![
            prefix(Field::Saddr, "fd00::/8", true),
            prefix(Field::Daddr, "fd00:96::/100", false),
            Stmt::InSet {
                field: Field::Saddr,
                set: "ranges6".into(),
                negate: false,
            },
            Stmt::Reject { tcp_reset: false },
        ],
    ));
    tx
}

/// Applies `tx` through netlink inside `ns`.
pub(crate) fn apply(ns: &NetNs, tx: &Transaction) -> Result<(), NftError> {
    ns.run(|| Netlink::open()?.apply(tx)).unwrap()
}

/// Reads a table back through netlink inside `ns`.
pub(crate) fn read(ns: &NetNs, family: Family, name: &str) -> Option<TableState> {
    ns.run(|| Netlink::open()?.read_table(family, name))
        .unwrap()
        .unwrap()
}

/// Applies `tx` with `nft -f` of its text inside `ns`.
pub(crate) fn nft_f(ns: &NetNs, tx: &Transaction) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text::script(tx).as_bytes()).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    ns.exec(["nft", "-f", &path]).unwrap();
}

/// `nft list table …` inside `ns`.
pub(crate) fn list(ns: &NetNs, family: Family, name: &str) -> String {
    ns.exec(["nft", "list", "table", family.keyword(), name])
        .unwrap()
}

/// The chain-free "data" layout (bench/README.md, issue 14's sixth pass): a Service is a
/// dispatch element, an endpoint count and its endpoints; static chains pick a bucket.
/// Two Services on `vips`, the first with three endpoints, the second with one.
pub(crate) fn data_layout(family: Family, vips: [&str; 2], eps: [&str; 3]) -> Transaction {
    let mut tx = Transaction::new(family, TABLE);
    tx.push(Op::AddTable { comment: None });
    let svc = vec![KeyType::Addr, KeyType::Proto, KeyType::Port];
    let mut bucketed = svc.clone();
    bucketed.push(KeyType::Bucket);
    tx.push(Op::AddSet(SetDef::verdict_map("service-ips", svc.clone())));
    tx.push(Op::AddSet(SetDef::data_map("counts", svc, MapData::Addr)));
    tx.push(Op::AddSet(SetDef::data_map(
        "endpoints",
        bucketed,
        MapData::AddrPort,
    )));
    tx.push(Op::AddSet(SetDef::verdict_map("pick", vec![KeyType::Addr])));
    for c in ["select", "pick1", "pick3"] {
        tx.push(chain(c));
    }
    tx.push(base(
        "nat-prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        -100,
    ));
    let svc_key = vec![Field::Daddr, Field::L4Proto, Field::Dport];
    tx.push(rule(
        "nat-prerouting",
        vec![Stmt::Vmap {
            key: svc_key.clone(),
            map: "service-ips".into(),
        }],
    ));
    tx.push(rule(
        "select",
        vec![Stmt::DaddrFromMap {
            key: svc_key,
            map: "counts".into(),
        }],
    ));
    tx.push(rule(
        "select",
        vec![Stmt::Vmap {
            key: vec![Field::Daddr],
            map: "pick".into(),
        }],
    ));
    for n in [1, 3] {
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            tx.push(rule(
                &format!("pick{n}"),
                vec![
                    Stmt::L4Proto(p),
                    Stmt::DnatFromMap {
                        key: vec![
                            Field::CtOriginalDaddr,
                            Field::L4Proto,
                            Field::Dport,
                            Field::Numgen(n),
                        ],
                        map: "endpoints".into(),
                    },
                ],
            ));
        }
    }
    let count = |n: u8| match family {
        Family::Ip => addr(&format!("0.0.0.{n}")),
        Family::Ip6 => addr(&format!("::{n}")),
    };
    let KeyValue::Addr(one) = count(1) else {
        unreachable!()
    };
    let KeyValue::Addr(three) = count(3) else {
        unreachable!()
    };
    tx.push(Op::AddElements {
        set: "pick".into(),
        elements: vec![
            Element::map(vec![count(1)], goto("pick1")),
            Element::map(vec![count(3)], goto("pick3")),
        ],
    });
    let svc = |vip: &str| vec![addr(vip), KeyValue::Proto(Proto::Tcp), KeyValue::Port(80)];
    tx.push(Op::AddElements {
        set: "service-ips".into(),
        elements: vips
            .iter()
            .map(|v| Element::map(svc(v), goto("select")))
            .collect(),
    });
    tx.push(Op::AddElements {
        set: "counts".into(),
        elements: vec![
            Element::data(svc(vips[0]), ElementData::Addr(three)),
            Element::data(svc(vips[1]), ElementData::Addr(one)),
        ],
    });
    let ep = |vip: &str, bucket: u32, to: &str| {
        let mut key = svc(vip);
        key.push(KeyValue::Bucket(bucket));
        Element::data(key, ElementData::AddrPort(to.parse().unwrap(), 8080))
    };
    tx.push(Op::AddElements {
        set: "endpoints".into(),
        elements: vec![
            ep(vips[0], 0, eps[0]),
            ep(vips[0], 1, eps[1]),
            ep(vips[0], 2, eps[2]),
            ep(vips[1], 0, eps[0]),
        ],
    });
    tx
}
