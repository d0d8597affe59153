//! IPVS generic netlink messages (`linux/ip_vs.h`, stable uapi), encoded and decoded by hand:
//! pure functions, so the exact bytes are unit-tested without a kernel that has IPVS.
//!
//! Byte orders follow the kernel's policy: address family, protocol, flags, timeout, weight
//! and forwarding method are native-endian; ports are network order; addresses are the raw
//! 4 or 16 bytes (the kernel answers with a 16-byte `nf_inet_addr`, read by the family).

use std::net::IpAddr;

use sluice_netlink::{Attrs, Writer, decode_addr};

use crate::types::{F_HASHED, RealServer, RsKey, VirtualServer, VsKey};

/// The generic netlink family name.
pub const FAMILY: &str = "IPVS";
/// Its version.
pub const VERSION: u8 = 1;

/// `IPVS_CMD_*`.
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const SET_CONFIG: u8 = 12;
    pub const FLUSH: u8 = 17;
}

/// `IPVS_CMD_ATTR_*`.
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// `IPVS_CMD_SET_CONFIG`'s attributes: the TCP, TCP FIN and UDP timeouts in seconds; zero
/// leaves a timeout unchanged (the kernel's own rule, as `ipvsadm --set 0 0 0`).
pub fn timeouts(w: &mut Writer, tcp: u32, tcp_fin: u32, udp: u32) {
    w.u32_ne(CMD_ATTR_TIMEOUT_TCP, tcp);
    w.u32_ne(CMD_ATTR_TIMEOUT_TCP_FIN, tcp_fin);
    w.u32_ne(CMD_ATTR_TIMEOUT_UDP, udp);
}

/// `IPVS_SVC_ATTR_*`.
mod svc {
    pub(super) const AF: u16 = 1;
    pub(super) const PROTOCOL: u16 = 2;
    pub(super) const ADDR: u16 = 3;
    pub(super) const PORT: u16 = 4;
    pub(super) const SCHED_NAME: u16 = 6;
    pub(super) const FLAGS: u16 = 7;
    pub(super) const TIMEOUT: u16 = 8;
    pub(super) const NETMASK: u16 = 9;
}

/// `IPVS_DEST_ATTR_*`.
mod dest {
    pub(super) const ADDR: u16 = 1;
    pub(super) const PORT: u16 = 2;
    pub(super) const FWD_METHOD: u16 = 3;
    pub(super) const WEIGHT: u16 = 4;
    pub(super) const U_THRESH: u16 = 5;
    pub(super) const L_THRESH: u16 = 6;
    pub(super) const ACTIVE_CONNS: u16 = 7;
    pub(super) const INACT_CONNS: u16 = 8;
    pub(super) const ADDR_FAMILY: u16 = 11;
}

/// `IP_VS_CONN_F_MASQ`: NAT forwarding.
const FWD_MASQ: u32 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn af(addr: &IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn addr_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The nested service attribute naming `key` (delete, dest requests, dest dumps).
pub fn service_id(w: &mut Writer, key: &VsKey) {
    w.nest(CMD_ATTR_SERVICE, |w| id_attrs(w, key));
}

fn id_attrs(w: &mut Writer, key: &VsKey) {
    w.u16_ne(svc::AF, af(&key.addr));
    w.u16_ne(svc::PROTOCOL, key.protocol);
    w.bytes(svc::ADDR, &addr_bytes(&key.addr));
    w.u16_be(svc::PORT, key.port);
}

/// The full nested service attribute (add, edit): identity, scheduler, flags (with the
/// mask covering every bit), persistence timeout, netmask (all ones / 128 as kube-proxy).
pub fn service(w: &mut Writer, vs: &VirtualServer) {
    w.nest(CMD_ATTR_SERVICE, |w| {
        id_attrs(w, &vs.key);
        w.str(svc::SCHED_NAME, &vs.scheduler);
        let mut flags = Vec::with_capacity(8);
        flags.extend_from_slice(&vs.flags.to_ne_bytes());
        flags.extend_from_slice(&u32::MAX.to_ne_bytes());
        w.bytes(svc::FLAGS, &flags);
        w.u32_ne(svc::TIMEOUT, vs.timeout);
        let netmask: u32 = match vs.key.addr {
            IpAddr::V4(_) => u32::MAX,
            IpAddr::V6(_) => 128,
        };
        w.u32_ne(svc::NETMASK, netmask);
    });
}

/// The nested destination attribute (add, edit, delete): NAT, the weight, no thresholds.
pub fn destination(w: &mut Writer, rs: &RealServer) {
    w.nest(CMD_ATTR_DEST, |w| {
        w.bytes(dest::ADDR, &addr_bytes(&rs.key.addr));
        w.u16_be(dest::PORT, rs.key.port);
        w.u32_ne(dest::FWD_METHOD, FWD_MASQ);
        w.u32_ne(dest::WEIGHT, rs.weight as u32);
        w.u32_ne(dest::U_THRESH, 0);
        w.u32_ne(dest::L_THRESH, 0);
        w.u16_ne(dest::ADDR_FAMILY, af(&rs.key.addr));
    });
}

fn ne_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn addr_of(family: u16, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => decode_addr(b.get(..4)?),
        AF_INET6 => decode_addr(b.get(..16)?),
        _ => None,
    }
}

/// A virtual server from a `GET_SERVICE` answer's attributes (after the genl header);
/// `None` for firewall-mark services (not ours) and undecodable ones.
pub fn parse_service(attrs: Attrs<'_>) -> Option<VirtualServer> {
    let s = attrs.nested(CMD_ATTR_SERVICE)?;
    let family = ne_u16(s.get(svc::AF)?)?;
    let key = VsKey {
        addr: addr_of(family, s.get(svc::ADDR)?)?,
        protocol: ne_u16(s.get(svc::PROTOCOL)?)?,
        port: be_u16(s.get(svc::PORT)?)?,
    };
    Some(VirtualServer {
        key,
        scheduler: s.str(svc::SCHED_NAME).unwrap_or_default(),
        flags: s.get(svc::FLAGS).and_then(ne_u32).unwrap_or(0) & !F_HASHED,
        timeout: s.get(svc::TIMEOUT).and_then(ne_u32).unwrap_or(0),
    })
}

/// A real server from a `GET_DEST` answer's attributes; `family` is its virtual server's
/// (kernels before 4.9 do not send the destination's own).
pub fn parse_destination(attrs: Attrs<'_>, family: &IpAddr) -> Option<RealServer> {
    let d = attrs.nested(CMD_ATTR_DEST)?;
    let family = d
        .get(dest::ADDR_FAMILY)
        .and_then(ne_u16)
        .unwrap_or(af(family));
    Some(RealServer {
        key: RsKey {
            addr: addr_of(family, d.get(dest::ADDR)?)?,
            port: be_u16(d.get(dest::PORT)?)?,
        },
        weight: d.get(dest::WEIGHT).and_then(ne_u32).unwrap_or(0) as i32,
        active: d.get(dest::ACTIVE_CONNS).and_then(ne_u32).unwrap_or(0),
        inactive: d.get(dest::INACT_CONNS).and_then(ne_u32).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
