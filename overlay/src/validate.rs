//! Which peer leases may be programmed at all.
//!
//! A lease is whatever a peer — or anyone who can write to etcd or to Node objects — published.
//! Programmed unchecked, one lease for the underlay's own /24 replaces the node's connected
//! route, one with host bits set makes a route flap forever, and one for `0.0.0.0/0` fails
//! every reconcile on every node. So each lease is checked on its own against this node's
//! configuration before [`crate::compute`] sees it: a lease that fails is skipped with its
//! reason (logged and counted), and the others are programmed as if it did not exist.
//! Families this node does not run are dropped from a lease, as flannel ignores them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::net_conf::BackendType;

use crate::allocate::Ranges;
use crate::desired::Params;
use crate::lease::Lease;
use crate::mac::Mac;

/// This node's side of the checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The pod network of each enabled family (`Network`, `IPv6Network`). A peer subnet must
    /// lie inside its family's; a family without one is not routed at all.
    pub networks: Vec<IpNet>,
    /// Etcd mode: each family's `SubnetLen` and `SubnetMin`..`SubnetMax`, so a lease flannel
    /// could not have allocated under this configuration is refused. Empty in kube mode,
    /// where the controller manager sizes podCIDRs.
    pub ranges: Ranges,
    /// This node's underlay subnets (address and prefix): their connected routes are never
    /// ours to replace.
    pub underlay: Vec<IpNet>,
}

/// Why a lease was skipped; the label of the `sluice_overlay_skipped_leases` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The key's address has host bits set (`10.250.1.7-24`).
    HostBits,
    /// The subnet is not inside the pod network.
    OutsideNetwork,
    /// Not the configured `SubnetLen`.
    SubnetLen,
    /// Outside `SubnetMin`..`SubnetMax`.
    OutsideRange,
    /// Overlaps this node's underlay subnet.
    Underlay,
    /// Overlaps this node's own pod subnet.
    OwnSubnet,
    /// No usable underlay address for the family it has a subnet in.
    PublicIp,
    /// A VTEP MAC that is not a unicast address, or backend data that does not parse.
    BackendData,
    /// Another backend, or VXLAN data missing where it is needed.
    Backend,
    /// Another lease claims an overlapping subnet or the same VTEP MAC.
    Conflict,
    /// Someone else's route (a connected one, a static one) holds the destination.
    RouteTaken,
}

impl Reason {
    /// Every reason, in label order (metrics list them all, also at zero).
    pub const ALL: [Reason; 11] = [
        Self::HostBits,
        Self::OutsideNetwork,
        Self::SubnetLen,
        Self::OutsideRange,
        Self::Underlay,
        Self::OwnSubnet,
        Self::PublicIp,
        Self::BackendData,
        Self::Backend,
        Self::Conflict,
        Self::RouteTaken,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HostBits => "host-bits",
            Self::OutsideNetwork => "outside-network",
            Self::SubnetLen => "subnet-len",
            Self::OutsideRange => "outside-range",
            Self::Underlay => "underlay",
            Self::OwnSubnet => "own-subnet",
            Self::PublicIp => "public-ip",
            Self::BackendData => "backend-data",
            Self::Backend => "backend",
            Self::Conflict => "conflict",
            Self::RouteTaken => "route-taken",
        }
    }
}

/// A lease that was not programmed, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skipped {
    /// The lease, as its etcd key would name it.
    pub lease: String,
    /// The class of problem.
    pub reason: Reason,
    /// What exactly is wrong.
    pub detail: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lease.as_str() {
            "" => write!(f, "skipping peer: {}", self.detail),
            lease => write!(f, "skipping lease {lease}: {}", self.detail),
        }
    }
}

/// The leases that may be programmed (with families this node does not run removed), and
/// the ones skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Leases that passed every check.
    pub peers: Vec<Lease>,
    /// Leases that did not.
    pub skipped: Vec<Skipped>,
}

