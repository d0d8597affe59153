//! The IPv6 tc path: `tc.rs`'s ingress and egress over the IPv6 maps, called by the same
//! classifiers when the EtherType is IPv6 (one program per hook keeps the attach points as
//! they are; the two families' paths are disjoint branches, so the verifier's work adds up,
//! it does not multiply).
//!
//! - Parsing: Ethernet + a fixed IPv6 header whose next header is TCP, UDP or SCTP. Anything
//!   else — extension headers (hop-by-hop, routing, destination options), fragments (the
//!   fragment header is an extension header), ICMPv6 — passes untouched: finding the ports
//!   behind a chain of extension headers is a loop the verifier would have to walk for every
//!   path, and kube-proxy's clients do not send them on service traffic.
//! - Rewrites: IPv6 has no header checksum; the L4 checksum covers the addresses through the
//!   pseudo-header, so a 16-byte address change is `bpf_csum_diff` of old and new, applied by
//!   `l4_csum_replace` with `BPF_F_PSEUDO_HDR` (pseudo-header aware also for packets whose
//!   checksum the device completes). UDP uses `BPF_F_MARK_MANGLED_0`: a result of zero is
//!   written as 0xffff (UDP over IPv6 must never carry a zero checksum). SCTP's CRC32c has no
//!   pseudo-header; a port change patches it as for IPv4 (`tc::patch_sctp_crc`).
//! - REJECT: TCP gets a reset, UDP and SCTP an ICMPv6 destination unreachable, port
//!   unreachable (type 1, code 4) quoting the IPv6 header and the first 8 bytes of L4
//!   header, its checksum over the IPv6 pseudo-header.
//! - Affinity: the IPv6 affinity map is keyed by a 64-bit client id; a source address is
//!   folded into it (words 0^2 and 1^3, top bit set so it never equals a netns cookie):
//!   unique within a /64, and a collision between prefixes only makes two clients share one
//!   sticky backend.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_csum_diff, bpf_get_prandom_u32, bpf_redirect, bpf_skb_change_tail},
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use sluice_ebpf_common::{
    NatValue6, ServiceKey6, SrcRange6, Tuple6, proto, scope, service_flags, stats,
};

use crate::sock::count;
use crate::sock6::{lookup6, pick6};
use crate::tc::{BPF_NOEXIST, ETH_HLEN, fold, patch_sctp_crc, sum_words};

// LRU maps are always preallocated: IPv6's are a quarter of IPv4's 262144 (their entries are
// bigger, and IPv6 is the smaller family in most clusters).
#[map(name = "SLUICE_CT6")]
static CT6: LruHashMap<Tuple6, NatValue6> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_NATREV6")]
static NAT_REV6: LruHashMap<Tuple6, NatValue6> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_SNAT6")]
static SNAT6: LruHashMap<Tuple6, NatValue6> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_SNATREV6")]
static SNAT_REV6: LruHashMap<Tuple6, NatValue6> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_IFADDR6")]
static IFADDR6: HashMap<u32, [u32; 4]> = HashMap::pinned(1024, 0);
#[map(name = "SLUICE_SVCCIDR6")]
static SERVICE_CIDRS6: LpmTrie<[u32; 4], u8> = LpmTrie::pinned(64, 0);
#[map(name = "SLUICE_SRCRNG6")]
static SOURCE_RANGES6: LpmTrie<SrcRange6, u8> = LpmTrie::pinned(16384, 0);

const IP6_HLEN: usize = 40;
const IP6_SRC: usize = ETH_HLEN + 8;
const IP6_DST: usize = ETH_HLEN + 24;
const NEXTHDR_ICMP6: u8 = 58;

/// Where an IPv6 packet's fields are.
struct Pkt6 {
    tuple: Tuple6,
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum.
    csum: usize,
    /// The IPv6 payload length (the L4 segment's: no extension headers).
    len: u16,
}

#[inline(always)]
fn parse6(ctx: &TcContext) -> Option<Pkt6> {
    let version: u8 = ctx.load(ETH_HLEN).ok()?;
    if version >> 4 != 6 {
        return None;
    }
    let len: u16 = ctx.load(ETH_HLEN + 4).ok()?;
    let next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
    let csum_at = match next {
        proto::TCP => 16,
        proto::UDP => 6,
        proto::SCTP => 8,
        _ => return None, // extension headers, fragments, ICMPv6: untouched
    };
    let l4 = ETH_HLEN + IP6_HLEN;
    Some(Pkt6 {
        tuple: Tuple6 {
            saddr: ctx.load(IP6_SRC).ok()?,
            daddr: ctx.load(IP6_DST).ok()?,
            sport: ctx.load(l4).ok()?,
            dport: ctx.load(l4 + 2).ok()?,
            proto: next,
            pad: [0; 3],
        },
        l4,
        csum: l4 + csum_at,
        len: u16::from_be(len),
    })
}

