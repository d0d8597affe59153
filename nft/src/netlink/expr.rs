//! A rule's statements as nf_tables expressions, the same ones `nft` generates for the same
//! text (so `nft list` prints our rules exactly as it prints its own): loads into registers,
//! compares, bitwise masks, lookups, and the terminal statements.

use std::net::IpAddr;

use ipnet::IpNet;

use super::consts::*;
use crate::ir::{Family, Field, Proto, Stmt, Verdict};
use sluice_netlink::Writer;

/// Writes `stmts` as the content of `NFTA_RULE_EXPRESSIONS`.
pub(crate) fn stmts(w: &mut Writer, family: Family, stmts: &[Stmt]) -> Result<(), String> {
    for (i, s) in stmts.iter().enumerate() {
        stmt(w, family, s, &stmts[..i])?;
    }
    Ok(())
}

fn stmt(w: &mut Writer, family: Family, s: &Stmt, before: &[Stmt]) -> Result<(), String> {
    match s {
        Stmt::CtStateNew => ct_state_new(w),
        Stmt::InSet { field, set, negate } => {
            load(w, family, *field, NFT_REG_1);
            lookup(w, set, None, *negate);
        }
        Stmt::InConcat { key, set } => {
            load_concat(w, family, key);
            lookup(w, set, None, false);
        }
        Stmt::Prefix { field, net, negate } => prefix(w, family, *field, *net, *negate)?,
        Stmt::L4Proto(p) => l4proto(w, *p),
        Stmt::FibLocal(field) => fib_local(w, *field)?,
        Stmt::IifName {
            name,
            prefix,
            negate,
        } => iifname(w, name, *prefix, *negate)?,
        Stmt::MarkClear(mask) => {
            meta_load(w, NFT_META_MARK, NFT_REG_1);
            bitwise(w, &mask.to_ne_bytes(), &[0; 4]);
            cmp(w, NFT_CMP_EQ, &[0; 4]);
        }
        Stmt::Vmap { key, map } => {
            load_concat(w, family, key);
            lookup(w, map, Some(NFT_REG_VERDICT), false);
        }
        Stmt::DaddrFromMap { key, map } => {
            load_concat(w, family, key);
            lookup(w, map, Some(NFT_REG_1), false);
            daddr_write(w, family);
        }
        Stmt::DnatFromMap { key, map } => {
            load_concat(w, family, key);
            lookup(w, map, Some(NFT_REG_1), false);
            // The value is an address, then a port in the next 32-bit register.
            let port_reg = NFT_REG32_00 + (addr_len(family) / 4) as u32;
            nat_dnat(w, family, port_reg, None);
        }
        Stmt::Numgen { modulus } => {
            numgen(w, NFT_REG_1, *modulus, 0);
            cmp(w, NFT_CMP_EQ, &[0; 4]);
        }
        Stmt::MarkOr(bits) => mark_set(w, !bits, *bits),
        Stmt::MarkXor(bits) => mark_set(w, u32::MAX, *bits),
        Stmt::UpdateSaddr(set) => {
            load(w, family, Field::Saddr, NFT_REG_1);
            dynset_update(w, set);
        }
        Stmt::Dnat { addr, port } => dnat(w, family, *addr, *port)?,
        Stmt::Masquerade { fully_random } => expr(w, "masq", |w| {
            if *fully_random {
                w.u32(NFTA_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY);
            }
        }),
        Stmt::Reject { tcp_reset } => reject(w, family, *tcp_reset, before),
        Stmt::Counter => expr(w, "counter", |w| {
            w.u64(NFTA_COUNTER_BYTES, 0);
            w.u64(NFTA_COUNTER_PACKETS, 0);
        }),
        Stmt::Verdict(v) => expr(w, "immediate", |w| {
            w.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            verdict_data(w, NFTA_IMMEDIATE_DATA, v);
        }),
    }
    Ok(())
}

