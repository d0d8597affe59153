//! The IPVS mode's packet tracer over what it renders (virtual servers, set members) and the
//! fixed rules around them: which virtual server takes a packet, which real servers it may
//! go to, and whether the iptables rules masquerade it — the rules read through the sets
//! they match, exactly as `rules::render` writes them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use sluice_model::service::Protocol;
use sluice_proxy_core::explain::{Origin, Outcome, Packet, Tracer as TraceRules};

use crate::render::{IpvsConfig, PortRender};
use crate::sets;
use crate::types::VsKey;

/// Traces packets through one family's rendering.
#[derive(Debug)]
pub struct Tracer<'a> {
    all: &'a PortRender,
    cfg: &'a IpvsConfig,
}

impl<'a> Tracer<'a> {
    /// A tracer over `all` (a [`crate::render::union`]) rendered with `cfg`.
    pub fn new(all: &'a PortRender, cfg: &'a IpvsConfig) -> Self {
        Self { all, cfg }
    }

    fn member(&self, set: &str, entry: &str) -> bool {
        self.all.sets.get(set).is_some_and(|s| s.contains(entry))
    }

    /// `KUBE-SOURCE-RANGES-FIREWALL`: a load-balancer IP with source ranges lets through
    /// only the sources they list (and the LB IP itself when a node IP is inside them).
    fn firewalled(&self, ipport: &str, src: IpAddr) -> bool {
        if !self.member(sets::LOAD_BALANCER_FW, ipport) {
            return false;
        }
        let prefix = format!("{ipport},");
        let allowed_cidr = (self
            .all
            .sets
            .get(sets::LOAD_BALANCER_SOURCE_CIDR)
            .into_iter())
        .flatten()
        .filter_map(|e| e.strip_prefix(&prefix))
        .filter_map(|net| {
            // `ipset save` prints a host-length net as a bare address.
            (net.parse::<ipnet::IpNet>().ok())
                .or_else(|| net.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .any(|net| net.contains(&src));
        let allowed_ip = self.member(sets::LOAD_BALANCER_SOURCE_IP, &format!("{ipport},{src}"));
        !(allowed_cidr || allowed_ip)
    }

    /// Whether the nat rules mark the connection for masquerading (before hairpin).
    fn masquerade(&self, ipport: &str, dst: SocketAddr, src: IpAddr, proto: Protocol) -> bool {
        if self.member(sets::CLUSTER_IP, ipport) {
            return self.cfg.masquerade_all
                || (!self.cfg.cluster_cidrs.is_empty()
                    && !self.cfg.cluster_cidrs.iter().any(|n| n.contains(&src)));
        }
        if self.member(sets::EXTERNAL_IP, ipport) {
            return true;
        }
        if self.member(sets::LOAD_BALANCER, ipport) {
            return !self.member(sets::LOAD_BALANCER_LOCAL, ipport);
        }
        // KUBE-NODE-PORT: a local destination on a node port.
        let port = dst.port().to_string();
        let (set, local) = match proto {
            Protocol::Tcp => (sets::NODE_PORT_TCP, sets::NODE_PORT_LOCAL_TCP),
            Protocol::Udp => (sets::NODE_PORT_UDP, sets::NODE_PORT_LOCAL_UDP),
            Protocol::Sctp => {
                return self.member(sets::NODE_PORT_SCTP, ipport)
                    && !self.member(sets::NODE_PORT_LOCAL_SCTP, ipport);
            }
        };
        self.member(set, &port) && !self.member(local, &port)
    }
}

impl TraceRules for Tracer<'_> {
    fn trace(&self, packet: &Packet, origin: Origin) -> Outcome {
        let (dst, src, proto) = (packet.dst, packet.src, packet.protocol);
        let key = VsKey {
            addr: dst.ip(),
            protocol: u16::from(proto.number()),
            port: dst.port(),
        };
        let ipport = format!("{},{}:{}", dst.ip(), proto.as_lower_str(), dst.port());
        let Some((_, real)) = self.all.servers.get(&key) else {
            // KUBE-IPVS-FILTER: new connections to a kube-ipvs0 address no virtual server
            // serves are rejected; anything else is not ours.
            return match self.all.vips.contains(&dst.ip()) {
                true => Outcome::Reject,
                false => Outcome::Untouched,
            };
        };
        // The source-range firewall is on INPUT only: the node's own connections are
        // scheduled by IPVS in LOCAL_OUT and never meet it.
        if origin == Origin::Remote && self.firewalled(&ipport, src) {
            return Outcome::Drop;
        }
        if real.is_empty() {
            // IPVS answers ICMP port unreachable when it cannot schedule (ip_vs_leave).
            return Outcome::Reject;
        }
        let masq = self.masquerade(&ipport, dst, src, proto);
        let endpoints: BTreeMap<SocketAddr, bool> = (real.iter())
            .map(|r| {
                let hairpin = r.addr == src
                    && self.member(
                        sets::LOOP_BACK,
                        &format!("{},{}:{},{}", r.addr, proto.as_lower_str(), r.port, r.addr),
                    );
                (SocketAddr::new(r.addr, r.port), masq || hairpin)
            })
            .collect();
        Outcome::Dnat { endpoints }
    }
}
