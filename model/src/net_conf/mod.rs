//! flannel's `net-conf.json` (`/etc/kube-flannel/net-conf.json`, or the etcd
//! `<prefix>/config` key): the cluster network the overlay builds. Operators
//! bring their existing file, so it is read the way flannel reads it (Go
//! `encoding/json`: case-insensitive keys, unknown keys ignored, `EnableIPv4`
//! defaulting to true), defaults are computed and checked as flannel's
//! `CheckNetworkConfig` does ([`NetConf::check`]), and every error names the
//! file, line and key so the fix is obvious.
//!
//! Deliberate differences: a missing `Backend` means `vxlan` (flannel's docs say
//! so; its code would pick `udp`, which Sluice does not implement); backend types
//! other than `vxlan` and `host-gw` are rejected at parse time; unknown keys are
//! kept, not dropped, so a round trip loses nothing.

mod backend;
mod check;
mod doc;
mod fields;
mod json;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};

pub use backend::{Backend, BackendType, DEFAULT_VNI, DEFAULT_VXLAN_PORT};
pub use check::{MAX_MTU, MAX_VNI, MIN_MTU, MIN_MTU_V6, SubnetRange, SubnetRanges};

use crate::location::Location;

/// Where flannel's DaemonSet mounts the file.
pub const DEFAULT_PATH: &str = "/etc/kube-flannel/net-conf.json";

/// The largest file read (real ones are a few hundred bytes).
pub const MAX_BYTES: usize = 64 << 10;

/// A parsed `net-conf.json`. Optional keys stay `None` when absent, so writing
/// the value back does not invent keys; [`NetConf::check`] computes defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `Network`, masked to its network address as flannel does.
    pub network: Option<Ipv4Net>,
    /// `IPv6Network`, masked.
    pub ipv6_network: Option<Ipv6Net>,
    /// `EnableIPv4` (default true).
    pub enable_ipv4: bool,
    /// `EnableIPv6` (default false).
    pub enable_ipv6: bool,
    /// `SubnetLen` (0 or absent: computed).
    pub subnet_len: Option<u32>,
    /// `SubnetMin` (absent or `0.0.0.0`: computed).
    pub subnet_min: Option<Ipv4Addr>,
    /// `SubnetMax` (absent or `0.0.0.0`: computed).
    pub subnet_max: Option<Ipv4Addr>,
    /// `IPv6SubnetLen`.
    pub ipv6_subnet_len: Option<u32>,
    /// `IPv6SubnetMin`.
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    /// `IPv6SubnetMax`.
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// `EnableNFTables` (default false).
    pub enable_nftables: bool,
    /// `Backend`.
    pub backend: Backend,
    /// Top-level keys flannel does not know, kept verbatim.
    pub extra: BTreeMap<String, serde_json::Value>,
    origin: Origin,
}

/// Where each key was read from, so [`NetConf::check`] errors can point at it.
/// Not part of the value: two configurations with equal keys are equal
/// wherever they were read from.
#[derive(Clone, Debug, Default)]
struct Origin {
    file: Option<PathBuf>,
    keys: BTreeMap<String, Location>,
}

impl PartialEq for Origin {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

/// A `net-conf.json` that cannot be read, parsed or used.
#[derive(Debug, thiserror::Error)]
pub enum NetConfError {
    /// Not JSON, or not a JSON object.
    #[error("{location}: invalid json: {message}")]
    Syntax {
        /// File, line and column.
        location: Location,
        /// serde_json's description.
        message: String,
    },
    /// A key with an unusable value, e.g.
    /// `net-conf.json:3:16: SubnetLen: must be at most 30, got 31`.
    #[error("{location}: {key}: {problem}")]
    Value {
        /// File, line and column of the value (just the file for a missing key).
        location: Location,
        /// The key, nested ones dotted (`Backend.VNI`).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The file cannot be read.
    #[error("{}: read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl Default for NetConf {
    fn default() -> Self {
        Self {
            network: None,
            ipv6_network: None,
            enable_ipv4: true,
            enable_ipv6: false,
            subnet_len: None,
            subnet_min: None,
            subnet_max: None,
            ipv6_subnet_len: None,
            ipv6_subnet_min: None,
            ipv6_subnet_max: None,
            enable_nftables: false,
            backend: Backend::default(),
            extra: BTreeMap::new(),
            origin: Origin::default(),
        }
    }
}

impl NetConf {
    /// Parses JSON text; see [`NetConf::read`] for files.
    pub fn parse(text: &str) -> Result<Self, NetConfError> {
        fields::parse(text, None)
    }

    /// Reads and parses the file at `path`; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, NetConfError> {
        let path = path.as_ref();
        let text =
            crate::bounded::read_to_string(path, MAX_BYTES).map_err(|source| NetConfError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        fields::parse(&text, Some(path.to_path_buf()))
    }

    /// An error about `key`, located where the key was read (or in the file).
    fn error(&self, key: &str, problem: String) -> NetConfError {
        let location = self
            .origin
            .keys
            .get(key)
            .cloned()
            .unwrap_or_else(|| Location {
                file: self.origin.file.clone(),
                ..Location::default()
            });
        NetConfError::Value {
            location,
            key: key.to_owned(),
            problem,
        }
    }
}
