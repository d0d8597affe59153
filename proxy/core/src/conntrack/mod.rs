//! kube-proxy's UDP conntrack reconciliation (`pkg/proxy/conntrack/cleanup.go`), shared by
//! every dataplane whose NAT lives in the kernel's conntrack (nftables, iptables), and one
//! TCP/SCTP case kube-proxy leaves alone.
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
//! TCP and SCTP have the same trap before their first answer: a SYN that arrived while a
//! port had no rule (a new Service not yet programmed, rules flushed by someone and not yet
//! repaired) leaves a flow that was never DNATed, and the kernel keeps it for two minutes.
//! Every retransmission of that SYN — and every later connection that happens to reuse the
//! source port, which a busy client does within seconds — matches the flow, skips NAT and is
//! lost. So a TCP or SCTP flow to a port the sync looked at that has *never been answered*
//! and is not DNATed to a serving endpoint is deleted too; its next SYN takes the rules.
//! Flows that were answered are never touched (kube-proxy's behaviour for TCP).
//!
//! Sluice also deletes the flows of destinations a sync took away (a removed port, external
//! IP or node port), which kube-proxy leaves to time out (UDP; unanswered TCP and SCTP).

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use sluice_conntrack::{Cleaner, ConntrackError, FlowKey};
use sluice_model::service::{Protocol, ServicePort};

use crate::{Changes, Snapshot};

#[cfg(test)]
mod tests;

/// A destination of a Service port: protocol number, and a service address and port or
/// (`None`) a node port.
type Dest = (u8, Option<IpAddr>, u16);

/// The destinations a sync looked at, each with the endpoint addresses allowed to answer.
#[derive(Debug, Default)]
struct Scope {
    dests: HashMap<Dest, BTreeSet<IpAddr>>,
}

impl Scope {
    /// The scope of one sync: the ports it (re)programmed — all of them when full — and
    /// every destination it took away.
    fn of(snap: &Snapshot, changes: &Changes) -> Self {
        let mut scope = Self::default();
        let none = BTreeSet::new();
        let current: Vec<&ServicePort> = match changes.full {
            true => snap.service_ports().collect(),
            false => (changes.ports.iter())
                .filter_map(|n| snap.service_port(n))
                .collect(),
        };
        for old in changes.replaced.iter() {
            let now = snap.service_port(&old.name).map(destinations);
            for dest in destinations(old) {
                if now.as_ref().is_none_or(|n| !n.contains(&dest)) {
                    scope.add(dest, &none);
                }
            }
        }
        for port in current {
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

    fn add(&mut self, dest: Dest, allowed: &BTreeSet<IpAddr>) {
        self.dests.entry(dest).or_default().extend(allowed);
    }

    fn stale(&self, f: &FlowKey) -> bool {
        let (true, Some(port)) = (judged(f), f.orig_dst_port) else {
            return false;
        };
        let allowed = (f.orig_dst)
            .and_then(|d| self.dests.get(&(f.proto, Some(d), port)))
            .or_else(|| self.dests.get(&(f.proto, None, port)));
        allowed.is_some_and(|a| f.reply_src.is_none_or(|r| !a.contains(&r)))
    }
}

/// Every address and port a Service port's traffic arrives at.
fn destinations(port: &ServicePort) -> Vec<Dest> {
    let proto = port.name.protocol.number();
    let vips = (port.cluster_ips.iter())
        .chain(&port.external_ips)
        .chain(&port.load_balancer_vips);
    vips.map(|ip| (proto, Some(*ip), port.port))
        .chain(port.node_port.map(|np| (proto, None, np)))
        .collect()
}

/// Deletes the stale flows of the ports a successful sync of `snap` looked at, with one
/// conntrack dump (none when the sync looked at no port); how many went.
pub fn reconcile_flows(
    cleaner: &mut dyn Cleaner,
    snap: &Snapshot,
    changes: &Changes,
) -> Result<usize, ConntrackError> {
    if !looks_at_any(snap, changes) {
        return Ok(0);
    }
    // The scope of a full sync covers every Service port; it is built only when the dump
    // holds a flow it could judge (a node's first sync, like a quiet node's, has none).
    let scope = OnceCell::new();
    cleaner.delete_where(snap.family(), &|f| {
        judged(f) && scope.get_or_init(|| Scope::of(snap, changes)).stale(f)
    })
}

/// Whether a sync looked at a destination whose flows may be stale (else nothing is
/// dumped: a dump walks the whole conntrack hash table, ~9 ms with this kernel's 262,144
/// buckets however few flows the namespace has). A partial sync's TCP and SCTP ports count
/// only when [`Changes::at_risk`]: an endpoint added to a port with rules strands no flow.
fn looks_at_any(snap: &Snapshot, changes: &Changes) -> bool {
    let has = |p: &ServicePort| !destinations(p).is_empty();
    let may_strand =
        |p: &ServicePort| p.name.protocol == Protocol::Udp || changes.at_risk.contains(&p.name);
    !changes.replaced.is_empty()
        || match changes.full {
            true => snap.service_ports().any(has),
            false => (changes.ports.iter())
                .filter_map(|n| snap.service_port(n))
                .any(|p| has(p) && may_strand(p)),
        }
}

/// Whether a flow is of a kind the scope judges: to a port, and UDP whether answered or not,
/// TCP and SCTP only until answered.
fn judged(f: &FlowKey) -> bool {
    f.orig_dst_port.is_some() && (f.proto == Protocol::Udp.number() || !f.seen_reply)
}
