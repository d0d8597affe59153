//! [`Any`]: the backend `--proxy-mode` names, dispatched statically, and the per-mode work the
//! binary does around it (building from the resolved options, `--cleanup`).

use sluice_proxy_core::backend::{Backend, BackendError, BackendOptions, FakeBackend, ProxyMode};
use sluice_proxy_core::{Changes, Snapshot};
use sluice_proxy_nftables::KernelNftables;

/// The backend chosen by `--proxy-mode`.
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
            ProxyMode::Nftables => Ok(Self::Nftables(Box::new(KernelNftables::open(opts)?))),
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
mod tests {
    use super::*;

    #[test]
    fn the_fake_builds_and_the_missing_modes_say_so() {
        assert_eq!(Any::new(ProxyMode::Fake).unwrap().mode(), ProxyMode::Fake);
        // nftables opens netlink in the current namespace: built (and cleaned up) by the
        // kernel tests inside their own namespaces, never here in the host's.
        for mode in [ProxyMode::Iptables, ProxyMode::Ipvs, ProxyMode::Ebpf] {
            let e = Any::new(mode).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("proxy mode {mode} is not available in this version of Sluice")
            );
        }
    }
}
