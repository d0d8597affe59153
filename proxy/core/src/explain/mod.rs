//! `sluice-proxy explain`: what the proxy does with one packet, and why.
//!
//! "Why does my Service time out?" is usually answered by reading
//! kube-proxy's rules by hand: which chain the VIP jumps to, which policy
//! chain, which endpoints are in it. Sluice can answer directly, because the
//! decisions are data ([`Snapshot`], [`Snapshot::categorize`]) rather than
//! rules. [`explain`] is a pure function over a snapshot and the node the
//! packet is on; the binary only loads the sources, calls it and prints
//! [`Explanation`] with [`render_text`] or as JSON ([`render_json`]).
//!
//! The semantics are kube-proxy's (nftables/iptables modes): the destination
//! matches a cluster IP, external IP or load-balancer IP with the port, or a
//! NodePort address of the node with the node port; cluster IPs use the internal
//! traffic policy and every other destination the external one, except that pod-
//! and node-originated traffic to an external destination of an
//! `externalTrafficPolicy: Local` Service short-circuits to the Cluster set;
//! `loadBalancerSourceRanges` filter load-balancer IPs only (not node ports);
//! no usable endpoint anywhere is REJECT, none under a `Local` policy is DROP.
//! Where the modes differ (unserved ClusterIP ports, localhost NodePorts, …) the
//! node's [`Dialect`] says what its mode does.
//!
//! Each backend crate provides a [`Tracer`] over its own rules; [`BackendCheck`]
//! holds what it traced against the model's verdict.

mod args;
mod dialect;
mod model;
mod reasons;
mod render;
mod trace;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use sluice_model::service::{IpFamily, Protocol, ServicePort, TrafficPolicy};

use crate::config::NodeTopology;
use crate::snapshot::Snapshot;
use crate::topology::{Categorized, TopologyMode, Verdict, categorize};

pub use args::{ExplainArgs, OutputFormat, parse_protocol};
pub use dialect::Dialect;
pub use model::{
    DestinationKind, EndpointView, Exclusion, Explanation, PacketView, PolicyView, SourceRangeView,
    VerdictView,
};
pub use render::{render_json, render_text};
pub use trace::{BackendCheck, Origin, Outcome, Tracer};

/// The packet to explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// L4 protocol.
    pub protocol: Protocol,
}

/// The node whose rules the packet meets (this node, or `--from-node`), and the settings
/// those rules were made with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// Name and zone (endpoint locality and topology hints).
    pub topology: NodeTopology,
    /// Every address of the node: node-originated sources (loopback always counts).
    pub node_ips: Vec<IpAddr>,
    /// The node's primary IPs (one per family): a load balancer's own address may pass its
    /// source ranges when one of these is inside them (kube-proxy's `nodeIP` check).
    pub primary_ips: Vec<IpAddr>,
    /// The addresses that accept NodePorts (`--nodeport-addresses`, as the mode serves them).
    pub nodeport_ips: Vec<IpAddr>,
    /// Pod CIDRs (the local-traffic detector): pod-originated sources.
    pub pod_cidrs: Vec<IpNet>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// The service CIDRs (unallocated ClusterIPs).
    pub service_cidrs: Vec<IpNet>,
    /// What the node's proxy mode does where the modes differ.
    pub dialect: Dialect,
}

/// Why a packet cannot be explained against a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// Source and destination are of different families.
    #[error("source {src} and destination {dst} are of different address families")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    /// The snapshot is of the other family.
    #[error("destination {dst} is {wanted}, but the snapshot holds {have} Services")]
    WrongFamily {
        dst: IpAddr,
        wanted: IpFamily,
        have: IpFamily,
    },
}

