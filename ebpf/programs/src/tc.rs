//! The tc path (TCX on the node's interfaces) for traffic from outside the node to node ports,
//! external IPs, load-balancer IPs and ClusterIPs: per-packet DNAT with its own flow maps.
//!
//! - ingress: a reply to a flow this path SNATed gets its client back as destination; a
//!   packet of a known flow goes to that flow's backend; the first packet to a Service
//!   address (external-scope entry) picks a backend (the same translation as the socket
//!   layer), records the flow and its way back, and is DNATed.
//! - egress: a backend's reply leaving towards the client gets the Service address back as
//!   source; a flow marked SNAT (externalTrafficPolicy Cluster) leaving towards its backend
//!   gets this interface's address as source, on a port no other flow to that backend uses.
//!
//! IPv6 packets (EtherType 0x86dd) go to `tc6.rs`, the same path over the IPv6 maps.
//!
//! Addresses are rewritten with the kernel's checksum helpers (pseudo-header aware for the L4
//! checksum); an SCTP port change patches the CRC32c by its linearity (no packet walk);
//! packets are read and written with `bpf_skb_load_bytes`/`store_bytes`, which
//! keeps the verifier simple.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{
        bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect, bpf_skb_change_tail,
    },
    macros::{classifier, map},
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use sluice_ebpf_common::{NatValue, Tuple, crc32c, proto, scope, service_flags, stats};

use crate::sock::{Ask, Outcome, count, lookup, source_allowed, translate};

#[map(name = "SLUICE_CT")]
static CT: LruHashMap<Tuple, NatValue> = LruHashMap::pinned(262144, 0);
#[map(name = "SLUICE_NATREV")]
static NAT_REV: LruHashMap<Tuple, NatValue> = LruHashMap::pinned(262144, 0);
#[map(name = "SLUICE_SNAT")]
static SNAT: LruHashMap<Tuple, NatValue> = LruHashMap::pinned(262144, 0);
#[map(name = "SLUICE_SNATREV")]
static SNAT_REV: LruHashMap<Tuple, NatValue> = LruHashMap::pinned(262144, 0);
#[map(name = "SLUICE_IFADDR")]
static IFADDR: HashMap<u32, u32> = HashMap::pinned(1024, 0);
#[map(name = "SLUICE_SVCCIDR")]
static SERVICE_CIDRS: LpmTrie<u32, u8> = LpmTrie::pinned(64, 0);

/// Whether a packet to `t` is dropped here: its Service entry says drop (no endpoint for
/// this policy; the socket layer leaves such connects alone so they end here, silently, as
/// kube-proxy's DROP), or it is an unallocated address inside a service CIDR.
#[inline(always)]
fn dropped(t: &Tuple) -> bool {
    match lookup(t.daddr, t.dport, t.proto, scope::EXTERNAL) {
        Some((_, svc)) => {
            (svc.flags & service_flags::REJECT == 0 && svc.backend_count == 0)
                || (svc.flags & service_flags::SOURCE_RANGES != 0
                    && !source_allowed(svc.service_id, t.saddr))
        }
        None => {
            let unallocated = lookup(t.daddr, 0, 0, scope::SOCKET).is_none()
                && SERVICE_CIDRS.get(&Key::new(32, t.daddr)).is_some();
            unallocated
        }
    }
}

pub(crate) const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IP_SRC: usize = ETH_HLEN + 12;
const IP_DST: usize = ETH_HLEN + 16;
const IP_CSUM: usize = ETH_HLEN + 10;
pub(crate) const BPF_NOEXIST: u64 = 1;

