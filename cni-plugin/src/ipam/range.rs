//! The allocatable addresses of a subnet, host-local's defaults: the gateway is the first
//! address and never handed out; IPv4 excludes the network and broadcast addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::addr::{from_bits, to_bits};

/// Where addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet (pod addresses get its prefix length).
    pub subnet: IpNet,
    /// The gateway (never allocated).
    pub gateway: IpAddr,
    first: u128,
    last: u128,
}

impl Range {
    /// The default range of `subnet`; `None` when it is too small to allocate from.
    pub fn of(subnet: IpNet) -> Option<Self> {
        let subnet = subnet.trunc();
        let (net, width) = to_bits(subnet.network());
        let host_bits = u32::from(width - subnet.prefix_len());
        if host_bits < 2 {
            return None;
        }
        let size = 1u128.checked_shl(host_bits).unwrap_or(0).wrapping_sub(1);
        let last = if width == 32 {
            net + size - 1
        } else {
            net.checked_add(size)?
        };
        Some(Self {
            subnet,
            gateway: from_bits(net + 1, width)?,
            first: net + 2,
            last,
        })
    }

    /// Addresses in allocation order after `last` (wrapping), gateway excluded.
    pub fn after(&self, last: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
        let width = to_bits(self.subnet.network()).1;
        let start = last
            .map(|ip| to_bits(ip).0)
            .filter(|v| (self.first..=self.last).contains(v))
            .map_or(
                self.first,
                |v| if v == self.last { self.first } else { v + 1 },
            );
        let len = self.last - self.first + 1;
        (0..len).filter_map(move |i| {
            let v = self.first + (start - self.first + i) % len;
            from_bits(v, width)
        })
    }

    /// True when `ip` is one this range hands out.
    pub fn contains(&self, ip: IpAddr) -> bool {
        (self.first..=self.last).contains(&to_bits(ip).0) && self.subnet.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_network_gateway_and_broadcast_and_wraps() {
        let r = Range::of("10.244.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(r.gateway.to_string(), "10.244.1.1");
        let all: Vec<String> = r.after(None).map(|a| a.to_string()).collect();
        assert_eq!(
            (all.len(), all[0].as_str(), all[252].as_str()),
            (253, "10.244.1.2", "10.244.1.254")
        );
        let next: Vec<String> = r
            .after(Some("10.244.1.254".parse().unwrap()))
            .take(2)
            .map(|a| a.to_string())
            .collect();
        assert_eq!(next, ["10.244.1.2", "10.244.1.3"]);
        assert!(
            !r.contains("10.244.1.255".parse().unwrap())
                && !r.contains("10.244.1.1".parse().unwrap())
        );
        assert!(Range::of("10.0.0.0/31".parse().unwrap()).is_none());
        let v6 = Range::of("fd00:10:244:1::/64".parse().unwrap()).unwrap();
        assert_eq!(
            v6.after(None).next().unwrap().to_string(),
            "fd00:10:244:1::2"
        );
    }
}
