//! A packet tracer over decoded map contents: what the programs do with the first packet of a
//! connection, given what the service, slot and source-range maps hold — rendered (runner 2
//! of the conformance suite, no kernel) or read back from the pinned maps
//! ([`crate::kernel::read_pinned`], `sluice-proxy explain` on the node).
//!
//! It follows the programs' own path, step for step (`ebpf/programs/src/sock.rs`, `tc.rs`):
//! - pods of this node and the node itself meet the socket layer first (scope `SOCKET`): a
//!   Service entry forwards (no rewrite of the source), rejects, or leaves the connect alone;
//!   a source-ranged entry is left alone unless the socket is the node's and the entry
//!   admits the node (`NODE_ALLOWED`);
//! - what the socket layer leaves alone then meets the tc path: a pod's packet the ingress
//!   program on its bridge port (scope `EXTERNAL`, the pod's address as source: ranges,
//!   verdicts, SNAT), the node's packet the egress program (which only drops what the node
//!   must not reach);
//! - everything else (other nodes, outside clients) meets the ingress program.
//!
//! IPv6 packets follow the same path over the IPv6 maps (`sock6.rs`, `tc6.rs`).
//!
//! Holding it against the model (`explain`) is how the conformance suite and `explain` know
//! the maps mean what the model says.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use sluice_ebpf_common::{ServiceValue, SlotKey, scope, service_flags};
use sluice_proxy_core::explain::{Origin, Outcome, Packet};

use crate::render::MapSet;

/// The tracer over one set of decoded maps.
pub struct Tracer<'a> {
    maps: &'a MapSet,
    service_cidrs: &'a [IpNet],
    pod_sources: &'a [IpNet],
}

/// What one program's translation decided (the programs' `Outcome`).
enum Step {
    Pass,
    Forward(ServiceValue),
    Reject,
    Drop,
}

impl<'a> Tracer<'a> {
    /// Traces over `maps`; `service_cidrs` are the trie's prefixes (unallocated addresses in
    /// them are dropped), `pod_sources` this node's pod CIDRs (those sources are this node's
    /// pods, whose sockets the socket layer sees).
    pub fn new(maps: &'a MapSet, service_cidrs: &'a [IpNet], pod_sources: &'a [IpNet]) -> Self {
        Self {
            maps,
            service_cidrs,
            pod_sources,
        }
    }

    fn lookup(&self, dst: SocketAddr, proto: u8, scope: u8) -> Option<ServiceValue> {
        self.maps.service(dst, proto, scope)
    }

    /// Whether `src` is in entry `id`'s source ranges (the ids are per family: only
    /// prefixes of `src`'s family count).
    fn source_allowed(&self, id: u32, src: IpAddr) -> bool {
        (self.maps.ranges.iter()).any(|(i, net)| *i == id && net.contains(&src))
    }

    /// `translate` of the programs, for one scope; `node` says the socket is the node's.
    fn translate(&self, dst: SocketAddr, proto: u8, scope: u8, src: IpAddr, node: bool) -> Step {
        let Some(svc) = self.lookup(dst, proto, scope) else {
            return Step::Pass;
        };
        if svc.flags & service_flags::SOURCE_RANGES != 0 {
            let node_allowed = node && svc.flags & service_flags::NODE_ALLOWED != 0;
            if scope == scope::SOCKET && !node_allowed {
                return Step::Pass;
            }
            if scope == scope::EXTERNAL && !self.source_allowed(svc.service_id, src) {
                return Step::Drop;
            }
        }
        if svc.flags & service_flags::REJECT != 0 {
            return Step::Reject;
        }
        if svc.backend_count == 0 {
            return Step::Drop;
        }
        Step::Forward(svc)
    }

    /// Every backend some pick leads to; none when a slot is missing (the programs then leave
    /// the packet alone, counting `no_slot`).
    fn backends(&self, svc: &ServiceValue, v6: bool) -> Option<Vec<SocketAddr>> {
        (1..=u32::from(svc.backend_count))
            .map(|slot| {
                let key = SlotKey {
                    service_id: svc.service_id,
                    slot,
                };
                self.maps.backend(v6, &key)
            })
            .collect()
    }

    fn dnat(&self, svc: &ServiceValue, v6: bool, masquerade: bool) -> Outcome {
        match self.backends(svc, v6) {
            Some(eps) => Outcome::Dnat {
                endpoints: eps.into_iter().map(|e| (e, masquerade)).collect(),
            },
            None => Outcome::Untouched,
        }
    }

    /// tc `dropped()`: an unallocated address of the service CIDRs, or (egress) an entry the
    /// packet may not pass.
    fn tc_dropped(&self, dst: SocketAddr, proto: u8, src: IpAddr) -> bool {
        match self.lookup(dst, proto, scope::EXTERNAL) {
            Some(svc) => {
                (svc.flags & service_flags::REJECT == 0 && svc.backend_count == 0)
                    || (svc.flags & service_flags::SOURCE_RANGES != 0
                        && !self.source_allowed(svc.service_id, src))
            }
            None => {
                let wildcard = SocketAddr::new(dst.ip(), 0);
                self.lookup(wildcard, 0, scope::SOCKET).is_none()
                    && self.service_cidrs.iter().any(|n| n.contains(&dst.ip()))
            }
        }
    }

    /// The tc ingress program on a packet from `src` (either family).
    fn ingress(&self, dst: SocketAddr, proto: u8, src: IpAddr) -> Outcome {
        match self.translate(dst, proto, scope::EXTERNAL, src, false) {
            Step::Pass if self.tc_dropped(dst, proto, src) => Outcome::Drop,
            Step::Pass => Outcome::Untouched,
            Step::Reject => Outcome::Reject,
            Step::Drop => Outcome::Drop,
            Step::Forward(svc) => {
                self.dnat(&svc, dst.is_ipv6(), svc.flags & service_flags::SNAT != 0)
            }
        }
    }
}

impl sluice_proxy_core::explain::Tracer for Tracer<'_> {
    fn trace(&self, packet: &Packet, origin: Origin) -> Outcome {
        let (src, dst) = (packet.src, packet.dst);
        if src.is_ipv6() != dst.is_ipv6() {
            return Outcome::Untouched;
        }
        let v6 = dst.is_ipv6();
        let proto = packet.protocol.number();
        let node = origin == Origin::Local;
        let pod = !node && self.pod_sources.iter().any(|n| n.contains(&packet.src));
        if !node && !pod {
            return self.ingress(dst, proto, src);
        }
        match self.translate(dst, proto, scope::SOCKET, src, node) {
            // The connection's source is the node's own address, or the pod's (kept).
            Step::Forward(svc) => self.dnat(&svc, v6, node),
            Step::Reject => Outcome::Reject,
            // Left alone: the pod's packet meets the ingress program on its bridge port.
            Step::Pass | Step::Drop if pod => self.ingress(dst, proto, src),
            // The node's: the egress program drops what the node must not reach.
            Step::Pass | Step::Drop => match self.tc_dropped(dst, proto, src) {
                true => Outcome::Drop,
                false => Outcome::Untouched,
            },
        }
    }
}
