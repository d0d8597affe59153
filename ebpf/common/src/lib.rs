//! Map keys and values shared by Sluice's eBPF programs and the userspace loader.
//!
//! Both sides read the same bytes, so every type is `#[repr(C)]`, has no implicit padding
//! (the verifier rejects reads of uninitialised stack bytes, and hash-map keys with garbage
//! padding never match) and keeps addresses and ports in network byte order, exactly as
//! they appear in packets and socket addresses. The layout follows Cilium's `lb4_*` maps:
//! a service table keyed by VIP, a slot table that picks a backend by index, and a backend
//! table — so changing one service's endpoints rewrites only that service's slots.
//!
//! This crate is `no_std` and dependency-free so the kernel-side crate can use it; the
//! `user` feature adds conversions that only make sense in userspace.
#![no_std]
#[cfg(feature = "user")]
extern crate std;

pub mod crc32c;

/// IP protocol numbers as they appear in the IPv4 header.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

/// The names the maps are pinned under (in the bpffs directory of one proxy); at most 15
/// bytes, the kernel's object-name limit.
pub mod map_names {
    /// [`ServiceKey`](super::ServiceKey) → [`ServiceValue`](super::ServiceValue).
    pub const SERVICES: &str = "SLUICE_SVC";
    /// [`SlotKey`](super::SlotKey) → [`Backend`](super::Backend).
    pub const SLOTS: &str = "SLUICE_SLOTS";
    /// [`RevKey`](super::RevKey) → [`RevValue`](super::RevValue) (LRU).
    pub const REV: &str = "SLUICE_REV";
    /// [`AffinityKey`](super::AffinityKey) → [`AffinityValue`](super::AffinityValue) (LRU).
    pub const AFFINITY: &str = "SLUICE_AFF";
    /// Per-CPU `u64` counters indexed by [`stats`](super::stats).
    pub const STATS: &str = "SLUICE_STATS";
    /// tc path: [`Tuple`](super::Tuple) of a client's packet to a Service address →
    /// the backend chosen for that flow (LRU).
    pub const CT: &str = "SLUICE_CT";
    /// tc path: [`Tuple`](super::Tuple) of a backend's reply → the Service address to give
    /// back (LRU).
    pub const NAT_REV: &str = "SLUICE_NATREV";
    /// tc path: [`Tuple`](super::Tuple) client → backend → the source it is SNATed to (LRU).
    pub const SNAT: &str = "SLUICE_SNAT";
    /// tc path: [`Tuple`](super::Tuple) backend → SNAT address → the client (LRU).
    pub const SNAT_REV: &str = "SLUICE_SNATREV";
    /// tc path: ifindex → that interface's IPv4 address (the SNAT source there).
    pub const IFADDR: &str = "SLUICE_IFADDR";
    /// The service CIDRs (LPM trie of IPv4 prefixes): unallocated addresses in them are
    /// dropped.
    pub const SERVICE_CIDRS: &str = "SLUICE_SVCCIDR";
    /// `loadBalancerSourceRanges`: LPM trie of [`SrcRange`](super::SrcRange) (a service id,
    /// then a source prefix) → 1.
    pub const SOURCE_RANGES: &str = "SLUICE_SRCRANGE";
    /// A one-slot array: this node's network-namespace cookie (`SO_NETNS_COOKIE` of the
    /// proxy's own sockets), so the socket layer can tell the node's sockets from its pods'.
    pub const NODE: &str = "SLUICE_NODE";
    /// IPv6: [`ServiceKey6`](super::ServiceKey6) → [`ServiceValue`](super::ServiceValue).
    pub const SERVICES6: &str = "SLUICE_SVC6";
    /// IPv6: [`SlotKey`](super::SlotKey) → [`Backend6`](super::Backend6).
    pub const SLOTS6: &str = "SLUICE_SLOTS6";
    /// IPv6: [`RevKey6`](super::RevKey6) → [`RevValue6`](super::RevValue6) (LRU).
    pub const REV6: &str = "SLUICE_REV6";
    /// IPv6: [`AffinityKey`](super::AffinityKey) → [`AffinityValue6`](super::AffinityValue6)
    /// (LRU; the IPv6 service ids are their own, so they get their own map).
    pub const AFFINITY6: &str = "SLUICE_AFF6";
    /// IPv6 tc path: [`Tuple6`](super::Tuple6) of a client's packet to a Service address →
    /// the backend chosen for that flow (LRU).
    pub const CT6: &str = "SLUICE_CT6";
    /// IPv6 tc path: [`Tuple6`](super::Tuple6) of a backend's reply → the Service address
    /// to give back (LRU).
    pub const NAT_REV6: &str = "SLUICE_NATREV6";
    /// IPv6 tc path: [`Tuple6`](super::Tuple6) client → backend → the SNAT source (LRU).
    pub const SNAT6: &str = "SLUICE_SNAT6";
    /// IPv6 tc path: [`Tuple6`](super::Tuple6) backend → SNAT address → the client (LRU).
    pub const SNAT_REV6: &str = "SLUICE_SNATREV6";
    /// IPv6 tc path: ifindex → that interface's IPv6 address (`[u32; 4]`, the SNAT source).
    pub const IFADDR6: &str = "SLUICE_IFADDR6";
    /// The IPv6 service CIDRs (LPM trie of `[u32; 4]` prefixes).
    pub const SERVICE_CIDRS6: &str = "SLUICE_SVCCIDR6";
    /// IPv6 `loadBalancerSourceRanges`: LPM trie of [`SrcRange6`](super::SrcRange6) → 1.
    pub const SOURCE_RANGES6: &str = "SLUICE_SRCRNG6";
    /// Every map, for cleanup.
    pub const ALL: [&str; 24] = [
        CT6,
        NAT_REV6,
        SNAT6,
        SNAT_REV6,
        IFADDR6,
        SERVICE_CIDRS6,
        SOURCE_RANGES6,
        AFFINITY6,
        SERVICES6,
        SLOTS6,
        REV6,
        NODE,
        SOURCE_RANGES,
        SERVICES,
        SLOTS,
        REV,
        AFFINITY,
        STATS,
        CT,
        NAT_REV,
        SNAT,
        SNAT_REV,
        IFADDR,
        SERVICE_CIDRS,
    ];
}

