//! Strict CIDR parsing as Go's `net.ParseCIDR` does it (no leading zeros in IPv4
//! octets, no zones, decimal prefix length), shared by the flannel file readers
//! so `subnet.env` and `net-conf.json` accept exactly the same spellings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

/// The two single-family CIDR types, so parsers are written once.
pub(crate) trait Cidr: Sized + Copy {
    /// The address type.
    type Addr: FromStr;
    /// `IPv4` or `IPv6`, for messages.
    const FAMILY: &'static str;
    /// Builds a CIDR keeping host bits; `None` if the length is too long.
    fn build(addr: Self::Addr, len: u8) -> Option<Self>;
    /// The CIDR with host bits cleared.
    fn masked(self) -> Self;
}

impl Cidr for Ipv4Net {
    type Addr = Ipv4Addr;
    const FAMILY: &'static str = "IPv4";
    fn build(addr: Ipv4Addr, len: u8) -> Option<Self> {
        Ipv4Net::new(addr, len).ok()
    }
    fn masked(self) -> Self {
        self.trunc()
    }
}

impl Cidr for Ipv6Net {
    type Addr = Ipv6Addr;
    const FAMILY: &'static str = "IPv6";
    fn build(addr: Ipv6Addr, len: u8) -> Option<Self> {
        Ipv6Net::new(addr, len).ok()
    }
    fn masked(self) -> Self {
        self.trunc()
    }
}

/// Parses `addr/len`, keeping host bits.
pub(crate) fn parse_cidr<N: Cidr>(value: &str) -> Result<N, String> {
    let invalid = || format!("invalid cidr {value:?}");
    let (addr, len) = value.split_once('/').ok_or_else(invalid)?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let Ok(parsed) = addr.parse::<N::Addr>() else {
        return Err(match addr.parse::<IpAddr>() {
            Ok(_) => format!("expected an {} cidr, got {value:?}", N::FAMILY),
            Err(_) => invalid(),
        });
    };
    let len: u8 = len.parse().map_err(|_| invalid())?;
    N::build(parsed, len).ok_or_else(invalid)
}
