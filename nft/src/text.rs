//! The IR as nft syntax: `add …` commands that `nft -f` accepts (nftables ≥ 1.0.6, with its
//! quirks: numeric priority for the output hook, `meta l4proto` before `dnat`). Used for
//! golden files, for reading a ruleset in a test failure, and by the kernel tests that check
//! the netlink encoding against what `nft -f` programs from the same text.

use std::fmt::Write;
use std::net::IpAddr;

use crate::ir::*;

/// The transaction as an `nft -f` script, one command per line.
pub fn script(tx: &Transaction) -> String {
    let Some(family) = tx.family else {
        return String::new();
    };
    let t = format!("{} {}", family.keyword(), tx.table);
    let mut out = String::new();
    for op in &tx.ops {
        let _ = writeln!(out, "{}", command(&t, family, op));
    }
    out
}

/// One operation as an nft command (`add rule ip sluice x …`): error messages name the op
/// this way.
pub fn op_text(family: Family, table: &str, op: &Op) -> String {
    command(&format!("{} {table}", family.keyword()), family, op)
}

fn command(t: &str, family: Family, op: &Op) -> String {
    match op {
        Op::AddTable { comment } => match comment {
            Some(c) => format!("add table {t} {{ comment {} ; }}", quote(c)),
            None => format!("add table {t}"),
        },
        Op::DeleteTable => format!("delete table {t}"),
        Op::AddChain(c) => match c.base {
            Some(b) => format!(
                "add chain {t} {} {{ type {} hook {} priority {} ; policy accept ; }}",
                c.name,
                chain_type(b.kind),
                hook(b.hook),
                b.priority
            ),
            None => format!("add chain {t} {}", c.name),
        },
        Op::FlushChain(c) => format!("flush chain {t} {c}"),
        Op::DeleteChain(c) => format!("delete chain {t} {c}"),
        Op::AddRule { chain, rule } => format!("add rule {t} {chain} {}", rule_text(family, rule)),
        Op::DeleteRule { chain, handle } => format!("delete rule {t} {chain} handle {handle}"),
        Op::AddSet(s) => format!(
            "add {} {t} {} {{ {} }}",
            if s.verdict_map || s.data.is_some() {
                "map"
            } else {
                "set"
            },
            s.name,
            set_body(family, s)
        ),
        Op::DeleteSet(s) => format!("delete set {t} {s}"),
        Op::FlushSet(s) => format!("flush set {t} {s}"),
        Op::AddElements { set, elements } => {
            format!("add element {t} {set} {{ {} }}", elements_text(elements))
        }
        Op::DeleteElements { set, elements } => {
            let keys: Vec<Element> = elements
                .iter()
                .map(|e| Element {
                    verdict: None,
                    data: None,
                    comment: None,
                    ..e.clone()
                })
                .collect();
            format!("delete element {t} {set} {{ {} }}", elements_text(&keys))
        }
    }
}

