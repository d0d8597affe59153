//! The socket-level load balancer (cgroup v2 `sock_addr` hooks), and a tc program that runs
//! the same translation on a record in its packet so `BPF_PROG_TEST_RUN` can unit-test it
//! (the kernel refuses to test-run `cgroup/connect4` itself).
//!
//! Lookup: the exact `VIP:port/proto` entry, else the VIP's wildcard entry (port 0, proto 0:
//! "a Service address, but not a port it serves" → reject). The entry says reject, drop, or
//! how many slots to pick from; a slot holds one backend. Keys are always built on the stack
//! (the verifier refuses map lookups keyed by context memory).

use aya_ebpf::{
    EbpfContext,
    bindings::TC_ACT_OK,
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::{cgroup_sock_addr, classifier, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::{SockAddrContext, TcContext},
};
use sluice_ebpf_common::{
    AffinityKey, AffinityValue, Backend, RevKey, RevValue, ServiceKey, ServiceValue, SlotKey,
    SrcRange, XlateTest, scope, service_flags, stats, xlate_verdict,
};

const ECONNREFUSED: i32 = 111;

/// Entries are allocated as they are written (`BPF_F_NO_PREALLOC`); only the bucket array
/// (16 bytes per bucket, one per entry of the ceiling) is allocated up front: 4 MiB and 16
/// MiB, per family. A Service takes three service entries (the ClusterIP for the socket layer
/// and for tc, the wildcard port) and a slot per endpoint it picks from, so the ceilings hold
/// ~87,000 single-port Services; 65,536 preallocated entries stopped a cluster at ~21,800.
pub(crate) const SERVICE_ENTRIES: u32 = 1 << 18;
/// See [`SERVICE_ENTRIES`].
pub(crate) const SLOT_ENTRIES: u32 = 1 << 20;
pub(crate) const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "SLUICE_SVC")]
static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(SERVICE_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SLUICE_SLOTS")]
static SLOTS: HashMap<SlotKey, Backend> = HashMap::pinned(SLOT_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SLUICE_REV")]
static REV: LruHashMap<RevKey, RevValue> = LruHashMap::pinned(262144, 0);
#[map(name = "SLUICE_AFF")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(65536, 0);
#[map(name = "SLUICE_SRCRANGE")]
static SOURCE_RANGES: LpmTrie<SrcRange, u8> = LpmTrie::pinned(16384, 0);
#[map(name = "SLUICE_NODE")]
pub(crate) static NODE: Array<u64> = Array::pinned(1, 0);
#[map(name = "SLUICE_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::COUNT, 0);

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

/// What the translation decided.
pub(crate) enum Outcome {
    Pass,
    Forward {
        backend: Backend,
        service: ServiceKey,
        service_id: u32,
        flags: u16,
    },
    Reject,
    Drop,
}

/// The inputs of one translation.
pub(crate) struct Ask {
    pub(crate) addr: u32,
    pub(crate) port: u16,
    pub(crate) proto: u8,
    /// [`scope`]: the socket layer's entries, or the tc path's.
    pub(crate) scope: u8,
    /// Who the client is, for affinity (socket layer: the netns cookie; tc: the source IP).
    pub(crate) netns_cookie: u64,
    /// The source address (tc path; 0 on the socket layer, which does not know it yet).
    pub(crate) src: u32,
    pub(crate) random: u32,
    pub(crate) now: u64,
}

#[inline(always)]
pub(crate) fn lookup(
    addr: u32,
    port: u16,
    proto: u8,
    scope: u8,
) -> Option<(ServiceKey, ServiceValue)> {
    let key = ServiceKey {
        addr,
        port,
        proto,
        scope,
    };
    // SAFETY: the value is copied out at once.
    if let Some(v) = unsafe { SERVICES.get(&key) } {
        return Some((key, *v));
    }
    let wild = ServiceKey {
        addr,
        port: 0,
        proto: 0,
        scope,
    };
    // SAFETY: as above.
    unsafe { SERVICES.get(&wild) }.map(|v| (wild, *v))
}

/// Whether `src` is inside the `loadBalancerSourceRanges` of service entry `service_id`.
#[inline(always)]
pub(crate) fn source_allowed(service_id: u32, src: u32) -> bool {
    let key = Key::new(
        64,
        SrcRange {
            service_id_be: service_id.to_be(),
            addr: src,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// Whether a socket of network namespace `netns_cookie` is the node's own and the entry
/// admits the node (a node IP is inside its source ranges: decided in userspace).
#[inline(always)]
pub(crate) fn node_allowed(svc: &ServiceValue, netns_cookie: u64) -> bool {
    if svc.flags & service_flags::NODE_ALLOWED == 0 {
        return false;
    }
    match NODE.get(0) {
        Some(node) => *node != 0 && *node == netns_cookie,
        None => false,
    }
}

/// The backend a client keeps under ClientIP affinity, while its entry is fresh and its slot
/// still holds it.
#[inline(always)]
fn sticky(key: &AffinityKey, svc: &ServiceValue, now: u64) -> Option<(u32, Backend)> {
    let entry = AFFINITY.get_ptr_mut(key)?;
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
    let current = *unsafe { SLOTS.get(&slot) }?;
    if current != entry.backend {
        return None;
    }
    entry.last_seen_ns = now;
    Some((entry.slot, current))
}

#[inline(always)]
pub(crate) fn translate(ask: &Ask) -> Outcome {
    let Some((service, svc)) = lookup(ask.addr, ask.port, ask.proto, ask.scope) else {
        return Outcome::Pass;
    };
    if svc.flags & service_flags::SOURCE_RANGES != 0 {
        if ask.scope == scope::SOCKET && !node_allowed(&svc, ask.netns_cookie) {
            // The source is not chosen yet: the node's tc programs decide.
            return Outcome::Pass;
        }
        if ask.scope == scope::EXTERNAL && !source_allowed(svc.service_id, ask.src) {
            count(stats::DROPPED);
            return Outcome::Drop;
        }
    }
    if svc.flags & service_flags::REJECT != 0 {
        count(stats::REJECTED);
        return Outcome::Reject;
    }
    if svc.backend_count == 0 {
        count(stats::DROPPED);
        return Outcome::Drop;
    }
    let affinity = svc.flags & service_flags::AFFINITY != 0;
    let akey = AffinityKey {
        netns_cookie: ask.netns_cookie,
        service_id: svc.service_id,
        pad: 0,
    };
    if affinity && let Some((_, backend)) = sticky(&akey, &svc, ask.now) {
        count(stats::TRANSLATED);
        return Outcome::Forward {
            backend,
            service,
            service_id: svc.service_id,
            flags: svc.flags,
        };
    }
    let slot = ask.random % u32::from(svc.backend_count) + 1;
    let skey = SlotKey {
        service_id: svc.service_id,
        slot,
    };
    // SAFETY: copied out at once.
    let Some(backend) = (unsafe { SLOTS.get(&skey) }).copied() else {
        count(stats::NO_SLOT);
        return Outcome::Pass;
    };
    if affinity {
        let value = AffinityValue {
            last_seen_ns: ask.now,
            backend,
            slot,
            pad: 0,
        };
        let _ = AFFINITY.insert(&akey, &value, 0);
    }
    count(stats::TRANSLATED);
    Outcome::Forward {
        backend,
        service,
        service_id: svc.service_id,
        flags: svc.flags,
    }
}

/// connect4 / sendmsg4: translate, remember the way back, or fail the call.
#[inline(always)]
fn sock_forward(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer the kernel gave this program.
    let (addr, port, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16, (*sa).protocol) };
    // SAFETY: helpers valid for sock_addr programs (kernel ≥ 5.8).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: as above.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // Unconnected UDP: one socket keeps one backend (as conntrack keeps one flow on one).
    let random = match sendmsg {
        true => (cookie ^ (cookie >> 32)) as u32,
        // SAFETY: a plain helper.
        false => unsafe { bpf_get_prandom_u32() },
    };
    let ask = Ask {
        addr,
        port,
        proto: proto as u8,
        scope: scope::SOCKET,
        netns_cookie,
        src: 0,
        random,
        // SAFETY: a plain helper.
        now: unsafe { bpf_ktime_get_ns() },
    };
    match translate(&ask) {
        Outcome::Pass => 1,
        Outcome::Forward {
            backend,
            service,
            service_id,
            ..
        } => {
            // SAFETY: writable fields of the context for these hooks.
            unsafe {
                (*sa).user_ip4 = backend.addr;
                (*sa).user_port = u32::from(backend.port);
            }
            let key = RevKey {
                cookie,
                addr: backend.addr,
                port: backend.port,
                pad: 0,
            };
            let value = RevValue {
                service,
                service_id,
            };
            let _ = REV.insert(&key, &value, 0);
            1
        }
        // SAFETY: bpf_set_retval is available to cgroup programs (kernel ≥ 5.18); the call
        // then fails with that errno instead of EPERM.
        Outcome::Reject => unsafe {
            bpf_set_retval(-ECONNREFUSED);
            0
        },
        // Left alone: the packet reaches the node, whose tc programs drop it, so the caller
        // sees what kube-proxy's DROP gives (silence), not an error.
        Outcome::Drop => 1,
    }
}

/// recvmsg4 / getpeername4: a backend address the socket was sent to becomes the Service
/// address again, unless that Service entry is gone or changed.
#[inline(always)]
fn sock_reverse(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer the kernel gave this program.
    let (addr, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    // SAFETY: a helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevKey {
        cookie,
        addr,
        port,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(rev) = (unsafe { REV.get(&key) }).copied() else {
        return 1;
    };
    let service = rev.service;
    // SAFETY: copied out at once.
    match unsafe { SERVICES.get(&service) }.copied() {
        Some(svc) if svc.service_id == rev.service_id => {
            // SAFETY: writable fields of the context for these hooks.
            unsafe {
                (*sa).user_ip4 = service.addr;
                (*sa).user_port = u32::from(service.port);
            }
            count(stats::REV_TRANSLATED);
        }
        _ => count(stats::REV_STALE),
    }
    1
}

#[cgroup_sock_addr(connect4)]
pub fn sluice_connect4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sluice_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sluice_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn sluice_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}

/// Test entry: reads an [`XlateTest`] at the start of the packet, runs [`translate`] on it
/// and writes the verdict and address back.
#[classifier]
pub fn sluice_xlate_test(ctx: TcContext) -> i32 {
    let Ok(mut t) = ctx.load::<XlateTest>(0) else {
        return TC_ACT_OK;
    };
    let ask = Ask {
        addr: t.addr,
        port: t.port,
        proto: t.proto,
        scope: scope::SOCKET,
        netns_cookie: t.netns_cookie,
        src: 0,
        random: t.random,
        // SAFETY: a plain helper.
        now: unsafe { bpf_ktime_get_ns() },
    };
    t.verdict = match translate(&ask) {
        Outcome::Pass => xlate_verdict::PASS,
        Outcome::Forward { backend, .. } => {
            t.out_addr = backend.addr;
            t.out_port = backend.port;
            xlate_verdict::FORWARD
        }
        Outcome::Reject => xlate_verdict::REJECT,
        Outcome::Drop => xlate_verdict::DROP,
    };
    let _ = ctx.store(0, &t, 0);
    TC_ACT_OK
}
