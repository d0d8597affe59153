//! What the proxy knows about the node it programs (or, for `explain --from-node`, another
//! node): its addresses, its primary IPs and pod CIDRs, and the backend options and explain
//! context built from them and the configuration. One place, so the daemon renders with the
//! same facts `explain` models.

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::IpFamily;
use sluice_proxy_core::backend::{BackendOptions, IpvsOptions, LocalDetect, select_nodeport_ips};
use sluice_proxy_core::config::NodeTopology;
use sluice_proxy_core::config_file::{LocalMode, ProxyConfig};
use sluice_proxy_core::explain::{Dialect, NodeContext};

/// A node's addresses as the proxy sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Every address of the node (its interfaces', or its Node object's for another node).
    pub addresses: Vec<IpAddr>,
    /// The primary IP of each family: the Node object's, else `--bind-address`, else the
    /// first global address of the family.
    pub primary: Vec<IpAddr>,
    /// `spec.podCIDRs` of the Node object, when known (`--detect-local-mode NodeCIDR`).
    pub pod_cidrs: Vec<IpNet>,
}

impl NodeFacts {
    /// This node: its interfaces' addresses, and the Node object's primary IPs when given.
    pub fn local(config: &ProxyConfig, node_object: Option<&NodeTopology>) -> Self {
        Self::from_addresses(config, local_addresses(), node_object)
    }

    /// A node with `addresses` (its interfaces', its Node object's, or `--node-ip`s).
    pub fn from_addresses(
        config: &ProxyConfig,
        addresses: Vec<IpAddr>,
        node_object: Option<&NodeTopology>,
    ) -> Self {
        let mut primary = node_object
            .map(NodeTopology::primary_ips)
            .unwrap_or_default();
        if primary.is_empty() && !config.bind_address.is_unspecified() {
            primary.push(config.bind_address);
        }
        for ip in addresses.iter().filter(|ip| is_global(ip)) {
            if !primary.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
                primary.push(*ip);
            }
        }
        Self {
            addresses,
            primary,
            pod_cidrs: Vec::new(),
        }
    }
}

/// Not loopback, link-local or unspecified: an address other nodes can reach.
fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local() && !a.is_unspecified(),
    }
}

/// IPv4, plus IPv6 when a cluster CIDR is IPv6 (dual stack).
pub fn families(config: &ProxyConfig) -> Vec<IpFamily> {
    let mut out = vec![IpFamily::V4];
    if (config.cluster_cidrs.iter()).any(|c| matches!(c, IpNet::V6(_))) {
        out.push(IpFamily::V6);
    }
    out
}

/// `--detect-local-mode` with its parameter. `NodeCIDR` without known pod CIDRs detects
/// nothing (logged), as kube-proxy's detector is then not implemented.
pub fn local_detect(config: &ProxyConfig, node: &NodeFacts) -> LocalDetect {
    match config.detect_local_mode {
        LocalMode::ClusterCidr => LocalDetect::Cidrs(config.cluster_cidrs.clone()),
        LocalMode::NodeCidr => {
            if node.pod_cidrs.is_empty() {
                tracing::warn!("--detect-local-mode NodeCIDR: this Node has no podCIDRs yet");
            }
            LocalDetect::Cidrs(node.pod_cidrs.clone())
        }
        LocalMode::BridgeInterface => LocalDetect::Bridge(config.bridge_interface.clone()),
        LocalMode::InterfaceNamePrefix => {
            LocalDetect::InterfacePrefix(config.interface_name_prefix.clone())
        }
    }
}

/// What every backend is built with, for `node`.
pub fn backend_options(
    config: &ProxyConfig,
    families: &[IpFamily],
    node: &NodeFacts,
) -> BackendOptions {
    let nodeport_addresses =
        select_nodeport_ips(&config.node_port_addresses, &node.addresses, &node.primary);
    if nodeport_addresses.as_ref().is_some_and(Vec::is_empty) {
        tracing::warn!(
            spec = ?config.node_port_addresses,
            "--nodeport-addresses matches no address of this node; no node ports served"
        );
    }
    BackendOptions {
        families: families.to_vec(),
        local: local_detect(config, node),
        masquerade_all: config.masquerade_all,
        masquerade_bit: config.masquerade_bit,
        nodeport_addresses,
        node_ips: node.primary.clone(),
        service_cidrs: config.service_cidrs.clone(),
        localhost_nodeports: config.localhost_node_ports,
        tcp_be_liberal: config.conntrack.tcp_be_liberal,
        ipvs: IpvsOptions {
            scheduler: config.ipvs.scheduler.clone(),
            exclude_cidrs: config.ipvs.exclude_cidrs.clone(),
            strict_arp: config.ipvs.strict_arp,
            timeouts: (
                config.ipvs.tcp_timeout,
                config.ipvs.tcp_fin_timeout,
                config.ipvs.udp_timeout,
            ),
        },
        ebpf: config.ebpf.clone(),
        iptables_variant: config.iptables_variant.clone(),
    }
}

