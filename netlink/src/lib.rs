//! Netlink for Sluice, by hand: one blocking [`Socket`] per protocol that sends a request (or
//! a whole batch as one datagram) and collects the kernel's answers, and [`Writer`] /
//! [`Attrs`] for the messages and their attributes.
//!
//! nf_tables, ctnetlink, ipset and IPVS all speak this framing; keeping it in one small crate
//! means each of them is only its own message layout, and every kernel conversation Sluice
//! has can be sized, read and tested the same way. No tokio: the callers run on a blocking
//! thread in the network namespace the socket was opened in.

pub mod attr;
pub mod consts;
pub mod error;
pub mod socket;

pub use attr::{Attrs, Msg, Writer, be_u32, be_u64, cstr, messages};
pub use error::{NetlinkError, errno};
pub use socket::{Answer, Socket};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address from 4 or 16 bytes.
pub fn decode_addr(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}
