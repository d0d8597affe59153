//! Deleting conntrack entries through ctnetlink, what kube-proxy's conntrack cleanup does for
//! UDP services: a UDP "connection" through a VIP keeps its DNAT target for as long as
//! packets keep coming, so when a service's endpoints change the stale entries must go or the
//! client keeps talking to a backend that is gone.
//!
//! The dump is filtered here rather than in the kernel (ctnetlink's dump filter attributes
//! differ across kernel versions); each match is deleted by its original tuple and zone. An
//! entry that vanished in between is not an error.
//!
//! Every dataplane that lets the kernel's conntrack NAT Service traffic (nftables, iptables,
//! IPVS) reconciles UDP flows the same way, so this is the one chokepoint for it: the real
//! [`Conntrack`] socket, and [`Cleaner`] for the callers (with [`NoConntrack`] where there is
//! no kernel).

use std::net::IpAddr;

use sluice_model::service::{IpFamily, Protocol};
use sluice_netlink::consts::{NFNL_SUBSYS_CTNETLINK, NFPROTO_IPV4, NFPROTO_IPV6};
use sluice_netlink::socket::NETLINK_NETFILTER;
use sluice_netlink::{Attrs, Socket, decode_addr, errno};

pub use sluice_netlink::NetlinkError as ConntrackError;

/// Dumps of the table tried when the kernel says one was interrupted.
const DUMP_ATTEMPTS: usize = 3;

// ctnetlink (`linux/netfilter/nfnetlink_conntrack.h`).
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_ZONE: u16 = 18;
/// `IPS_SEEN_REPLY` in `CTA_STATUS`: a packet came back the reply way.
const IPS_SEEN_REPLY: u32 = 1 << 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;

/// Deletes conntrack entries: the real socket, or a stand-in in tests.
pub trait Cleaner: Send {
    /// Deletes every flow of `family` that `stale` picks, with one dump; how many went.
    fn delete_where(
        &mut self,
        family: IpFamily,
        stale: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError>;
}

impl Cleaner for Conntrack {
    fn delete_where(
        &mut self,
        family: IpFamily,
        stale: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError> {
        Conntrack::delete_where(self, family, stale)
    }
}

/// Forgets every request (tests and tools without a kernel).
#[derive(Debug, Default)]
pub struct NoConntrack;

impl Cleaner for NoConntrack {
    fn delete_where(
        &mut self,
        _: IpFamily,
        _: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError> {
        Ok(0)
    }
}

/// Which entries to delete: all conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFilter {
    /// Address family of the entries.
    pub family: IpFamily,
    /// Transport protocol.
    pub proto: Protocol,
    /// Original destination address (a service IP).
    pub orig_dst: Option<IpAddr>,
    /// Original destination port (a service or node port).
    pub orig_dst_port: Option<u16>,
    /// Reply source address (the endpoint the flow was DNATed to).
    pub reply_src: Option<IpAddr>,
}

impl FlowFilter {
    /// UDP flows originally sent to `ip`.
    pub fn udp_to(ip: IpAddr) -> Self {
        Self {
            family: IpFamily::of(&ip),
            proto: Protocol::Udp,
            orig_dst: Some(ip),
            orig_dst_port: None,
            reply_src: None,
        }
    }

    /// Only flows to `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.orig_dst_port = Some(port);
        self
    }

    /// Only flows answered by `ip` (DNATed to that endpoint).
    pub fn reply_from(mut self, ip: IpAddr) -> Self {
        self.reply_src = Some(ip);
        self
    }

    /// True when `flow` meets every condition.
    pub fn matches(&self, flow: &FlowKey) -> bool {
        flow.proto == self.proto.number()
            && self.orig_dst.is_none_or(|a| flow.orig_dst == Some(a))
            && self
                .orig_dst_port
                .is_none_or(|p| flow.orig_dst_port == Some(p))
            && self.reply_src.is_none_or(|a| flow.reply_src == Some(a))
    }
}

/// A ctnetlink socket in the network namespace it was opened in.
pub struct Conntrack {
    socket: Socket,
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conntrack")
    }
}

/// What a caller sees of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    /// IP protocol number.
    pub proto: u8,
    /// Original destination address.
    pub orig_dst: Option<IpAddr>,
    /// Original destination port.
    pub orig_dst_port: Option<u16>,
    /// Reply source address (the DNAT target, or the original destination if none).
    pub reply_src: Option<IpAddr>,
    /// Something answered (`IPS_SEEN_REPLY`): the flow works, or worked.
    pub seen_reply: bool,
}