/// One expression: `NFTA_LIST_ELEM { NAME, DATA { … } }`.
fn expr(w: &mut Writer, name: &str, body: impl FnOnce(&mut Writer)) {
    w.nest(NFTA_LIST_ELEM, |w| {
        w.str(NFTA_EXPR_NAME, name);
        w.nest(NFTA_EXPR_DATA, body);
    });
}

/// `nft_data` with a plain value.
fn data_value(w: &mut Writer, ty: u16, value: &[u8]) {
    w.nest(ty, |w| w.bytes(NFTA_DATA_VALUE, value));
}

/// `nft_data` with a verdict (rules' immediates and map elements).
pub(crate) fn verdict_data(w: &mut Writer, ty: u16, v: &Verdict) {
    let (code, chain) = match v {
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
    };
    w.nest(ty, |w| {
        w.nest(NFTA_DATA_VERDICT, |w| {
            w.u32(NFTA_VERDICT_CODE, code as u32);
            if let Some(c) = chain {
                w.str(NFTA_VERDICT_CHAIN, c);
            }
        });
    });
}

/// Byte length of a field's value.
pub(crate) fn field_len(family: Family, f: Field) -> usize {
    match f {
        Field::Saddr | Field::Daddr => addr_len(family),
        Field::L4Proto => 1,
        Field::Dport => 2,
        Field::CtOriginalDaddr => addr_len(family),
        Field::Numgen(_) => 4,
    }
}

fn addr_len(family: Family) -> usize {
    match family {
        Family::Ip => 4,
        Family::Ip6 => 16,
    }
}

/// Loads a field into `dreg`.
fn load(w: &mut Writer, family: Family, f: Field, dreg: u32) {
    load_bytes(w, family, f, dreg, field_len(family, f));
}

/// Loads the first `len` bytes of a field into `dreg`.
fn load_bytes(w: &mut Writer, family: Family, f: Field, dreg: u32, len: usize) {
    let (saddr, daddr) = match family {
        Family::Ip => (12, 16),
        Family::Ip6 => (8, 24),
    };
    match f {
        Field::Saddr => payload(w, dreg, NFT_PAYLOAD_NETWORK_HEADER, saddr, len),
        Field::Daddr => payload(w, dreg, NFT_PAYLOAD_NETWORK_HEADER, daddr, len),
        Field::Dport => payload(w, dreg, NFT_PAYLOAD_TRANSPORT_HEADER, 2, len),
        Field::L4Proto => meta_load(w, NFT_META_L4PROTO, dreg),
        Field::CtOriginalDaddr => expr(w, "ct", |w| {
            w.u32(NFTA_CT_DREG, dreg);
            let key = match family {
                Family::Ip => NFT_CT_DST_IP,
                Family::Ip6 => NFT_CT_DST_IP6,
            };
            w.u32(NFTA_CT_KEY, key);
            w.u8(NFTA_CT_DIRECTION, IP_CT_DIR_ORIGINAL);
        }),
        Field::Numgen(modulus) => numgen(w, dreg, modulus, 0),
    }
}

/// Loads a concatenation into consecutive 32-bit registers, as nft does (`reg 1`, `reg 9`…).
fn load_concat(w: &mut Writer, family: Family, key: &[Field]) {
    let mut words = 0u32;
    for f in key {
        let reg = if words == 0 {
            NFT_REG_1
        } else {
            NFT_REG32_00 + words
        };
        load(w, family, *f, reg);
        words += field_len(family, *f).div_ceil(4) as u32;
    }
}

fn payload(w: &mut Writer, dreg: u32, base: u32, offset: u32, len: usize) {
    expr(w, "payload", |w| {
        w.u32(NFTA_PAYLOAD_DREG, dreg);
        w.u32(NFTA_PAYLOAD_BASE, base);
        w.u32(NFTA_PAYLOAD_OFFSET, offset);
        w.u32(NFTA_PAYLOAD_LEN, len as u32);
    });
}

