//! Sets, maps and their elements: key types and lengths (concatenations padded to 4 bytes
//! per component), nft's set userdata (so `nft list` prints `type ipv4_addr . inet_proto .
//! inet_service` or `typeof numgen random mod 1` and the comment), and element keys,
//! intervals, verdicts and comments — both ways.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::consts::*;
use super::expr::{ip_bytes, verdict_data};
use super::udata::{self, Udata};
use crate::ir::{Element, ElementData, Family, KeyType, KeyValue, MapData, Proto, SetDef, Verdict};
use sluice_netlink::{Attrs, Writer, decode_addr};

/// nft datatype and byte length of one key component.
fn component(family: Family, k: KeyType) -> (u32, u32) {
    match k {
        KeyType::Addr => match family {
            Family::Ip => (TYPE_IPADDR, 4),
            Family::Ip6 => (TYPE_IP6ADDR, 16),
        },
        KeyType::Proto => (TYPE_INETPROTO, 1),
        KeyType::Port => (TYPE_INETSERVICE, 2),
        KeyType::Bucket => (TYPE_INTEGER, 4),
    }
}

/// nft datatype and byte length of a data map's value.
pub(crate) fn data_info(family: Family, data: MapData) -> KeyInfo {
    match data {
        MapData::Addr => key_info(family, &[KeyType::Addr]),
        MapData::AddrPort => key_info(family, &[KeyType::Addr, KeyType::Port]),
    }
}

/// The data map value behind a datatype and length (the inverse of [`data_info`]).
pub(crate) fn data_type(family: Family, type_id: u32, len: u32) -> Option<MapData> {
    [MapData::Addr, MapData::AddrPort].into_iter().find(|d| {
        let info = data_info(family, *d);
        (info.type_id, info.len) == (type_id, len)
    })
}

/// The kernel's view of a key: nft's (combined) datatype and its length.
pub(crate) struct KeyInfo {
    pub(crate) type_id: u32,
    pub(crate) len: u32,
}

/// Key datatype and lengths of a set with key `key`.
pub(crate) fn key_info(family: Family, key: &[KeyType]) -> KeyInfo {
    let concat = key.len() > 1;
    let mut info = KeyInfo { type_id: 0, len: 0 };
    for k in key {
        let (ty, len) = component(family, *k);
        info.type_id = (info.type_id << TYPE_BITS) | ty;
        info.len += if concat { len.next_multiple_of(4) } else { len };
    }
    info
}

/// The key types behind a datatype (the inverse of [`key_info`]).
pub(crate) fn key_types(family: Family, mut type_id: u32) -> Option<Vec<KeyType>> {
    let mut out = Vec::new();
    while type_id != 0 {
        let k = match type_id & ((1 << TYPE_BITS) - 1) {
            TYPE_IPADDR if family == Family::Ip => KeyType::Addr,
            TYPE_IP6ADDR if family == Family::Ip6 => KeyType::Addr,
            TYPE_INETPROTO => KeyType::Proto,
            TYPE_INETSERVICE => KeyType::Port,
            TYPE_INTEGER => KeyType::Bucket,
            _ => return None,
        };
        out.push(k);
        type_id >>= TYPE_BITS;
    }
    out.reverse();
    (!out.is_empty()).then_some(out)
}

/// The kernel flags of a set definition.
pub(crate) fn set_flags(def: &SetDef) -> u32 {
    let mut flags = 0;
    if def.verdict_map || def.data.is_some() {
        flags |= NFT_SET_MAP;
    }
    if def.interval {
        flags |= NFT_SET_INTERVAL;
    }
    if def.timeout.is_some() {
        flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
    }
    flags
}