fn set_body(family: Family, s: &SetDef) -> String {
    let mut body = if s.key.contains(&KeyType::Bucket) {
        typeof_decl(family, s)
    } else {
        let key: Vec<&str> = s.key.iter().map(|k| key_type(family, *k)).collect();
        let mut body = format!("type {}", key.join(" . "));
        match s.data {
            Some(MapData::Addr) => {
                body.push_str(&format!(" : {}", key_type(family, KeyType::Addr)))
            }
            Some(MapData::AddrPort) => body.push_str(&format!(
                " : {} . inet_service",
                key_type(family, KeyType::Addr)
            )),
            None => {}
        }
        body
    };
    if s.verdict_map {
        body.push_str(" : verdict");
    }
    body.push_str(" ;");
    let mut flags = Vec::new();
    if s.interval {
        flags.push("interval");
    }
    if s.timeout.is_some() {
        flags.push("dynamic");
        flags.push("timeout");
    }
    if !flags.is_empty() {
        let _ = write!(body, " flags {} ;", flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = write!(body, " timeout {}s ;", t.as_secs());
    }
    if let Some(c) = &s.comment {
        let _ = write!(body, " comment {} ;", quote(c));
    }
    body
}

/// `typeof …`: how nft declares a key with a `numgen` bucket, which has no named type. Each
/// component is the expression that fills it: the destination address, the protocol, the
/// destination port, a bucket.
fn typeof_decl(family: Family, s: &SetDef) -> String {
    let f = family.keyword();
    let key: Vec<String> = s
        .key
        .iter()
        .map(|k| match k {
            KeyType::Addr => format!("{f} daddr"),
            KeyType::Proto => "meta l4proto".into(),
            KeyType::Port => "th dport".into(),
            KeyType::Bucket => "numgen random mod 2".into(),
        })
        .collect();
    let mut out = format!("typeof {}", key.join(" . "));
    match s.data {
        Some(MapData::Addr) => out.push_str(&format!(" : {f} daddr")),
        Some(MapData::AddrPort) => out.push_str(&format!(" : {f} daddr . th dport")),
        None => {}
    }
    out
}

/// A rule's statements (and comment) in nft syntax.
pub fn rule_text(family: Family, rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.stmts.iter().map(|s| stmt(family, s)).collect();
    if let Some(c) = &rule.comment {
        parts.push(format!("comment {}", quote(c)));
    }
    parts.join(" ")
}

fn stmt(family: Family, s: &Stmt) -> String {
    let f = family.keyword();
    match s {
        Stmt::CtStateNew => "ct state new".into(),
        Stmt::InSet { field, set, negate } => {
            format!("{} {}@{set}", field_text(family, *field), neg(*negate))
        }
        Stmt::InConcat { key, set } => format!("{} @{set}", concat_text(family, key)),
        Stmt::Prefix { field, net, negate } => {
            format!(
                "{} {}{}",
                field_text(family, *field),
                neg(*negate),
                prefix(*net)
            )
        }
        Stmt::L4Proto(p) => format!("meta l4proto {}", p.keyword()),
        Stmt::FibLocal(Field::Saddr) => "fib saddr type local".into(),
        Stmt::FibLocal(_) => "fib daddr type local".into(),
        Stmt::IifName {
            name,
            prefix,
            negate,
        } => format!(
            "iifname {}\"{name}{}\"",
            neg(*negate),
            if *prefix { "*" } else { "" }
        ),
        Stmt::MarkClear(mask) => format!("mark and {mask:#x} == 0x0"),
        Stmt::Vmap { key, map } => format!("{} vmap @{map}", concat_text(family, key)),
        Stmt::DaddrFromMap { key, map } => {
            format!("{f} daddr set {} map @{map}", concat_text(family, key))
        }
        Stmt::DnatFromMap { key, map } => {
            format!("dnat {f} to {} map @{map}", concat_text(family, key))
        }
        Stmt::Numgen { modulus } => format!("numgen random mod {modulus} == 0"),
        Stmt::MarkOr(bits) => format!("mark set mark or {bits:#x}"),
        Stmt::MarkXor(bits) => format!("mark set mark xor {bits:#x}"),
        Stmt::UpdateSaddr(set) => format!("update @{set} {{ {f} saddr }}"),
        Stmt::Dnat { addr, port } => format!("dnat to {}", addr_port(*addr, *port)),
        Stmt::Masquerade { fully_random } => {
            if *fully_random {
                "masquerade fully-random".into()
            } else {
                "masquerade".into()
            }
        }
        Stmt::Reject { tcp_reset } => {
            if *tcp_reset {
                "reject with tcp reset".into()
            } else {
                "reject".into()
            }
        }
        Stmt::Counter => "counter".into(),
        Stmt::Verdict(v) => verdict(v),
    }
}

fn concat_text(family: Family, key: &[Field]) -> String {
    let k: Vec<String> = key.iter().map(|k| field_text(family, *k)).collect();
    k.join(" . ")
}

/// A verdict in nft syntax.
pub fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Return => "return".into(),
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
    }
}

fn elements_text(elements: &[Element]) -> String {
    elements
        .iter()
        .map(element_text)
        .collect::<Vec<_>>()
        .join(", ")
}

fn element_text(e: &Element) -> String {
    let key: Vec<String> = e.key.iter().map(key_value).collect();
    let mut out = key.join(" . ");
    if let Some(p) = e.prefix {
        let _ = write!(out, "/{p}");
    }
    if let Some(c) = &e.comment {
        let _ = write!(out, " comment {}", quote(c));
    }
    if let Some(v) = &e.verdict {
        let _ = write!(out, " : {}", verdict(v));
    }
    match e.data {
        Some(ElementData::Addr(a)) => {
            let _ = write!(out, " : {a}");
        }
        Some(ElementData::AddrPort(a, p)) => {
            let _ = write!(out, " : {a} . {p}");
        }
        None => {}
    }
    out
}

fn key_value(k: &KeyValue) -> String {
    match k {
        KeyValue::Addr(a) => a.to_string(),
        KeyValue::Proto(p) => p.keyword().into(),
        KeyValue::Port(p) => p.to_string(),
        KeyValue::Bucket(b) => b.to_string(),
    }
}

fn field_text(family: Family, f: Field) -> String {
    match f {
        Field::Saddr => format!("{} saddr", family.keyword()),
        Field::Daddr => format!("{} daddr", family.keyword()),
        Field::L4Proto => "meta l4proto".into(),
        Field::Dport => "th dport".into(),
        Field::CtOriginalDaddr => format!("ct original {} daddr", family.keyword()),
        Field::Numgen(m) => format!("numgen random mod {m}"),
    }
}

