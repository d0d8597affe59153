//! Which endpoints a Service port may use from this node: kube-proxy's
//! `CategorizeEndpoints` (`pkg/proxy/topology.go`), rewritten.
//!
//! Every backend must pick endpoints the same way, or a Service behaves
//! differently in nftables and eBPF mode; so the choice is made here, once, as a
//! pure function with upstream's test table, and backends only render it.
//!
//! The rules: ready endpoints first; if there are none, serving-terminating ones
//! (decided separately for the Cluster and the Local set); topology hints narrow
//! the Cluster set only, and only when every ready endpoint carries a hint and
//! one names this node (or zone), otherwise no topology is used at all.

use sluice_model::service::{Endpoint, ServicePort, TrafficPolicy};

use crate::config::NodeTopology;

#[cfg(test)]
mod tests;

/// How the Cluster set was narrowed by topology hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopologyMode {
    /// No narrowing: every ready endpoint.
    None,
    /// Only endpoints hinted for this node's zone.
    PreferSameZone,
    /// Only endpoints hinted for this node.
    PreferSameNode,
}

/// The endpoints of one Service port, sorted out for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Categorized<'a> {
    /// Usable endpoints under the Cluster policy; `None` when the port never
    /// uses Cluster-policy endpoints.
    pub cluster: Option<Vec<&'a Endpoint>>,
    /// Usable endpoints under the Local policy; `None` when the port never uses
    /// Local-policy endpoints.
    pub local: Option<Vec<&'a Endpoint>>,
    /// The union of `cluster` and `local`, sorted by `ip:port`: every endpoint
    /// that traffic arriving at this node can reach.
    pub all_reachable: Vec<&'a Endpoint>,
    /// Whether any endpoint anywhere in the cluster is usable. `false` means
    /// REJECT; `true` with an empty policy set means DROP.
    pub has_any_endpoints: bool,
    /// The topology narrowing applied to `cluster`.
    pub topology: TopologyMode,
    /// `cluster` holds serving-terminating endpoints (no ready one existed).
    pub cluster_terminating_fallback: bool,
    /// `local` holds serving-terminating endpoints (no local ready one existed).
    pub local_terminating_fallback: bool,
    internal_local: bool,
    external_local: bool,
}

/// What a backend programs for one class of traffic to a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'s, 'a> {
    /// DNAT to one of these endpoints.
    Forward(&'s [&'a Endpoint]),
    /// No usable endpoint anywhere in the cluster: REJECT.
    Reject,
    /// Endpoints exist but none under this traffic policy on this node: DROP.
    Drop,
}

impl<'a> Categorized<'a> {
    /// The verdict for traffic to the cluster IP (internal traffic policy).
    pub fn internal(&self) -> Verdict<'_, 'a> {
        self.verdict(self.internal_local)
    }

    /// The verdict for traffic to node ports, external IPs and load-balancer
    /// IPs from outside the cluster (external traffic policy). Pod- and
    /// host-originated traffic to those addresses short-circuits to the
    /// Cluster set instead, as in kube-proxy.
    pub fn external(&self) -> Verdict<'_, 'a> {
        self.verdict(self.external_local)
    }

    /// The verdict under a Local (`local`) or Cluster traffic policy; `explain` asks it for
    /// the short-circuited case too.
    pub(crate) fn verdict(&self, local: bool) -> Verdict<'_, 'a> {
        if !self.has_any_endpoints {
            return Verdict::Reject;
        }
        let set = match local {
            true => self.local.as_deref(),
            false => self.cluster.as_deref(),
        };
        match set {
            Some(endpoints) if !endpoints.is_empty() => Verdict::Forward(endpoints),
            _ => Verdict::Drop,
        }
    }
}

