//! The answer `explain` gives, as data: serialised for `--output json`,
//! rendered in plain words otherwise.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

/// The packet being explained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketView {
    /// Source address.
    pub src: IpAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// Which kind of Service address the destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DestinationKind {
    /// A cluster IP and port.
    ClusterIP,
    /// A node IP and node port.
    NodePort,
    /// One of `spec.externalIPs` and the port.
    ExternalIP,
    /// A load-balancer ingress IP and the port.
    LoadBalancer,
}

/// Which traffic policy decides the endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// `internal` (cluster IP) or `external` (everything else).
    pub traffic: &'static str,
    /// `internalTrafficPolicy` or `externalTrafficPolicy`.
    pub field: &'static str,
    /// `Cluster` or `Local`.
    pub policy: &'static str,
    /// Where the packet comes from: `pod`, `node` or `other`.
    pub source: &'static str,
    /// External `Local` traffic from a pod or the node itself goes to the
    /// Cluster set, as in kube-proxy.
    pub short_circuit: bool,
}

/// `loadBalancerSourceRanges` as applied to this packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceRangeView {
    /// The Service's ranges.
    pub ranges: Vec<IpNet>,
    /// Whether the source may pass.
    pub allowed: bool,
}

/// Why an endpoint is not a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exclusion {
    /// Not ready (and not serving-terminating).
    NotReady,
    /// Terminating while other endpoints are ready (or serving).
    Terminating,
    /// Terminating and no longer serving.
    TerminatingNotServing,
    /// On another node under a `Local` policy.
    NotLocal,
    /// Topology hints send this node's traffic to another zone's endpoints.
    OtherZone,
    /// Topology hints send this node's traffic to its own endpoints.
    OtherNode,
}

impl Exclusion {
    /// Plain words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotReady => "not ready",
            Self::Terminating => "terminating (ready endpoints are used instead)",
            Self::TerminatingNotServing => "terminating and no longer serving",
            Self::NotLocal => "not local (the policy is Local)",
            Self::OtherZone => "hinted for another zone (topology-aware routing)",
            Self::OtherNode => "hinted for another node (PreferSameNode)",
        }
    }
}

/// One endpoint of the Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// `ip:port`.
    pub address: SocketAddr,
    /// `nodeName`.
    pub node: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// Whether this packet may be DNATed to it.
    pub eligible: bool,
    /// Why not, when not eligible.
    pub reason: Option<Exclusion>,
}

/// What happens to the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum VerdictView {
    /// DNAT to one of these endpoints.
    Dnat {
        /// The candidates, one picked at random (or by affinity).
        endpoints: Vec<SocketAddr>,
        /// The source is masqueraded (the node's address replaces it).
        masquerade: bool,
        /// The source is one of the endpoints: its connection to itself is masqueraded
        /// (hairpin), whatever `masquerade` says.
        #[serde(rename = "hairpinMasquerade")]
        hairpin_masquerade: bool,
    },
    /// REJECT: the Service has no usable endpoint anywhere.
    RejectNoEndpoints,
    /// DROP: the Service has no usable endpoint anywhere, and this mode cannot reject.
    DropNoEndpoints,
    /// DROP: endpoints exist, none on this node under a `Local` policy.
    DropNoLocalEndpoints,
    /// DROP: the source is outside `loadBalancerSourceRanges`.
    DropSourceRange,
    /// REJECT: a ClusterIP on a port or protocol none of its Services serves.
    RejectUnservedPort,
    /// DROP: an address inside the service CIDRs that no Service has.
    DropUnallocatedClusterIp,
    /// Not a Service address: the proxy leaves the packet alone.
    NoService,
}

/// Everything `explain` says about one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The packet.
    pub packet: PacketView,
    /// The node whose rules were evaluated.
    pub node: String,
    /// `ns/name:port` of the Service port hit, if any.
    pub service_port: Option<String>,
    /// How the destination matched.
    pub destination: Option<DestinationKind>,
    /// The traffic policy applied.
    pub policy: Option<PolicyView>,
    /// `loadBalancerSourceRanges`, for load-balancer destinations that have them.
    pub source_ranges: Option<SourceRangeView>,
    /// Topology narrowing of the Cluster set: `None`, `PreferSameZone`, `PreferSameNode`.
    pub topology: Option<&'static str>,
    /// The candidates are serving-terminating endpoints (no ready one existed).
    pub terminating_fallback: bool,
    /// ClientIP session affinity timeout, when enabled.
    pub session_affinity_seconds: Option<u32>,
    /// Every endpoint of the Service port with its eligibility.
    pub endpoints: Vec<EndpointView>,
    /// The outcome.
    pub verdict: VerdictView,
    /// Extra remarks.
    pub notes: Vec<String>,
}