/// One entry as read.
struct Flow {
    key: FlowKey,
    /// The raw content of `CTA_TUPLE_ORIG` and `CTA_ZONE`, sent back to delete it.
    orig: Vec<u8>,
    zone: Option<Vec<u8>>,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace (needs CAP_NET_ADMIN).
    pub fn open() -> Result<Self, ConntrackError> {
        Ok(Self {
            socket: Socket::open(NETLINK_NETFILTER)?,
        })
    }

    /// Deletes the entries matching `filter`; returns how many were deleted.
    pub fn delete(&mut self, filter: &FlowFilter) -> Result<usize, ConntrackError> {
        self.delete_where(filter.family, |f| filter.matches(f))
    }

    /// Deletes every entry of `family` that `stale` picks, with one dump of the table (the
    /// caller decides over all the flows at once, as kube-proxy's reconciler does); returns
    /// how many were deleted.
    pub fn delete_where(
        &mut self,
        family: IpFamily,
        stale: impl Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError> {
        let pf = match family {
            IpFamily::V4 => NFPROTO_IPV4,
            IpFamily::V6 => NFPROTO_IPV6,
        };
        let mut doomed = Vec::new();
        // A dump the kernel marks interrupted (the table changed under it) may have missed
        // flows: dump again, a bounded number of times, then go on with the last one.
        for _ in 0..DUMP_ATTEMPTS {
            doomed.clear();
            let complete = self.socket.request(
                "list conntrack",
                ct_type(IPCTNL_MSG_CT_GET),
                pf,
                true,
                |_| {},
                |m| {
                    if let Some(flow) = decode(&m.attrs())
                        && stale(&flow.key)
                    {
                        doomed.push(flow);
                    }
                    Ok::<(), ConntrackError>(())
                },
            )?;
            if complete {
                break;
            }
        }
        let mut deleted = 0;
        for flow in doomed {
            let res = self.socket.request(
                "delete conntrack entry",
                ct_type(IPCTNL_MSG_CT_DELETE),
                pf,
                false,
                |w| {
                    w.nest(CTA_TUPLE_ORIG, |w| w.raw(&flow.orig));
                    if let Some(z) = &flow.zone {
                        w.bytes(CTA_ZONE, z);
                    }
                },
                |_| Ok::<(), ConntrackError>(()),
            );
            match res {
                Ok(_) => deleted += 1,
                Err(e) if e.errno() == Some(errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

fn ct_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(msg)
}

fn decode(a: &Attrs<'_>) -> Option<Flow> {
    let orig_raw = a.get(CTA_TUPLE_ORIG)?;
    let orig = Attrs::new(orig_raw);
    let ip = orig.nested(CTA_TUPLE_IP)?;
    let proto = orig.nested(CTA_TUPLE_PROTO)?;
    let reply_ip = a
        .nested(CTA_TUPLE_REPLY)
        .and_then(|r| r.nested(CTA_TUPLE_IP));
    let key = FlowKey {
        proto: *proto.get(CTA_PROTO_NUM)?.first()?,
        orig_dst: ip
            .get(CTA_IP_V4_DST)
            .or_else(|| ip.get(CTA_IP_V6_DST))
            .and_then(decode_addr),
        orig_dst_port: proto
            .get(CTA_PROTO_DST_PORT)
            .and_then(|p| Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))),
        reply_src: reply_ip.and_then(|r| {
            r.get(CTA_IP_V4_SRC)
                .or_else(|| r.get(CTA_IP_V6_SRC))
                .and_then(decode_addr)
        }),
        seen_reply: (a.get(CTA_STATUS))
            .and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
            .is_some_and(|st| st & IPS_SEEN_REPLY != 0),
    };
    Some(Flow {
        key,
        orig: orig_raw.to_vec(),
        zone: a.get(CTA_ZONE).map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(proto: u8, dst: &str, port: u16, reply: &str) -> FlowKey {
        FlowKey {
            proto,
            orig_dst: Some(dst.parse().unwrap()),
            orig_dst_port: Some(port),
            reply_src: Some(reply.parse().unwrap()),
            seen_reply: true,
        }
    }

    #[test]
    fn filters_match_protocol_destination_port_and_endpoint() {
        let vip: IpAddr = "10.96.0.10".parse().unwrap();
        let f = FlowFilter::udp_to(vip);
        assert!(f.matches(&flow(17, "10.96.0.10", 53, "10.244.1.2")));
        assert!(!f.matches(&flow(6, "10.96.0.10", 53, "10.244.1.2")));
        assert!(!f.matches(&flow(17, "10.96.0.11", 53, "10.244.1.2")));
        let f = f.port(53).reply_from("10.244.1.2".parse().unwrap());
        assert!(f.matches(&flow(17, "10.96.0.10", 53, "10.244.1.2")));
        assert!(!f.matches(&flow(17, "10.96.0.10", 54, "10.244.1.2")));
        assert!(!f.matches(&flow(17, "10.96.0.10", 53, "10.244.1.3")));
    }
}