/// Sorts `endpoints` of `port` into the Cluster and Local sets for `node`.
///
/// `prefer_same_node` is the `PreferSameTrafficDistribution` feature gate.
/// `endpoints` should be sorted by `ip:port` (as the snapshot keeps them); the
/// output lists keep their order.
pub fn categorize<'a>(
    endpoints: &'a [Endpoint],
    port: &ServicePort,
    node: &NodeTopology,
    prefer_same_node: bool,
) -> Categorized<'a> {
    let ready = |ep: &Endpoint| ep.is_ready(port.publish_not_ready_addresses);
    let mut out = Categorized {
        cluster: None,
        local: None,
        all_reachable: Vec::new(),
        has_any_endpoints: false,
        topology: TopologyMode::None,
        cluster_terminating_fallback: false,
        local_terminating_fallback: false,
        internal_local: port.internal_traffic_policy == TrafficPolicy::Local,
        external_local: port.external_traffic_policy == TrafficPolicy::Local,
    };
    if port.uses_cluster_endpoints() {
        out.topology = topology_mode(endpoints, &ready, node, prefer_same_node);
        let mut cluster: Vec<&Endpoint> = (endpoints.iter())
            .filter(|ep| ready(ep) && available(ep, out.topology, node))
            .collect();
        if cluster.is_empty() {
            cluster = (endpoints.iter())
                .filter(|ep| ep.is_serving_terminating())
                .collect();
            out.cluster_terminating_fallback = !cluster.is_empty();
        }
        out.has_any_endpoints = !cluster.is_empty();
        out.cluster = Some(cluster);
    }
    if !port.uses_local_endpoints() {
        out.all_reachable = out.cluster.clone().unwrap_or_default();
        return out;
    }
    let local = local_endpoints(endpoints, &ready, &node.name, &mut out);
    out.local = Some(local);
    out.all_reachable = union(&out);
    out
}

/// The Local set (local ready, else local serving-terminating); also notes
/// whether any endpoint anywhere is usable.
fn local_endpoints<'a>(
    endpoints: &'a [Endpoint],
    ready: &impl Fn(&Endpoint) -> bool,
    node: &str,
    out: &mut Categorized<'a>,
) -> Vec<&'a Endpoint> {
    let usable = |ep: &Endpoint| ready(ep) || ep.is_serving_terminating();
    out.has_any_endpoints |= endpoints.iter().any(usable);
    let local_ready: Vec<&Endpoint> = (endpoints.iter())
        .filter(|ep| ep.is_local(node) && ready(ep))
        .collect();
    if !local_ready.is_empty() {
        return local_ready;
    }
    let terminating: Vec<&Endpoint> = (endpoints.iter())
        .filter(|ep| ep.is_local(node) && ep.is_serving_terminating())
        .collect();
    out.local_terminating_fallback = !terminating.is_empty();
    terminating
}

/// `all_reachable` when the port uses Local endpoints.
fn union<'a>(out: &Categorized<'a>) -> Vec<&'a Endpoint> {
    let local = out.local.clone().unwrap_or_default();
    let Some(cluster) = &out.cluster else {
        return local;
    };
    if out.topology == TopologyMode::None && !out.local_terminating_fallback {
        // Every ready endpoint is in `cluster`, and `local` holds only ready
        // ones, so `cluster` is already the union.
        return cluster.clone();
    }
    let mut all: Vec<&Endpoint> = cluster.iter().chain(&local).copied().collect();
    all.sort_by_key(|ep| ep.to_string());
    all.dedup_by_key(|ep| ep.addr());
    all
}

/// kube-proxy's `topologyModeFromHints`: a mode applies only when every ready
/// endpoint carries that kind of hint and at least one names this node (zone).
fn topology_mode(
    endpoints: &[Endpoint],
    ready: &impl Fn(&Endpoint) -> bool,
    node: &NodeTopology,
    prefer_same_node: bool,
) -> TopologyMode {
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|ep| ready(ep)).collect();
    if ready.is_empty() {
        return TopologyMode::None;
    }
    let all_node_hints = ready.iter().all(|ep| !ep.node_hints().is_empty());
    if prefer_same_node
        && all_node_hints
        && ready.iter().any(|ep| ep.node_hints().contains(&node.name))
    {
        return TopologyMode::PreferSameNode;
    }
    let all_zone_hints = ready.iter().all(|ep| !ep.zone_hints().is_empty());
    let zone_match = |ep: &&Endpoint| {
        node.zone
            .as_ref()
            .is_some_and(|z| ep.zone_hints().contains(z))
    };
    if all_zone_hints && ready.iter().any(zone_match) {
        return TopologyMode::PreferSameZone;
    }
    TopologyMode::None
}

/// kube-proxy's `availableForTopology`: no per-endpoint fallback.
fn available(ep: &Endpoint, mode: TopologyMode, node: &NodeTopology) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints().contains(&node.name),
        TopologyMode::PreferSameZone => node
            .zone
            .as_ref()
            .is_some_and(|z| ep.zone_hints().contains(z)),
    }
}