fn meta_load(w: &mut Writer, key: u32, dreg: u32) {
    expr(w, "meta", |w| {
        w.u32(NFTA_META_DREG, dreg);
        w.u32(NFTA_META_KEY, key);
    });
}

/// `iifname [!=] "name[*]"`: the 16-byte name in register 1, compared whole (NUL-padded) or
/// on the prefix's bytes only, as nft does.
fn iifname(w: &mut Writer, name: &str, prefix: bool, negate: bool) -> Result<(), String> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(format!("{name:?} is not an interface name"));
    }
    meta_load(w, NFT_META_IIFNAME, NFT_REG_1);
    let mut value = name.as_bytes().to_vec();
    if !prefix {
        value.resize(IFNAMSIZ, 0);
    }
    cmp(w, if negate { NFT_CMP_NEQ } else { NFT_CMP_EQ }, &value);
    Ok(())
}

/// `cmp` on register 1.
fn cmp(w: &mut Writer, op: u32, value: &[u8]) {
    expr(w, "cmp", |w| {
        w.u32(NFTA_CMP_SREG, NFT_REG_1);
        w.u32(NFTA_CMP_OP, op);
        data_value(w, NFTA_CMP_DATA, value);
    });
}

/// `reg 1 = (reg 1 & mask) ^ xor`.
fn bitwise(w: &mut Writer, mask: &[u8], xor: &[u8]) {
    expr(w, "bitwise", |w| {
        w.u32(NFTA_BITWISE_SREG, NFT_REG_1);
        w.u32(NFTA_BITWISE_DREG, NFT_REG_1);
        w.u32(NFTA_BITWISE_LEN, mask.len() as u32);
        data_value(w, NFTA_BITWISE_MASK, mask);
        data_value(w, NFTA_BITWISE_XOR, xor);
    });
}