/// Rewrites the source (`src`) or destination address and port of an IPv6 packet (its own
/// BPF function, as are the other big steps: one stack frame each); 0 or the helper's error.
#[inline(never)]
fn rewrite6(skb: *mut __sk_buff, pkt: &Pkt6, src: bool, addr: &[u32; 4], port: u16) -> i64 {
    let ctx = &TcContext::new(skb);
    match rewrite6_in(ctx, pkt, src, *addr, port) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[inline(always)]
fn rewrite6_in(
    ctx: &TcContext,
    pkt: &Pkt6,
    src: bool,
    addr: [u32; 4],
    port: u16,
) -> Result<(), i64> {
    let (ip_at, port_at, old_addr, old_port) = match src {
        true => (IP6_SRC, pkt.l4, pkt.tuple.saddr, pkt.tuple.sport),
        false => (IP6_DST, pkt.l4 + 2, pkt.tuple.daddr, pkt.tuple.dport),
    };
    let flags = match pkt.tuple.proto {
        proto::UDP => u64::from(BPF_F_MARK_MANGLED_0),
        _ => 0,
    };
    let sctp = pkt.tuple.proto == proto::SCTP;
    if old_addr != addr {
        // SCTP's checksum has no pseudo-header: the address is not in it.
        if !sctp {
            let mut from = old_addr;
            let mut to = addr;
            // SAFETY: two 16-byte stack buffers, sizes as given.
            let diff = unsafe { bpf_csum_diff(from.as_mut_ptr(), 16, to.as_mut_ptr(), 16, 0) };
            if diff < 0 {
                return Err(diff);
            }
            ctx.l4_csum_replace(
                pkt.csum,
                0,
                u64::from(diff as u32),
                flags | u64::from(BPF_F_PSEUDO_HDR),
            )?;
        }
        ctx.store(ip_at, &addr, 0)?;
    }
    if old_port != port {
        match sctp {
            true => patch_sctp_crc(ctx, pkt.csum, u32::from(pkt.len), src, old_port ^ port)?,
            false => {
                ctx.l4_csum_replace(pkt.csum, u64::from(old_port), u64::from(port), flags | 2)?
            }
        }
        ctx.store(port_at, &port, 0)?;
    }
    Ok(())
}

/// The client id an IPv6 source stands for in the affinity map (see the module docs).
#[inline(always)]
fn client_id(a: &[u32; 4]) -> u64 {
    (1u64 << 63) | (u64::from(a[0] ^ a[2]) << 32) | u64::from(a[1] ^ a[3])
}

/// Whether `src` is inside the IPv6 `loadBalancerSourceRanges` of entry `service_id`.
#[inline(always)]
fn source_allowed6(service_id: u32, src: [u32; 4]) -> bool {
    let key = Key::new(
        160,
        SrcRange6 {
            service_id_be: service_id.to_be(),
            addr: src,
        },
    );
    SOURCE_RANGES6.get(&key).is_some()
}

#[inline(always)]
fn external_key(t: &Tuple6) -> ServiceKey6 {
    ServiceKey6 {
        addr: t.daddr,
        port: t.dport,
        proto: t.proto,
        scope: scope::EXTERNAL,
    }
}

/// Whether a packet to `t` is dropped here (`tc.rs`'s `dropped` over the IPv6 maps).
#[inline(never)]
fn dropped6(t: &Tuple6) -> bool {
    match lookup6(external_key(t)) {
        Some((_, svc)) => {
            (svc.flags & service_flags::REJECT == 0 && svc.backend_count == 0)
                || (svc.flags & service_flags::SOURCE_RANGES != 0
                    && !source_allowed6(svc.service_id, t.saddr))
        }
        None => {
            let node = ServiceKey6 {
                addr: t.daddr,
                port: 0,
                proto: 0,
                scope: scope::SOCKET,
            };
            lookup6(node).is_none() && SERVICE_CIDRS6.get(&Key::new(128, t.daddr)).is_some()
        }
    }
}

/// What the IPv6 external-scope translation decided (`FORWARD`: to the backend it wrote).
const PASS: u8 = 0;
const FORWARD: u8 = 1;
const REJECT: u8 = 2;
const DROP: u8 = 3;

/// `sock::translate` for the tc path over the IPv6 maps (scope `EXTERNAL`, the source known):
/// a verdict, and for `FORWARD` the backend and the entry's flags in `out`.
#[inline(never)]
fn translate6(t: &Tuple6, out: &mut NatValue6) -> u8 {
    let Some((_, svc)) = lookup6(external_key(t)) else {
        return PASS;
    };
    if svc.flags & service_flags::SOURCE_RANGES != 0 && !source_allowed6(svc.service_id, t.saddr) {
        count(stats::DROPPED);
        return DROP;
    }
    if svc.flags & service_flags::REJECT != 0 {
        return REJECT;
    }
    if svc.backend_count == 0 {
        count(stats::DROPPED);
        return DROP;
    }
    // SAFETY: a plain helper.
    let random = unsafe { bpf_get_prandom_u32() };
    match pick6(&svc, client_id(&t.saddr), random) {
        Some(backend) => {
            count(stats::TRANSLATED);
            *out = NatValue6 {
                addr: backend.addr,
                port: backend.port,
                flags: svc.flags,
            };
            FORWARD
        }
        None => {
            count(stats::NO_SLOT);
            PASS
        }
    }
}

/// [`ingress6`]'s answer "REJECT with a TCP reset": the classifier calls [`reset6`] itself,
/// so the stack frames of the answer and of `ingress6` are not stacked (the verifier's
/// 512-byte limit is for a whole call chain).
pub(crate) const ANSWER_RESET: i32 = -100;
/// [`ingress6`]'s answer "REJECT with an ICMPv6 port unreachable" ([`port_unreachable6`]).
pub(crate) const ANSWER_UNREACHABLE: i32 = -101;

/// The tc ingress program for an IPv6 packet: a tc verdict, or one of the `ANSWER_*` codes.
#[inline(never)]
pub(crate) fn ingress6(skb: *mut __sk_buff) -> i32 {
    let ctx = &TcContext::new(skb);
    let Some(pkt) = parse6(ctx) else {
        return TC_ACT_OK as i32;
    };
    let t = pkt.tuple;
    // A reply to a flow this path SNATed: back to the client.
    // SAFETY: copied out at once.
    if let Some(client) = unsafe { SNAT_REV6.get(&t) }.copied() {
        rewrite6(skb, &pkt, false, &client.addr, client.port);
        return TC_ACT_OK as i32;
    }
    // A known flow: its backend.
    // SAFETY: copied out at once.
    if let Some(be) = unsafe { CT6.get(&t) }.copied() {
        rewrite6(skb, &pkt, false, &be.addr, be.port);
        return TC_ACT_OK as i32;
    }
    let mut chosen = NatValue6 {
        addr: [0; 4],
        port: 0,
        flags: 0,
    };
    match translate6(&t, &mut chosen) {
        PASS if dropped6(&t) => {
            count(stats::TC_DROPPED);
            TC_ACT_SHOT as i32
        }
        PASS => TC_ACT_OK as i32,
        REJECT => {
            count(stats::REJECTED);
            match t.proto {
                proto::TCP => ANSWER_RESET,
                _ => ANSWER_UNREACHABLE,
            }
        }
        FORWARD => {
            let flow = NatValue6 {
                flags: chosen.flags & service_flags::SNAT,
                ..chosen
            };
            let _ = CT6.insert(&t, &flow, 0);
            // The reply as it leaves towards the client: backend → client.
            let back = Tuple6 {
                saddr: flow.addr,
                daddr: t.saddr,
                sport: flow.port,
                dport: t.sport,
                proto: t.proto,
                pad: [0; 3],
            };
            let vip = NatValue6 {
                addr: t.daddr,
                port: t.dport,
                flags: flow.flags,
            };
            let _ = NAT_REV6.insert(&back, &vip, 0);
            count(stats::TC_NEW_FLOW);
            rewrite6(skb, &pkt, false, &flow.addr, flow.port);
            TC_ACT_OK as i32
        }
        _ => {
            count(stats::TC_DROPPED);
            TC_ACT_SHOT as i32
        }
    }
}

/// Swaps the Ethernet addresses and sends the packet back out of the interface it came in on.
#[inline(always)]
fn bounce(ctx: &TcContext) -> Result<i32, i64> {
    let dst_mac: [u8; 6] = ctx.load(0)?;
    let src_mac: [u8; 6] = ctx.load(6)?;
    ctx.store(0, &src_mac, 0)?;
    ctx.store(6, &dst_mac, 0)?;
    // SAFETY: the skb context pointer; a plain helper.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// REJECT for UDP and SCTP over IPv6: the datagram becomes an ICMPv6 port unreachable
/// quoting its IPv6 header and first 8 L4 bytes, from the Service address to the client.
#[inline(never)]
pub(crate) fn port_unreachable6(skb: *mut __sk_buff) -> i32 {
    let ctx = &TcContext::new(skb);
    match parse6(ctx) {
        Some(pkt) => port_unreachable6_in(ctx, &pkt).unwrap_or(TC_ACT_SHOT as i32),
        None => TC_ACT_SHOT as i32,
    }
}

#[inline(always)]
fn port_unreachable6_in(ctx: &TcContext, pkt: &Pkt6) -> Result<i32, i64> {
    let t = &pkt.tuple;
    const QUOTED: usize = IP6_HLEN + 8;
    // SAFETY: the skb context pointer; a plain helper.
    let r = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + QUOTED) as u32, 0) };
    if r != 0 {
        return Err(r);
    }
    ctx.adjust_room(QUOTED as i32, BPF_ADJ_ROOM_MAC, 0)?;
    let quoted: [u8; QUOTED] = ctx.load(ETH_HLEN + QUOTED)?;
    let mut ip = [0u8; IP6_HLEN];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((8 + QUOTED) as u16).to_be_bytes());
    ip[6] = NEXTHDR_ICMP6;
    ip[7] = 64;
    let (from, to) = (t.daddr, t.saddr);
    let mut i = 0;
    while i < 4 {
        ip[8 + 4 * i..12 + 4 * i].copy_from_slice(&from[i].to_ne_bytes());
        ip[24 + 4 * i..28 + 4 * i].copy_from_slice(&to[i].to_ne_bytes());
        i += 1;
    }
    let mut icmp = [0u8; 8];
    icmp[0] = 1; // destination unreachable
    icmp[1] = 4; // port unreachable
    // Pseudo-header: the addresses, the upper-layer length, the next header.
    let pseudo = sum_words(
        &ip[8..IP6_HLEN],
        (8 + QUOTED) as u32 + u32::from(NEXTHDR_ICMP6),
    );
    let sum = fold(sum_words(&quoted, sum_words(&icmp, pseudo)));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ctx.store(ETH_HLEN, &ip, 0)?;
    ctx.store(ETH_HLEN + IP6_HLEN, &icmp, 0)?;
    bounce(ctx)
}

