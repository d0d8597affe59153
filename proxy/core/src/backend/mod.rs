//! The dataplane seam: everything that programs the kernel sits behind
//! [`Backend`], so the sync loop, the sources and the tests never depend on
//! which kernel facility (nftables, iptables, IPVS, eBPF) does the work.
//!
//! A backend receives one [`Snapshot`] and the [`Changes`] since its previous
//! successful apply, per address family. It must program exactly the changed
//! Service ports on a partial apply and everything on a full one; when an
//! apply fails the runner forces a full apply next time, so a backend never
//! has to remember what half-succeeded.
//!
//! Each dataplane is its own crate implementing [`Backend`]; the `sluice-proxy` binary
//! picks one by `--proxy-mode`. [`FakeBackend`] records what it is asked to program, for
//! tests and benchmarks.

mod fake;
mod mode;

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::IpFamily;

use crate::config_file::DEFAULT_MASQUERADE_BIT;
use crate::{Changes, Snapshot};

pub use fake::{Applied, FakeBackend, FakeLog, ProgrammedPort};
pub use mode::ProxyMode;

/// Why a backend could not render, apply or clean up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The mode is known but its backend is not built into this version.
    #[error("proxy mode {0} is not available in this version of Sluice")]
    ModeNotAvailable(ProxyMode),
    /// Programming the kernel failed; the runner retries with a full apply.
    #[error("{mode} apply failed: {reason}")]
    Apply {
        /// The backend that failed.
        mode: ProxyMode,
        /// What went wrong, for the log.
        reason: String,
    },
    /// Removing what the backend programmed failed.
    #[error("{mode} cleanup failed: {reason}")]
    Cleanup {
        /// The backend that failed.
        mode: ProxyMode,
        /// What went wrong, for the log.
        reason: String,
    },
}

/// A dataplane that programs Service ports.
///
/// One backend instance serves every address family: each call carries a
/// single-family [`Snapshot`] ([`Snapshot::family`]), as kube-proxy's
/// per-family proxiers do.
pub trait Backend: Send {
    /// The mode this backend implements.
    fn mode(&self) -> ProxyMode;

    /// A human-readable rendering of what [`Self::apply`] would program for
    /// `changes` (the whole snapshot when `changes.full`), for debugging and
    /// dry runs. Must not touch the kernel.
    fn render(&self, snapshot: &Snapshot, changes: &Changes) -> Result<String, BackendError>;

    /// Programs only the Service ports in `changes.ports`: present in the
    /// snapshot means (re)program, absent means remove.
    fn apply_partial(&mut self, snapshot: &Snapshot, changes: &Changes)
    -> Result<(), BackendError>;

    /// Programs the whole snapshot, removing anything stale.
    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError>;

    /// Removes everything this backend ever programmed (`--cleanup`, or a
    /// switch of proxy mode).
    fn cleanup(&mut self) -> Result<(), BackendError>;

    /// A full or partial apply, as `changes.full` says.
    fn apply(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        if changes.full {
            self.apply_full(snapshot, changes)
        } else {
            self.apply_partial(snapshot, changes)
        }
    }
}

/// What a real backend renders with besides the Services (from the proxy's configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOptions {
    /// The address families served.
    pub families: Vec<IpFamily>,
    /// Sources that are pods (`--detect-local-mode` ClusterCIDR/NodeCIDR).
    pub local_cidrs: Vec<IpNet>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// The masquerade mark bit (`--iptables-masquerade-bit`).
    pub masquerade_bit: u8,
    /// Addresses accepting NodePorts; `None` = every local address but loopback.
    pub nodeport_addresses: Option<Vec<IpAddr>>,
    /// The service CIDRs, when known (unallocated ClusterIPs are dropped).
    pub service_cidrs: Vec<IpNet>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            families: vec![IpFamily::V4],
            local_cidrs: Vec::new(),
            masquerade_all: false,
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            nodeport_addresses: None,
            service_cidrs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
