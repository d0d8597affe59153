//! One Service port as every proxy backend sees it: kube-proxy's
//! `BaseServicePortInfo`, but holding all address families so the dual-stack
//! split happens in one place ([`ServicePort::for_family`]) instead of in each
//! backend.

use std::net::IpAddr;

use ipnet::IpNet;

use super::names::{IpFamily, ServicePortName};

/// kube-proxy's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// `spec.type`, without `ExternalName` (such Services are never proxied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ServiceType {
    /// `ClusterIP` (the API default).
    #[default]
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster (the API default).
    #[default]
    Cluster,
    /// Only endpoints on the receiving node.
    Local,
}

/// `spec.trafficDistribution`, normalised (`PreferClose` is `PreferSameZone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficDistribution {
    /// Prefer endpoints in the node's zone (`PreferClose`, `PreferSameZone`).
    PreferSameZone,
    /// Prefer endpoints on the node itself.
    PreferSameNode,
}

impl TrafficDistribution {
    /// Parses the API value; unknown values are ignored (`None`) as kube-proxy does.
    pub fn from_api(value: &str) -> Option<Self> {
        match value {
            "PreferClose" | "PreferSameZone" => Some(Self::PreferSameZone),
            "PreferSameNode" => Some(Self::PreferSameNode),
            _ => None,
        }
    }
}

/// ClientIP session affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionAffinity {
    /// How long a client sticks to its endpoint.
    pub timeout_seconds: u32,
}

impl Default for SessionAffinity {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
        }
    }
}

/// One port of one Service, with everything a backend needs to program it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// `ns/name:port` plus protocol.
    pub name: ServicePortName,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// All cluster IPs, primary family first.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports[].port`.
    pub port: u16,
    /// `spec.ports[].nodePort`, `None` when unset or 0.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// VIP-mode load-balancer ingress IPs (ipMode unset or `VIP`).
    pub load_balancer_vips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`, whitespace-trimmed.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP affinity, `None` for `SessionAffinity: None`.
    pub session_affinity: Option<SessionAffinity>,
    /// Effective external policy: `Local` only when the Service is externally
    /// accessible by type (apiservice `ExternalPolicyLocal`).
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// Set only when the Service needs one (LoadBalancer with ETP=Local).
    pub health_check_node_port: Option<u16>,
    /// `spec.trafficDistribution`, normalised.
    pub traffic_distribution: Option<TrafficDistribution>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready_addresses: bool,
}

impl ServicePort {
    /// A plain ClusterIP port: `name` on `cluster_ips` at `port`, every other field at the
    /// API's default (no node port, no external or LB addresses, Cluster policies, no
    /// affinity). Tests and tools start from it and set what they need.
    pub fn plain(name: ServicePortName, cluster_ips: Vec<IpAddr>, port: u16) -> Self {
        Self {
            name,
            service_type: ServiceType::ClusterIp,
            cluster_ips,
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_vips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            traffic_distribution: None,
            publish_not_ready_addresses: false,
        }
    }

    /// Reachable by something other than a ClusterIP (NodePort, ExternalIP, LB VIP).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.load_balancer_vips.is_empty()
            || !self.external_ips.is_empty()
    }

    /// Whether traffic ever goes to endpoints under the Cluster policy; an
    /// ETP=Local Service still needs them for the pod/host short-circuit.
    pub fn uses_cluster_endpoints(&self) -> bool {
        self.internal_traffic_policy != TrafficPolicy::Local || self.externally_accessible()
    }

    /// Whether traffic ever goes to endpoints under the Local policy.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_traffic_policy == TrafficPolicy::Local
            || (self.external_traffic_policy == TrafficPolicy::Local
                && self.externally_accessible())
    }

    /// The cluster IP of `family`, if the Service has one.
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| family.contains(ip))
    }

    /// The single-family view a per-family proxier programs: every address list
    /// filtered to `family`. `None` when the Service has no cluster IP of that
    /// family (kube-proxy ignores the Service in that proxier).
    pub fn for_family(&self, family: IpFamily) -> Option<ServicePort> {
        let cluster_ip = self.cluster_ip(family)?;
        let keep = |ips: &[IpAddr]| -> Vec<IpAddr> {
            ips.iter()
                .copied()
                .filter(|ip| family.contains(ip))
                .collect()
        };
        let ranges = self
            .load_balancer_source_ranges
            .iter()
            .copied()
            .filter(|net| family.contains(&net.addr()))
            .collect();
        Some(ServicePort {
            cluster_ips: vec![cluster_ip],
            external_ips: keep(&self.external_ips),
            load_balancer_vips: keep(&self.load_balancer_vips),
            load_balancer_source_ranges: ranges,
            ..self.clone()
        })
    }
}
