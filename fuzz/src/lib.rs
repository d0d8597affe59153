//! The fuzz targets: one function per parser that takes input from outside the process, each
//! taking arbitrary bytes and checking what must hold for any input — no panic, and the
//! round trips and invariants below. `fuzz/libfuzzer` drives them with libFuzzer (nightly,
//! `scripts/fuzz`); `tests/replay.rs` runs every seed and every past crash through them on
//! stable, so a crash once found is a regression test for good.
//!
//! Inputs that carry several fields are split on newlines (see each target), so seeds stay
//! readable text files.

mod cni;
mod flannel;
mod leases;
mod proxy;

pub use cni::{cni_config, cni_env};
pub use flannel::{net_conf, subnet_env};
pub use leases::{etcd_leases, node_annotations};
pub use proxy::{api_objects, manifests, nft_dump};

/// A fuzz target: arbitrary bytes in, a panic on anything that must not happen.
pub type Target = fn(&[u8]);

/// Every target by name, as the corpus directories are named.
pub const TARGETS: [(&str, Target); 9] = [
    ("cni_config", cni_config),
    ("cni_env", cni_env),
    ("subnet_env", subnet_env),
    ("net_conf", net_conf),
    ("etcd_leases", etcd_leases),
    ("node_annotations", node_annotations),
    ("manifests", manifests),
    ("api_objects", api_objects),
    ("nft_dump", nft_dump),
];

/// The input as text, if it is UTF-8 (the file formats are).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