/// Writes the attributes of `NFT_MSG_NEWSET`.
pub(crate) fn set_attrs(w: &mut Writer, family: Family, table: &str, def: &SetDef, id: u32) {
    let key = key_info(family, &def.key);
    w.str(NFTA_SET_TABLE, table);
    w.str(NFTA_SET_NAME, &def.name);
    w.u32(NFTA_SET_FLAGS, set_flags(def));
    w.u32(NFTA_SET_KEY_TYPE, key.type_id);
    w.u32(NFTA_SET_KEY_LEN, key.len);
    if def.verdict_map {
        w.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
        w.u32(NFTA_SET_DATA_LEN, 0);
    }
    if let Some(d) = def.data {
        let data = data_info(family, d);
        w.u32(NFTA_SET_DATA_TYPE, data.type_id);
        w.u32(NFTA_SET_DATA_LEN, data.len);
    }
    // No NFTA_SET_DESC concatenation description: the kernel takes one only with
    // NFT_SET_CONCAT (interval concatenations, pipapo) and refuses it otherwise (EINVAL);
    // nft leaves it out for hashed concatenations too.
    w.u32(NFTA_SET_ID, id);
    if let Some(t) = def.timeout {
        // A set the packet path adds to needs a size: the kernel admits no element beyond
        // it, and 0 means none at all (`update @set` would then always fail). nft's default.
        w.nest(NFTA_SET_DESC, |w| {
            w.u32(NFTA_SET_DESC_SIZE, DYNAMIC_SET_SIZE)
        });
        w.u64(NFTA_SET_TIMEOUT, t.as_millis() as u64);
    }
    let ud = set_udata(family, def);
    if !ud.is_empty() {
        w.bytes(NFTA_SET_USERDATA, ud.bytes());
    }
}

/// The size nft gives dynamic sets.
const DYNAMIC_SET_SIZE: u32 = 65535;

/// nft's byte order `BYTEORDER_BIG_ENDIAN`.
const BIG_ENDIAN: u32 = 2;
/// nft's expression type numbers used in `typeof` userdata.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
/// nft's protocol descriptions and their fields, in `typeof` payload records.
const DESC_TH: u32 = 11;
const DESC_IP: u32 = 12;
const DESC_IP6: u32 = 13;
const FIELD_TH_DPORT: u32 = 2;
const FIELD_IP_DADDR: u32 = 12;
const FIELD_IP6_DADDR: u32 = 9;
const META_L4PROTO: u32 = 16;
const NUMGEN_RANDOM: u32 = 1;

/// The set userdata nft writes for the same declaration. A key with a bucket is declared
/// with `typeof`, whose records describe the expressions filling each component (and the
/// data's); other concatenations get an empty `typeof` concatenation, as nft writes for `type`.
fn set_udata(family: Family, def: &SetDef) -> Udata {
    let mut u = Udata::new();
    let is_map = def.verdict_map || def.data.is_some();
    let typeof_key = def.key.contains(&KeyType::Bucket);
    let order = if def.key.len() > 1 { 0 } else { BIG_ENDIAN };
    u.u32(udata::SET_KEYBYTEORDER, order);
    if is_map {
        // A value of named type is big endian; a verdict, or a `typeof` concatenation, not.
        let data_order = if def.data.is_some() && !typeof_key {
            BIG_ENDIAN
        } else {
            0
        };
        u.u32(udata::SET_DATABYTEORDER, data_order);
    }
    if typeof_key {
        let key: Vec<Udata> = def
            .key
            .iter()
            .map(|k| typeof_component(family, *k))
            .collect();
        u.put(udata::SET_KEY_TYPEOF, typeof_concat(&key).bytes());
        let data = match def.data {
            Some(MapData::Addr) => Some(typeof_component(family, KeyType::Addr)),
            Some(MapData::AddrPort) => Some(typeof_concat(&[
                typeof_component(family, KeyType::Addr),
                typeof_component(family, KeyType::Port),
            ])),
            None => None,
        };
        if let Some(d) = data {
            u.put(udata::SET_DATA_TYPEOF, d.bytes());
        }
    } else if def.key.len() > 1 {
        u.put(udata::SET_KEY_TYPEOF, typeof_expr(EXPR_CONCAT, &[]).bytes());
    }
    if is_map {
        u.u32(udata::SET_DATA_INTERVAL, 0);
    }
    if let Some(c) = &def.comment {
        u.string(udata::SET_COMMENT, c);
    }
    u
}

