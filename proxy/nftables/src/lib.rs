//! The nftables dataplane (`--proxy-mode nftables`): Services rendered into Sluice's own
//! tables (`ip sluice`, `ip6 sluice`) in kube-proxy's nftables layout, diffed per owner and
//! applied as one atomic transaction per sync through the `sluice-nft` chokepoint.

mod backend;
mod base;
mod ctx;
mod desired;
mod names;
mod port;
pub use port::proto;
mod print;
mod state;
mod tracer;
pub mod trust;

pub use backend::{KernelNftables, NftablesBackend};
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
