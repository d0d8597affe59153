//! The `Backend` object: which overlay to build and its knobs. Only the keys
//! Sluice acts on are typed; the rest (`GBP`, `Learning`, wireguard keys, …) are
//! kept so writing the configuration back loses nothing.

use std::collections::BTreeMap;
use std::fmt;

/// flannel's default VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 1;
/// The kernel's default VXLAN UDP port (flannel's `Port: 0`).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// `Backend.Type`, matched case-insensitively as flannel does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendType {
    /// `vxlan` (the default).
    #[default]
    Vxlan,
    /// `host-gw`.
    HostGw,
}

impl BackendType {
    /// Parses the `Type` value; `None` for backends Sluice does not implement.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "vxlan" => Some(Self::Vxlan),
            "host-gw" => Some(Self::HostGw),
            _ => None,
        }
    }

    /// The canonical name, as written in `Type` and the `backend-type` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
        }
    }
}

impl fmt::Display for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Backend` object.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Backend {
    /// `Type`.
    pub backend_type: BackendType,
    /// `VNI` (vxlan); see [`Backend::vni`].
    pub vni: Option<u32>,
    /// `Port` (vxlan UDP port); see [`Backend::port`].
    pub port: Option<u16>,
    /// `MTU` override of the overlay device.
    pub mtu: Option<u32>,
    /// `DirectRouting` (vxlan): plain routes to peers on the same L2.
    pub direct_routing: Option<bool>,
    /// Other keys, kept verbatim.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Backend {
    /// The VNI, 1 when unset.
    pub fn vni(&self) -> u32 {
        self.vni.unwrap_or(DEFAULT_VNI)
    }

    /// The VXLAN UDP port, 8472 when unset or 0.
    pub fn port(&self) -> u16 {
        self.port.filter(|p| *p != 0).unwrap_or(DEFAULT_VXLAN_PORT)
    }

    /// Whether `DirectRouting` is on.
    pub fn direct_routing(&self) -> bool {
        self.direct_routing.unwrap_or(false)
    }
}