/// Indexes of the per-CPU counters in the stats map.
pub mod stats {
    /// A connect()/sendmsg() to a Service address rewritten to a backend.
    pub const TRANSLATED: u32 = 0;
    /// Refused: the Service has no endpoints at all.
    pub const REJECTED: u32 = 1;
    /// Failed: endpoints exist but none for this traffic policy on this node.
    pub const DROPPED: u32 = 2;
    /// A recvmsg()/getpeername() answer given the Service address back.
    pub const REV_TRANSLATED: u32 = 3;
    /// A reverse entry not used because its Service is gone or changed.
    pub const REV_STALE: u32 = 4;
    /// A Service whose chosen slot was missing (left untranslated).
    pub const NO_SLOT: u32 = 5;
    /// tc: a new flow from outside DNATed to a backend.
    pub const TC_NEW_FLOW: u32 = 6;
    /// tc: a packet dropped (no endpoint for the policy, or none at all).
    pub const TC_DROPPED: u32 = 7;
    /// Slots in the map.
    pub const COUNT: u32 = 8;
    /// Names for metrics, by index.
    pub const NAMES: [&str; 8] = [
        "translated",
        "rejected",
        "dropped",
        "rev_translated",
        "rev_stale",
        "no_slot",
        "tc_new_flow",
        "tc_dropped",
    ];
}

/// Bits of [`ServiceValue::flags`].
pub mod service_flags {
    /// ClientIP session affinity is on; `affinity_timeout` is meaningful.
    pub const AFFINITY: u16 = 1 << 0;
    /// The service has no endpoints at all: reject (ICMP unreachable / TCP RST).
    pub const REJECT: u16 = 1 << 1;
    /// Endpoints exist but none is usable for this traffic class: drop.
    pub const DROP: u16 = 1 << 2;
    /// Only node-local endpoints (externalTrafficPolicy / internalTrafficPolicy Local).
    pub const LOCAL_ONLY: u16 = 1 << 3;
    /// tc path: the source is SNATed to the node (externalTrafficPolicy Cluster).
    pub const SNAT: u16 = 1 << 4;
    /// Only sources in the entry's `loadBalancerSourceRanges` may pass (tc path; the socket
    /// layer leaves such connects to the node's tc programs, which know the source).
    pub const SOURCE_RANGES: u16 = 1 << 5;
    /// With [`SOURCE_RANGES`] on a socket-layer entry: one of the node's IPs is inside the
    /// ranges, so the node's own sockets (network namespace [`NODE`](super::map_names::NODE))
    /// are translated there (kube-proxy's `allowFromNode`); pods' are still left to tc.
    pub const NODE_ALLOWED: u16 = 1 << 6;
}