/// A `typeof` record: expression type and its own data.
fn typeof_expr(expr: u32, data: &[u8]) -> Udata {
    let mut u = Udata::new();
    u.u32(0, expr).put(1, data);
    u
}

/// A `typeof` concatenation of `components`, numbered in order.
fn typeof_concat(components: &[Udata]) -> Udata {
    let mut list = Udata::new();
    for (i, c) in components.iter().enumerate() {
        list.put(i as u8, c.bytes());
    }
    typeof_expr(EXPR_CONCAT, list.bytes())
}

/// The expression that fills a key component: `ip daddr`, `meta l4proto`, `th dport`,
/// `numgen random mod 2` (nft records the modulus it was declared with).
fn typeof_component(family: Family, k: KeyType) -> Udata {
    let mut d = Udata::new();
    let expr = match k {
        KeyType::Addr => {
            let (desc, field) = match family {
                Family::Ip => (DESC_IP, FIELD_IP_DADDR),
                Family::Ip6 => (DESC_IP6, FIELD_IP6_DADDR),
            };
            d.u32(0, desc).u32(1, field);
            EXPR_PAYLOAD
        }
        KeyType::Port => {
            d.u32(0, DESC_TH).u32(1, FIELD_TH_DPORT);
            EXPR_PAYLOAD
        }
        KeyType::Proto => {
            d.u32(0, META_L4PROTO);
            EXPR_META
        }
        KeyType::Bucket => {
            d.u32(0, NUMGEN_RANDOM).u32(1, 2).u32(2, 0);
            EXPR_NUMGEN
        }
    };
    typeof_expr(expr, d.bytes())
}

/// An element key: components in order, each padded to 4 bytes in a concatenation.
pub(crate) fn key_bytes(key: &[KeyValue]) -> Vec<u8> {
    let concat = key.len() > 1;
    let mut out = Vec::new();
    for k in key {
        let mut b = match k {
            KeyValue::Addr(a) => ip_bytes(*a),
            KeyValue::Proto(p) => vec![p.number()],
            KeyValue::Port(p) => p.to_be_bytes().to_vec(),
            // A register `numgen` filled: host byte order.
            KeyValue::Bucket(b) => b.to_ne_bytes().to_vec(),
        };
        if concat {
            b.resize(b.len().next_multiple_of(4), 0);
        }
        out.extend_from_slice(&b);
    }
    out
}

/// Writes one element (two for an interval: start and end) into an element list.
/// `full` adds the verdict and comment (adds); deletes give keys only.
pub(crate) fn element(
    w: &mut Writer,
    e: &Element,
    interval: bool,
    full: bool,
) -> Result<(), String> {
    let range = match (interval || e.prefix.is_some(), e.key.as_slice()) {
        (false, _) => None,
        (true, [KeyValue::Addr(a)]) => Some(prefix_range(*a, e.prefix)?),
        (true, _) => return Err("interval elements need a single address key".into()),
    };
    let (start, end) = match range {
        Some((s, end)) => (ip_bytes(s), end.map(ip_bytes)),
        None => (key_bytes(&e.key), None),
    };
    w.nest(NFTA_LIST_ELEM, |w| {
        w.nest(NFTA_SET_ELEM_KEY, |w| w.bytes(NFTA_DATA_VALUE, &start));
        if full {
            if let Some(v) = &e.verdict {
                verdict_data(w, NFTA_SET_ELEM_DATA, v);
            }
            if let Some(d) = e.data {
                let value = match d {
                    ElementData::Addr(a) => ip_bytes(a),
                    ElementData::AddrPort(a, p) => {
                        key_bytes(&[KeyValue::Addr(a), KeyValue::Port(p)])
                    }
                };
                w.nest(NFTA_SET_ELEM_DATA, |w| w.bytes(NFTA_DATA_VALUE, &value));
            }
            if let Some(c) = &e.comment {
                let mut u = Udata::new();
                u.string(udata::COMMENT, c);
                w.bytes(NFTA_SET_ELEM_USERDATA, u.bytes());
            }
        }
    });
    if let Some(end) = end {
        w.nest(NFTA_LIST_ELEM, |w| {
            w.nest(NFTA_SET_ELEM_KEY, |w| w.bytes(NFTA_DATA_VALUE, &end));
            w.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        });
    }
    Ok(())
}

