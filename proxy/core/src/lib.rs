//! The part of `sluice-proxy` every dataplane backend shares. Backends (nftables, iptables,
//! IPVS, eBPF) must program the same verdicts for the same API objects and should only redo
//! the Service ports that changed, so the decisions live here, once, as pure code with
//! upstream's test tables; around them the daemon's shared machinery:
//!
//! - [`ProxyState`] (one per address family): fed by the watch handlers
//!   ([`ProxyState::on_service`], [`ProxyState::on_slice`],
//!   [`ProxyState::on_node`] and their `_deleted` twins, or the pure
//!   `update_*`/`delete_*` methods), and [`ProxyState::sync`], which returns a
//!   [`Snapshot`] and the [`Changes`] since the previous sync;
//! - [`services`] and [`endpoints`]: the change trackers underneath, which
//!   coalesce events between syncs;
//! - [`topology`]: kube-proxy's `CategorizeEndpoints` (ready first,
//!   terminating fallback, topology hints, REJECT vs DROP), also reachable as
//!   [`Snapshot::categorize`];
//! - [`config`]: the family, node and proxy name a state serves;
//! - [`backend`]: the seam every dataplane crate implements, and the recording fake;
//! - [`runner`]: the bounded-frequency sync loop that drives a backend;
//! - [`source`]: the Kubernetes watch and `--manifests-dir` (the I/O that feeds the model);
//! - [`explain`], [`health`], [`healthcheck`], [`metrics`], [`conntrack`] (the UDP
//!   reconciliation policy), [`flags`] and [`config_file`].
//!
//! Kernel I/O is not here: each dataplane crate owns its kernel interface.

pub mod backend;
mod changes;
pub mod config;
pub mod config_file;
pub mod conntrack;
pub mod endpoints;
pub mod explain;
/// Test fixtures for the backend crates' tests. Always built (it is small): a `testing`
/// feature enabled through dev-dependencies gave `cargo test --workspace` and a plain `cargo
/// build -p sluice-proxy` different builds of this crate, so every lab test binary rebuilt
/// the daemons (and the eBPF programs) before its first test.
#[doc(hidden)]
pub mod fixture;
pub mod flags;
pub mod health;
pub mod healthcheck;
#[cfg(test)]
mod http_test;
mod k8s;
pub mod memory;
pub mod metrics;
pub mod runner;
pub mod services;
mod snapshot;
pub mod source;
mod state;
pub mod topology;

pub use changes::Changes;
pub use config::{NodeTopology, TrackerConfig};
pub use k8s::{Recorded, TRIGGER_TIME_ANNOTATION, node_addresses};
pub use snapshot::Snapshot;
pub use state::ProxyState;
pub use topology::{Categorized, TopologyMode, Verdict};