/// [`ServiceKey::scope`] values.
pub mod scope {
    /// Socket layer: traffic from this node's pods and the node itself.
    pub const SOCKET: u8 = 0;
    /// tc: traffic arriving from outside the node.
    pub const EXTERNAL: u8 = 1;
}

/// Key of the service map: a virtual IP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number (see [`proto`]).
    pub proto: u8,
    /// 0 for cluster-internal scope, 1 for external scope (NodePort, LB with ETP=Local).
    pub scope: u8,
}

/// Value of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Identifies the service's slots in the backend-slot map.
    pub service_id: u32,
    /// Number of slots (backends) to choose from; 0 means see `flags`.
    pub backend_count: u16,
    /// See [`service_flags`].
    pub flags: u16,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: u32,
}

/// Key of the backend-slot map: the n-th backend of a service (slots are 1-based, as in Cilium,
/// so slot 0 can never be confused with a zeroed key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub service_id: u32,
    pub slot: u32,
}

/// A backend (endpoint) that a slot points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number (see [`proto`]).
    pub proto: u8,
    /// Reserved; always 0 so the struct has no padding.
    pub pad: u8,
}

/// IPv6 key of the service map: an address (four big-endian words, as in `user_ip6`), port,
/// protocol and scope.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey6 {
    /// IPv6 address, network byte order, as `bpf_sock_addr.user_ip6` holds it.
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// See [`scope`].
    pub scope: u8,
}

/// An IPv6 backend a slot points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend6 {
    /// IPv6 address, network byte order.
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// IPv6 key of the reverse map: a socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevKey6 {
    /// The socket's cookie.
    pub cookie: u64,
    /// Backend IPv6 address, network byte order.
    pub addr: [u32; 4],
    /// Backend port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
    /// Always 0.
    pub pad2: u32,
}

/// IPv6 value of the reverse map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevValue6 {
    /// The Service key the socket was translated by.
    pub service: ServiceKey6,
    /// That entry's `service_id` at the time.
    pub service_id: u32,
}

/// A packet's addresses, ports and protocol: the key of the tc path's flow maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source IPv4 address, network byte order.
    pub saddr: u32,
    /// Destination IPv4 address, network byte order.
    pub daddr: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always 0.
    pub pad: [u8; 3],
}

/// The data of a source-range trie key: the service id (big-endian, so the id's 32 bits are
/// matched first) and a source address; the prefix length is 32 + the range's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcRange {
    /// The service id, big-endian.
    pub service_id_be: u32,
    /// IPv4 address, network byte order.
    pub addr: u32,
}

/// An IPv6 packet's addresses, ports and protocol: the key of the IPv6 tc flow maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple6 {
    /// Source IPv6 address, network byte order (as in the packet).
    pub saddr: [u32; 4],
    /// Destination IPv6 address, network byte order.
    pub daddr: [u32; 4],
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol (the IPv6 next header).
    pub proto: u8,
    /// Always 0.
    pub pad: [u8; 3],
}

/// An IPv6 address and port to rewrite to, with [`service_flags`] of the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatValue6 {
    /// IPv6 address, network byte order.
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// [`service_flags::SNAT`] when the flow's source is SNATed.
    pub flags: u16,
}

/// The data of an IPv6 source-range trie key: the service id (big-endian) and a source
/// address; the prefix length is 32 + the range's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcRange6 {
    /// The service id, big-endian.
    pub service_id_be: u32,
    /// IPv6 address, network byte order.
    pub addr: [u32; 4],
}

/// An address and port to rewrite to, with [`service_flags`] of the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatValue {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// [`service_flags::SNAT`] when the flow's source is SNATed.
    pub flags: u16,
}

/// Key of the reverse map: a socket (by cookie) and the backend it was sent to, so
/// `recvmsg()` / `getpeername()` can give the Service address back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevKey {
    /// The socket's cookie (`bpf_get_socket_cookie`).
    pub cookie: u64,
    /// Backend IPv4 address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Value of the reverse map: the Service address the socket asked for, and the service
/// entry it was translated by (a reverse entry whose service is gone or changed is not used).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevValue {
    /// The Service key the socket was translated by.
    pub service: ServiceKey,
    /// That entry's `service_id` at the time.
    pub service_id: u32,
}

