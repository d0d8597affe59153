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
//! [`Any`] picks the backend named by `--proxy-mode`. The real backends land
//! in their own issues; until then only [`ProxyMode::Fake`] builds, and the
//! others fail with [`BackendError::ModeNotAvailable`] so the binary can say so
//! and exit instead of silently programming nothing.

mod fake;
mod mode;

use crate::{Changes, Snapshot};

pub use fake::{Applied, FakeBackend, FakeLog, ProgrammedPort};
pub use mode::{ParseModeError, ProxyMode};

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

/// The backend chosen by `--proxy-mode`, dispatched statically.
#[derive(Debug)]
#[non_exhaustive]
pub enum Any {
    /// The recording fake (tests, benchmarks, `--proxy-mode fake`).
    Fake(FakeBackend),
}

impl Any {
    /// The backend for `mode`, or [`BackendError::ModeNotAvailable`] when this
    /// version does not have it yet.
    pub fn new(mode: ProxyMode) -> Result<Self, BackendError> {
        match mode {
            ProxyMode::Fake => Ok(Self::Fake(FakeBackend::new())),
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
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Backend {
        match self {
            Self::Fake(b) => b,
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
