//! `sluice-overlay`: flannel's overlay, rebuilt as a level-triggered reconciler.
//!
//! flannel turns lease events into kernel add/remove calls and forgets them; anything that
//! deletes a route, a neighbour or the device afterwards stays broken. Sluice keeps the data
//! flow one way instead — leases ([`lease`]), checked against this node's configuration
//! ([`validate`]) → desired kernel state ([`desired`], pure) →
//! a plan against what netlink reports ([`plan`], pure) → apply — so every reconcile repairs
//! whatever drifted. The wire formats (etcd lease JSON, node annotations, subnet.env) are
//! flannel's, so Sluice and flannel nodes can be peers.

pub mod allocate;
pub mod desired;
mod env_file;
pub mod etcd_entry;
#[cfg(feature = "daemon")]
pub mod etcd_mgr;
#[cfg(feature = "daemon")]
mod etcd_watch;
#[cfg(feature = "daemon")]
pub mod flags;
#[cfg(feature = "daemon")]
pub mod health;
pub mod kernel;
#[cfg(feature = "daemon")]
pub mod kube_mgr;
pub mod lease;
pub mod mac;
pub mod masq;
#[cfg(feature = "daemon")]
pub mod netlink_kernel;
pub mod node_lease;
pub mod plan;
pub mod reconcile;
#[cfg(feature = "daemon")]
pub mod sync;
pub mod validate;

pub use desired::{Computed, Desired, NextHop, Params, compute};
pub use env_file::subnet_env;
pub use lease::{AnnotationKeys, Lease, LeaseAttrs, LeaseError, VxlanData};
pub use mac::Mac;
pub use plan::Plan;