/// The context `explain` models a packet on `node` with: its addresses, the NodePort
/// addresses the mode serves (`dialect` says whether loopback is one), the pod detector.
pub fn node_context(
    opts: &BackendOptions,
    node: &NodeFacts,
    topology: NodeTopology,
    dialect: Dialect,
) -> NodeContext {
    let serves = |ip: &IpAddr| !ip.is_loopback() || (dialect.localhost_nodeports && ip.is_ipv4());
    let nodeport_ips = (opts.nodeport_addresses.as_ref())
        .unwrap_or(&node.addresses)
        .iter()
        .copied()
        .filter(serves)
        .collect();
    NodeContext {
        topology,
        node_ips: node.addresses.clone(),
        primary_ips: node.primary.clone(),
        nodeport_ips,
        pod_cidrs: match &opts.local {
            LocalDetect::Cidrs(c) => c.clone(),
            // Interface detectors: the node's pod CIDRs stand in for "arrived from a pod".
            _ => node.pod_cidrs.clone(),
        },
        masquerade_all: opts.masquerade_all,
        service_cidrs: opts.service_cidrs.clone(),
        dialect,
    }
}

/// The addresses on this node's interfaces (from `/proc/net`, no netlink needed), loopback
/// included.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            if let Some(hex) = line.split_whitespace().next()
                && let Ok(bits) = u128::from_str_radix(hex, 16)
            {
                out.push(IpAddr::V6(bits.into()));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[1].contains("/32 host LOCAL")
                && let Some(ip) = pair[0].trim().trim_start_matches("|-- ").parse().ok()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proxy_core::config_file::NodePortAddress;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn primary_ips_come_from_the_node_object_then_bind_address_then_interfaces() {
        let mut config = ProxyConfig::default();
        let addrs = ips(&[
            "127.0.0.1",
            "192.168.0.11",
            "10.244.1.1",
            "fe80::1",
            "fd00::11",
        ]);
        let node = NodeTopology {
            addresses: ips(&["192.168.0.99"]),
            ..NodeTopology::default()
        };
        let facts = NodeFacts::from_addresses(&config, addrs.clone(), Some(&node));
        assert_eq!(facts.primary, ips(&["192.168.0.99", "fd00::11"]));
        config.bind_address = "192.168.0.12".parse().unwrap();
        let facts = NodeFacts::from_addresses(&config, addrs.clone(), None);
        assert_eq!(facts.primary, ips(&["192.168.0.12", "fd00::11"]));
        config.bind_address = "0.0.0.0".parse().unwrap();
        let facts = NodeFacts::from_addresses(&config, addrs, None);
        assert_eq!(facts.primary, ips(&["192.168.0.11", "fd00::11"]));
    }

    #[test]
    fn nodeport_addresses_follow_the_spec_and_the_dialect() {
        let mut config = ProxyConfig::default();
        let facts = NodeFacts::from_addresses(
            &config,
            ips(&["127.0.0.1", "192.168.0.11", "10.244.1.1"]),
            None,
        );
        let ctx = |config: &ProxyConfig, dialect| {
            let opts = backend_options(config, &[IpFamily::V4], &facts);
            node_context(&opts, &facts, NodeTopology::default(), dialect).nodeport_ips
        };
        // Default (all): every address, loopback only where the mode serves it.
        assert_eq!(
            ctx(&config, Dialect::NFTABLES),
            ips(&["192.168.0.11", "10.244.1.1"])
        );
        let iptables = Dialect::iptables(true);
        assert_eq!(
            ctx(&config, iptables),
            ips(&["127.0.0.1", "192.168.0.11", "10.244.1.1"])
        );
        config.node_port_addresses = vec![NodePortAddress::Cidr("192.168.0.0/24".parse().unwrap())];
        assert_eq!(ctx(&config, iptables), ips(&["192.168.0.11"]));
        config.node_port_addresses = vec![NodePortAddress::Primary, NodePortAddress::Localhost];
        assert_eq!(ctx(&config, Dialect::NFTABLES), ips(&["192.168.0.11"]));
        assert_eq!(ctx(&config, iptables), ips(&["127.0.0.1", "192.168.0.11"]));
    }
}
