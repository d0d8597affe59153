//! flannel's `CheckNetworkConfig`: the per-node subnet size and the range leases
//! are allocated from, computed and validated exactly as flannel does, so a file
//! that flannel accepts yields the same subnets under Sluice (and one it rejects
//! is rejected). flannel runs this only with the etcd subnet manager; in kube
//! mode nodes' podCIDRs are used instead, so callers decide when to call it.
//!
//! Stricter than flannel where flannel accepts a value and then fails forever at
//! run time: `SubnetMin` above `SubnetMax` (no subnet can ever be allocated), a
//! `Backend.VNI` that does not fit VXLAN's 24 bits, and a `Backend.MTU` no
//! device can have.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{BackendType, NetConf, NetConfError};

/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The smallest MTU an IPv4 interface can have (RFC 791).
pub const MIN_MTU: u32 = 68;
/// The smallest MTU an IPv6 interface can have (RFC 8200).
pub const MIN_MTU_V6: u32 = 1280;
/// The largest MTU of an IP packet.
pub const MAX_MTU: u32 = 65535;

/// Where per-node subnets of one family are allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetRange<A> {
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
    /// Network address of the first allocatable subnet.
    pub min: A,
    /// Network address of the last allocatable subnet.
    pub max: A,
}

/// The allocation ranges of the enabled families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetRanges {
    /// IPv4, when `EnableIPv4`.
    pub ipv4: Option<SubnetRange<Ipv4Addr>>,
    /// IPv6, when `EnableIPv6`.
    pub ipv6: Option<SubnetRange<Ipv6Addr>>,
}

/// One family's limits and keys, so the check is written once over `u128`.
struct Family {
    bits: u8,
    max_len: u32,
    default_len: u32,
    network: &'static str,
    len: &'static str,
    min: &'static str,
    max: &'static str,
}

const V4: Family = Family {
    bits: 32,
    max_len: 30,
    default_len: 24,
    network: "Network",
    len: "SubnetLen",
    min: "SubnetMin",
    max: "SubnetMax",
};

const V6: Family = Family {
    bits: 128,
    max_len: 126,
    default_len: 64,
    network: "IPv6Network",
    len: "IPv6SubnetLen",
    min: "IPv6SubnetMin",
    max: "IPv6SubnetMax",
};

impl NetConf {
    /// Computes defaults and validates as flannel's `CheckNetworkConfig`.
    pub fn check(&self) -> Result<SubnetRanges, NetConfError> {
        let ipv4 = match self.enable_ipv4 {
            true => Some(self.check_v4()?),
            false => None,
        };
        let ipv6 = match self.enable_ipv6 {
            true => Some(self.check_v6()?),
            false => None,
        };
        self.check_backend()?;
        Ok(SubnetRanges { ipv4, ipv6 })
    }

    /// `Backend.VNI` within VXLAN's 24 bits, `Backend.MTU` one an interface can have (IPv6
    /// needs at least 1280).
    fn check_backend(&self) -> Result<(), NetConfError> {
        let b = &self.backend;
        if b.backend_type == BackendType::Vxlan
            && let Some(vni) = b.vni.filter(|v| *v > MAX_VNI)
        {
            let problem = format!("must be at most {MAX_VNI} (24 bits), got {vni}");
            return Err(self.error("Backend.VNI", problem));
        }
        let min = if self.enable_ipv6 {
            MIN_MTU_V6
        } else {
            MIN_MTU
        };
        if let Some(mtu) = b.mtu.filter(|m| !(min..=MAX_MTU).contains(m)) {
            let problem = format!("must be between {min} and {MAX_MTU}, got {mtu}");
            return Err(self.error("Backend.MTU", problem));
        }
        Ok(())
    }

    fn check_v4(&self) -> Result<SubnetRange<Ipv4Addr>, NetConfError> {
        let net = self
            .network
            .ok_or_else(|| required(self, &V4, "EnableIPv4"))?;
        let min = self.subnet_min.map(|a| u128::from(u32::from(a)));
        let max = self.subnet_max.map(|a| u128::from(u32::from(a)));
        let raw = (u128::from(u32::from(net.network())), net.prefix_len());
        let r = self.check_family(&V4, raw, self.subnet_len, min, max)?;
        let v4 = |x: u128| Ipv4Addr::from(u32::try_from(x).unwrap_or_default());
        Ok(SubnetRange {
            subnet_len: r.subnet_len,
            min: v4(r.min),
            max: v4(r.max),
        })
    }