fn key_type(family: Family, k: KeyType) -> &'static str {
    match (k, family) {
        (KeyType::Addr, Family::Ip) => "ipv4_addr",
        (KeyType::Addr, Family::Ip6) => "ipv6_addr",
        (KeyType::Proto, _) => "inet_proto",
        (KeyType::Port, _) => "inet_service",
        // Only in `typeof` declarations (`typeof_decl`).
        (KeyType::Bucket, _) => "integer",
    }
}

fn chain_type(k: ChainType) -> &'static str {
    match k {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    }
}

fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

fn neg(n: bool) -> &'static str {
    if n { "!= " } else { "" }
}

fn prefix(net: ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.trunc().to_string()
    }
}

fn addr_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// nft's quoting: a double-quoted string (comments never contain quotes here).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_statement_and_op() {
        let mut tx = Transaction::new(Family::Ip, "sluice");
        tx.push(Op::AddTable {
            comment: Some("rules for sluice".into()),
        });
        tx.push(Op::AddChain(ChainDef {
            name: "nat-output".into(),
            base: Some(BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Output,
                priority: -100,
            }),
        }));
        let key = vec![KeyType::Addr, KeyType::Proto, KeyType::Port];
        tx.push(Op::AddSet(SetDef {
            comment: Some("ClusterIP, ExternalIP and LoadBalancer IP traffic".into()),
            ..SetDef::verdict_map("service-ips", key)
        }));
        tx.push(Op::AddSet(SetDef {
            timeout: Some(std::time::Duration::from_secs(10800)),
            ..SetDef::set("affinity-x", vec![KeyType::Addr])
        }));
        tx.push(Op::AddRule {
            chain: "endpoint-x".into(),
            rule: Rule::new(vec![
                Stmt::Prefix {
                    field: Field::Saddr,
                    net: "10.1.0.5/32".parse().unwrap(),
                    negate: false,
                },
                Stmt::Verdict(Verdict::Jump("mark-for-masquerade".into())),
            ]),
        });
        tx.push(Op::AddRule {
            chain: "endpoint-x".into(),
            rule: Rule::new(vec![
                Stmt::UpdateSaddr("affinity-x".into()),
                Stmt::L4Proto(Proto::Tcp),
                Stmt::Dnat {
                    addr: "10.1.0.5".parse().unwrap(),
                    port: 8080,
                },
            ])
            .with_comment("ns/svc:http"),
        });
        tx.push(Op::AddRule {
            chain: "service-x".into(),
            rule: Rule::new(vec![
                Stmt::Numgen { modulus: 3 },
                Stmt::L4Proto(Proto::Tcp),
                Stmt::Dnat {
                    addr: "10.1.0.6".parse().unwrap(),
                    port: 8080,
                },
            ]),
        });
        tx.push(Op::AddElements {
            set: "service-ips".into(),
            elements: vec![Element::map(
                vec![
                    KeyValue::Addr("10.96.0.10".parse().unwrap()),
                    KeyValue::Proto(Proto::Tcp),
                    KeyValue::Port(80),
                ],
                Verdict::Goto("service-x".into()),
            )],
        });
        tx.push(Op::DeleteElements {
            set: "service-ips".into(),
            elements: vec![Element::map(
                vec![
                    KeyValue::Addr("10.96.0.11".parse().unwrap()),
                    KeyValue::Proto(Proto::Udp),
                    KeyValue::Port(53),
                ],
                Verdict::Drop,
            )],
        });
        assert_eq!(
            op_text(
                Family::Ip,
                "sluice",
                &Op::DeleteRule {
                    chain: "services".into(),
                    handle: 7
                }
            ),
            "delete rule ip sluice services handle 7"
        );
        let s = script(&tx);
        let expected = "\
add table ip sluice { comment \"rules for sluice\" ; }
add chain ip sluice nat-output { type nat hook output priority -100 ; policy accept ; }
add map ip sluice service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }
add set ip sluice affinity-x { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip sluice endpoint-x ip saddr 10.1.0.5 jump mark-for-masquerade
add rule ip sluice endpoint-x update @affinity-x { ip saddr } meta l4proto tcp dnat to 10.1.0.5:8080 comment \"ns/svc:http\"
add rule ip sluice service-x numgen random mod 3 == 0 meta l4proto tcp dnat to 10.1.0.6:8080
add element ip sluice service-ips { 10.96.0.10 . tcp . 80 : goto service-x }
delete element ip sluice service-ips { 10.96.0.11 . udp . 53 }
";
        assert_eq!(s, expected);
    }
}