/// REJECT for TCP over IPv6: the packet becomes a reset answering it (addresses, ports and
/// MACs swapped, RST|ACK acknowledging what it carried), sent back where it came from.
#[inline(never)]
pub(crate) fn reset6(skb: *mut __sk_buff) -> i32 {
    let ctx = &TcContext::new(skb);
    match parse6(ctx) {
        Some(pkt) => reset6_in(ctx, &pkt).unwrap_or(TC_ACT_SHOT as i32),
        None => TC_ACT_SHOT as i32,
    }
}

#[inline(always)]
fn reset6_in(ctx: &TcContext, pkt: &Pkt6) -> Result<i32, i64> {
    let t = &pkt.tuple;
    let flags_at = pkt.l4 + 12;
    let old_flags: u16 = ctx.load(flags_at)?;
    let raw = u16::from_be(old_flags);
    if raw & 0x04 != 0 {
        return Ok(TC_ACT_SHOT as i32); // never answer a reset
    }
    let seq: u32 = ctx.load(pkt.l4 + 4)?;
    let ack: u32 = ctx.load(pkt.l4 + 8)?;
    let doff = u32::from(raw >> 12) * 4;
    let payload = u32::from(pkt.len).saturating_sub(doff);
    let syn_fin = u32::from(raw & 0x03 != 0);
    let new_ack = (u32::from_be(seq)
        .wrapping_add(payload)
        .wrapping_add(syn_fin))
    .to_be();
    let new_seq = match raw & 0x10 {
        0 => 0,
        _ => ack,
    };
    let new_flags = ((raw & 0xf000) | 0x14).to_be(); // RST|ACK, same data offset
    let csum = pkt.csum;
    ctx.l4_csum_replace(csum, u64::from(seq), u64::from(new_seq), 4)?;
    ctx.store(pkt.l4 + 4, &new_seq, 0)?;
    ctx.l4_csum_replace(csum, u64::from(ack), u64::from(new_ack), 4)?;
    ctx.store(pkt.l4 + 8, &new_ack, 0)?;
    ctx.l4_csum_replace(csum, u64::from(old_flags), u64::from(new_flags), 2)?;
    ctx.store(flags_at, &new_flags, 0)?;
    // Swapping addresses and ports leaves the checksum as it is.
    ctx.store(IP6_SRC, &t.daddr, 0)?;
    ctx.store(IP6_DST, &t.saddr, 0)?;
    ctx.store(pkt.l4, &t.dport, 0)?;
    ctx.store(pkt.l4 + 2, &t.sport, 0)?;
    bounce(ctx)
}

