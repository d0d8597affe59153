//! What a tracker needs to know about the proxy it feeds: the one address family
//! it serves, this node (for `isLocal` and topology), the `serviceProxyName` it
//! answers to, and the one feature gate that changes endpoint selection.
//!
//! kube-proxy runs one single-family proxier per family; Sluice does the same, so
//! every comparison ("did this Service change?") is made on the family-filtered
//! view and an IPv6-only edit never disturbs the IPv4 dataplane.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sluice_model::service::IpFamily;

use crate::config_file::ProxyConfig;

/// The one feature gate Sluice reads (`--feature-gates`, `featureGates`).
pub const PREFER_SAME_TRAFFIC_DISTRIBUTION: &str = "PreferSameTrafficDistribution";

/// The node label kube-proxy reads for zone topology hints.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Fixed settings of one single-family tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// The address family this proxier programs.
    pub family: IpFamily,
    /// This node's name (`--hostname-override` or the host name); endpoints
    /// whose `nodeName` equals it are local. Empty means nothing is local.
    pub node_name: String,
    /// `serviceProxyName`: when set, only Services labelled
    /// `service.kubernetes.io/service-proxy-name=<name>` are proxied; when unset,
    /// only Services without that label.
    pub proxy_name: Option<String>,
    /// Feature gate `PreferSameTrafficDistribution` (beta, on by default since
    /// 1.34): honour node hints (`trafficDistribution: PreferSameNode`).
    pub prefer_same_node: bool,
}

impl TrackerConfig {
    /// A config for `family` on `node_name` with kube-proxy's defaults.
    pub fn new(family: IpFamily, node_name: impl Into<String>) -> Self {
        Self {
            family,
            node_name: node_name.into(),
            proxy_name: None,
            prefer_same_node: true,
        }
    }

    /// The tracker for `family` on `node_name` that `config` asks for.
    pub fn for_proxy(config: &ProxyConfig, family: IpFamily, node_name: &str) -> Self {
        Self {
            proxy_name: config.service_proxy_name.clone(),
            prefer_same_node: config.feature(PREFER_SAME_TRAFFIC_DISTRIBUTION, true),
            ..Self::new(family, node_name)
        }
    }
}

/// This node as topology-aware routing sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTopology {
    /// The node's name (matched against endpoint `nodeName` and node hints).
    pub name: String,
    /// The value of [`ZONE_LABEL`]; `None` when absent or empty.
    pub zone: Option<String>,
    /// `status.addresses`: the InternalIPs, then the ExternalIPs (kube-proxy's
    /// `GetNodeHostIPs` order); what `explain --from-node` knows of another node.
    pub addresses: Vec<IpAddr>,
}

impl NodeTopology {
    /// Builds the topology from the Node's name and labels.
    pub fn from_labels(name: impl Into<String>, labels: Option<&BTreeMap<String, String>>) -> Self {
        let zone = labels
            .and_then(|l| l.get(ZONE_LABEL))
            .filter(|zone| !zone.is_empty())
            .cloned();
        Self {
            name: name.into(),
            zone,
            addresses: Vec::new(),
        }
    }

    /// The node's primary IP of each family: the first address of that family.
    pub fn primary_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in &self.addresses {
            if !out.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
                out.push(*ip);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_label() {
        let labels = |zone: &str| BTreeMap::from([(ZONE_LABEL.to_owned(), zone.to_owned())]);
        let node = NodeTopology::from_labels("n1", Some(&labels("zone-a")));
        assert_eq!(node.zone.as_deref(), Some("zone-a"));
        assert_eq!(
            NodeTopology::from_labels("n1", Some(&labels(""))).zone,
            None
        );
        assert_eq!(NodeTopology::from_labels("n1", None).zone, None);
        let config = TrackerConfig::new(IpFamily::V4, "n1");
        assert!(config.prefer_same_node);
        assert_eq!(config.proxy_name, None);
    }

    #[test]
    fn the_proxy_config_sets_proxy_name_and_the_node_hint_gate() {
        let mut proxy = ProxyConfig::default();
        assert_eq!(
            TrackerConfig::for_proxy(&proxy, IpFamily::V6, "n1"),
            TrackerConfig::new(IpFamily::V6, "n1")
        );
        proxy.service_proxy_name = Some("sluice".to_owned());
        proxy
            .feature_gates
            .insert(PREFER_SAME_TRAFFIC_DISTRIBUTION.to_owned(), false);
        let config = TrackerConfig::for_proxy(&proxy, IpFamily::V4, "n1");
        assert!(!config.prefer_same_node);
        assert_eq!(config.proxy_name.as_deref(), Some("sluice"));
    }
}
