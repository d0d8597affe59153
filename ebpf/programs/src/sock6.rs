//! The socket-level load balancer for IPv6 (`cgroup/connect6`, `sendmsg6`, `recvmsg6`,
//! `getpeername6`): the IPv4 programs' logic over IPv6 keys, with ClientIP affinity (its own
//! LRU map: IPv6 service ids are their own) and `loadBalancerSourceRanges` as far as the
//! socket layer goes (a source-ranged entry is translated for the node's own sockets when it
//! says `NODE_ALLOWED`, left alone otherwise). What the socket layer leaves alone meets the
//! IPv6 tc path (`tc6.rs`), which knows the source.
//!
//! `user_ip6` is read and written one 32-bit word at a time (the access size the kernel
//! accepts for every word of it).

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use sluice_ebpf_common::{
    AffinityKey, AffinityValue6, Backend6, RevKey6, RevValue6, ServiceKey6, ServiceValue, SlotKey,
    scope, service_flags, stats,
};

use crate::sock::{BPF_F_NO_PREALLOC, SERVICE_ENTRIES, SLOT_ENTRIES, count, node_allowed};

const ECONNREFUSED: i32 = 111;

#[map(name = "SLUICE_SVC6")]
static SERVICES6: HashMap<ServiceKey6, ServiceValue> =
    HashMap::pinned(SERVICE_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SLUICE_SLOTS6")]
static SLOTS6: HashMap<SlotKey, Backend6> = HashMap::pinned(SLOT_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SLUICE_REV6")]
static REV6: LruHashMap<RevKey6, RevValue6> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_AFF6")]
static AFFINITY6: LruHashMap<AffinityKey, AffinityValue6> = LruHashMap::pinned(65536, 0);

#[inline(always)]
fn read_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer the kernel gave this program; 4-byte reads of user_ip6.
    unsafe {
        [
            core::ptr::read_volatile(&(*sa).user_ip6[0]),
            core::ptr::read_volatile(&(*sa).user_ip6[1]),
            core::ptr::read_volatile(&(*sa).user_ip6[2]),
            core::ptr::read_volatile(&(*sa).user_ip6[3]),
        ]
    }
}

#[inline(always)]
fn write_ip6(ctx: &SockAddrContext, addr: &[u32; 4], port: u16) {
    let sa = ctx.sock_addr;
    // SAFETY: writable fields of the context for these hooks; 4-byte writes.
    unsafe {
        core::ptr::write_volatile(&mut (*sa).user_ip6[0], addr[0]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[1], addr[1]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[2], addr[2]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[3], addr[3]);
        (*sa).user_port = u32::from(port);
    }
}

#[inline(always)]
pub(crate) fn lookup6(key: ServiceKey6) -> Option<(ServiceKey6, ServiceValue)> {
    // SAFETY: copied out at once.
    if let Some(v) = unsafe { SERVICES6.get(&key) } {
        return Some((key, *v));
    }
    let wild = ServiceKey6 {
        port: 0,
        proto: 0,
        ..key
    };
    // SAFETY: as above.
    unsafe { SERVICES6.get(&wild) }.map(|v| (wild, *v))
}

/// The backend a client keeps under ClientIP affinity, while its entry is fresh and its slot
/// still holds it (`sock.rs`'s `sticky` over the IPv6 maps).
#[inline(always)]
fn sticky6(key: &AffinityKey, svc: &ServiceValue, now: u64) -> Option<Backend6> {
    let entry = AFFINITY6.get_ptr_mut(key)?;
    // SAFETY: a map value pointer, valid for this program run.
    let entry = unsafe { &mut *entry };
    let timeout = u64::from(svc.affinity_timeout) * 1_000_000_000;
    if now.wrapping_sub(entry.last_seen_ns) > timeout
        || entry.slot == 0
        || entry.slot > u32::from(svc.backend_count)
    {
        return None;
    }
    let slot = SlotKey {
        service_id: svc.service_id,
        slot: entry.slot,
    };
    // SAFETY: copied out at once.
    let current = *unsafe { SLOTS6.get(&slot) }?;
    if current != entry.backend {
        return None;
    }
    entry.last_seen_ns = now;
    Some(current)
}

/// The backend for `svc`: the sticky one under affinity, else a slot picked by `random`
/// (recorded for affinity); `None` when the slot is missing.
#[inline(always)]
pub(crate) fn pick6(svc: &ServiceValue, netns_cookie: u64, random: u32) -> Option<Backend6> {
    let affinity = svc.flags & service_flags::AFFINITY != 0;
    let akey = AffinityKey {
        netns_cookie,
        service_id: svc.service_id,
        pad: 0,
    };
    // SAFETY: a plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    if affinity && let Some(backend) = sticky6(&akey, svc, now) {
        return Some(backend);
    }
    let slot = random % u32::from(svc.backend_count) + 1;
    let skey = SlotKey {
        service_id: svc.service_id,
        slot,
    };
    // SAFETY: copied out at once.
    let backend = (unsafe { SLOTS6.get(&skey) }).copied()?;
    if affinity {
        let value = AffinityValue6 {
            last_seen_ns: now,
            backend,
            slot,
        };
        let _ = AFFINITY6.insert(&akey, &value, 0);
    }
    Some(backend)
}

