//! A node's lease on a pod subnet, in the two wire forms flannel uses — the etcd value
//! (`lease.LeaseAttrs` JSON under `<prefix>/subnets/<a.b.c.d>-<len>`) and the Node annotations
//! of the kube subnet manager — so a Sluice node and a flannel node can be peers.
//!
//! Backend data stays raw JSON until a backend asks for it: a lease from a backend we do not
//! run (wireguard, udp) must still parse, so it can be skipped rather than poison the whole
//! peer list.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// What is wrong with a lease or its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The etcd key is not `<a.b.c.d>-<len>[&<v6>-<len>]`.
    #[error("lease key {key:?}: {reason}")]
    Key {
        /// The key (without the prefix).
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The value is not lease JSON.
    #[error("lease {subnet}: invalid value: {reason}")]
    Value {
        /// The subnet the lease is for.
        subnet: String,
        /// The JSON error.
        reason: String,
    },
    /// A required annotation is missing or unparseable.
    #[error("node {node}: annotation {key}: {reason}")]
    Annotation {
        /// The node's name.
        node: String,
        /// The full annotation key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// `BackendData` is not what its backend type needs.
    #[error("lease {subnet}: BackendData: {reason}")]
    BackendData {
        /// The subnet the lease is for.
        subnet: String,
        /// What is wrong.
        reason: String,
    },
}

/// flannel's `lease.LeaseAttrs`, field for field (`PublicIPv6` is written as `null` when
/// unset, as Go does without `omitempty`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// The node's underlay (VTEP) IPv4 address.
    #[serde(rename = "PublicIP", default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// The node's underlay IPv6 address.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// `vxlan`, `host-gw`, …
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    /// Backend-specific data, e.g. `{"VNI":1,"VtepMAC":"…"}` for vxlan.
    #[serde(rename = "BackendData", default, skip_serializing_if = "is_null")]
    pub backend_data: serde_json::Value,
    /// The same for the IPv6 device.
    #[serde(rename = "BackendV6Data", default, skip_serializing_if = "is_null")]
    pub backend_v6_data: serde_json::Value,
}

fn is_null(v: &serde_json::Value) -> bool {
    v.is_null()
}

/// VXLAN backend data: the VNI and the VTEP's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    /// VXLAN network identifier.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// The MAC of the node's `flannel.<VNI>` device.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: Mac,
}

/// One node's lease: its subnets and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The IPv4 pod subnet, if the node has one.
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 pod subnet, if the node has one.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// What the node published.
    pub attrs: LeaseAttrs,
}

impl Lease {
    /// A name for messages: the subnets, as in the etcd key.
    pub fn label(&self) -> String {
        subnet_key(self.subnet, self.ipv6_subnet)
    }

    /// The VXLAN data for `family` (`BackendData` or `BackendV6Data`); `None` when absent.
    pub fn vxlan_data(&self, v6: bool) -> Result<Option<VxlanData>, LeaseError> {
        let raw = if v6 {
            &self.attrs.backend_v6_data
        } else {
            &self.attrs.backend_data
        };
        if raw.is_null() {
            return Ok(None);
        }
        serde_json::from_value(raw.clone())
            .map(Some)
            .map_err(|e| LeaseError::BackendData {
                subnet: self.label(),
                reason: e.to_string(),
            })
    }

    /// Parses an etcd lease: its key (without `<prefix>/subnets/`) and JSON value.
    pub fn from_etcd(key: &str, value: &str) -> Result<Self, LeaseError> {
        let (subnet, ipv6_subnet) = parse_subnet_key(key)?;
        let attrs = serde_json::from_str(value).map_err(|e| LeaseError::Value {
            subnet: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            subnet,
            ipv6_subnet,
            attrs,
        })
    }

    /// The etcd value flannel writes for this lease.
    pub fn etcd_value(&self) -> String {
        // Invariant: LeaseAttrs holds only strings, addresses and JSON values.
        serde_json::to_string(&self.attrs).unwrap_or_default()
    }
}

