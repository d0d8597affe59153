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

/// IP protocol numbers as they appear in the IPv4 header.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
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

// Tests exercise the userspace conversions too, whatever the features.
#[cfg(any(feature = "user", test))]
mod user {
    //! Conversions from std socket types; userspace only.
    extern crate std;
    use super::{Backend, ServiceKey};
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

        /// The virtual IP and port this key matches.
        pub fn socket_addr(&self) -> SocketAddrV4 {
            SocketAddrV4::new(u32::from_be(self.addr).into(), u16::from_be(self.port))
        }
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
}