/// Explains `packet` as the rules of `node` built from `snapshot` treat it.
pub fn explain(
    snapshot: &Snapshot,
    node: &NodeContext,
    packet: &Packet,
) -> Result<Explanation, ExplainError> {
    check_families(snapshot, packet)?;
    let mut out = empty(node, packet);
    let Some((port, destination)) = find_hit(snapshot, node, packet) else {
        out.verdict = unserved(snapshot, node, packet.dst.ip());
        out.notes
            .extend(near_misses(snapshot, packet, &out.verdict));
        return Ok(out);
    };
    out.service_port = Some(port.name.to_string());
    out.destination = Some(destination);
    out.session_affinity_seconds = port.session_affinity.map(|a| a.timeout_seconds);
    let policy = policy(port, destination, node, packet);
    let endpoints = snapshot.endpoints(&port.name);
    let cat = categorize(endpoints, port, &node.topology, snapshot.prefer_same_node);
    let use_local = uses_local(port, &policy, node.dialect);
    out.source_ranges = source_ranges(port, destination, node, packet);
    out.topology = cat.cluster.as_ref().map(|_| topology_name(cat.topology));
    out.terminating_fallback = match use_local {
        true => cat.local_terminating_fallback,
        false => cat.cluster_terminating_fallback,
    };
    out.endpoints = reasons::endpoint_views(endpoints, port, &cat, use_local, &node.topology);
    let masq = masquerade(port, destination, &policy, node, packet.src);
    out.verdict = verdict(&cat, use_local, out.source_ranges.as_ref(), node.dialect);
    if let VerdictView::Dnat {
        endpoints,
        masquerade,
        hairpin_masquerade,
    } = &mut out.verdict
    {
        *masquerade = masq;
        *hairpin_masquerade =
            node.dialect.hairpin_masquerade && endpoints.iter().any(|e| e.ip() == packet.src);
    }
    out.notes.extend(notes(&policy, &out.verdict));
    out.policy = Some(policy);
    Ok(out)
}

fn check_families(snapshot: &Snapshot, packet: &Packet) -> Result<(), ExplainError> {
    let (src, dst) = (packet.src, packet.dst.ip());
    if IpFamily::of(&src) != IpFamily::of(&dst) {
        return Err(ExplainError::MixedFamilies { src, dst });
    }
    if IpFamily::of(&dst) != snapshot.family() {
        return Err(ExplainError::WrongFamily {
            dst,
            wanted: IpFamily::of(&dst),
            have: snapshot.family(),
        });
    }
    Ok(())
}

fn empty(node: &NodeContext, packet: &Packet) -> Explanation {
    Explanation {
        packet: PacketView {
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol.as_lower_str().to_owned(),
        },
        node: node.topology.name.clone(),
        service_port: None,
        destination: None,
        policy: None,
        source_ranges: None,
        topology: None,
        terminating_fallback: false,
        session_affinity_seconds: None,
        endpoints: Vec::new(),
        verdict: VerdictView::NoService,
        notes: Vec::new(),
    }
}

/// The Service port the destination belongs to: VIPs (cluster, external,
/// load-balancer) first, then node ports on the node's NodePort addresses.
fn find_hit<'s>(
    snapshot: &'s Snapshot,
    node: &NodeContext,
    packet: &Packet,
) -> Option<(&'s ServicePort, DestinationKind)> {
    let (ip, port) = (packet.dst.ip(), packet.dst.port());
    let ports = || (snapshot.service_ports()).filter(|p| p.name.protocol == packet.protocol);
    let vip = ports().filter(|p| p.port == port).find_map(|p| {
        let kind = if p.cluster_ips.contains(&ip) {
            DestinationKind::ClusterIP
        } else if p.external_ips.contains(&ip) {
            DestinationKind::ExternalIP
        } else if p.load_balancer_vips.contains(&ip) {
            DestinationKind::LoadBalancer
        } else {
            return None;
        };
        Some((p, kind))
    });
    vip.or_else(|| {
        let on_node = node.nodeport_ips.contains(&ip);
        (ports().find(|p| on_node && p.node_port == Some(port)))
            .map(|p| (p, DestinationKind::NodePort))
    })
}

