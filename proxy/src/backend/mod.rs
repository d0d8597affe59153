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
//! [`Any`] picks the backend named by `--proxy-mode`: `nftables` and `fake` build in
//! this version; the others fail with [`BackendError::ModeNotAvailable`] so the
//! binary can say so and exit instead of silently programming nothing.

mod fake;
mod mode;

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::IpFamily;

use crate::config_file::DEFAULT_MASQUERADE_BIT;
use crate::nftables::{NftConfig, NftablesBackend};
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

/// The real nftables backend: netlink and ctnetlink in the process's namespace.
pub type KernelNftables = NftablesBackend<sluice_nft::Netlink, sluice_nft::conntrack::Conntrack>;

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

impl BackendOptions {
    /// The nftables rendering settings of one family.
    pub fn nft_config(&self, family: IpFamily) -> NftConfig {
        let of_family = |n: &IpNet| family.contains(&n.addr());
        NftConfig {
            masquerade_mark: 1u32 << self.masquerade_bit.min(31),
            masquerade_all: self.masquerade_all,
            local_cidrs: self.local_cidrs.iter().copied().filter(of_family).collect(),
            nodeport_addresses: self
                .nodeport_addresses
                .as_ref()
                .map(|a| a.iter().copied().filter(|ip| family.contains(ip)).collect()),
            service_cidrs: self
                .service_cidrs
                .iter()
                .copied()
                .filter(of_family)
                .collect(),
            ..NftConfig::new(match family {
                IpFamily::V4 => sluice_nft::Family::Ip,
                IpFamily::V6 => sluice_nft::Family::Ip6,
            })
        }
    }
}

/// The backend chosen by `--proxy-mode`, dispatched statically.
#[derive(Debug)]
#[non_exhaustive]
pub enum Any {
    /// The recording fake (tests, benchmarks, `--proxy-mode fake`).
    Fake(FakeBackend),
    /// nftables through netlink (`--proxy-mode nftables`).
    Nftables(Box<KernelNftables>),
}

impl Any {
    /// The backend for `mode` with default options, or
    /// [`BackendError::ModeNotAvailable`] when this version does not have it yet.
    pub fn new(mode: ProxyMode) -> Result<Self, BackendError> {
        Self::build(mode, &BackendOptions::default())
    }

    /// The backend for `mode`, opening its kernel interfaces in the current namespace.
    pub fn build(mode: ProxyMode, opts: &BackendOptions) -> Result<Self, BackendError> {
        match mode {
            ProxyMode::Fake => Ok(Self::Fake(FakeBackend::new())),
            ProxyMode::Nftables => {
                let fail = |e: sluice_nft::NftError| BackendError::Apply {
                    mode,
                    reason: format!("cannot open netlink: {e}"),
                };
                let kernel = sluice_nft::Netlink::open().map_err(fail)?;
                let conntrack = sluice_nft::conntrack::Conntrack::open().map_err(fail)?;
                let configs = opts.families.iter().map(|f| opts.nft_config(*f));
                Ok(Self::Nftables(Box::new(NftablesBackend::new(
                    kernel, conntrack, configs,
                ))))
            }
            other => Err(BackendError::ModeNotAvailable(other)),
        }
    }

    /// Removes what every mode may have programmed, as `--cleanup` does.
    /// Modes without a backend in this version have nothing to remove.
    pub fn cleanup_all() -> Result<(), BackendError> {
        for mode in ProxyMode::ALL {
            if let Ok(mut backend) = Self::new(mode) {
                backend.cleanup()?;
            }
        }
        Ok(())
    }

    fn inner(&self) -> &dyn Backend {
        match self {
            Self::Fake(b) => b,
            Self::Nftables(b) => b.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Backend {
        match self {
            Self::Fake(b) => b,
            Self::Nftables(b) => b.as_mut(),
        }
    }
}

impl Backend for Any {
    fn mode(&self) -> ProxyMode {
        self.inner().mode()
    }

    fn render(&self, snapshot: &Snapshot, changes: &Changes) -> Result<String, BackendError> {
        self.inner().render(snapshot, changes)
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        self.inner_mut().apply_partial(snapshot, changes)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        self.inner_mut().apply_full(snapshot, changes)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.inner_mut().cleanup()
    }
}

#[cfg(test)]
mod tests;
