//! The Service model every proxy backend consumes (iptables, nftables, IPVS, eBPF).
//!
//! The semantics are kube-proxy's (`pkg/proxy/serviceport.go`, `endpoint.go`,
//! `endpointslicecache.go`), copied exactly so that Sluice programs the same
//! verdicts for the same API objects. These types are pure data: converting API
//! objects into them lives in `crate::k8s` (feature `k8s`), so backends and their
//! tests can build them by hand.

mod endpoint;
mod names;
mod port;
mod vec_map;

pub use endpoint::{Endpoint, SliceEndpoints, TopologyHints, endpoints_for, merge_slices};
pub use names::{IpFamily, Protocol, ServiceName, ServicePortName};
pub use port::{
    DEFAULT_AFFINITY_TIMEOUT_SECONDS, ServicePort, ServiceType, SessionAffinity,
    TrafficDistribution, TrafficPolicy,
};
pub use vec_map::{Iter as VecMapIter, VecMap};