fn policy(
    port: &ServicePort,
    dst: DestinationKind,
    node: &NodeContext,
    packet: &Packet,
) -> PolicyView {
    let source = if node.pod_cidrs.iter().any(|net| net.contains(&packet.src)) {
        "pod"
    } else if node.node_ips.contains(&packet.src) || packet.src.is_loopback() {
        "node"
    } else {
        "other"
    };
    let (traffic, field, policy) = match dst {
        DestinationKind::ClusterIP => (
            "internal",
            "internalTrafficPolicy",
            port.internal_traffic_policy,
        ),
        _ => (
            "external",
            "externalTrafficPolicy",
            port.external_traffic_policy,
        ),
    };
    PolicyView {
        traffic,
        field,
        policy: policy_name(policy),
        source,
        short_circuit: traffic == "external" && policy == TrafficPolicy::Local && source != "other",
    }
}

fn policy_name(policy: TrafficPolicy) -> &'static str {
    match policy {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
}

fn topology_name(mode: TopologyMode) -> &'static str {
    match mode {
        TopologyMode::None => "None",
        TopologyMode::PreferSameZone => "PreferSameZone",
        TopologyMode::PreferSameNode => "PreferSameNode",
    }
}

/// Whether the Local set (rather than the Cluster set) serves this packet.
fn uses_local(port: &ServicePort, policy: &PolicyView, dialect: Dialect) -> bool {
    let no_short_circuit = dialect.local_falls_back_to_cluster;
    match policy.traffic {
        "internal" => port.internal_traffic_policy == TrafficPolicy::Local,
        _ => {
            port.external_traffic_policy == TrafficPolicy::Local
                && (!policy.short_circuit || no_short_circuit)
        }
    }
}

/// `loadBalancerSourceRanges`, which apply to load-balancer IPs only. As in
/// kube-proxy, traffic from the load-balancer IPs themselves passes when a
/// node IP is inside the ranges (hairpin through the LB).
fn source_ranges(
    port: &ServicePort,
    dst: DestinationKind,
    node: &NodeContext,
    packet: &Packet,
) -> Option<SourceRangeView> {
    let ranges = &port.load_balancer_source_ranges;
    if dst != DestinationKind::LoadBalancer || ranges.is_empty() {
        return None;
    }
    if node.dialect.source_ranges_spare_node && Origin::of(packet, node) == Origin::Local {
        return None;
    }
    let inside = |ip: &IpAddr| ranges.iter().any(|net| net.contains(ip));
    let from_lb =
        port.load_balancer_vips.contains(&packet.src) && node.primary_ips.iter().any(inside);
    Some(SourceRangeView {
        ranges: ranges.clone(),
        allowed: inside(&packet.src) || from_lb,
    })
}

fn verdict(
    cat: &Categorized<'_>,
    use_local: bool,
    ranges: Option<&SourceRangeView>,
    dialect: Dialect,
) -> VerdictView {
    if ranges.is_some_and(|r| !r.allowed) {
        return VerdictView::DropSourceRange;
    }
    let verdict = match cat.verdict(use_local) {
        // IPVS: no local endpoint, the Cluster set (which a Local-only port never has: no
        // real server, IPVS answers ICMP unreachable).
        Verdict::Drop if dialect.local_falls_back_to_cluster => match cat.cluster.as_deref() {
            Some(eps) if !eps.is_empty() => Verdict::Forward(eps),
            _ => Verdict::Reject,
        },
        v => v,
    };
    match verdict {
        Verdict::Forward(eps) => VerdictView::Dnat {
            endpoints: eps.iter().map(|ep| ep.addr()).collect(),
            masquerade: false,
            hairpin_masquerade: false,
        },
        Verdict::Reject if dialect.reject_no_endpoints => VerdictView::RejectNoEndpoints,
        Verdict::Reject => VerdictView::DropNoEndpoints,
        Verdict::Drop => VerdictView::DropNoLocalEndpoints,
    }
}