/// The tc egress program for an IPv6 packet: a tc verdict, or [`ANSWER_SNAT`].
#[inline(never)]
pub(crate) fn egress6(skb: *mut __sk_buff) -> i32 {
    let ctx = &TcContext::new(skb);
    let Some(pkt) = parse6(ctx) else {
        return TC_ACT_OK as i32;
    };
    let t = pkt.tuple;
    // A backend's reply towards the client: the Service address as source.
    // SAFETY: copied out at once.
    if let Some(vip) = unsafe { NAT_REV6.get(&t) }.copied() {
        rewrite6(skb, &pkt, true, &vip.addr, vip.port);
        return TC_ACT_OK as i32;
    }
    // A flow to its backend that is SNATed here.
    // SAFETY: copied out at once.
    if let Some(snat) = unsafe { SNAT6.get(&t) }.copied() {
        rewrite6(skb, &pkt, true, &snat.addr, snat.port);
        return TC_ACT_OK as i32;
    }
    let reverse = Tuple6 {
        saddr: t.daddr,
        daddr: t.saddr,
        sport: t.dport,
        dport: t.sport,
        proto: t.proto,
        pad: [0; 3],
    };
    // SAFETY: copied out at once.
    let Some(flow) = unsafe { NAT_REV6.get(&reverse) }.copied() else {
        // The node's own traffic to a Service address it must not reach.
        if dropped6(&t) {
            count(stats::TC_DROPPED);
            return TC_ACT_SHOT as i32;
        }
        return TC_ACT_OK as i32;
    };
    match flow.flags & service_flags::SNAT {
        0 => TC_ACT_OK as i32,
        _ => ANSWER_SNAT,
    }
}

