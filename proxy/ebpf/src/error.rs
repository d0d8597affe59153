//! The eBPF backend's own errors (wrapped into `BackendError` at the seam).

use std::path::PathBuf;

/// Why loading, attaching, pinning or a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The programs were not built into this binary (`AYA_BUILD_SKIP`, no eBPF toolchain).
    #[error(
        "the eBPF programs are not built into this binary (built with AYA_BUILD_SKIP or without the eBPF toolchain; see ebpf/README.md)"
    )]
    NotBuilt,
    /// Loading the object or its maps failed.
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program failed to load (verifier) or attach.
    #[error("program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A link could not be pinned or unpinned.
    #[error("link pin {path}")]
    Link {
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file-system step (bpffs, pin directory, cgroup) failed.
    #[error("{what} {path}")]
    Fs {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No cgroup v2 hierarchy to attach to.
    #[error("no cgroup v2 mount found in /proc/self/mountinfo; pass --ebpf-cgroup DIR")]
    NoCgroup2,
    /// A failure injected by a test.
    #[error("injected failure")]
    Injected,
}