/// First address of a prefix and the first address after it (`None` past the top).
fn prefix_range(a: IpAddr, prefix: Option<u8>) -> Result<(IpAddr, Option<IpAddr>), String> {
    let bits: u32 = if a.is_ipv4() { 32 } else { 128 };
    let len = u32::from(prefix.unwrap_or(bits as u8));
    if len > bits {
        return Err(format!("prefix length {len} too long for {a}"));
    }
    let value = match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let size = if bits - len == 128 {
        None
    } else {
        Some(1u128 << (bits - len))
    };
    let start = size.map_or(0, |s| value & !(s - 1));
    let end = size
        .and_then(|s| start.checked_add(s))
        .filter(|e| bits == 128 || *e <= u128::from(u32::MAX));
    let to_ip = |v: u128| -> IpAddr {
        if bits == 32 {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    };
    Ok((to_ip(start), end.map(to_ip)))
}

/// One element as the kernel lists it.
#[derive(Debug)]
pub(crate) struct RawElement {
    pub(crate) key: Vec<u8>,
    pub(crate) interval_end: bool,
    pub(crate) verdict: Option<Verdict>,
    /// A data map element's value, as bytes.
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) comment: Option<String>,
}

/// Decodes one `NFTA_LIST_ELEM` of an element dump.
pub(crate) fn raw_element(a: Attrs<'_>) -> Option<RawElement> {
    let key = a.nested(NFTA_SET_ELEM_KEY)?.get(NFTA_DATA_VALUE)?.to_vec();
    let flags = a.u32(NFTA_SET_ELEM_FLAGS).unwrap_or(0);
    let data = a.nested(NFTA_SET_ELEM_DATA);
    let verdict = data
        .as_ref()
        .and_then(|d| d.nested(NFTA_DATA_VERDICT))
        .and_then(|v| decode_verdict(&v));
    let value = data
        .as_ref()
        .and_then(|d| d.get(NFTA_DATA_VALUE))
        .map(<[u8]>::to_vec);
    let comment = a
        .get(NFTA_SET_ELEM_USERDATA)
        .and_then(|u| udata::string(u, udata::COMMENT));
    Some(RawElement {
        key,
        interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
        verdict,
        value,
        comment,
    })
}

/// A verdict from `NFTA_DATA_VERDICT`'s content.
pub(crate) fn decode_verdict(v: &Attrs<'_>) -> Option<Verdict> {
    let code = v.u32(NFTA_VERDICT_CODE)? as i32;
    let chain = || v.str(NFTA_VERDICT_CHAIN);
    Some(match code {
        NFT_JUMP => Verdict::Jump(chain()?),
        NFT_GOTO => Verdict::Goto(chain()?),
        NFT_RETURN => Verdict::Return,
        NF_ACCEPT => Verdict::Accept,
        NF_DROP => Verdict::Drop,
        _ => return None,
    })
}

/// Splits a key into components of `types`.
pub(crate) fn decode_key(
    family: Family,
    types: &[KeyType],
    mut bytes: &[u8],
) -> Option<Vec<KeyValue>> {
    let concat = types.len() > 1;
    let mut out = Vec::with_capacity(types.len());
    for k in types {
        let (_, len) = component(family, *k);
        let len = len as usize;
        let take = if concat { len.next_multiple_of(4) } else { len };
        let b = bytes.get(..len)?;
        out.push(match k {
            KeyType::Addr => KeyValue::Addr(decode_addr(b)?),
            KeyType::Proto => KeyValue::Proto(match b[0] {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                132 => Proto::Sctp,
                _ => return None,
            }),
            KeyType::Port => KeyValue::Port(u16::from_be_bytes(b.try_into().ok()?)),
            KeyType::Bucket => KeyValue::Bucket(u32::from_ne_bytes(b.try_into().ok()?)),
        });
        bytes = bytes.get(take..)?;
    }
    Some(out)
}