/// Key of the affinity map: a client (by network-namespace cookie, the socket layer's stand-in
/// for the client IP: one pod, one namespace) and a service entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// `bpf_get_netns_cookie` of the client socket.
    pub netns_cookie: u64,
    /// The service entry's id.
    pub service_id: u32,
    /// Always 0.
    pub pad: u32,
}

/// Value of the affinity map: the backend a client last used, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityValue {
    /// `bpf_ktime_get_ns` of the last use.
    pub last_seen_ns: u64,
    /// The backend.
    pub backend: Backend,
    /// Its slot (the entry is only used while the slot still holds this backend).
    pub slot: u32,
    /// Always 0.
    pub pad: u32,
}

/// IPv6 value of the affinity map: the backend a client last used, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityValue6 {
    /// `bpf_ktime_get_ns` of the last use.
    pub last_seen_ns: u64,
    /// The backend.
    pub backend: Backend6,
    /// Its slot (the entry is only used while the slot still holds this backend).
    pub slot: u32,
}

/// The record the test program (`sluice_xlate_test`, a tc classifier run with
/// `BPF_PROG_TEST_RUN`) reads from its packet and writes its answer into: the socket-LB
/// translation is shared with it, because the kernel cannot test-run `cgroup/connect4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XlateTest {
    /// Destination IPv4 address asked for, network byte order.
    pub addr: u32,
    /// Destination port, network byte order.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Answer: see [`xlate_verdict`].
    pub verdict: u8,
    /// Socket cookie.
    pub cookie: u64,
    /// Network-namespace cookie.
    pub netns_cookie: u64,
    /// The "random" number the pick uses.
    pub random: u32,
    /// Answer: the translated address (network byte order).
    pub out_addr: u32,
    /// Answer: the translated port (network byte order).
    pub out_port: u16,
    /// Always 0.
    pub pad: [u8; 6],
}

/// Values of [`XlateTest::verdict`].
pub mod xlate_verdict {
    /// Not a Service address: left alone.
    pub const PASS: u8 = 0;
    /// Translated to `out_addr:out_port`.
    pub const FORWARD: u8 = 1;
    /// Refused (no endpoints).
    pub const REJECT: u8 = 2;
    /// Failed (no endpoint for this policy here).
    pub const DROP: u8 = 3;
}

// Tests exercise the userspace conversions too, whatever the features.
#[cfg(any(feature = "user", test))]
mod user {
    //! Conversions from std socket types; userspace only.
    extern crate std;
    use super::{Backend, ServiceKey, ServiceKey6};
    use std::net::SocketAddrV4;

    impl ServiceKey {
        /// The key for a virtual IP and port in the given scope.
        pub fn new(vip: SocketAddrV4, proto: u8, scope: u8) -> Self {
            Self {
                addr: u32::from(*vip.ip()).to_be(),
                port: vip.port().to_be(),
                proto,
                scope,
            }
        }

        /// The same address's wildcard key (port 0, protocol 0): the entry for the ports it
        /// does not serve.
        pub fn wildcard(self) -> Self {
            Self {
                port: 0,
                proto: 0,
                ..self
            }
        }

        /// The virtual IP and port this key matches.
        pub fn socket_addr(&self) -> SocketAddrV4 {
            SocketAddrV4::new(u32::from_be(self.addr).into(), u16::from_be(self.port))
        }
    }

    impl ServiceKey6 {
        /// The key for an IPv6 address and port in the given scope.
        pub fn new(vip: std::net::SocketAddrV6, proto: u8, scope: u8) -> Self {
            Self {
                addr: words(vip.ip()),
                port: vip.port().to_be(),
                proto,
                scope,
            }
        }

        /// The same address's wildcard key (port 0, protocol 0).
        pub fn wildcard(self) -> Self {
            Self {
                port: 0,
                proto: 0,
                ..self
            }
        }

        /// The address and port this key matches.
        pub fn socket_addr(&self) -> std::net::SocketAddrV6 {
            std::net::SocketAddrV6::new(ip6(&self.addr), u16::from_be(self.port), 0, 0)
        }
    }

    impl super::Backend6 {
        /// A backend at the given IPv6 endpoint address.
        pub fn new(endpoint: std::net::SocketAddrV6, proto: u8) -> Self {
            Self {
                addr: words(endpoint.ip()),
                port: endpoint.port().to_be(),
                proto,
                pad: 0,
            }
        }

