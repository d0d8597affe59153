//! Choosing this node's subnets in etcd mode, in flannel's order of preference, so a
//! restarted node keeps its subnets (and its pods keep their addresses):
//! 1. a lease that already carries our public IP and still fits the configuration;
//! 2. the subnets from the previous subnet.env, if they are free and fit — or if their key
//!    holds garbage (this node's own lease, overwritten: the caller takes it back with a
//!    compare-and-swap);
//! 3. one of the first free subnets in `[SubnetMin, SubnetMax]` of each enabled family
//!    (flannel picks at random among the first 100 to make concurrent joins unlikely to
//!    race; the caller supplies the pick so this stays deterministic under test).
//!
//! Pure, and written once over `u128` addresses for both families. The caller lists the
//! leases and writes the result with a create-if-absent transaction, retrying on a race.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sluice_model::addr::{from_bits, to_bits};
use sluice_model::net_conf::SubnetRange;

use crate::lease::Lease;

/// How many free subnets flannel chooses among.
pub const CHOICES: usize = 100;

/// Why no subnet can be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// Every subnet in a range is leased.
    #[error("no free subnet of length {subnet_len} between {min} and {max}")]
    Exhausted {
        /// The subnet prefix length.
        subnet_len: u8,
        /// First allocatable subnet.
        min: IpAddr,
        /// Last allocatable subnet.
        max: IpAddr,
    },
    /// Neither family is enabled.
    #[error("neither IPv4 nor IPv6 is enabled")]
    NoFamily,
}

/// Where the choice came from, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Our own existing lease.
    OwnLease,
    /// The previous subnet.env.
    Previous,
    /// Free subnets.
    Free,
}

/// The ranges of the enabled families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    /// IPv4, when enabled.
    pub ipv4: Option<SubnetRange<Ipv4Addr>>,
    /// IPv6, when enabled.
    pub ipv6: Option<SubnetRange<Ipv6Addr>>,
}

/// The chosen subnets (one per enabled family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// IPv4 subnet.
    pub subnet: Option<Ipv4Net>,
    /// IPv6 subnet.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// Where it came from.
    pub origin: Origin,
}

/// The subnets an etcd key names.
pub type Subnets = (Option<Ipv4Net>, Option<Ipv6Net>);

/// Picks this node's subnets. `public_ip` identifies our own lease; `garbage` are the subnets
/// of keys that hold no lease (taken, never free); `previous` are the subnets of the last
/// subnet.env; `pick(n)` chooses an index below `n`.
pub fn choose(
    ranges: &Ranges,
    public_ip: IpAddr,
    leases: &[Lease],
    garbage: &[Subnets],
    previous: Subnets,
    mut pick: impl FnMut(usize) -> usize,
) -> Result<Choice, AllocateError> {
    if ranges.ipv4.is_none() && ranges.ipv6.is_none() {
        return Err(AllocateError::NoFamily);
    }
    let fits = |v4: Option<Ipv4Net>, v6: Option<Ipv6Net>| {
        fits_family(ranges.ipv4.map(range_of), v4.map(IpNet::V4))
            && fits_family(ranges.ipv6.map(range_of), v6.map(IpNet::V6))
    };
    let ours = |l: &&Lease| {
        l.attrs.public_ip.map(IpAddr::V4) == Some(public_ip)
            || l.attrs.public_ipv6.map(IpAddr::V6) == Some(public_ip)
    };
    if let Some(own) = leases
        .iter()
        .filter(ours)
        .find(|l| fits(l.subnet, l.ipv6_subnet))
    {
        return Ok(Choice {
            subnet: own.subnet,
            ipv6_subnet: own.ipv6_subnet,
            origin: Origin::OwnLease,
        });
    }
    let claims = |(v4, v6): Subnets, net: &IpNet| {
        [v4.map(IpNet::V4), v6.map(IpNet::V6)]
            .iter()
            .flatten()
            .any(|t| t.contains(&net.network()) || net.contains(&t.network()))
    };
    let leased = |net: &IpNet| {
        leases
            .iter()
            .any(|l| claims((l.subnet, l.ipv6_subnet), net))
    };
    let garbled = |net: &IpNet| garbage.iter().any(|g| claims(*g, net));
    let taken = |net: &IpNet| leased(net) || garbled(net);
    let (p4, p6) = previous;
    let p4 = p4.filter(|_| ranges.ipv4.is_some());
    let p6 = p6.filter(|_| ranges.ipv6.is_some());
    let prev = [p4.map(IpNet::V4), p6.map(IpNet::V6)];
    let reclaimable = garbage.contains(&(p4, p6));
    let prev_free = prev
        .iter()
        .flatten()
        .all(|n| !leased(n) && (reclaimable || !garbled(n)));
    if (p4.is_some() || p6.is_some()) && fits(p4, p6) && prev_free {
        return Ok(Choice {
            subnet: p4,
            ipv6_subnet: p6,
            origin: Origin::Previous,
        });
    }
    let subnet = match ranges.ipv4 {
        Some(r) => match free(&range_of(r), taken, &mut pick)? {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        },
        None => None,
    };
    let ipv6_subnet = match ranges.ipv6 {
        Some(r) => match free(&range_of(r), taken, &mut pick)? {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        },
        None => None,
    };
    Ok(Choice {
        subnet,
        ipv6_subnet,
        origin: Origin::Free,
    })
}

