//! kube-proxy's UDP conntrack reconciliation (`pkg/proxy/conntrack/cleanup.go`), shared by
//! every dataplane whose NAT lives in the kernel's conntrack (nftables, iptables, IPVS).
//!
//! Why: a UDP "connection" through a Service address keeps its DNAT target for as long as
//! packets keep coming, so when an endpoint stops serving, its flows must be deleted or the
//! client keeps talking to a backend that is gone. The rule is kube-proxy's: a flow sent to a
//! Service address (or node port) of a port the sync looked at is stale when its reply does
//! not come from an endpoint of that port that is still serving — DNATed to a gone endpoint,
//! or never DNATed because it arrived while there was none. Traffic policy and topology are
//! deliberately ignored: a policy change must not cut a live flow. A restart's first (full)
//! sync looks at every port and breaks none of the flows to current endpoints.
//!
//! Sluice also deletes the flows of destinations a sync took away (a removed port, external
//! IP or node port), which kube-proxy leaves to time out.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use sluice_conntrack::{Cleaner, ConntrackError, FlowKey};
use sluice_model::service::{Protocol, ServicePort};

use crate::{Changes, Snapshot};

#[cfg(test)]
mod tests;

/// A UDP destination of a Service port: a service address and port, or (`None`) a node port.
type UdpDest = (Option<IpAddr>, u16);

/// The UDP destinations a sync looked at, each with the endpoint addresses allowed to answer.
#[derive(Debug, Default)]
struct UdpScope {
    vips: HashMap<(IpAddr, u16), BTreeSet<IpAddr>>,
    node_ports: HashMap<u16, BTreeSet<IpAddr>>,
}

impl UdpScope {
    /// The scope of one sync: the ports it (re)programmed — all of them when full — and
    /// every UDP destination it took away.
    fn of(snap: &Snapshot, changes: &Changes) -> Self {
        let mut scope = Self::default();
        let none = BTreeSet::new();
        let current: Vec<&ServicePort> = match changes.full {
            true => snap.service_ports().collect(),
            false => (changes.ports.iter())
                .filter_map(|n| snap.service_port(n))
                .collect(),
        };
        for old in changes.replaced.iter().filter(|p| is_udp(p)) {
            let now = snap.service_port(&old.name).map(destinations);
            for dest in destinations(old) {
                if now.as_ref().is_none_or(|n| !n.contains(&dest)) {
                    scope.add(dest, &none);
                }
            }
        }
        for port in current.into_iter().filter(|p| is_udp(p)) {
            let allowed: BTreeSet<IpAddr> = (snap.endpoints(&port.name).iter())
                .filter(|e| e.serving || e.is_ready(port.publish_not_ready_addresses))
                .map(|e| e.ip)
                .collect();
            for dest in destinations(port) {
                scope.add(dest, &allowed);
            }
        }
        scope
    }

    fn add(&mut self, (addr, port): UdpDest, allowed: &BTreeSet<IpAddr>) {
        let set = match addr {
            Some(ip) => self.vips.entry((ip, port)).or_default(),
            None => self.node_ports.entry(port).or_default(),
        };
        set.extend(allowed);
    }

    fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.node_ports.is_empty()
    }

    fn stale(&self, f: &FlowKey) -> bool {
        let udp = Protocol::Udp.number();
        let Some(port) = f.orig_dst_port.filter(|_| f.proto == udp) else {
            return false;
        };
        let allowed = (f.orig_dst)
            .and_then(|d| self.vips.get(&(d, port)))
            .or_else(|| self.node_ports.get(&port));
        allowed.is_some_and(|a| f.reply_src.is_none_or(|r| !a.contains(&r)))
    }
}

fn is_udp(port: &ServicePort) -> bool {
    port.name.protocol == Protocol::Udp
}

/// Every address and port a Service port's traffic arrives at.
fn destinations(port: &ServicePort) -> Vec<UdpDest> {
    let vips = (port.cluster_ips.iter())
        .chain(&port.external_ips)
        .chain(&port.load_balancer_vips);
    vips.map(|ip| (Some(*ip), port.port))
        .chain(port.node_port.map(|np| (None, np)))
        .collect()
}

/// Deletes the stale UDP flows of the ports a successful sync of `snap` looked at, with one
/// conntrack dump (none when no UDP port was involved); how many went.
pub fn reconcile_udp(
    cleaner: &mut dyn Cleaner,
    snap: &Snapshot,
    changes: &Changes,
) -> Result<usize, ConntrackError> {
    let scope = UdpScope::of(snap, changes);
    if scope.is_empty() {
        return Ok(0);
    }
    cleaner.delete_where(snap.family(), &|f| scope.stale(f))
}
