//! What IPVS holds, as plain values: virtual servers (address, protocol, port, scheduler,
//! persistence) and their real servers (address, port, weight, connection counts). Render,
//! diff, the fake and the netlink client all speak these.

use std::fmt;
use std::net::IpAddr;

/// IPPROTO_TCP.
pub const TCP: u16 = 6;
/// IPPROTO_UDP.
pub const UDP: u16 = 17;
/// IPPROTO_SCTP.
pub const SCTP: u16 = 132;

/// `IP_VS_SVC_F_PERSISTENT`: ClientIP affinity.
pub const F_PERSISTENT: u32 = 0x1;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service it holds (ignored in compares).
pub const F_HASHED: u32 = 0x2;
/// `IP_VS_SVC_F_SCHED2` (`FlagSourceHash` in kube-proxy): the `mh` scheduler hashes the port
/// too.
pub const F_SOURCE_HASH: u32 = 0x10;

/// A virtual server's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VsKey {
    /// The virtual address.
    pub addr: IpAddr,
    /// IPPROTO_*.
    pub protocol: u16,
    /// The virtual port.
    pub port: u16,
}

impl fmt::Display for VsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            TCP => "TCP",
            UDP => "UDP",
            SCTP => "SCTP",
            _ => "?",
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{proto} {a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "{proto} [{a}]:{}", self.port),
        }
    }
}

/// A virtual server (NAT forwarding is per real server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualServer {
    /// Its identity.
    pub key: VsKey,
    /// The scheduler (`rr`, `wrr`, `lc`, `sh`, `mh`, …).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` (without [`F_HASHED`]).
    pub flags: u32,
    /// The persistence timeout in seconds (with [`F_PERSISTENT`]).
    pub timeout: u32,
}

impl VirtualServer {
    /// Whether `other` needs no edit to become `self` (the kernel's hashed bit ignored).
    pub fn same(&self, other: &VirtualServer) -> bool {
        self.key == other.key
            && self.scheduler == other.scheduler
            && (self.flags & !F_HASHED) == (other.flags & !F_HASHED)
            && self.timeout == other.timeout
    }
}

/// A real server's identity within its virtual server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RsKey {
    /// Its address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
}

impl fmt::Display for RsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.addr, self.port))
    }
}

/// A real server (always masquerading: NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealServer {
    /// Its identity.
    pub key: RsKey,
    /// Its weight (kube-proxy: 1; 0 while terminating gracefully).
    pub weight: i32,
    /// Active connections (read back; ignored when writing).
    pub active: u32,
    /// Inactive connections (read back; ignored when writing).
    pub inactive: u32,
}

impl RealServer {
    /// A real server of weight `weight`.
    pub fn new(addr: IpAddr, port: u16, weight: i32) -> Self {
        Self {
            key: RsKey { addr, port },
            weight,
            active: 0,
            inactive: 0,
        }
    }
}
