//! sluice-proxy's IPVS dataplane (`--proxy-mode ipvs`): kube-proxy's IPVS mode — virtual
//! servers over IPVS generic netlink, the `kube-ipvs0` dummy link holding the virtual
//! addresses, kube-proxy's ipsets and the iptables rules the mode still needs — built on the
//! shared seam. See README.md for what differs from kube-proxy and the other modes.
#![forbid(unsafe_code)]

pub mod backend;
pub mod diff;
pub mod fake;
pub mod genl;
pub mod ipvs;
mod kernel;
pub mod link;
pub mod nlset;
pub mod render;
pub mod rules;
pub mod sets;
pub mod switch;
pub mod sysctl;
pub mod tracer;
pub mod types;

pub use backend::{GRACEFUL_CHECK, IpvsBackend};
pub use fake::FakeIpvs;
pub use ipvs::{Ipvs, IpvsError, KernelIpvs};
pub use kernel::{KernelIpvsBackend, read_programmed};
pub use link::{FakeVips, KernelVips, Vips};
pub use nlset::NetlinkIpset;
pub use render::{IpvsConfig, PortRender, render, render_port};
pub use sets::{ExecIpset, FakeIpset, Ipset};
pub use tracer::Tracer;
