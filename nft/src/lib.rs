//! nftables for Sluice's proxy: a typed intermediate representation of exactly the nftables
//! features the proxy uses, rendered two ways — as nft syntax (golden files, debugging,
//! reading them) and as netlink messages (the only way rules reach the kernel: one atomic
//! batch per sync, no `nft` process; the framing is `sluice-netlink`'s).
//!
//! Keeping the IR small and closed is deliberate: the packet tracer in the proxy walks the
//! same values the kernel gets, so "what we rendered" and "what we traced" cannot drift.
//!
//! The proxy talks to the kernel only through [`NftKernel`]: [`Netlink`] for real,
//! [`FakeNft`] in unit tests.

pub mod error;
pub mod fake;
pub mod ir;
pub mod kernel;
pub mod netlink;
pub mod state;
pub mod text;

pub use error::NftError;
pub use fake::FakeNft;
pub use ir::*;
pub use kernel::{NftKernel, next_generation};
pub use netlink::Netlink;
pub use state::{ChainState, Collect, RuleState, SetState, TableSink, TableState, fingerprint};
