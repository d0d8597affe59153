//! flannel's `/run/flannel/subnet.env`: the hand-off from the overlay daemon to
//! the CNI plugin. Existing tooling (flannel's own CNI plugin, scripts, people
//! who hand-write the file) reads it, so the writer is byte-compatible with
//! flannel's `WriteSubnetFile` and the reader accepts what flannel's CNI plugin
//! (`loadFlannelSubnetEnv`) accepts. One type for both sides keeps them in step.
//!
//! Format, in this order, `KEY=VALUE\n`, no quoting, comments or blank lines:
//! `FLANNEL_NETWORK`, `FLANNEL_SUBNET` (IPv4 only), `FLANNEL_IPV6_NETWORK`,
//! `FLANNEL_IPV6_SUBNET` (IPv6 only), `FLANNEL_MTU`, `FLANNEL_IPMASQ`.

mod file;
mod parse;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::location::Location;

/// Where flannel (and so Sluice) writes the file.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// The largest file read (a real one is about 150 bytes; a few networks fit many times).
pub const MAX_BYTES: usize = 64 << 10;

/// The contents of a `subnet.env`.
///
/// Networks and subnets are kept exactly as written (the subnet normally has
/// its first host address, `10.244.1.1/24`); use [`SubnetEnv::subnet_network`]
/// for the masked network the CNI plugin hands to IPAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`, a comma-separated list; empty when IPv4 is off.
    pub networks: Vec<Ipv4Net>,
    /// `FLANNEL_SUBNET`; `None` when IPv4 is off.
    pub subnet: Option<Ipv4Net>,
    /// `FLANNEL_IPV6_NETWORK`, a comma-separated list; empty when IPv6 is off.
    pub ipv6_networks: Vec<Ipv6Net>,
    /// `FLANNEL_IPV6_SUBNET`; `None` when IPv6 is off.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`.
    pub ipmasq: bool,
}

/// A `subnet.env` that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    /// A known key with an unusable value, e.g.
    /// `/run/flannel/subnet.env:3: FLANNEL_MTU: invalid number "abc"`.
    #[error("{location}: {key}: {problem}")]
    Value {
        /// File and line.
        location: Location,
        /// The key on that line.
        key: &'static str,
        /// What is wrong with the value.
        problem: String,
    },
    /// Required keys are absent (as flannel's CNI plugin requires them).
    #[error("{location}: missing {keys}")]
    Missing {
        /// The file.
        location: Location,
        /// The missing keys, comma-separated.
        keys: String,
    },
    /// Reading or writing the file failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done, e.g. `rename`.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl SubnetEnv {
    /// Parses the text of a `subnet.env`; see [`SubnetEnv::read`] for files.
    pub fn parse(text: &str) -> Result<Self, SubnetEnvError> {
        parse::parse(text, None)
    }

    /// `FLANNEL_SUBNET` masked to its network (`10.244.1.1/24` → `10.244.1.0/24`).
    pub fn subnet_network(&self) -> Option<Ipv4Net> {
        self.subnet.map(|net| net.trunc())
    }

    /// `FLANNEL_IPV6_SUBNET` masked to its network.
    pub fn ipv6_subnet_network(&self) -> Option<Ipv6Net> {
        self.ipv6_subnet.map(|net| net.trunc())
    }

    /// What flannel writes as `FLANNEL_SUBNET` for a leased subnet: the network
    /// address plus one, same prefix (`10.244.1.0/24` → `10.244.1.1/24`).
    pub fn first_host_v4(lease: Ipv4Net) -> Ipv4Net {
        let ip = Ipv4Addr::from(u32::from(lease.network()).wrapping_add(1));
        Ipv4Net::new(ip, lease.prefix_len()).unwrap_or(lease)
    }

    /// The IPv6 analogue of [`SubnetEnv::first_host_v4`].
    pub fn first_host_v6(lease: Ipv6Net) -> Ipv6Net {
        let ip = Ipv6Addr::from(u128::from(lease.network()).wrapping_add(1));
        Ipv6Net::new(ip, lease.prefix_len()).unwrap_or(lease)
    }
}

/// Exactly the bytes flannel's `WriteSubnetFile` writes.
impl fmt::Display for SubnetEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.networks.is_empty() {
            writeln!(f, "FLANNEL_NETWORK={}", join(&self.networks))?;
        }
        if let Some(subnet) = self.subnet {
            writeln!(f, "FLANNEL_SUBNET={subnet}")?;
        }
        if !self.ipv6_networks.is_empty() {
            writeln!(f, "FLANNEL_IPV6_NETWORK={}", join(&self.ipv6_networks))?;
        }
        if let Some(subnet) = self.ipv6_subnet {
            writeln!(f, "FLANNEL_IPV6_SUBNET={subnet}")?;
        }
        writeln!(f, "FLANNEL_MTU={}", self.mtu)?;
        writeln!(f, "FLANNEL_IPMASQ={}", self.ipmasq)
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    texts.join(",")
}
