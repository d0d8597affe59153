//! nftables for Sluice's proxy: a typed intermediate representation of exactly the nftables
//! features the proxy uses, rendered two ways — as nft syntax (golden files, debugging,
//! `nft -f` fallback) and as netlink messages (the only way rules reach the kernel: one
//! atomic batch per sync, no `nft` process).
//!
//! Keeping the IR small and closed is deliberate: the packet tracer in the proxy walks the
//! same values the kernel gets, so "what we rendered" and "what we traced" cannot drift.

pub mod ir;
pub mod text;

pub use ir::*;
