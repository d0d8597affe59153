//! ClusterIP and NodePort allocators.
//!
//! Real clusters allocate randomly; here allocation is next-fit from the start of the range so
//! tests can predict addresses (`10.96.0.2` is the first Service's ClusterIP). The network
//! address and the first host address (`10.96.0.1`, which real clusters give to the `kubernetes`
//! Service) are never handed out; the `kubernetes` Service itself is not created so that tests
//! start from an empty Service list.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// An allocation that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The requested value is held by another object.
    #[error("provided {0} is already allocated")]
    Taken(String),
    /// The requested value is outside the range.
    #[error("provided {0} is not in the valid range")]
    OutOfRange(String),
    /// Every value is in use.
    #[error("range is full")]
    Full,
}

/// Next-fit allocator over a range of `u32`s.
#[derive(Debug, Clone)]
struct Pool {
    range: RangeInclusive<u32>,
    used: BTreeSet<u32>,
    next: u32,
}

impl Pool {
    fn new(range: RangeInclusive<u32>) -> Self {
        Self {
            next: *range.start(),
            range,
            used: BTreeSet::new(),
        }
    }

    fn allocate(&mut self) -> Option<u32> {
        let (start, end) = (*self.range.start(), *self.range.end());
        let candidates = (self.next..=end).chain(start..self.next);
        let found = candidates.into_iter().find(|v| !self.used.contains(v))?;
        self.used.insert(found);
        self.next = if found == end { start } else { found + 1 };
        Some(found)
    }

    fn claim(&mut self, v: u32) -> Result<(), ClaimError> {
        if !self.range.contains(&v) {
            return Err(ClaimError::OutOfRange);
        }
        if self.used.insert(v) {
            Ok(())
        } else {
            Err(ClaimError::Taken)
        }
    }

    fn release(&mut self, v: u32) {
        self.used.remove(&v);
    }
}

enum ClaimError {
    OutOfRange,
    Taken,
}

/// Hands out ClusterIPs from the service CIDR.
#[derive(Debug, Clone)]
pub(crate) struct IpAllocator {
    pool: Pool,
}

impl IpAllocator {
    /// An allocator over `cidr`, excluding the network, broadcast and first host addresses.
    #[must_use]
    pub(crate) fn new(cidr: Ipv4Net) -> Self {
        let first = u32::from(cidr.network()).saturating_add(2);
        let last = u32::from(cidr.broadcast()).saturating_sub(1);
        Self {
            pool: Pool::new(first..=last.max(first)),
        }
    }

    /// The next free address.
    pub(crate) fn allocate(&mut self) -> Result<Ipv4Addr, AllocError> {
        self.pool
            .allocate()
            .map(Ipv4Addr::from)
            .ok_or(AllocError::Full)
    }

    /// Marks a caller-chosen address as used.
    pub(crate) fn claim(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        self.pool.claim(u32::from(ip)).map_err(|e| match e {
            ClaimError::OutOfRange => AllocError::OutOfRange(format!("clusterIP {ip}")),
            ClaimError::Taken => AllocError::Taken(format!("clusterIP {ip}")),
        })
    }

    /// Returns an address to the pool.
    pub(crate) fn release(&mut self, ip: Ipv4Addr) {
        self.pool.release(u32::from(ip));
    }
}

/// Hands out NodePorts (30000–32767 by default).
#[derive(Debug, Clone)]
pub(crate) struct PortAllocator {
    pool: Pool,
}

impl PortAllocator {
    /// An allocator over `range`.
    #[must_use]
    pub(crate) fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            pool: Pool::new(u32::from(*range.start())..=u32::from(*range.end())),
        }
    }

    /// The next free port.
    pub(crate) fn allocate(&mut self) -> Result<u16, AllocError> {
        let v = self.pool.allocate().ok_or(AllocError::Full)?;
        u16::try_from(v).map_err(|_| AllocError::Full)
    }

    /// Marks a caller-chosen port as used.
    pub(crate) fn claim(&mut self, port: u16) -> Result<(), AllocError> {
        self.pool.claim(u32::from(port)).map_err(|e| match e {
            ClaimError::OutOfRange => AllocError::OutOfRange(format!("nodePort {port}")),
            ClaimError::Taken => AllocError::Taken(format!("nodePort {port}")),
        })
    }

    /// Returns a port to the pool.
    pub(crate) fn release(&mut self, port: u16) {
        self.pool.release(u32::from(port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_skip_network_and_first_address() {
        let mut a = IpAllocator::new("10.96.0.0/12".parse().unwrap());
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 96, 0, 2));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 96, 0, 3));
    }

    #[test]
    fn ips_claim_release_and_exhaust() {
        let mut a = IpAllocator::new("192.168.0.0/29".parse().unwrap());
        a.claim(Ipv4Addr::new(192, 168, 0, 2)).unwrap();
        assert!(matches!(
            a.claim(Ipv4Addr::new(192, 168, 0, 2)),
            Err(AllocError::Taken(_))
        ));
        assert!(matches!(
            a.claim(Ipv4Addr::new(10, 0, 0, 1)),
            Err(AllocError::OutOfRange(_))
        ));
        let got: Vec<_> = std::iter::from_fn(|| a.allocate().ok()).collect();
        assert_eq!(got.len(), 4, "{got:?}"); // .3 .. .6
        assert_eq!(a.allocate(), Err(AllocError::Full));
        a.release(Ipv4Addr::new(192, 168, 0, 4));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(192, 168, 0, 4));
    }

    #[test]
    fn ports_are_next_fit_and_wrap() {
        let mut p = PortAllocator::new(30000..=30002);
        assert_eq!(p.allocate().unwrap(), 30000);
        assert_eq!(p.allocate().unwrap(), 30001);
        p.release(30000);
        assert_eq!(p.allocate().unwrap(), 30002);
        assert_eq!(p.allocate().unwrap(), 30000);
        assert_eq!(p.allocate(), Err(AllocError::Full));
        assert!(matches!(p.claim(40000), Err(AllocError::OutOfRange(_))));
    }
}