/// A range with its addresses as [`IpAddr`].
#[derive(Clone, Copy)]
struct Range {
    len: u8,
    min: IpAddr,
    max: IpAddr,
}

fn range_of<A: Into<IpAddr> + Copy>(r: SubnetRange<A>) -> Range {
    Range {
        len: r.subnet_len,
        min: r.min.into(),
        max: r.max.into(),
    }
}

/// A family's subnet fits its range (or the family is off and there is none).
fn fits_family(range: Option<Range>, net: Option<IpNet>) -> bool {
    match (range, net) {
        (None, None) => true,
        (Some(r), Some(n)) => {
            n.prefix_len() == r.len
                && n.network() == n.addr()
                && (r.min..=r.max).contains(&n.network())
        }
        _ => false,
    }
}

/// One of the first [`CHOICES`] free subnets of `range`.
fn free(
    range: &Range,
    taken: impl Fn(&IpNet) -> bool,
    pick: &mut impl FnMut(usize) -> usize,
) -> Result<IpNet, AllocateError> {
    let (lo, width) = to_bits(range.min);
    let (hi, _) = to_bits(range.max);
    let step = 1u128
        .checked_shl(u32::from(width - range.len.min(width)))
        .unwrap_or(u128::MAX);
    let candidates = (0u128..)
        .map_while(|i| i.checked_mul(step).and_then(|off| lo.checked_add(off)))
        .take_while(|a| *a <= hi)
        .filter_map(|a| IpNet::new(from_bits(a, width)?, range.len).ok())
        .filter(|n| !taken(n))
        .take(CHOICES);
    let free: Vec<IpNet> = candidates.collect();
    if free.is_empty() {
        return Err(AllocateError::Exhausted {
            subnet_len: range.len,
            min: range.min,
            max: range.max,
        });
    }
    let i = pick(free.len()).min(free.len() - 1);
    Ok(free[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(v6: bool) -> Ranges {
        Ranges {
            ipv4: Some(SubnetRange {
                subnet_len: 24,
                min: Ipv4Addr::new(10, 244, 1, 0),
                max: Ipv4Addr::new(10, 244, 3, 0),
            }),
            ipv6: v6.then(|| SubnetRange {
                subnet_len: 64,
                min: "fd00:1:0:1::".parse().unwrap(),
                max: "fd00:1:0:3::".parse().unwrap(),
            }),
        }
    }

    fn lease(key: &str, public: &str) -> Lease {
        let value = format!(r#"{{"PublicIP":"{public}","BackendType":"vxlan"}}"#);
        Lease::from_etcd(key, &value).unwrap()
    }

    fn me() -> IpAddr {
        "192.168.0.11".parse().unwrap()
    }

    fn v4(s: &str) -> Option<Ipv4Net> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn own_lease_wins_then_previous_then_first_free() {
        let leases = [lease("10.244.2.0-24", "192.168.0.11")];
        let prev = (v4("10.244.3.0/24"), None);
        let got = choose(&ranges(false), me(), &leases, &[], prev, |_| 0).unwrap();
        assert_eq!(
            (got.subnet, got.origin),
            (v4("10.244.2.0/24"), Origin::OwnLease)
        );

        let leases = [lease("10.244.2.0-24", "192.168.0.12")];
        let got = choose(&ranges(false), me(), &leases, &[], prev, |_| 0).unwrap();
        assert_eq!(
            (got.subnet, got.origin),
            (v4("10.244.3.0/24"), Origin::Previous)
        );

        let got = choose(&ranges(false), me(), &leases, &[], (None, None), |n| n - 1).unwrap();
        assert_eq!(
            (got.subnet, got.origin),
            (v4("10.244.3.0/24"), Origin::Free),
            "pick among 1 and 3"
        );
    }

    #[test]
    fn previous_subnet_taken_or_outside_range_is_not_reused() {
        let leases = [lease("10.244.1.0-24", "192.168.0.12")];
        for prev in ["10.244.1.0/24", "10.244.9.0/24", "10.244.2.0/25"] {
            let got = choose(&ranges(false), me(), &leases, &[], (v4(prev), None), |_| 0).unwrap();
            assert_eq!(
                (got.subnet, got.origin),
                (v4("10.244.2.0/24"), Origin::Free),
                "{prev}"
            );
        }
    }

    #[test]
    fn dual_stack_chooses_one_subnet_per_family_and_reuses_dual_leases() {
        let leases = [lease("10.244.1.0-24&fd00:1:0:1::-64", "192.168.0.12")];
        let got = choose(&ranges(true), me(), &leases, &[], (None, None), |_| 0).unwrap();
        assert_eq!(got.subnet, v4("10.244.2.0/24"));
        assert_eq!(got.ipv6_subnet, Some("fd00:1:0:2::/64".parse().unwrap()));
        let mine = [lease("10.244.3.0-24&fd00:1:0:3::-64", "192.168.0.11")];
        let again = choose(&ranges(true), me(), &mine, &[], (None, None), |_| 0).unwrap();
        assert_eq!(
            (again.ipv6_subnet, again.origin),
            (Some("fd00:1:0:3::/64".parse().unwrap()), Origin::OwnLease)
        );
        let v4_only = [lease("10.244.3.0-24", "192.168.0.11")];
        let grown = choose(&ranges(true), me(), &v4_only, &[], (None, None), |_| 0).unwrap();
        assert_eq!(
            grown.origin,
            Origin::Free,
            "a v4-only lease no longer fits a dual-stack config"
        );
    }

    #[test]
    fn garbage_is_taken_except_by_the_node_whose_previous_subnet_it_holds() {
        let garbage = [(v4("10.244.1.0/24"), None)];
        let fresh = choose(&ranges(false), me(), &[], &garbage, (None, None), |_| 0).unwrap();
        assert_eq!(fresh.subnet, v4("10.244.2.0/24"), "garbage is not free");
        let prev = (v4("10.244.1.0/24"), None);
        let back = choose(&ranges(false), me(), &[], &garbage, prev, |_| 0).unwrap();
        assert_eq!((back.subnet, back.origin), (prev.0, Origin::Previous));
        let leased = [lease("10.244.1.0-24", "192.168.0.12")];
        let other = choose(&ranges(false), me(), &leased, &garbage, prev, |_| 0).unwrap();
        assert_eq!(
            other.origin,
            Origin::Free,
            "a valid lease is never taken back"
        );
    }

    #[test]
    fn exhausted_range_is_an_error() {
        let leases: Vec<Lease> = (1..=3)
            .map(|i| lease(&format!("10.244.{i}.0-24"), "192.168.0.99"))
            .collect();
        let e = choose(&ranges(false), me(), &leases, &[], (None, None), |_| 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free subnet of length 24 between 10.244.1.0 and 10.244.3.0"
        );
    }
}
