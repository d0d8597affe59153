//! The nftables dataplane (`--proxy-mode nftables`): Services rendered into Sluice's own
//! tables (`ip sluice`, `ip6 sluice`) in kube-proxy's nftables layout, diffed per owner and
//! applied through the `sluice-nft` chokepoint: a partial sync as one atomic transaction, a
//! large full sync as several, each holding whole Services.

mod backend;
mod base;
mod ctx;
mod desired;
mod names;
mod packed;
mod port;
pub use port::proto;
mod print;
mod sender;
mod state;
mod tracer;
pub mod trust;

pub use backend::{KernelNftables, NftablesBackend, PART_OPS};
pub use ctx::{NftConfig, TABLE};
pub use desired::{ChainBody, Desired, ElemKey, Phases, diff};
pub use print::Footprint;
pub use state::{NftState, Pending, rendered, summary};
pub use tracer::Tracer;

use sluice_proxy_core::explain::Dialect;

/// What this mode does where the modes differ: kube-proxy's nftables mode's answers.
pub const DIALECT: Dialect = Dialect::NFTABLES;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod backend_tests;
