//! ipset's netlink wire format (uapi `linux/netfilter/ipset/ip_set.h`, protocol 6/7): the
//! numbers, and members of the five set types the IPVS mode uses translated between the text
//! `ipset save` prints and the attributes the kernel takes.
//!
//! Text is the currency on purpose: the [`crate::sets::Ipset`] seam speaks `ipset restore`
//! lines and `ipset save` output, so this client is a drop-in for the program and its output
//! is byte-for-byte what the program prints (the kernel test compares them).

use std::net::IpAddr;

use sluice_netlink::Writer;
use sluice_netlink::consts::NLA_F_NET_BYTEORDER;

/// `NFNL_SUBSYS_IPSET`.
pub(super) const SUBSYS: u16 = 6;
/// `IPSET_PROTOCOL` (what we speak) and `IPSET_PROTOCOL_MIN` (what old kernels accept).
pub(super) const PROTOCOL: u8 = 7;
pub(super) const PROTOCOL_MIN: u8 = 6;

// Commands.
pub(super) const CMD_CREATE: u8 = 2;
pub(super) const CMD_DESTROY: u8 = 3;
pub(super) const CMD_SAVE: u8 = 8;
pub(super) const CMD_ADD: u8 = 9;
pub(super) const CMD_DEL: u8 = 10;
pub(super) const CMD_TYPE: u8 = 13;

// Top-level attributes.
pub(super) const ATTR_PROTOCOL: u16 = 1;
pub(super) const ATTR_SETNAME: u16 = 2;
pub(super) const ATTR_TYPENAME: u16 = 3;
pub(super) const ATTR_REVISION: u16 = 4;
/// In `IPSET_CMD_PROTOCOL`'s answer: the oldest protocol the kernel speaks.
pub(super) const ATTR_PROTOCOL_MIN: u16 = 10;
pub(super) const ATTR_FAMILY: u16 = 5;
pub(super) const ATTR_DATA: u16 = 7;
pub(super) const ATTR_ADT: u16 = 8;
pub(super) const ATTR_LINENO: u16 = 9;

// Attributes inside DATA (create and add/del).
pub(super) const ATTR_IP: u16 = 1;
pub(super) const ATTR_PORT: u16 = 4;
pub(super) const ATTR_PORT_TO: u16 = 5;
pub(super) const ATTR_PROTO: u16 = 7;
pub(super) const ATTR_INITVAL: u16 = 17;
pub(super) const ATTR_HASHSIZE: u16 = 18;
pub(super) const ATTR_MAXELEM: u16 = 19;
pub(super) const ATTR_BUCKETSIZE: u16 = 21;
pub(super) const ATTR_IP2: u16 = 20;
pub(super) const ATTR_CIDR2: u16 = 21;

// Inside IP / IP2.
pub(super) const ATTR_IPADDR_IPV4: u16 = 1;
pub(super) const ATTR_IPADDR_IPV6: u16 = 2;

/// The set types the IPVS mode uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `hash:ip`
    Ip,
    /// `hash:ip,port`
    IpPort,
    /// `hash:ip,port,ip`
    IpPortIp,
    /// `hash:ip,port,net`
    IpPortNet,
    /// `bitmap:port`
    BitmapPort,
}

impl Kind {
    /// From the ipset type name.
    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hash:ip" => Self::Ip,
            "hash:ip,port" => Self::IpPort,
            "hash:ip,port,ip" => Self::IpPortIp,
            "hash:ip,port,net" => Self::IpPortNet,
            "bitmap:port" => Self::BitmapPort,
            _ => return None,
        })
    }

    /// Its hash/bitmap family of error codes.
    pub(super) fn is_bitmap(self) -> bool {
        self == Self::BitmapPort
    }
}