/// A data map element's value from its bytes.
pub(crate) fn decode_data(family: Family, data: MapData, bytes: &[u8]) -> Option<ElementData> {
    Some(match data {
        MapData::Addr => ElementData::Addr(decode_addr(bytes)?),
        MapData::AddrPort => {
            match decode_key(family, &[KeyType::Addr, KeyType::Port], bytes)?[..] {
                [KeyValue::Addr(a), KeyValue::Port(p)] => ElementData::AddrPort(a, p),
                _ => return None,
            }
        }
    })
}

/// Interval elements (sorted by key, starts and ends) as prefixes. A start whose range is
/// not a prefix is given with its host prefix; ends without starts are skipped.
pub(crate) fn pair_intervals(mut raw: Vec<RawElement>) -> Vec<Element> {
    raw.sort_by(|a, b| a.key.cmp(&b.key).then(b.interval_end.cmp(&a.interval_end)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let start = &raw[i];
        i += 1;
        if start.interval_end {
            continue;
        }
        let Some(addr) = decode_addr(&start.key) else {
            continue;
        };
        let end = raw.get(i).filter(|e| e.interval_end).map(|e| e.key.clone());
        let prefix = prefix_len(&start.key, end.as_deref());
        out.push(Element {
            key: vec![KeyValue::Addr(addr)],
            prefix: Some(prefix),
            verdict: start.verdict.clone(),
            data: None,
            comment: start.comment.clone(),
        });
    }
    out
}

/// The prefix length of `[start, end)` (`end` absent: up to the top of the space).
fn prefix_len(start: &[u8], end: Option<&[u8]>) -> u8 {
    let bits = (start.len() * 8) as u32;
    let num = |b: &[u8]| b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x));
    let size = match end {
        Some(e) => num(e).wrapping_sub(num(start)),
        None if bits == 128 => 0u128.wrapping_sub(num(start)),
        None => (1u128 << bits) - num(start),
    };
    if size.is_power_of_two() {
        (bits - size.trailing_zeros()) as u8
    } else if size == 0 && bits == 128 {
        0
    } else {
        bits as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_keys_pad_components_and_combine_types() {
        let k = key_info(Family::Ip, &[KeyType::Addr, KeyType::Proto, KeyType::Port]);
        assert_eq!((k.type_id, k.len), (29453, 12));
        assert_eq!(
            key_types(Family::Ip, 29453),
            Some(vec![KeyType::Addr, KeyType::Proto, KeyType::Port])
        );
        let port = key_info(Family::Ip, &[KeyType::Port]);
        assert_eq!((port.type_id, port.len), (13, 2));
        let bytes = key_bytes(&[
            KeyValue::Addr("10.96.0.10".parse().unwrap()),
            KeyValue::Proto(Proto::Tcp),
            KeyValue::Port(80),
        ]);
        assert_eq!(bytes, [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        let back = decode_key(
            Family::Ip,
            &[KeyType::Addr, KeyType::Proto, KeyType::Port],
            &bytes,
        );
        assert_eq!(
            back,
            Some(vec![
                KeyValue::Addr("10.96.0.10".parse().unwrap()),
                KeyValue::Proto(Proto::Tcp),
                KeyValue::Port(80)
            ])
        );
    }

    #[test]
    fn prefixes_become_ranges_and_back() {
        let r = |a: &str, p| prefix_range(a.parse().unwrap(), Some(p)).unwrap();
        assert_eq!(
            r("10.1.2.3", 8),
            (
                "10.0.0.0".parse().unwrap(),
                Some("11.0.0.0".parse().unwrap())
            )
        );
        assert_eq!(r("255.0.0.0", 8).1, None);
        assert_eq!(r("fd00::", 8).1, Some("fe00::".parse().unwrap()));
        assert_eq!(prefix_len(&[10, 0, 0, 0], Some(&[11, 0, 0, 0])), 8);
        assert_eq!(prefix_len(&[255, 0, 0, 0], None), 8);
        assert_eq!(prefix_len(&[10, 0, 0, 1], Some(&[10, 0, 0, 2])), 32);
    }
}
