//! What the kernel should hold for a set of leases — computed, never read from the kernel.
//!
//! flannel's VXLAN design keeps state linear in remote hosts: per peer one neighbour entry
//! (peer subnet address → peer VTEP MAC), one FDB entry (peer VTEP MAC → peer underlay IP)
//! and one onlink route (peer subnet via peer subnet address). host-gw and DirectRouting
//! peers get one plain route via the peer's underlay IP instead. Computing this as a value
//! from the lease set (instead of flannel's add/remove event handlers) is what lets the
//! daemon heal: the reconcile loop diffs it against what netlink reports, whatever deleted
//! what, and a peer's old MAC disappears because nothing desires it any more.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::net_conf::BackendType;

use crate::lease::Lease;
use crate::mac::Mac;

/// How this node's overlay is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// `vxlan` or `host-gw`.
    pub backend: BackendType,
    /// The VXLAN network identifier (device `flannel.<VNI>`).
    pub vni: u32,
    /// `DirectRouting`: VXLAN peers on the same L2 get plain routes.
    pub direct_routing: bool,
}

impl Params {
    /// The overlay device of a family: `flannel.<VNI>` or `flannel-v6.<VNI>`.
    pub fn device(&self, v6: bool) -> String {
        if v6 {
            format!("flannel-v6.{}", self.vni)
        } else {
            format!("flannel.{}", self.vni)
        }
    }
}

/// How a pod-subnet route reaches its peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NextHop {
    /// Through the overlay device to the peer's subnet address, `onlink`.
    Overlay {
        /// The overlay device.
        dev: String,
        /// The peer's subnet network address (its VTEP's address).
        via: IpAddr,
    },
    /// Directly via the peer's underlay address (host-gw, DirectRouting).
    Underlay {
        /// The peer's public IP.
        via: IpAddr,
    },
}

impl NextHop {
    /// True when the route goes through device `name`.
    pub fn uses_device(&self, name: &str) -> bool {
        matches!(self, Self::Overlay { dev, .. } if dev == name)
    }
}

/// The overlay state a node should hold. Maps are keyed by what the kernel keys them by,
/// so one key holds one entry and a changed value is a replace, not an add beside a stale one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Permanent neighbour entries: (device, peer subnet address) → peer VTEP MAC.
    pub neighbors: BTreeMap<(String, IpAddr), Mac>,
    /// FDB entries: (device, peer VTEP MAC) → peer underlay IP.
    pub fdb: BTreeMap<(String, Mac), IpAddr>,
    /// Routes: peer pod subnet → next hop.
    pub routes: BTreeMap<IpNet, NextHop>,
}

/// The desired state plus the peers that had to be skipped, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Computed {
    /// What to program.
    pub desired: Desired,
    /// One message per skipped peer and family.
    pub skipped: Vec<String>,
}

/// Computes the state for `own` and its `peers`. `same_l2(ip)` says whether an underlay
/// address is directly reachable (only asked when DirectRouting is on).
pub fn compute<'a>(
    own: &Lease,
    peers: impl IntoIterator<Item = &'a Lease>,
    params: &Params,
    same_l2: impl Fn(IpAddr) -> bool,
) -> Computed {
    let mut out = Computed::default();
    for peer in peers {
        if peer.subnet.is_some() && peer.subnet == own.subnet
            || peer.ipv6_subnet.is_some() && peer.ipv6_subnet == own.ipv6_subnet
        {
            continue;
        }
        if peer.attrs.backend_type != params.backend.as_str() {
            out.skipped.push(format!(
                "lease {}: backend {:?}, this node runs {}",
                peer.label(),
                peer.attrs.backend_type,
                params.backend
            ));
            continue;
        }
        let families = [
            (
                false,
                peer.subnet.map(IpNet::V4),
                peer.attrs.public_ip.map(IpAddr::V4),
            ),
            (
                true,
                peer.ipv6_subnet.map(IpNet::V6),
                peer.attrs.public_ipv6.map(IpAddr::V6),
            ),
        ];
        for (v6, subnet, public) in families {
            if let (Some(subnet), Some(public)) = (subnet, public) {
                add_peer(&mut out, peer, v6, subnet, public, params, &same_l2);
            }
        }
    }
    out
}

fn add_peer(
    out: &mut Computed,
    peer: &Lease,
    v6: bool,
    subnet: IpNet,
    public: IpAddr,
    params: &Params,
    same_l2: &impl Fn(IpAddr) -> bool,
) {
    let direct = params.backend == BackendType::HostGw || params.direct_routing && same_l2(public);
    if direct {
        out.desired
            .routes
            .insert(subnet, NextHop::Underlay { via: public });
        return;
    }
    let data = match peer.vxlan_data(v6) {
        Ok(Some(data)) => data,
        Ok(None) => {
            out.skipped
                .push(format!("lease {}: no VXLAN backend data", peer.label()));
            return;
        }
        Err(e) => {
            out.skipped.push(e.to_string());
            return;
        }
    };
    let dev = params.device(v6);
    let via = subnet.network();
    let d = &mut out.desired;
    d.neighbors.insert((dev.clone(), via), data.vtep_mac);
    d.fdb.insert((dev.clone(), data.vtep_mac), public);
    d.routes.insert(subnet, NextHop::Overlay { dev, via });
}
