//! `--proxy-mode ebpf`: Services in BPF maps, load-balanced at the socket layer.
//!
//! The programs (`ebpf/programs`, built by this crate's build script) hook `connect()`,
//! `sendmsg()`, `recvmsg()` and `getpeername()` of every socket in one cgroup v2 directory:
//! a connection to a Service address goes straight to a backend, with no per-packet NAT and
//! no conntrack entry for the Service address. This crate decides what each Service address
//! means ([`render`], with the shared categorisation), works out the difference to what the
//! maps hold ([`diff`]), and writes it through one chokepoint ([`MapIo`]: the kernel maps or
//! [`FakeMaps`]), so everything but the kernel calls is unit-tested without root.
//!
//! Module map: [`render`] (snapshot → entries), [`diff`] (entries → ordered writes),
//! [`backend`] (the [`sluice_proxy_core::backend::Backend`] seam), [`io`] (the chokepoint and
//! its fake), [`kernel`] (aya: load, attach, pin, adopt, read the pins back), [`pin`] (bpffs,
//! cgroup2, cleanup), [`tracer`] (what the programs do with a packet, over decoded maps).

pub mod backend;
pub mod diff;
mod error;
pub mod io;
pub mod kernel;
pub mod pin;
pub mod render;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;
pub mod tracer;

use std::path::PathBuf;

use sluice_proxy_core::backend::{BackendError, BackendOptions};

pub use backend::EbpfBackend;
pub use error::EbpfError;
pub use io::{FakeMaps, MapIo};
pub use kernel::{KernelConfig, KernelMaps};
pub use render::{MapSet, RenderConfig};
pub use tracer::Tracer;

/// The real eBPF backend.
pub type KernelEbpf = EbpfBackend<KernelMaps>;

impl KernelEbpf {
    /// The backend for `opts`; nothing is loaded or attached until the first sync.
    pub fn open(opts: &BackendOptions) -> Result<Self, BackendError> {
        Ok(Self::new(
            KernelMaps::new(kernel_config(opts)),
            RenderConfig::of(opts),
        ))
    }
}

/// Where `opts` says to attach and pin.
pub fn kernel_config(opts: &BackendOptions) -> KernelConfig {
    KernelConfig {
        cgroup: opts.ebpf.cgroup.clone(),
        interfaces: opts.ebpf.interfaces.clone(),
        addresses: (opts.node_ips.iter())
            .map(|ip| ipnet::IpNet::from(*ip))
            .chain(opts.local.cidrs().iter().copied())
            .collect(),
        pin_dir: (opts.ebpf.pin_dir.clone()).unwrap_or_else(|| PathBuf::from(pin::DEFAULT_PIN_DIR)),
        service_cidrs: opts.service_cidrs.clone(),
    }
}
