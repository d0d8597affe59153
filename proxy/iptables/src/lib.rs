//! sluice-proxy's iptables dataplane: the ruleset kube-proxy's iptables mode writes, line
//! for line, programmed with one `iptables-restore --noflush` per family per sync.
#![forbid(unsafe_code)]

pub mod backend;
mod cleanup;
pub mod config;
pub mod dump;
pub mod exec;
pub mod fake;
mod jumps;
mod kernel;
pub mod leftovers;
pub mod names;
pub mod render;
pub mod rule;
mod stream;
mod sysctl;
mod tracer;

pub use backend::{IptMetrics, IptablesBackend};
pub use config::IptConfig;
pub use exec::{Exec, ExecError, Iptables, Variant};
pub use fake::FakeIptables;
pub use kernel::KernelIptables;
pub use render::{Rendered, Scope, render, render_one_pass};
pub use tracer::Tracer;