/// A u32 attribute in network order, flagged so (ipset refuses it otherwise).
pub(super) fn net_u32(w: &mut Writer, ty: u16, v: u32) {
    w.bytes(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
}

/// A u16 attribute in network order, flagged so.
pub(super) fn net_u16(w: &mut Writer, ty: u16, v: u16) {
    w.bytes(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
}

fn addr(w: &mut Writer, ty: u16, ip: IpAddr) {
    w.nest(ty, |w| match ip {
        IpAddr::V4(a) => w.bytes(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
        IpAddr::V6(a) => w.bytes(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
    });
}

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "udplite" => Some(136),
        n => n.parse().ok(),
    }
}

fn proto_name(n: u8) -> String {
    match n {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// `proto:port` (ipset's default protocol is tcp).
fn proto_port(s: &str) -> Option<(u8, u16)> {
    match s.split_once(':') {
        Some((p, port)) => Some((proto_number(p)?, port.parse().ok()?)),
        None => Some((6, s.parse().ok()?)),
    }
}

/// Writes the attributes of member `text` of a `kind` set (inside a DATA nest); `None` when
/// the text is not such a member.
pub(super) fn encode_member(w: &mut Writer, kind: Kind, text: &str) -> Option<()> {
    let parts: Vec<&str> = text.split(',').collect();
    match (kind, parts.as_slice()) {
        (Kind::BitmapPort, [port]) => net_u16(w, ATTR_PORT, port.parse().ok()?),
        (Kind::Ip, [ip]) => addr(w, ATTR_IP, ip.parse().ok()?),
        (Kind::IpPort, [ip, pp]) => {
            let (ip, (proto, port)) = (ip.parse().ok()?, proto_port(pp)?);
            addr(w, ATTR_IP, ip);
            net_u16(w, ATTR_PORT, port);
            w.u8(ATTR_PROTO, proto);
        }
        (Kind::IpPortIp | Kind::IpPortNet, [ip, pp, third]) => {
            let (ip, (proto, port)) = (ip.parse::<IpAddr>().ok()?, proto_port(pp)?);
            let (ip2, cidr): (IpAddr, Option<u8>) = match third.split_once('/') {
                Some((a, c)) if kind == Kind::IpPortNet => (a.parse().ok()?, Some(c.parse().ok()?)),
                Some(_) => return None,
                None => (third.parse().ok()?, None),
            };
            if ip.is_ipv4() != ip2.is_ipv4() {
                return None;
            }
            addr(w, ATTR_IP, ip);
            net_u16(w, ATTR_PORT, port);
            w.u8(ATTR_PROTO, proto);
            addr(w, ATTR_IP2, ip2);
            if kind == Kind::IpPortNet {
                let full = if ip2.is_ipv4() { 32 } else { 128 };
                w.u8(ATTR_CIDR2, cidr.unwrap_or(full));
            }
        }
        _ => return None,
    }
    Some(())
}

fn decode_addr(data: &sluice_netlink::Attrs<'_>, ty: u16) -> Option<IpAddr> {
    let inner = data.nested(ty)?;
    inner
        .get(ATTR_IPADDR_IPV4)
        .or_else(|| inner.get(ATTR_IPADDR_IPV6))
        .and_then(sluice_netlink::decode_addr)
}

fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// The text `ipset save` prints for a member's DATA attributes.
pub(super) fn decode_member(kind: Kind, data: &sluice_netlink::Attrs<'_>) -> Option<String> {
    let port = data.get(ATTR_PORT).and_then(be_u16);
    if kind == Kind::BitmapPort {
        return port.map(|p| p.to_string());
    }
    let ip = decode_addr(data, ATTR_IP)?;
    if kind == Kind::Ip {
        return Some(ip.to_string());
    }
    let proto = proto_name(*data.get(ATTR_PROTO)?.first()?);
    let head = format!("{ip},{proto}:{}", port?);
    if kind == Kind::IpPort {
        return Some(head);
    }
    let ip2 = decode_addr(data, ATTR_IP2)?;
    let full = if ip2.is_ipv4() { 32 } else { 128 };
    match data.get(ATTR_CIDR2).and_then(|c| c.first().copied()) {
        Some(c) if kind == Kind::IpPortNet && c != full => Some(format!("{head},{ip2}/{c}")),
        _ => Some(format!("{head},{ip2}")),
    }
}

/// The header words `ipset save` prints after `create NAME TYPE`.
pub(super) fn decode_header(kind: Kind, family: u8, data: &sluice_netlink::Attrs<'_>) -> String {
    let u32_of = |ty| data.get(ty).and_then(sluice_netlink::be_u32);
    if kind.is_bitmap() {
        let from = data.get(ATTR_PORT).and_then(be_u16).unwrap_or(0);
        let to = data.get(ATTR_PORT_TO).and_then(be_u16).unwrap_or(0);
        return format!(" range {from}-{to}");
    }
    let mut out = String::new();
    match family {
        sluice_netlink::consts::NFPROTO_IPV4 => out.push_str(" family inet"),
        sluice_netlink::consts::NFPROTO_IPV6 => out.push_str(" family inet6"),
        _ => {}
    }
    for (word, ty) in [("hashsize", ATTR_HASHSIZE), ("maxelem", ATTR_MAXELEM)] {
        if let Some(v) = u32_of(ty) {
            out.push_str(&format!(" {word} {v}"));
        }
    }
    if let Some(b) = data.get(ATTR_BUCKETSIZE).and_then(|b| b.first()) {
        out.push_str(&format!(" bucketsize {b}"));
    }
    if let Some(v) = u32_of(ATTR_INITVAL) {
        out.push_str(&format!(" initval {v:#010x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_netlink::Attrs;

    fn round_trip(kind: Kind, text: &str) -> Option<String> {
        let mut w = Writer::new();
        encode_member(&mut w, kind, text)?;
        decode_member(kind, &Attrs::new(&w.into_inner()))
    }

    #[test]
    fn members_of_every_type_round_trip_as_ipset_save_prints_them() {
        for (kind, text) in [
            (Kind::Ip, "10.96.0.1"),
            (Kind::Ip, "fd00::1"),
            (Kind::IpPort, "10.96.0.1,tcp:80"),
            (Kind::IpPort, "fd00::a,sctp:5000"),
            (Kind::IpPortIp, "10.0.0.2,udp:53,10.0.0.2"),
            (Kind::IpPortNet, "1.2.3.4,tcp:80,10.0.0.0/8"),
            (Kind::IpPortNet, "1.2.3.4,tcp:80,10.0.0.1"),
            (Kind::IpPortNet, "fd00::1,tcp:80,fd01::/64"),
            (Kind::BitmapPort, "30080"),
        ] {
            assert_eq!(round_trip(kind, text).as_deref(), Some(text), "{text}");
        }
        // A host-length net is printed bare, as `ipset save` does.
        assert_eq!(
            round_trip(Kind::IpPortNet, "1.2.3.4,tcp:80,10.0.0.1/32").as_deref(),
            Some("1.2.3.4,tcp:80,10.0.0.1")
        );
    }

    #[test]
    fn garbage_and_mixed_families_are_refused() {
        for (kind, text) in [
            (Kind::Ip, "10.96.0"),
            (Kind::IpPort, "10.96.0.1"),
            (Kind::IpPort, "10.96.0.1,bogus:80"),
            (Kind::IpPortIp, "10.0.0.2,udp:53,fd00::1"),
            (Kind::IpPortIp, "10.0.0.2,udp:53,10.0.0.0/8"),
            (Kind::BitmapPort, "70000"),
        ] {
            assert_eq!(
                encode_member(&mut Writer::new(), kind, text),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn ports_and_addresses_carry_the_network_order_flag() {
        let mut w = Writer::new();
        encode_member(&mut w, Kind::IpPort, "10.0.0.1,tcp:80").unwrap();
        let b = w.into_inner();
        // IP nest (nested flag), its IPv4 attribute (net-order flag), then the port.
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), ATTR_IP | 0x8000);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), ATTR_IPADDR_IPV4 | 0x4000);
        assert_eq!(&b[8..12], &[10, 0, 0, 1]);
        assert_eq!(u16::from_ne_bytes([b[14], b[15]]), ATTR_PORT | 0x4000);
        assert_eq!(&b[16..18], &80u16.to_be_bytes());
    }
}