/// [`egress6`]'s answer "a new flow to SNAT": the classifier calls [`snat6`] itself (one
/// stack frame less in the chain, as for the `ANSWER_*` of [`ingress6`]).
pub(crate) const ANSWER_SNAT: i32 = -102;

/// The first packet of a flow marked SNAT, leaving towards its backend: this interface's
/// IPv6 address as source, on a port no other flow from it to that backend uses.
#[inline(never)]
pub(crate) fn snat6(skb: *mut __sk_buff) -> i32 {
    let ctx = &TcContext::new(skb);
    let Some(pkt) = parse6(ctx) else {
        return TC_ACT_OK as i32;
    };
    let t = pkt.tuple;
    // SAFETY: the skb context pointer.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: copied out at once.
    let Some(addr) = unsafe { IFADDR6.get(&ifindex) }.copied() else {
        return TC_ACT_OK as i32;
    };
    // A source port no other flow from `addr` to this backend uses: the client's, else a
    // few random ones.
    let mut port = t.sport;
    let mut i = 0u16;
    while i < 8 {
        let back = Tuple6 {
            saddr: t.daddr,
            daddr: addr,
            sport: t.dport,
            dport: port,
            proto: t.proto,
            pad: [0; 3],
        };
        let client = NatValue6 {
            addr: t.saddr,
            port: t.sport,
            flags: 0,
        };
        if SNAT_REV6.insert(&back, &client, BPF_NOEXIST).is_ok() {
            let snat = NatValue6 {
                addr,
                port,
                flags: 0,
            };
            let _ = SNAT6.insert(&t, &snat, 0);
            rewrite6(skb, &pkt, true, &addr, port);
            return TC_ACT_OK as i32;
        }
        // SAFETY: a plain helper.
        let r = unsafe { bpf_get_prandom_u32() } as u16;
        port = (32768u16 | (r & 0x7fff)).to_be();
        i += 1;
    }
    count(stats::TC_DROPPED);
    TC_ACT_SHOT as i32
}