/// Checks every peer lease against `bounds`, this node's `own` lease and `params`.
pub fn select(bounds: &Bounds, own: &Lease, peers: &[Lease], params: &Params) -> Selection {
    let mut out = Selection::default();
    let mut kept = Vec::new();
    for peer in peers {
        let Some(lease) = only_enabled(bounds, peer) else {
            continue;
        };
        match check(bounds, own, &lease, params) {
            Ok(()) => kept.push(lease),
            Err((reason, detail)) => out.skipped.push(skip(peer, reason, detail)),
        }
    }
    let conflicts = conflicts(&kept, params);
    for (i, lease) in kept.into_iter().enumerate() {
        match conflicts.get(&i) {
            Some(detail) => out
                .skipped
                .push(skip(&lease, Reason::Conflict, detail.clone())),
            None => out.peers.push(lease),
        }
    }
    out
}

fn skip(lease: &Lease, reason: Reason, detail: String) -> Skipped {
    Skipped {
        lease: lease.label(),
        reason,
        detail,
    }
}

type Problem = (Reason, String);

/// The lease without subnets of families this node does not run; `None` when nothing is left.
fn only_enabled(bounds: &Bounds, lease: &Lease) -> Option<Lease> {
    let runs = |v6: bool| bounds.networks.iter().any(|n| is_v6(n) == v6);
    let mut out = lease.clone();
    out.subnet = out.subnet.filter(|_| runs(false));
    out.ipv6_subnet = out.ipv6_subnet.filter(|_| runs(true));
    (out.subnet.is_some() || out.ipv6_subnet.is_some()).then_some(out)
}

fn check(bounds: &Bounds, own: &Lease, lease: &Lease, params: &Params) -> Result<(), Problem> {
    let subnets = [
        lease.subnet.map(IpNet::V4),
        lease.ipv6_subnet.map(IpNet::V6),
    ];
    for subnet in subnets.into_iter().flatten() {
        check_subnet(bounds, own, subnet)?;
        check_public(bounds, own, lease, is_v6(&subnet))?;
    }
    check_backend_data(lease, params)
}

fn check_subnet(bounds: &Bounds, own: &Lease, subnet: IpNet) -> Result<(), Problem> {
    if subnet.addr() != subnet.network() {
        let problem = format!(
            "subnet {subnet} has host bits set (its network is {})",
            subnet.trunc()
        );
        return Err((Reason::HostBits, problem));
    }
    let family_net = bounds.networks.iter().find(|n| is_v6(n) == is_v6(&subnet));
    if let Some(net) = family_net.filter(|n| !n.contains(&subnet)) {
        let problem = format!("subnet {subnet} is outside the pod network {net}");
        return Err((Reason::OutsideNetwork, problem));
    }
    check_range(bounds, subnet)?;
    if let Some(u) = bounds.underlay.iter().find(|u| overlaps(u, &subnet)) {
        let problem = format!("subnet {subnet} overlaps this node's underlay {u}");
        return Err((Reason::Underlay, problem));
    }
    let mine = [own.subnet.map(IpNet::V4), own.ipv6_subnet.map(IpNet::V6)];
    if let Some(o) = mine.iter().flatten().find(|o| overlaps(o, &subnet)) {
        let problem = format!("subnet {subnet} overlaps this node's own subnet {o}");
        return Err((Reason::OwnSubnet, problem));
    }
    Ok(())
}

/// Etcd mode: the configured length and range of the subnet's family.
fn check_range(bounds: &Bounds, subnet: IpNet) -> Result<(), Problem> {
    let range = match subnet {
        IpNet::V4(_) => bounds
            .ranges
            .ipv4
            .map(|r| (r.subnet_len, IpAddr::V4(r.min), IpAddr::V4(r.max))),
        IpNet::V6(_) => bounds
            .ranges
            .ipv6
            .map(|r| (r.subnet_len, IpAddr::V6(r.min), IpAddr::V6(r.max))),
    };
    let Some((len, min, max)) = range else {
        return Ok(());
    };
    if subnet.prefix_len() != len {
        let problem = format!("subnet {subnet} is not a /{len} (the configured subnet length)");
        return Err((Reason::SubnetLen, problem));
    }
    if !(min..=max).contains(&subnet.network()) {
        let problem = format!("subnet {subnet} is outside the allocatable range {min}..{max}");
        return Err((Reason::OutsideRange, problem));
    }
    Ok(())
}

