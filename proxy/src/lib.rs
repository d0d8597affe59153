//! The `sluice-proxy` binary's library: the one place that knows every dataplane crate and
//! picks one by `--proxy-mode` ([`dataplane`]), and what the proxy learns about its node
//! ([`node`]). Everything the dataplanes share lives in `sluice-proxy-core`; each dataplane
//! is its own crate behind the core's `Backend` trait, so the compiler keeps them from
//! reaching into each other.

pub mod dataplane;
pub mod memory;
pub mod node;
pub mod owner;