/// Looks register 1 up in `set`; with `dreg`, a map lookup.
fn lookup(w: &mut Writer, set: &str, dreg: Option<u32>, negate: bool) {
    expr(w, "lookup", |w| {
        w.str(NFTA_LOOKUP_SET, set);
        w.u32(NFTA_LOOKUP_SREG, NFT_REG_1);
        if let Some(d) = dreg {
            w.u32(NFTA_LOOKUP_DREG, d);
        }
        if negate {
            w.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
    });
}

fn ct_state_new(w: &mut Writer) {
    expr(w, "ct", |w| {
        w.u32(NFTA_CT_DREG, NFT_REG_1);
        w.u32(NFTA_CT_KEY, NFT_CT_STATE);
    });
    bitwise(w, &CT_STATE_NEW.to_ne_bytes(), &[0; 4]);
    cmp(w, NFT_CMP_NEQ, &[0; 4]);
}

fn l4proto(w: &mut Writer, p: Proto) {
    meta_load(w, NFT_META_L4PROTO, NFT_REG_1);
    cmp(w, NFT_CMP_EQ, &[p.number()]);
}

/// An address prefix match, shaped like nft's: a full compare for a host, a shorter load
/// for a byte-aligned prefix, a mask otherwise.
fn prefix(
    w: &mut Writer,
    family: Family,
    f: Field,
    net: IpNet,
    negate: bool,
) -> Result<(), String> {
    if !matches!(f, Field::Saddr | Field::Daddr) {
        return Err("a prefix needs an address field".into());
    }
    if Family::of(net.addr()) != family {
        return Err(format!("{net} is not an address of the table's family"));
    }
    let op = if negate { NFT_CMP_NEQ } else { NFT_CMP_EQ };
    let bytes = ip_bytes(net.network());
    let len = usize::from(net.prefix_len());
    if len == bytes.len() * 8 {
        load(w, family, f, NFT_REG_1);
        cmp(w, op, &bytes);
    } else if len > 0 && len % 8 == 0 {
        load_bytes(w, family, f, NFT_REG_1, len / 8);
        cmp(w, op, &bytes[..len / 8]);
    } else {
        load(w, family, f, NFT_REG_1);
        bitwise(w, &ip_bytes(net.netmask()), &vec![0; bytes.len()]);
        cmp(w, op, &bytes);
    }
    Ok(())
}

/// An address in network order.
pub(crate) fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn fib_local(w: &mut Writer, f: Field) -> Result<(), String> {
    let flags = match f {
        Field::Saddr => NFTA_FIB_F_SADDR,
        Field::Daddr => NFTA_FIB_F_DADDR,
        _ => return Err("fib … type local needs saddr or daddr".into()),
    };
    expr(w, "fib", |w| {
        w.u32(NFTA_FIB_DREG, NFT_REG_1);
        w.u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
        w.u32(NFTA_FIB_FLAGS, flags);
    });
    cmp(w, NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
    Ok(())
}

fn numgen(w: &mut Writer, dreg: u32, modulus: u32, offset: u32) {
    expr(w, "numgen", |w| {
        w.u32(NFTA_NG_DREG, dreg);
        w.u32(NFTA_NG_MODULUS, modulus);
        w.u32(NFTA_NG_TYPE, NFT_NG_RANDOM);
        w.u32(NFTA_NG_OFFSET, offset);
    });
}

/// `meta mark set (meta mark & mask) ^ xor`.
fn mark_set(w: &mut Writer, mask: u32, xor: u32) {
    meta_load(w, NFT_META_MARK, NFT_REG_1);
    bitwise(w, &mask.to_ne_bytes(), &xor.to_ne_bytes());
    expr(w, "meta", |w| {
        w.u32(NFTA_META_KEY, NFT_META_MARK);
        w.u32(NFTA_META_SREG, NFT_REG_1);
    });
}

/// `update @set { saddr }`: refreshes the entry with the set's own timeout (no per-statement
/// timeout, as nft writes it for this text).
fn dynset_update(w: &mut Writer, set: &str) {
    expr(w, "dynset", |w| {
        w.str(NFTA_DYNSET_SET_NAME, set);
        w.u32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
        w.u32(NFTA_DYNSET_SREG_KEY, NFT_REG_1);
    });
}

fn dnat(w: &mut Writer, family: Family, addr: IpAddr, port: u16) -> Result<(), String> {
    if Family::of(addr) != family {
        return Err(format!("{addr} is not an address of the table's family"));
    }
    immediate(w, NFT_REG_1, &ip_bytes(addr));
    immediate(w, NFT_REG_2, &port.to_be_bytes());
    nat_dnat(w, family, NFT_REG_2, Some(NF_NAT_RANGE_PROTO_SPECIFIED));
    Ok(())
}

/// `dnat` to the address in register 1 and the port in `port_reg`.
fn nat_dnat(w: &mut Writer, family: Family, port_reg: u32, flags: Option<u32>) {
    expr(w, "nat", |w| {
        w.u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
        w.u32(NFTA_NAT_FAMILY, u32::from(nfproto(family)));
        w.u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
        w.u32(NFTA_NAT_REG_PROTO_MIN, port_reg);
        if let Some(f) = flags {
            w.u32(NFTA_NAT_FLAGS, f);
        }
    });
}

/// `ip daddr set <register 1>`, keeping the IPv4 header checksum and the transport
/// checksum's pseudo-header right, as nft writes it.
fn daddr_write(w: &mut Writer, family: Family) {
    let (offset, csum_type, csum_offset) = match family {
        Family::Ip => (16, NFT_PAYLOAD_CSUM_INET, IPV4_CSUM_OFFSET),
        Family::Ip6 => (24, NFT_PAYLOAD_CSUM_NONE, 0),
    };
    expr(w, "payload", |w| {
        w.u32(NFTA_PAYLOAD_SREG, NFT_REG_1);
        w.u32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
        w.u32(NFTA_PAYLOAD_OFFSET, offset);
        w.u32(NFTA_PAYLOAD_LEN, addr_len(family) as u32);
        w.u32(NFTA_PAYLOAD_CSUM_TYPE, csum_type);
        w.u32(NFTA_PAYLOAD_CSUM_OFFSET, csum_offset);
        w.u32(NFTA_PAYLOAD_CSUM_FLAGS, NFT_PAYLOAD_L4CSUM_PSEUDOHDR);
    });
}

fn immediate(w: &mut Writer, dreg: u32, value: &[u8]) {
    expr(w, "immediate", |w| {
        w.u32(NFTA_IMMEDIATE_DREG, dreg);
        data_value(w, NFTA_IMMEDIATE_DATA, value);
    });
}

/// `reject` (ICMP port unreachable) or `reject with tcp reset`, which nft guards with an
/// implicit `meta l4proto tcp` unless the rule already matched TCP.
fn reject(w: &mut Writer, family: Family, tcp_reset: bool, before: &[Stmt]) {
    if tcp_reset {
        if !before.contains(&Stmt::L4Proto(Proto::Tcp)) {
            l4proto(w, Proto::Tcp);
        }
        expr(w, "reject", |w| w.u32(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST));
        return;
    }
    let code = match family {
        Family::Ip => ICMP_PORT_UNREACH,
        Family::Ip6 => ICMPV6_PORT_UNREACH,
    };
    expr(w, "reject", |w| {
        w.u32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
        w.u8(NFTA_REJECT_ICMP_CODE, code);
    });
}

/// The `NFPROTO_*` of a family.
pub(crate) fn nfproto(family: Family) -> u8 {
    match family {
        Family::Ip => NFPROTO_IPV4,
        Family::Ip6 => NFPROTO_IPV6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_netlink::Attrs;

    fn names(family: Family, s: &[Stmt]) -> Vec<String> {
        let mut w = Writer::new();
        stmts(&mut w, family, s).unwrap();
        let buf = w.into_inner();
        Attrs::new(&buf)
            .map(|(_, e)| Attrs::new(e).str(NFTA_EXPR_NAME).unwrap())
            .collect()
    }

    #[test]
    fn statements_expand_like_nft() {
        let vmap = Stmt::Vmap {
            key: vec![Field::Daddr, Field::L4Proto, Field::Dport],
            map: "service-ips".into(),
        };
        assert_eq!(
            names(Family::Ip, &[vmap]),
            ["payload", "meta", "payload", "lookup"]
        );
        assert_eq!(
            names(Family::Ip, &[Stmt::CtStateNew]),
            ["ct", "bitwise", "cmp"]
        );
        assert_eq!(
            names(Family::Ip, &[Stmt::Reject { tcp_reset: true }]),
            ["meta", "cmp", "reject"]
        );
        let dnat = [
            Stmt::L4Proto(Proto::Tcp),
            Stmt::Dnat {
                addr: "10.1.0.5".parse().unwrap(),
                port: 80,
            },
        ];
        assert_eq!(
            names(Family::Ip, &dnat),
            ["meta", "cmp", "immediate", "immediate", "nat"]
        );
    }

    #[test]
    fn prefixes_pick_nft_shapes() {
        let p = |net: &str| Stmt::Prefix {
            field: Field::Saddr,
            net: net.parse().unwrap(),
            negate: false,
        };
        assert_eq!(names(Family::Ip, &[p("10.1.0.5/32")]), ["payload", "cmp"]);
        assert_eq!(names(Family::Ip, &[p("10.0.0.0/8")]), ["payload", "cmp"]);
        assert_eq!(
            names(Family::Ip, &[p("10.0.0.0/9")]),
            ["payload", "bitwise", "cmp"]
        );
        let mut w = Writer::new();
        assert!(stmts(&mut w, Family::Ip6, &[p("10.0.0.0/8")]).is_err());
    }
}
