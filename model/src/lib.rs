//! Pure, shared types for Sluice's three components.
//!
//! The proxy, the overlay and the CNI plugin must agree byte-for-byte on the
//! files they exchange and on the meaning of Services, so the agreement lives
//! here, once, with no I/O beyond reading and writing those files:
//!
//! - [`service`]: the Service model every proxy backend consumes (kube-proxy's
//!   semantics), and `k8s` (feature `k8s`) to build it from API objects;
//! - [`subnet_env`]: flannel's `/run/flannel/subnet.env`, written by the overlay
//!   and read by the CNI plugin;
//! - [`net_conf`]: flannel's `net-conf.json`, read by the overlay;
//! - [`bounded`]: size-capped reads of what comes from outside, for all three.

pub mod addr;
pub mod bounded;
mod cidr;
#[cfg(feature = "k8s")]
pub mod k8s;
mod location;
pub mod net_conf;
pub mod service;
pub mod subnet_env;

pub use location::Location;
