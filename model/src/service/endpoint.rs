//! Endpoints as kube-proxy's `EndpointSliceCache` sees them, and the merge of
//! several EndpointSlices of one Service into one list per Service port.
//!
//! Endpoints move between slices of the same Service, so one address can show up
//! twice while the controller shuffles them; the merge dedupes by `ip:port`
//! exactly like the cache does, so backends never program an endpoint twice.
//!
//! A cluster holds hundreds of thousands of endpoints, each kept twice (in its
//! slice and in the merged list), so [`Endpoint`] is kept small: node and
//! zone names are shared `Arc<str>`, and the rarely used topology hints sit
//! behind one optional pointer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::names::{IpFamily, ServiceName, ServicePortName};
use super::vec_map::VecMap;

/// One backend address of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// `addresses[0]` of the EndpointSlice endpoint (kube-proxy ignores the rest).
    pub ip: IpAddr,
    /// The EndpointSlice port number.
    pub port: u16,
    /// `conditions.ready`, nil meaning true.
    pub ready: bool,
    /// `conditions.serving`, nil meaning the value of `ready` (the API
    /// contract; kube-proxy's code reads nil as true, which differs only for a
    /// hand-made slice with `ready: false` and no `serving`).
    pub serving: bool,
    /// `conditions.terminating`, nil meaning false.
    pub terminating: bool,
    /// `nodeName`, if set.
    pub node_name: Option<Arc<str>>,
    /// `zone`, if set.
    pub zone: Option<Arc<str>>,
    /// `hints`; `None` when there are none. Build it with
    /// [`Endpoint::with_hints`], which keeps "no hints" always `None`.
    pub hints: Option<Arc<TopologyHints>>,
}

/// An endpoint's topology hints.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopologyHints {
    /// `hints.forZones[].name`.
    pub zones: BTreeSet<String>,
    /// `hints.forNodes[].name`.
    pub nodes: BTreeSet<String>,
}

/// The hint set of an endpoint without hints.
static NO_HINTS: BTreeSet<String> = BTreeSet::new();

impl Endpoint {
    /// A ready, serving, non-terminating endpoint with no topology.
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Self {
            ip,
            port,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            hints: None,
        }
    }

    /// This endpoint with the given zone and node hints (none when both are empty).
    pub fn with_hints(self, zones: BTreeSet<String>, nodes: BTreeSet<String>) -> Self {
        let hints = TopologyHints { zones, nodes };
        Self {
            hints: (hints != TopologyHints::default()).then(|| Arc::new(hints)),
            ..self
        }
    }

    /// `hints.forZones[].name`; empty when there are no zone hints.
    pub fn zone_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.zones)
    }

    /// `hints.forNodes[].name`; empty when there are no node hints.
    pub fn node_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.nodes)
    }

    /// kube-proxy's `IsReady`: ready and not terminating, or the Service
    /// publishes not-ready addresses.
    pub fn is_ready(&self, publish_not_ready: bool) -> bool {
        (self.ready && !self.terminating) || publish_not_ready
    }

    /// Serving and terminating: the candidates of the terminating fallback.
    pub fn is_serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }

    /// Whether the endpoint runs on `node` (kube-proxy's `isLocal`).
    pub fn is_local(&self, node: &str) -> bool {
        !node.is_empty() && self.node_name.as_deref() == Some(node)
    }

    /// The socket address, `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// `ip:port`, `[ip]:port` for IPv6: kube-proxy's `Endpoint.String()`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr())
    }
}

/// What one EndpointSlice contributes: its endpoints per Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoints {
    /// The owning Service (label `kubernetes.io/service-name`).
    pub service: ServiceName,
    /// The EndpointSlice's own name.
    pub slice_name: String,
    /// `addressType`.
    pub family: IpFamily,
    /// Endpoints per Service port (keyed by port name and protocol).
    pub ports: VecMap<ServicePortName, Vec<Endpoint>>,
    /// Entries that were skipped, each naming the object and field.
    pub warnings: Vec<String>,
}

/// Merges slices of one Service into sorted, deduplicated endpoints per port.
///
/// Slices of the other family are ignored (a proxier serves one family). When the
/// same `ip:port` appears twice (an endpoint moving between slices, or a pod IP
/// reused while the old pod terminates) a non-terminating copy replaces an
/// earlier one and a terminating copy never replaces anything, as in
/// kube-proxy's `addEndpoints`. Lists are sorted by their `ip:port` text.
pub fn merge_slices<'a>(
    slices: impl IntoIterator<Item = &'a SliceEndpoints>,
    family: IpFamily,
) -> BTreeMap<ServicePortName, Vec<Endpoint>> {
    let mut sets: BTreeMap<ServicePortName, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for slice in slices.into_iter().filter(|s| s.family == family) {
        for (port, endpoints) in &slice.ports {
            let set = sets.entry(port.clone()).or_default();
            for endpoint in endpoints {
                add_endpoint(set, endpoint);
            }
        }
    }
    sets.into_iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(port, set)| (port, set.into_values().collect()))
        .collect()
}

/// The merged endpoints of one Service port; see [`merge_slices`].
pub fn endpoints_for<'a>(
    slices: impl IntoIterator<Item = &'a SliceEndpoints>,
    port: &ServicePortName,
    family: IpFamily,
) -> Vec<Endpoint> {
    merge_slices(slices, family)
        .remove(port)
        .unwrap_or_default()
}

fn add_endpoint(set: &mut BTreeMap<String, Endpoint>, endpoint: &Endpoint) {
    let key = endpoint.to_string();
    if !endpoint.terminating || !set.contains_key(&key) {
        set.insert(key, endpoint.clone());
    }
}
