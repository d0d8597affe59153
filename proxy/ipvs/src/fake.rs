//! IPVS in memory with the kernel's semantics for what Sluice uses (tests, benchmarks).

use std::collections::BTreeMap;

use sluice_netlink::NetlinkError;

use crate::ipvs::{Ipvs, IpvsError};
use crate::types::{RealServer, RsKey, VirtualServer, VsKey};

/// The fake's tables and a count of the writes made.
#[derive(Debug, Default)]
pub struct FakeIpvs {
    /// Virtual servers with their real servers.
    pub services: BTreeMap<VsKey, (VirtualServer, BTreeMap<RsKey, RealServer>)>,
    /// Writes (add, edit, delete of services and destinations).
    pub writes: usize,
    /// The timeouts last set (TCP, TCP FIN, UDP).
    pub timeouts: Option<(u32, u32, u32)>,
}

fn enoent(what: String) -> IpvsError {
    IpvsError::Netlink(NetlinkError::Refused {
        op: what,
        errno: 2,
        detail: None,
    })
}

fn eexist(what: String) -> IpvsError {
    IpvsError::Netlink(NetlinkError::Refused {
        op: what,
        errno: 17,
        detail: None,
    })
}

impl FakeIpvs {
    /// Sets the connection counts of a real server (what traffic would do).
    pub fn set_connections(&mut self, vs: &VsKey, rs: &RsKey, active: u32, inactive: u32) {
        if let Some(r) = self.services.get_mut(vs).and_then(|(_, d)| d.get_mut(rs)) {
            r.active = active;
            r.inactive = inactive;
        }
    }
}

impl Ipvs for FakeIpvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ok(self.services.values().map(|(v, _)| v.clone()).collect())
    }

    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        self.writes += 1;
        if self.services.contains_key(&vs.key) {
            return Err(eexist(format!("add {}", vs.key)));
        }
        self.services.insert(vs.key, (vs.clone(), BTreeMap::new()));
        Ok(())
    }

    fn edit_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        self.writes += 1;
        let (v, _) =
            (self.services.get_mut(&vs.key)).ok_or_else(|| enoent(format!("edit {}", vs.key)))?;
        *v = vs.clone();
        Ok(())
    }

    fn del_service(&mut self, key: &VsKey) -> Result<(), IpvsError> {
        self.writes += 1;
        self.services
            .remove(key)
            .map(drop)
            .ok_or_else(|| enoent(format!("delete {key}")))
    }

    fn destinations(&mut self, key: &VsKey) -> Result<Vec<RealServer>, IpvsError> {
        let (_, d) = self
            .services
            .get(key)
            .ok_or_else(|| enoent(format!("list {key}")))?;
        Ok(d.values().copied().collect())
    }

    fn add_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.writes += 1;
        let (_, d) = (self.services.get_mut(key)).ok_or_else(|| enoent(format!("add to {key}")))?;
        if d.contains_key(&rs.key) {
            return Err(eexist(format!("add {} to {key}", rs.key)));
        }
        d.insert(
            rs.key,
            RealServer {
                active: 0,
                inactive: 0,
                ..*rs
            },
        );
        Ok(())
    }

    fn edit_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.writes += 1;
        let r = (self.services.get_mut(key))
            .and_then(|(_, d)| d.get_mut(&rs.key))
            .ok_or_else(|| enoent(format!("edit {} of {key}", rs.key)))?;
        r.weight = rs.weight;
        Ok(())
    }

    fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), IpvsError> {
        self.timeouts = Some((tcp, tcp_fin, udp));
        Ok(())
    }

    fn del_destination(&mut self, key: &VsKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.writes += 1;
        (self.services.get_mut(key))
            .and_then(|(_, d)| d.remove(&rs.key))
            .map(drop)
            .ok_or_else(|| enoent(format!("delete {} of {key}", rs.key)))
    }
}
