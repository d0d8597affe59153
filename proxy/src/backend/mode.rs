//! `--proxy-mode` / `mode:` values. Parsing lives next to the backends so the
//! flag, the config file and [`super::Any::new`] agree on one spelling.

use std::fmt;
use std::str::FromStr;

/// A dataplane implementation, named as kube-proxy's `--proxy-mode` names it,
/// plus Sluice's `ebpf` and the test-only `fake`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyMode {
    /// One nftables table per family (kube-proxy's `nftables`).
    Nftables,
    /// `iptables-restore` chains (kube-proxy's `iptables`, its Linux default).
    Iptables,
    /// IPVS virtual servers (kube-proxy's deprecated `ipvs`).
    Ipvs,
    /// Sluice's eBPF socket/tc programs.
    Ebpf,
    /// The recording fake: programs nothing.
    Fake,
}

impl ProxyMode {
    /// Every mode, in `--cleanup` order.
    pub const ALL: [Self; 5] = [
        Self::Nftables,
        Self::Iptables,
        Self::Ipvs,
        Self::Ebpf,
        Self::Fake,
    ];

    /// The flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
            Self::Ipvs => "ipvs",
            Self::Ebpf => "ebpf",
            Self::Fake => "fake",
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--proxy-mode` value that names no mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown proxy mode {0:?} (expected one of nftables, iptables, ipvs, ebpf, fake)")]
pub struct ParseModeError(pub String);

impl FromStr for ProxyMode {
    type Err = ParseModeError;

    /// Case-sensitive like kube-proxy; the empty string is kube-proxy's Linux
    /// default, `iptables`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::Iptables);
        }
        (Self::ALL.into_iter())
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}