/// Whether the source is masqueraded (besides hairpin): ClusterIP traffic from outside the
/// pod network (all of it with `--masquerade-all`) so replies come back through this node;
/// external traffic under `externalTrafficPolicy: Cluster`; node-originated traffic that
/// short-circuits an `externalTrafficPolicy: Local` Service. Pod traffic short-circuited
/// to the Cluster set keeps its source, as does everything reaching local endpoints.
fn masquerade(
    port: &ServicePort,
    dst: DestinationKind,
    policy: &PolicyView,
    node: &NodeContext,
    src: IpAddr,
) -> bool {
    if node.dialect.socket_lb && policy.source == "pod" {
        return false;
    }
    let local = port.external_traffic_policy == TrafficPolicy::Local;
    if node.dialect.local_falls_back_to_cluster && dst != DestinationKind::ClusterIP && local {
        return false;
    }
    match dst {
        DestinationKind::ClusterIP => {
            node.masquerade_all
                || (!node.pod_cidrs.is_empty() && !node.pod_cidrs.iter().any(|n| n.contains(&src)))
        }
        _ => match port.external_traffic_policy {
            TrafficPolicy::Cluster => true,
            TrafficPolicy::Local => policy.short_circuit && policy.source == "node",
        },
    }
}

/// What the rules do with a destination no Service port matched: some modes reject another
/// port of a ClusterIP and drop unallocated addresses of the service CIDRs.
fn unserved(snapshot: &Snapshot, node: &NodeContext, dst: IpAddr) -> VerdictView {
    let is_cluster_ip = || {
        snapshot
            .service_ports()
            .any(|p| p.cluster_ips.contains(&dst))
    };
    let is_vip = || {
        snapshot.service_ports().any(|p| {
            p.cluster_ips.contains(&dst)
                || p.external_ips.contains(&dst)
                || p.load_balancer_vips.contains(&dst)
        })
    };
    let on_kube_ipvs0 = || {
        snapshot.service_ports().any(|p| {
            p.cluster_ips.contains(&dst)
                || p.load_balancer_vips.contains(&dst)
                || (p.external_ips.contains(&dst) && !node.node_ips.contains(&dst))
        })
    };
    if node.dialect.reject_unserved_cluster_ip_ports && is_cluster_ip()
        || node.dialect.reject_unserved_vip_ports && on_kube_ipvs0()
    {
        VerdictView::RejectUnservedPort
    } else if node.dialect.drop_unallocated_cluster_ips
        && node.service_cidrs.iter().any(|n| n.contains(&dst))
        && !is_vip()
    {
        VerdictView::DropUnallocatedClusterIp
    } else {
        VerdictView::NoService
    }
}

fn notes(policy: &PolicyView, verdict: &VerdictView) -> Vec<String> {
    let mut notes = Vec::new();
    if policy.short_circuit {
        notes.push(format!(
            "{}-originated traffic to an external address of an externalTrafficPolicy: Local \
             Service is sent to any endpoint, as if the policy were Cluster",
            policy.source
        ));
    }
    if policy.short_circuit && policy.source == "node" {
        notes.push("the packet is masqueraded (node-originated)".to_owned());
    }
    if matches!(verdict, VerdictView::Dnat { .. })
        && policy.traffic == "external"
        && policy.policy == "Cluster"
    {
        notes.push("the source is masqueraded (externalTrafficPolicy: Cluster)".to_owned());
    }
    notes
}

/// Why no Service port matched, when the address is known.
fn near_misses(snapshot: &Snapshot, packet: &Packet, verdict: &VerdictView) -> Vec<String> {
    let ip = packet.dst.ip();
    let owner = (snapshot.service_ports()).find(|p| {
        p.cluster_ips.contains(&ip)
            || p.external_ips.contains(&ip)
            || p.load_balancer_vips.contains(&ip)
    });
    match (owner, verdict) {
        (Some(p), _) => vec![format!(
            "{ip} belongs to Service {}/{}, which has no {} port {}",
            p.name.namespace,
            p.name.name,
            packet.protocol,
            packet.dst.port()
        )],
        (None, VerdictView::DropUnallocatedClusterIp) => vec![format!(
            "{ip} is inside the service CIDRs but no Service has it"
        )],
        (None, _) => vec![format!("{ip} is not a Service address known to this proxy")],
    }
}