        /// The endpoint address this backend sends to.
        pub fn socket_addr(&self) -> std::net::SocketAddrV6 {
            std::net::SocketAddrV6::new(ip6(&self.addr), u16::from_be(self.port), 0, 0)
        }
    }

    /// The address four `user_ip6` words hold.
    pub fn ip6(words: &[u32; 4]) -> std::net::Ipv6Addr {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(o)
    }

    /// An IPv6 address as `user_ip6` holds it: four words, each in network byte order.
    pub fn words(ip: &std::net::Ipv6Addr) -> [u32; 4] {
        let o = ip.octets();
        core::array::from_fn(|i| {
            u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        })
    }

    impl Backend {
        /// A backend at the given endpoint address.
        pub fn new(endpoint: SocketAddrV4, proto: u8) -> Self {
            Self {
                addr: u32::from(*endpoint.ip()).to_be(),
                port: endpoint.port().to_be(),
                proto,
                pad: 0,
            }
        }

        /// The endpoint address this backend sends to.
        pub fn socket_addr(&self) -> SocketAddrV4 {
            SocketAddrV4::new(u32::from_be(self.addr).into(), u16::from_be(self.port))
        }
    }
}

/// IPv6 addresses as the maps hold them (four words in network byte order) and back.
#[cfg(any(feature = "user", test))]
pub use user::{ip6 as ip6_from_words, words as ip6_words};

// SAFETY: every type is `#[repr(C)]`, `Copy`, made of integers only, and has no implicit
// padding (checked by `layouts_have_no_padding`), so any bit pattern is a valid value and
// every byte is initialised.
#[cfg(feature = "user")]
#[allow(
    unsafe_code,
    reason = "aya::Pod is an unsafe marker trait; see SAFETY above"
)]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for RevKey {}
    unsafe impl aya::Pod for RevValue {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for AffinityValue {}
    unsafe impl aya::Pod for XlateTest {}
    unsafe impl aya::Pod for Tuple {}
    unsafe impl aya::Pod for NatValue {}
    unsafe impl aya::Pod for SrcRange {}
    unsafe impl aya::Pod for ServiceKey6 {}
    unsafe impl aya::Pod for Backend6 {}
    unsafe impl aya::Pod for RevKey6 {}
    unsafe impl aya::Pod for RevValue6 {}
    unsafe impl aya::Pod for AffinityValue6 {}
    unsafe impl aya::Pod for Tuple6 {}
    unsafe impl aya::Pod for NatValue6 {}
    unsafe impl aya::Pod for SrcRange6 {}
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux ≥ 5.14), the
/// value `bpf_get_netns_cookie` gives the socket-layer programs for sockets of that
/// namespace. Lives here because this crate is where the project allows `unsafe`.
#[cfg(feature = "user")]
#[allow(
    unsafe_code,
    reason = "socket(2) and getsockopt(2) through libc; see SAFETY below"
)]
pub fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain system call; the descriptor is owned (and closed) by `fd` below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cookie = 0u64;
    let mut len = core::mem::size_of::<u64>() as libc::socklen_t;
    // SO_NETNS_COOKIE (71 on every architecture but a few this project does not build for).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    match r {
        0 => Ok(cookie),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `BPF_MAP_UPDATE_BATCH` (Linux ≥ 5.6): writes `keys[i] → values[i]` into the map behind