/// Where a packet's fields are.
struct Pkt {
    tuple: Tuple,
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum.
    csum: usize,
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Pkt> {
    let eth_type: u16 = ctx.load(12).ok()?;
    if u16::from_be(eth_type) != ETH_P_IP {
        return None;
    }
    let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
    if vihl != 0x45 {
        return None; // IPv4 without options only
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    if u16::from_be(frag) & 0x1fff != 0 {
        return None; // a later fragment has no ports
    }
    let protocol: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let csum_at = match protocol {
        proto::TCP => 16,
        proto::UDP => 6,
        proto::SCTP => 8, // CRC32c, see `rewrite_sctp_port`
        _ => return None,
    };
    let l4 = ETH_HLEN + 20;
    Some(Pkt {
        tuple: Tuple {
            saddr: ctx.load(IP_SRC).ok()?,
            daddr: ctx.load(IP_DST).ok()?,
            sport: ctx.load(l4).ok()?,
            dport: ctx.load(l4 + 2).ok()?,
            proto: protocol,
            pad: [0; 3],
        },
        l4,
        csum: l4 + csum_at,
    })
}

#[inline(always)]
fn l4_flags(pkt: &Pkt) -> u64 {
    match pkt.tuple.proto {
        proto::UDP => u64::from(BPF_F_MARK_MANGLED_0),
        _ => 0,
    }
}

/// Rewrites the source (`src`) or destination address and port.
#[inline(always)]
fn rewrite(ctx: &TcContext, pkt: &Pkt, src: bool, addr: u32, port: u16) -> Result<(), i64> {
    let (ip_at, port_at, old_addr, old_port) = match src {
        true => (IP_SRC, pkt.l4, pkt.tuple.saddr, pkt.tuple.sport),
        false => (IP_DST, pkt.l4 + 2, pkt.tuple.daddr, pkt.tuple.dport),
    };
    let flags = l4_flags(pkt);
    let sctp = pkt.tuple.proto == proto::SCTP;
    if old_addr != addr {
        // SCTP's checksum has no pseudo-header: the address is not in it.
        if !sctp {
            ctx.l4_csum_replace(
                pkt.csum,
                u64::from(old_addr),
                u64::from(addr),
                flags | u64::from(BPF_F_PSEUDO_HDR) | 4,
            )?;
        }
        ctx.l3_csum_replace(IP_CSUM, u64::from(old_addr), u64::from(addr), 4)?;
        ctx.store(ip_at, &addr, 0)?;
    }
    if old_port != port {
        match sctp {
            true => rewrite_sctp_crc(ctx, pkt, src, old_port ^ port)?,
            false => {
                ctx.l4_csum_replace(pkt.csum, u64::from(old_port), u64::from(port), flags | 2)?
            }
        }
        ctx.store(port_at, &port, 0)?;
    }
    Ok(())
}

/// [`crc32c::port_delta`] as a global BPF function: the verifier checks it once, on its own,
/// instead of walking its thousand loop steps again on every path that rewrites a port.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sluice_sctp_crc_delta(changed: u32, len: u32) -> u32 {
    crc32c::port_delta(changed.to_ne_bytes(), len)
}

/// Patches an SCTP packet's CRC32c for a port change (`xor`: old ^ new, as on the wire) by
/// the CRC's linearity ([`crc32c::port_delta`]), without reading the packet. A CRC of zero
/// is the sender's "not computed yet": a packet from this host's own stack whose CRC a
/// device with SCTP checksum offload (a veth) will fill in from the bytes as they are then;
/// it is left zero (a real CRC of zero, one in 2^32, would be sent unpatched and dropped by
/// the receiver like a corrupted packet).
#[inline(always)]
fn rewrite_sctp_crc(ctx: &TcContext, pkt: &Pkt, src: bool, xor: u16) -> Result<(), i64> {
    let total: u16 = ctx.load(ETH_HLEN + 2)?;
    let len = u32::from(u16::from_be(total)).saturating_sub(20);
    patch_sctp_crc(ctx, pkt.csum, len, src, xor)
}

/// The CRC32c patch of [`rewrite_sctp_crc`] for an SCTP packet of `len` bytes whose CRC is
/// at `csum_at` (both families).
#[inline(always)]
pub(crate) fn patch_sctp_crc(
    ctx: &TcContext,
    csum_at: usize,
    len: u32,
    src: bool,
    xor: u16,
) -> Result<(), i64> {
    let crc: u32 = ctx.load(csum_at)?;
    if crc == 0 {
        return Ok(());
    }
    let x = xor.to_ne_bytes();
    let changed = match src {
        true => [x[0], x[1], 0, 0],
        false => [0, 0, x[0], x[1]],
    };
    // The field is stored little-endian (the kernel's `cpu_to_le32`), as this target loads.
    let patched = crc ^ sluice_sctp_crc_delta(u32::from_ne_bytes(changed), len);
    ctx.store(csum_at, &patched, 0)?;
    Ok(())
}

#[inline(always)]
fn reverse(t: &Tuple) -> Tuple {
    Tuple {
        saddr: t.daddr,
        daddr: t.saddr,
        sport: t.dport,
        dport: t.sport,
        proto: t.proto,
        pad: [0; 3],
    }
}

/// The packet's EtherType (host order), 0 when too short.
#[inline(always)]
fn ether_type(ctx: &TcContext) -> u16 {
    ctx.load::<u16>(12).map_or(0, u16::from_be)
}

/// Dispatches on the EtherType to the IPv4 or IPv6 path, each its own BPF function (so each
/// has its own 512-byte stack frame, and the verifier walks them one after the other).
#[classifier]
pub fn sluice_tc_ingress(ctx: TcContext) -> i32 {
    match ether_type(&ctx) {
        ETH_P_IPV6 => match crate::tc6::ingress6(ctx.skb.skb) {
            crate::tc6::ANSWER_RESET => crate::tc6::reset6(ctx.skb.skb),
            crate::tc6::ANSWER_UNREACHABLE => crate::tc6::port_unreachable6(ctx.skb.skb),
            verdict => verdict,
        },
        _ => ingress4(ctx.skb.skb),
    }
}

#[inline(never)]
fn ingress4(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    match ingress(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn ingress(ctx: &TcContext) -> Result<i32, i32> {
    let Some(pkt) = parse(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    let t = pkt.tuple;
    let fail = |_| TC_ACT_OK as i32;
    // A reply to a flow this path SNATed: back to the client.
    // SAFETY: copied out at once.
    if let Some(client) = unsafe { SNAT_REV.get(&t) }.copied() {
        rewrite(ctx, &pkt, false, client.addr, client.port).map_err(fail)?;
        return Ok(TC_ACT_OK as i32);
    }
    // A known flow: its backend.
    // SAFETY: copied out at once.
    if let Some(be) = unsafe { CT.get(&t) }.copied() {
        rewrite(ctx, &pkt, false, be.addr, be.port).map_err(fail)?;
        return Ok(TC_ACT_OK as i32);
    }
    let ask = Ask {
        addr: t.daddr,
        port: t.dport,
        proto: t.proto,
        scope: scope::EXTERNAL,
        netns_cookie: (1u64 << 32) | u64::from(t.saddr),
        src: t.saddr,
        // SAFETY: plain helpers.
        random: unsafe { bpf_get_prandom_u32() },
        // SAFETY: as above.
        now: unsafe { bpf_ktime_get_ns() },
    };
    match translate(&ask) {
        Outcome::Pass if dropped(&t) => {
            count(stats::TC_DROPPED);
            Ok(TC_ACT_SHOT as i32)
        }
        Outcome::Pass => Ok(TC_ACT_OK as i32),
        // `translate` counted the rejection.
        Outcome::Reject if t.proto == proto::TCP => {
            Ok(reset(ctx, &pkt).unwrap_or(TC_ACT_SHOT as i32))
        }
        Outcome::Reject => Ok(port_unreachable(ctx, &pkt).unwrap_or(TC_ACT_SHOT as i32)),
        Outcome::Drop => {
            count(stats::TC_DROPPED);
            Ok(TC_ACT_SHOT as i32)
        }
        Outcome::Forward { backend, flags, .. } => {
            let flow = NatValue {
                addr: backend.addr,
                port: backend.port,
                flags: flags & service_flags::SNAT,
            };
            let _ = CT.insert(&t, &flow, 0);
            // The reply as it leaves towards the client: backend → client.
            let back = Tuple {
                saddr: backend.addr,
                daddr: t.saddr,
                sport: backend.port,
                dport: t.sport,
                proto: t.proto,
                pad: [0; 3],
            };
            let vip = NatValue {
                addr: t.daddr,
                port: t.dport,
                flags: flow.flags,
            };
            let _ = NAT_REV.insert(&back, &vip, 0);
            count(stats::TC_NEW_FLOW);
            rewrite(ctx, &pkt, false, backend.addr, backend.port).map_err(fail)?;
            Ok(TC_ACT_OK as i32)
        }
    }
}

/// The one's-complement sum of big-endian 16-bit words (not yet folded).
#[inline(always)]
pub(crate) fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
pub(crate) fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// REJECT for UDP: turns the datagram into an ICMP port unreachable carrying its IP and UDP
/// headers, from the Service address to the client, sent back out of the interface it came
/// in on.
#[inline(always)]
fn port_unreachable(ctx: &TcContext, pkt: &Pkt) -> Result<i32, i64> {
    let t = &pkt.tuple;
    // Keep the original IP and UDP headers only, then make room for the new IP + ICMP headers.
    // SAFETY: the skb context pointer; a plain helper.
    let r = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + 28) as u32, 0) };
    if r != 0 {
        return Err(r);
    }
    ctx.adjust_room(28, BPF_ADJ_ROOM_MAC, 0)?;
    let quoted: [u8; 28] = ctx.load(ETH_HLEN + 28)?;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&56u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1; // ICMP
    ip[12..16].copy_from_slice(&t.daddr.to_ne_bytes());
    ip[16..20].copy_from_slice(&t.saddr.to_ne_bytes());
    let ip_sum = fold(sum_words(&ip, 0));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut icmp = [0u8; 8];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    let icmp_sum = fold(sum_words(&quoted, sum_words(&icmp, 0)));
    icmp[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    ctx.store(ETH_HLEN, &ip, 0)?;
    ctx.store(ETH_HLEN + 20, &icmp, 0)?;
    let dst_mac: [u8; 6] = ctx.load(0)?;
    let src_mac: [u8; 6] = ctx.load(6)?;
    ctx.store(0, &src_mac, 0)?;
    ctx.store(6, &dst_mac, 0)?;
    // SAFETY: the skb context pointer; a plain helper.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// REJECT for TCP: turns the packet into a reset answering it (addresses, ports and MACs
/// swapped; RST|ACK acknowledging what it carried) and sends it back out of the interface it
/// came in on. UDP and SCTP get [`port_unreachable`] instead.
#[inline(always)]
fn reset(ctx: &TcContext, pkt: &Pkt) -> Result<i32, i64> {
    let t = &pkt.tuple;
    let flags_at = pkt.l4 + 12;
    let old_flags: u16 = ctx.load(flags_at)?;
    let raw = u16::from_be(old_flags);
    if raw & 0x04 != 0 {
        return Ok(TC_ACT_SHOT as i32); // never answer a reset
    }
    let seq: u32 = ctx.load(pkt.l4 + 4)?;
    let ack: u32 = ctx.load(pkt.l4 + 8)?;
    let total: u16 = ctx.load(ETH_HLEN + 2)?;
    let doff = usize::from(raw >> 12) * 4;
    let payload = usize::from(u16::from_be(total)).saturating_sub(20 + doff) as u32;
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
    // Swapping addresses and ports leaves both checksums as they are.
    ctx.store(IP_SRC, &t.daddr, 0)?;
    ctx.store(IP_DST, &t.saddr, 0)?;
    ctx.store(pkt.l4, &t.dport, 0)?;
    ctx.store(pkt.l4 + 2, &t.sport, 0)?;
    let dst_mac: [u8; 6] = ctx.load(0)?;
    let src_mac: [u8; 6] = ctx.load(6)?;
    ctx.store(0, &src_mac, 0)?;
    ctx.store(6, &dst_mac, 0)?;
    // SAFETY: the skb context pointer; a plain helper.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

#[classifier]
pub fn sluice_tc_egress(ctx: TcContext) -> i32 {
    match ether_type(&ctx) {
        ETH_P_IPV6 => match crate::tc6::egress6(ctx.skb.skb) {
            crate::tc6::ANSWER_SNAT => crate::tc6::snat6(ctx.skb.skb),
            verdict => verdict,
        },
        _ => egress4(ctx.skb.skb),
    }
}

#[inline(never)]
fn egress4(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    match egress(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn egress(ctx: &TcContext) -> Result<i32, i32> {
    let Some(pkt) = parse(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    let t = pkt.tuple;
    let fail = |_| TC_ACT_OK as i32;
    // A backend's reply towards the client: the Service address as source.
    // SAFETY: copied out at once.
    if let Some(vip) = unsafe { NAT_REV.get(&t) }.copied() {
        rewrite(ctx, &pkt, true, vip.addr, vip.port).map_err(fail)?;
        return Ok(TC_ACT_OK as i32);
    }
    // A flow to its backend that is SNATed here.
    // SAFETY: copied out at once.
    if let Some(snat) = unsafe { SNAT.get(&t) }.copied() {
        rewrite(ctx, &pkt, true, snat.addr, snat.port).map_err(fail)?;
        return Ok(TC_ACT_OK as i32);
    }
    // SAFETY: copied out at once.
    let Some(flow) = unsafe { NAT_REV.get(&reverse(&t)) }.copied() else {
        // The node's own traffic to a Service address it must not reach.
        if dropped(&t) {
            count(stats::TC_DROPPED);
            return Ok(TC_ACT_SHOT as i32);
        }
        return Ok(TC_ACT_OK as i32);
    };
    if flow.flags & service_flags::SNAT == 0 {
        return Ok(TC_ACT_OK as i32);
    }
    // SAFETY: the skb context pointer.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: copied out at once.
    let Some(addr) = unsafe { IFADDR.get(&ifindex) }.copied() else {
        return Ok(TC_ACT_OK as i32);
    };
    // A source port no other flow from `addr` to this backend uses: the client's, else a
    // few hashed ones.
    let mut port = t.sport;
    let mut i = 0u16;
    while i < 8 {
        let back = Tuple {
            saddr: t.daddr,
            daddr: addr,
            sport: t.dport,
            dport: port,
            proto: t.proto,
            pad: [0; 3],
        };
        let client = NatValue {
            addr: t.saddr,
            port: t.sport,
            flags: 0,
        };
        if SNAT_REV.insert(&back, &client, BPF_NOEXIST).is_ok() {
            let snat = NatValue {
                addr,
                port,
                flags: 0,
            };
            let _ = SNAT.insert(&t, &snat, 0);
            rewrite(ctx, &pkt, true, addr, port).map_err(fail)?;
            return Ok(TC_ACT_OK as i32);
        }
        // SAFETY: a plain helper.
        let r = unsafe { bpf_get_prandom_u32() } as u16;
        port = (32768u16 | (r & 0x7fff)).to_be();
        i += 1;
    }
    count(stats::TC_DROPPED);
    Ok(TC_ACT_SHOT as i32)
}