/// connect6 / sendmsg6.
#[inline(always)]
fn forward6(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    let sa = ctx.sock_addr;
    let addr = read_ip6(ctx);
    // SAFETY: the context pointer the kernel gave this program.
    let (port, proto) = unsafe { ((*sa).user_port as u16, (*sa).protocol as u8) };
    let key = ServiceKey6 {
        addr,
        port,
        proto,
        scope: scope::SOCKET,
    };
    let Some((service, svc)) = lookup6(key) else {
        return 1;
    };
    // SAFETY: a helper valid for sock_addr programs (kernel ≥ 5.8).
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if svc.flags & service_flags::SOURCE_RANGES != 0 && !node_allowed(&svc, netns_cookie) {
        return 1; // the source is not chosen yet: left to the tc path
    }
    if svc.flags & service_flags::REJECT != 0 {
        count(stats::REJECTED);
        // SAFETY: bpf_set_retval is available to cgroup programs (kernel ≥ 5.18).
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return 0;
    }
    if svc.backend_count == 0 {
        count(stats::DROPPED);
        return 1;
    }
    // SAFETY: a helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let random = match sendmsg {
        true => (cookie ^ (cookie >> 32)) as u32,
        // SAFETY: a plain helper.
        false => unsafe { bpf_get_prandom_u32() },
    };
    let Some(backend) = pick6(&svc, netns_cookie, random) else {
        count(stats::NO_SLOT);
        return 1;
    };
    write_ip6(ctx, &backend.addr, backend.port);
    let rev = RevKey6 {
        cookie,
        addr: backend.addr,
        port: backend.port,
        pad: 0,
        pad2: 0,
    };
    let value = RevValue6 {
        service,
        service_id: svc.service_id,
    };
    let _ = REV6.insert(&rev, &value, 0);
    count(stats::TRANSLATED);
    1
}

/// recvmsg6 / getpeername6.
#[inline(always)]
fn reverse6(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let addr = read_ip6(ctx);
    // SAFETY: the context pointer the kernel gave this program.
    let port = unsafe { (*sa).user_port as u16 };
    // SAFETY: a helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevKey6 {
        cookie,
        addr,
        port,
        pad: 0,
        pad2: 0,
    };
    // SAFETY: copied out at once.
    let Some(rev) = (unsafe { REV6.get(&key) }).copied() else {
        return 1;
    };
    let service = rev.service;
    // SAFETY: copied out at once.
    match unsafe { SERVICES6.get(&service) }.copied() {
        Some(svc) if svc.service_id == rev.service_id => {
            write_ip6(ctx, &service.addr, service.port);
            count(stats::REV_TRANSLATED);
        }
        _ => count(stats::REV_STALE),
    }
    1
}

#[cgroup_sock_addr(connect6)]
pub fn sluice_connect6(ctx: SockAddrContext) -> i32 {
    forward6(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sluice_sendmsg6(ctx: SockAddrContext) -> i32 {
    forward6(&ctx, true)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sluice_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse6(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn sluice_getpeername6(ctx: SockAddrContext) -> i32 {
    reverse6(&ctx)
}