/// `map`, in order, with one system call instead of one per entry (aya 0.14 has no batch
/// operations). `flags` are the per-element `BPF_ANY`/`BPF_NOEXIST`/`BPF_EXIST`. An error
/// may come after some entries were written (a retry writes them again, harmlessly).
#[cfg(feature = "user")]
#[allow(
    unsafe_code,
    reason = "the bpf(2) system call through libc; see SAFETY below"
)]
pub fn map_update_batch<K: aya::Pod, V: aya::Pod>(
    map: std::os::fd::BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    flags: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    if keys.len() != values.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    if keys.is_empty() {
        return Ok(());
    }
    let count = u32::try_from(keys.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    /// `union bpf_attr`'s `batch` member (56 bytes, no padding).
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: flags,
        flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the kernel reads
    // `count` keys and values from the two slices, which are that long and live across the
    // call, and writes only `count` back into `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &raw mut attr,
            core::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `BPF_MAP_LOOKUP_BATCH` (Linux ≥ 5.6): every entry of the hash map behind `map`, read a
/// few thousand per system call instead of two calls per entry (`get_next_key` + lookup);
/// `each` gets them in the kernel's bucket order. Errors as the kernel gives them (EINVAL:
/// no batch operations here — the caller reads entry by entry).
#[cfg(feature = "user")]
#[allow(
    unsafe_code,
    reason = "the bpf(2) system call through libc; see SAFETY below"
)]
pub fn map_lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: std::os::fd::BorrowedFd<'_>,
    mut each: impl FnMut(K, V),
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    const CHUNK: usize = 4096;
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    // SAFETY: K and V are Pod (plain integers, any bit pattern valid), so zeroes are values.
    let mut keys: std::vec::Vec<K> = std::vec![unsafe { core::mem::zeroed() }; CHUNK];
    // SAFETY: as above.
    let mut values: std::vec::Vec<V> = std::vec![unsafe { core::mem::zeroed() }; CHUNK];
    // The kernel's position token (a bucket index for hash maps); room to spare.
    let mut token_in = [0u64; 8];
    let mut token_out = [0u64; 8];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the kernel writes at
        // most `count` (= the buffers' length) keys and values and one token into buffers
        // that live across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                core::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let err = (r != 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(CHUNK);
        for i in 0..n {
            each(keys[i], values[i]);
        }
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// No implicit padding: the size is exactly the sum of the fields.
    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<ServiceKey>(), 4 + 2 + 1 + 1);
        assert_eq!(size_of::<ServiceValue>(), 4 + 2 + 2 + 4);
        assert_eq!(size_of::<SlotKey>(), 4 + 4);
        assert_eq!(size_of::<Backend>(), 4 + 2 + 1 + 1);
        assert_eq!(align_of::<ServiceKey>(), 4);
        assert_eq!(size_of::<RevKey>(), 8 + 4 + 2 + 2);
        assert_eq!(size_of::<Tuple>(), 4 + 4 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<NatValue>(), 4 + 2 + 2);
        assert_eq!(size_of::<RevValue>(), 8 + 4);
        assert_eq!(size_of::<AffinityKey>(), 8 + 4 + 4);
        assert_eq!(size_of::<AffinityValue>(), 8 + 8 + 4 + 4);
        assert_eq!(size_of::<ServiceKey6>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<Backend6>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<RevKey6>(), 8 + 16 + 2 + 2 + 4);
        assert_eq!(size_of::<RevValue6>(), 20 + 4);
        assert_eq!(size_of::<AffinityValue6>(), 8 + 20 + 4);
        assert_eq!(align_of::<AffinityValue6>(), 8);
        assert_eq!(size_of::<Tuple6>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(align_of::<Tuple6>(), 4);
        assert_eq!(size_of::<NatValue6>(), 16 + 2 + 2);
        assert_eq!(size_of::<SrcRange6>(), 4 + 16);
        assert_eq!(
            size_of::<XlateTest>(),
            4 + 2 + 1 + 1 + 8 + 8 + 4 + 4 + 2 + 6
        );
    }

    #[test]
    fn socket_addresses_round_trip_in_network_order() {
        extern crate std;
        use std::net::{Ipv4Addr, SocketAddrV4};
        let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
        let key = ServiceKey::new(vip, proto::UDP, 0);
        assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 53]);
        assert_eq!(key.socket_addr(), vip);
        let be = Backend::new(
            SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080),
            proto::TCP,
        );
        assert_eq!(
            be.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080)
        );
        assert_eq!(be.port.to_ne_bytes(), [0x1f, 0x90]);
    }

    #[test]
    fn ipv6_addresses_round_trip_as_user_ip6_words() {
        extern crate std;
        use std::net::SocketAddrV6;
        let vip: SocketAddrV6 = "[fd00:96::1710]:80".parse().unwrap();
        let key = ServiceKey6::new(vip, proto::TCP, 0);
        // user_ip6[0] holds the first four octets in network order.
        assert_eq!(key.addr[0].to_ne_bytes(), [0xfd, 0x00, 0x00, 0x96]);
        assert_eq!(key.addr[3].to_ne_bytes(), [0, 0, 0x17, 0x10]);
        assert_eq!(key.socket_addr(), vip);
        let be: SocketAddrV6 = "[fd10:244:1::3]:8080".parse().unwrap();
        assert_eq!(Backend6::new(be, proto::TCP).socket_addr(), be);
    }
}
