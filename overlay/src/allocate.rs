//! Choosing this node's IPv4 subnet in etcd mode, in flannel's order of preference, so a
//! restarted node keeps its subnet (and its pods keep their addresses):
//! 1. a lease that already carries our public IP and still fits the configuration;
//! 2. the subnet from the previous subnet.env, if it is free and fits;
//! 3. one of the first free subnets in `[SubnetMin, SubnetMax]` (flannel picks at random
//!    among the first 100 to make concurrent joins unlikely to race; the caller supplies
//!    the pick so this stays deterministic under test).
//!
//! Pure: the caller lists the leases and writes the result with a create-if-absent
//! transaction, retrying on a race.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sluice_model::net_conf::SubnetRange;

use crate::lease::Lease;

/// How many free subnets flannel chooses among.
pub const CHOICES: usize = 100;

/// Why no subnet can be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// Every subnet in the range is leased.
    #[error("no free subnet of length {subnet_len} between {min} and {max}")]
    Exhausted {
        /// The subnet prefix length.
        subnet_len: u8,
        /// First allocatable subnet.
        min: Ipv4Addr,
        /// Last allocatable subnet.
        max: Ipv4Addr,
    },
}

/// Where the choice came from, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Our own existing lease.
    OwnLease,
    /// The previous subnet.env.
    Previous,
    /// A free subnet.
    Free,
}

/// Picks this node's subnet. `pick(n)` chooses an index below `n` among free candidates.
pub fn choose(
    range: &SubnetRange<Ipv4Addr>,
    public_ip: Ipv4Addr,
    leases: &[Lease],
    previous: Option<Ipv4Net>,
    pick: impl FnOnce(usize) -> usize,
) -> Result<(Ipv4Net, Origin), AllocateError> {
    let fits = |n: &Ipv4Net| fits(range, n);
    let own = leases
        .iter()
        .filter(|l| l.attrs.public_ip == Some(public_ip))
        .filter_map(|l| l.subnet)
        .find(|n| fits(n));
    if let Some(net) = own {
        return Ok((net, Origin::OwnLease));
    }
    let taken = |n: &Ipv4Net| {
        leases
            .iter()
            .any(|l| l.subnet.is_some_and(|t| overlaps(&t, n)))
    };
    if let Some(prev) = previous.filter(|p| fits(p) && !taken(p)) {
        return Ok((prev, Origin::Previous));
    }
    let free: Vec<Ipv4Net> = candidates(range)
        .filter(|n| !taken(n))
        .take(CHOICES)
        .collect();
    if free.is_empty() {
        return Err(AllocateError::Exhausted {
            subnet_len: range.subnet_len,
            min: range.min,
            max: range.max,
        });
    }
    let i = pick(free.len()).min(free.len() - 1);
    Ok((free[i], Origin::Free))
}

/// True when `net` is one of the range's subnets.
fn fits(range: &SubnetRange<Ipv4Addr>, net: &Ipv4Net) -> bool {
    net.prefix_len() == range.subnet_len
        && net.network() == net.addr()
        && (range.min..=range.max).contains(&net.network())
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Every subnet of the range, in address order.
fn candidates(range: &SubnetRange<Ipv4Addr>) -> impl Iterator<Item = Ipv4Net> + '_ {
    let step = 1u64 << (32 - u32::from(range.subnet_len));
    let (lo, hi) = (
        u64::from(u32::from(range.min)),
        u64::from(u32::from(range.max)),
    );
    (0..)
        .map(move |i| lo + i * step)
        .take_while(move |a| *a <= hi)
        .filter_map(move |a| {
            let addr = Ipv4Addr::from(u32::try_from(a).ok()?);
            Ipv4Net::new(addr, range.subnet_len).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> SubnetRange<Ipv4Addr> {
        SubnetRange {
            subnet_len: 24,
            min: Ipv4Addr::new(10, 244, 1, 0),
            max: Ipv4Addr::new(10, 244, 3, 0),
        }
    }

    fn lease(subnet: &str, public: &str) -> Lease {
        let value = format!(r#"{{"PublicIP":"{public}","BackendType":"vxlan"}}"#);
        Lease::from_etcd(&subnet.replace('/', "-"), &value).unwrap()
    }

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    #[test]
    fn own_lease_wins_then_previous_then_first_free() {
        let leases = [lease("10.244.2.0/24", "192.168.0.11")];
        let prev = Some("10.244.3.0/24".parse().unwrap());
        let got = choose(&range(), ME, &leases, prev, |_| 0).unwrap();
        assert_eq!(got, ("10.244.2.0/24".parse().unwrap(), Origin::OwnLease));

        let leases = [lease("10.244.2.0/24", "192.168.0.12")];
        let got = choose(&range(), ME, &leases, prev, |_| 0).unwrap();
        assert_eq!(got, ("10.244.3.0/24".parse().unwrap(), Origin::Previous));

        let got = choose(&range(), ME, &leases, None, |n| n - 1).unwrap();
        assert_eq!(
            got,
            ("10.244.3.0/24".parse().unwrap(), Origin::Free),
            "pick among 1 and 3"
        );
    }

    #[test]
    fn previous_subnet_taken_by_another_node_or_outside_range_is_not_reused() {
        let leases = [lease("10.244.1.0/24", "192.168.0.12")];
        for prev in ["10.244.1.0/24", "10.244.9.0/24", "10.244.2.0/25"] {
            let got = choose(&range(), ME, &leases, Some(prev.parse().unwrap()), |_| 0).unwrap();
            assert_eq!(
                got,
                ("10.244.2.0/24".parse().unwrap(), Origin::Free),
                "{prev}"
            );
        }
    }

    #[test]
    fn exhausted_range_is_an_error() {
        let leases: Vec<Lease> = (1..=3)
            .map(|i| lease(&format!("10.244.{i}.0/24"), "192.168.0.99"))
            .collect();
        let e = choose(&range(), ME, &leases, None, |_| 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free subnet of length 24 between 10.244.1.0 and 10.244.3.0"
        );
    }
}