/// The etcd key of a lease (below `<prefix>/subnets/`): `10.244.1.0-24`, or
/// `10.244.1.0-24&fd00:1::-64` for dual stack, or the IPv6 part alone. Addresses are written
/// as they are, so a key with host bits set (which no node should write) keeps its name.
pub fn subnet_key(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> String {
    let v4 = v4.map(|n| format!("{}-{}", n.addr(), n.prefix_len()));
    let v6 = v6.map(|n| format!("{}-{}", n.addr(), n.prefix_len()));
    match (v4, v6) {
        (Some(a), Some(b)) => format!("{a}&{b}"),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => String::new(),
    }
}

/// Parses [`subnet_key`]'s format.
pub fn parse_subnet_key(key: &str) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), LeaseError> {
    let err = |reason: &str| LeaseError::Key {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let (mut v4, mut v6) = (None, None);
    for part in key.split('&') {
        let (addr, len) = part.rsplit_once('-').ok_or_else(|| err("no '-<len>'"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| err("prefix length is not a number"))?;
        match addr
            .parse::<IpAddr>()
            .map_err(|_| err("not an IP address"))?
        {
            IpAddr::V4(a) if v4.is_none() => {
                v4 = Some(Ipv4Net::new(a, len).map_err(|_| err("prefix too long"))?)
            }
            IpAddr::V6(a) if v6.is_none() => {
                v6 = Some(Ipv6Net::new(a, len).map_err(|_| err("prefix too long"))?)
            }
            _ => return Err(err("two subnets of one family")),
        }
    }
    Ok((v4, v6))
}

/// The annotation keys of the kube subnet manager under one prefix
/// (default `flannel.alpha.coreos.com/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationKeys {
    prefix: String,
}

/// flannel's default annotation prefix.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";

impl Default for AnnotationKeys {
    fn default() -> Self {
        Self::new(DEFAULT_ANNOTATION_PREFIX)
    }
}

impl AnnotationKeys {
    /// Keys under `prefix`, normalised as flannel does: `a.b` → `a.b/`, `a.b/c` → `a.b/c-`.
    pub fn new(prefix: &str) -> Self {
        let prefix = match prefix.split_once('/') {
            None => format!("{prefix}/"),
            Some((_, "")) => prefix.to_owned(),
            Some(_) => format!("{prefix}-"),
        };
        Self { prefix }
    }

    /// The full key for `suffix`, e.g. `flannel.alpha.coreos.com/backend-data`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The annotations a node publishes for `attrs`.
    pub fn publish(&self, attrs: &LeaseAttrs) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(self.key("kube-subnet-manager"), "true".to_owned());
        out.insert(self.key("backend-type"), attrs.backend_type.clone());
        out.insert(self.key("backend-data"), attrs.backend_data.to_string());
        if let Some(ip) = attrs.public_ip {
            out.insert(self.key("public-ip"), ip.to_string());
        }
        if let Some(ip) = attrs.public_ipv6 {
            out.insert(self.key("public-ipv6"), ip.to_string());
            out.insert(
                self.key("backend-v6-data"),
                attrs.backend_v6_data.to_string(),
            );
        }
        out
    }

    /// Reads a peer's attributes from its annotations; `None` for nodes that no kube subnet
    /// manager has claimed (flannel ignores those too).
    pub fn read(
        &self,
        node: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<LeaseAttrs>, LeaseError> {
        if annotations
            .get(&self.key("kube-subnet-manager"))
            .map(String::as_str)
            != Some("true")
        {
            return Ok(None);
        }
        let err = |suffix: &str, reason: String| LeaseError::Annotation {
            node: node.to_owned(),
            key: self.key(suffix),
            reason,
        };
        let get = |suffix: &str| annotations.get(&self.key(suffix)).map(String::as_str);
        let json = |suffix: &str| -> Result<serde_json::Value, LeaseError> {
            get(suffix).map_or(Ok(serde_json::Value::Null), |text| {
                serde_json::from_str(text).map_err(|e| err(suffix, e.to_string()))
            })
        };
        let ip = |suffix: &str| -> Result<Option<IpAddr>, LeaseError> {
            get(suffix)
                .map(|t| {
                    t.parse()
                        .map_err(|_| err(suffix, format!("not an IP address: {t:?}")))
                })
                .transpose()
        };
        let public_ip = match ip("public-ip")? {
            Some(IpAddr::V4(a)) => Some(a),
            Some(IpAddr::V6(_)) => return Err(err("public-ip", "not an IPv4 address".into())),
            None => None,
        };
        let public_ipv6 = match ip("public-ipv6")? {
            Some(IpAddr::V6(a)) => Some(a),
            Some(IpAddr::V4(_)) => return Err(err("public-ipv6", "not an IPv6 address".into())),
            None => None,
        };
        Ok(Some(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type: get("backend-type").unwrap_or_default().to_owned(),
            backend_data: json("backend-data")?,
            backend_v6_data: json("backend-v6-data")?,
        }))
    }
}
