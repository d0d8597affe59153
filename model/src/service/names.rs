//! Identifiers shared by every backend: protocol, address family and the
//! `ns/name:port` names kube-proxy uses as map keys, chain-hash input and rule
//! comments. They must print exactly like kube-proxy's, because iptables chain
//! names are hashes of these strings.
//!
//! The parts are `Arc<str>`: every Service port name is held by several maps
//! (trackers, snapshot, backends), and a clone that shares the text instead
//! of allocating three new strings keeps those maps small and cheap to fill.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// An L4 protocol a Service port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `TCP` (the API default).
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); anything else is `None`.
    pub fn from_api(value: &str) -> Option<Self> {
        match value {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The API spelling, e.g. `TCP`.
    pub fn as_api_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }

    /// The lower-case spelling used in iptables/nftables rules and chain hashes.
    pub fn as_lower_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// The IP protocol number (IANA): what the kernel's conntrack, IPVS and BPF see.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The protocol of an IP protocol number, if it is one a Service can use.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api_str())
    }
}

/// An IP address family; kube-proxy runs one single-family proxier per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        Self::of(ip) == self
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// A Service's namespaced name; displays as `<ns>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The Service's name.
    pub name: Arc<str>,
}

impl ServiceName {
    /// Builds a name from its parts.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of one Service: kube-proxy's `ServicePortName`.
///
/// Displays as `<ns>/<name>` plus `:<port>` only when the port is named, exactly
/// like kube-proxy (the protocol is not part of the display).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The Service's name.
    pub name: Arc<str>,
    /// The port's name; empty for the single unnamed port of a Service.
    pub port: Arc<str>,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Builds a port name for `service`.
    pub fn new(service: &ServiceName, port: impl Into<Arc<str>>, protocol: Protocol) -> Self {
        Self {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            port: port.into(),
            protocol,
        }
    }

    /// The Service this port belongs to.
    pub fn service(&self) -> ServiceName {
        ServiceName::new(self.namespace.clone(), self.name.clone())
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}