/// The family's underlay address: present, one a VTEP can be reached at, and not ours.
fn check_public(bounds: &Bounds, own: &Lease, lease: &Lease, v6: bool) -> Result<(), Problem> {
    let (public, mine, key) = if v6 {
        let p = lease.attrs.public_ipv6.map(IpAddr::V6);
        (p, own.attrs.public_ipv6.map(IpAddr::V6), "PublicIPv6")
    } else {
        let p = lease.attrs.public_ip.map(IpAddr::V4);
        (p, own.attrs.public_ip.map(IpAddr::V4), "PublicIP")
    };
    let Some(ip) = public else {
        let family = if v6 { "IPv6" } else { "IPv4" };
        return Err((
            Reason::PublicIp,
            format!("no {key} for its {family} subnet"),
        ));
    };
    let why = if !routable(ip) {
        Some("not a unicast address a peer can be reached at")
    } else if bounds.networks.iter().any(|n| n.contains(&ip)) {
        Some("inside the pod network")
    } else if Some(ip) == mine {
        Some("this node's own address")
    } else {
        None
    };
    match why {
        Some(why) => Err((Reason::PublicIp, format!("{key} {ip} is {why}"))),
        None => Ok(()),
    }
}

/// An address a VXLAN or host-gw peer can be reached at.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || link_local)
        }
    }
}

/// VXLAN data, where present, must parse and name a unicast VTEP MAC: an all-zero FDB entry
/// is the device's default destination, which would send every unknown frame to this peer.
fn check_backend_data(lease: &Lease, params: &Params) -> Result<(), Problem> {
    if params.backend != BackendType::Vxlan || lease.attrs.backend_type != params.backend.as_str() {
        return Ok(());
    }
    for v6 in [false, true] {
        match lease.vxlan_data(v6) {
            Ok(Some(data)) if !unicast(data.vtep_mac) => {
                let problem = format!("VtepMAC {} is not a unicast address", data.vtep_mac);
                return Err((Reason::BackendData, problem));
            }
            Ok(_) => {}
            Err(e) => return Err((Reason::BackendData, e.to_string())),
        }
    }
    Ok(())
}

fn unicast(mac: Mac) -> bool {
    mac.0 != [0; 6] && mac.0[0] & 1 == 0
}

/// Leases (by index) that claim an overlapping subnet or a VTEP MAC another lease claims:
/// which of two is genuine cannot be told, so neither is programmed.
fn conflicts(leases: &[Lease], params: &Params) -> BTreeMap<usize, String> {
    let mut claims: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for (i, l) in leases.iter().enumerate() {
        for net in [l.subnet.map(IpNet::V4), l.ipv6_subnet.map(IpNet::V6)]
            .into_iter()
            .flatten()
        {
            claims.entry(net).or_default().push(i);
        }
    }
    let mut out = BTreeMap::new();
    let mut flag = |a: usize, b: usize, what: String| {
        out.entry(a)
            .or_insert_with(|| format!("{what} is also claimed by lease {}", leases[b].label()));
        out.entry(b)
            .or_insert_with(|| format!("{what} is also claimed by lease {}", leases[a].label()));
    };
    for (net, owners) in &claims {
        for pair in owners.windows(2) {
            flag(pair[0], pair[1], format!("subnet {net}"));
        }
        // A shorter prefix holding this one: every supernet is checked, so nesting is found
        // in O(prefix length) lookups per subnet.
        for len in 0..net.prefix_len() {
            let Ok(outer) = IpNet::new(net.network(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(holders) = claims.get(&outer) {
                flag(owners[0], holders[0], format!("subnet {net}"));
            }
        }
    }
    if params.backend == BackendType::Vxlan {
        let mut macs: BTreeMap<(bool, Mac), usize> = BTreeMap::new();
        for (i, l) in leases.iter().enumerate() {
            for v6 in [false, true] {
                if let Ok(Some(d)) = l.vxlan_data(v6)
                    && let Some(first) = macs.insert((v6, d.vtep_mac), i)
                    && first != i
                {
                    flag(first, i, format!("VtepMAC {}", d.vtep_mac));
                }
            }
        }
    }
    out
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    is_v6(a) == is_v6(b) && (a.contains(&b.network()) || b.contains(&a.network()))
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}
