//! Lenient IP parsing as kube-proxy does it (`netutils.ParseIPSloppy`,
//! `ParseCIDRSloppy`): old objects may still hold IPv4 octets with leading
//! zeros (`010.0.0.1`, read as decimal) that current validation rejects, and
//! they must keep working. IPv4-mapped IPv6 addresses count as IPv4, as in Go.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses an IP address, accepting decimal IPv4 octets with leading zeros.
pub(crate) fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_v4_leading_zeros(text)?),
    };
    Some(ip.to_canonical())
}

/// Parses a CIDR leniently and masks it to its network address, as Go's
/// `ParseCIDR` returns it.
pub(crate) fn parse_cidr_sloppy(text: &str) -> Option<IpNet> {
    let (addr, len) = text.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let ip = parse_ip_sloppy(addr)?;
    IpNet::new(ip, len).ok().map(|net| net.trunc())
}

fn parse_v4_leading_zeros(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ips() {
        assert_eq!(parse_ip_sloppy("010.000.1.2"), "10.0.1.2".parse().ok());
        assert_eq!(parse_ip_sloppy("::ffff:1.2.3.4"), "1.2.3.4".parse().ok());
        assert_eq!(parse_ip_sloppy("fd00::1"), "fd00::1".parse().ok());
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        assert_eq!(parse_ip_sloppy(""), None);
    }

    #[test]
    fn sloppy_cidrs() {
        assert_eq!(parse_cidr_sloppy("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_cidr_sloppy("fd00::1/64"), "fd00::/64".parse().ok());
        assert_eq!(parse_cidr_sloppy("10.0.0.0/33"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0/+8"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0"), None);
    }
}