    fn check_v6(&self) -> Result<SubnetRange<Ipv6Addr>, NetConfError> {
        let net = self
            .ipv6_network
            .ok_or_else(|| required(self, &V6, "EnableIPv6"))?;
        let min = self.ipv6_subnet_min.map(u128::from);
        let max = self.ipv6_subnet_max.map(u128::from);
        let raw = (u128::from(net.network()), net.prefix_len());
        let r = self.check_family(&V6, raw, self.ipv6_subnet_len, min, max)?;
        Ok(SubnetRange {
            subnet_len: r.subnet_len,
            min: r.min.into(),
            max: r.max.into(),
        })
    }

    fn check_family(
        &self,
        fam: &Family,
        (network, prefix): (u128, u8),
        subnet_len: Option<u32>,
        min: Option<u128>,
        max: Option<u128>,
    ) -> Result<SubnetRange<u128>, NetConfError> {
        let len = self.subnet_len(fam, prefix, subnet_len)?;
        let host_bits = |len: u8| u32::from(fam.bits - len);
        let size = 1u128 << host_bits(len);
        let last = network | low_bits(host_bits(prefix));
        let contains = |a: u128| a & !low_bits(host_bits(prefix)) == network;
        let min = self.bound(fam.min, fam, min, network + size, contains)?;
        let max = self.bound(fam.max, fam, max, last - size + 1, contains)?;
        for (key, value) in [(fam.min, min), (fam.max, max)] {
            if value & low_bits(host_bits(len)) != 0 {
                let shown = show(fam, value);
                return Err(self.error(key, format!("{shown} is not on a /{len} boundary")));
            }
        }
        if min > max {
            let problem = format!(
                "{} is above {} {}: no subnet can be allocated",
                show(fam, min),
                fam.max,
                show(fam, max)
            );
            return Err(self.error(fam.min, problem));
        }
        Ok(SubnetRange {
            subnet_len: len,
            min,
            max,
        })
    }

    /// The configured subnet length checked, or flannel's default.
    fn subnet_len(&self, fam: &Family, prefix: u8, len: Option<u32>) -> Result<u8, NetConfError> {
        let prefix32 = u32::from(prefix);
        let len = match len.filter(|l| *l > 0) {
            Some(len) if len > fam.max_len => {
                return Err(self.error(
                    fam.len,
                    format!("must be at most {}, got {len}", fam.max_len),
                ));
            }
            Some(len) if len < prefix32 + 2 => {
                let problem = format!(
                    "must be at least {} so that {} holds four subnets, got {len}",
                    prefix32 + 2,
                    fam.network
                );
                return Err(self.error(fam.len, problem));
            }
            Some(len) => len,
            None if prefix32 > fam.max_len - 2 => {
                let problem = format!(
                    "too small: the smallest usable prefix is /{}",
                    fam.max_len - 2
                );
                return Err(self.error(fam.network, problem));
            }
            None if prefix32 + 2 <= fam.default_len => fam.default_len,
            None => prefix32 + 2,
        };
        Ok(u8::try_from(len).unwrap_or(fam.bits))
    }

    /// A configured bound (unset or all-zero: `default`) that must lie inside the network.
    fn bound(
        &self,
        key: &str,
        fam: &Family,
        value: Option<u128>,
        default: u128,
        contains: impl Fn(u128) -> bool,
    ) -> Result<u128, NetConfError> {
        match value.filter(|v| *v != 0) {
            None => Ok(default),
            Some(v) if contains(v) => Ok(v),
            Some(v) => Err(self.error(
                key,
                format!("{} is not inside {}", show(fam, v), fam.network),
            )),
        }
    }
}

fn required(conf: &NetConf, fam: &Family, flag: &str) -> NetConfError {
    conf.error(fam.network, format!("required when {flag} is true"))
}

/// A mask of the lowest `bits` bits.
fn low_bits(bits: u32) -> u128 {
    1u128.checked_shl(bits).map_or(u128::MAX, |v| v - 1)
}

fn show(fam: &Family, value: u128) -> String {
    match fam.bits {
        32 => Ipv4Addr::from(u32::try_from(value).unwrap_or_default()).to_string(),
        _ => Ipv6Addr::from(value).to_string(),
    }
}
