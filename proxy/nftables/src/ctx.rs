//! What the nftables rendering depends on besides the Services: the operator's settings
//! (`--masquerade-all`, `--cluster-cidr` / `--detect-local-mode`, `--nodeport-addresses`, the
//! masquerade bit) and the node's addresses. Fixed at start, per address family.

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::IpFamily;
use sluice_nft::Family;
use sluice_proxy_core::backend::{BackendOptions, LocalDetect};
use sluice_proxy_core::config_file::DEFAULT_MASQUERADE_BIT;

/// The table every Sluice rule lives in (one per family).
pub const TABLE: &str = "sluice";

/// Rendering settings for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftConfig {
    /// The family of the table.
    pub family: Family,
    /// Mark bit that asks the postrouting chain to masquerade.
    pub masquerade_mark: u32,
    /// Masquerade all traffic to Services (`--masquerade-all`).
    pub masquerade_all: bool,
    /// How pod traffic is told apart: source CIDRs (the cluster CIDRs in `ClusterCIDR` mode,
    /// this node's pod CIDRs in `NodeCIDR` mode), a bridge or an interface-name prefix. No
    /// CIDRs: traffic from anywhere to a ClusterIP is not masqueraded unless
    /// `masquerade_all`, and eTP=Local has no pod short-circuit.
    pub local: LocalDetect,
    /// Addresses that accept NodePort traffic; `None` = every local address. Never loopback:
    /// kube-proxy's nftables mode does not serve NodePorts on it.
    pub nodeport_addresses: Option<Vec<IpAddr>>,
    /// The node's primary IP(s) of this family: when one is inside a Service's
    /// `loadBalancerSourceRanges`, its load-balancer IPs may be sources too.
    pub node_ips: Vec<IpAddr>,
    /// The service CIDRs, when known: unallocated ClusterIPs in them are dropped.
    pub service_cidrs: Vec<IpNet>,
}

impl NftConfig {
    /// Defaults for `family`: no local detection, NodePorts on all local addresses.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            masquerade_mark: 1 << DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            local: LocalDetect::Cidrs(Vec::new()),
            nodeport_addresses: None,
            node_ips: Vec::new(),
            service_cidrs: Vec::new(),
        }
    }

    /// The pod CIDRs, when pods are detected by source address.
    pub fn local_cidrs(&self) -> &[IpNet] {
        self.local.cidrs()
    }

    /// The settings of `family` from the proxy's resolved options.
    pub fn of(opts: &BackendOptions, family: IpFamily) -> Self {
        let of_family = |n: &IpNet| family.contains(&n.addr());
        let local = match &opts.local {
            LocalDetect::Cidrs(c) => {
                LocalDetect::Cidrs(c.iter().copied().filter(of_family).collect())
            }
            other => other.clone(),
        };
        let served = |ip: &IpAddr| family.contains(ip) && !ip.is_loopback();
        NftConfig {
            masquerade_mark: 1u32 << opts.masquerade_bit.min(31),
            masquerade_all: opts.masquerade_all,
            local,
            nodeport_addresses: (opts.nodeport_addresses.as_ref())
                .map(|a| a.iter().copied().filter(served).collect()),
            node_ips: (opts.node_ips.iter().copied())
                .filter(|ip| family.contains(ip))
                .collect(),
            service_cidrs: (opts.service_cidrs.iter().copied())
                .filter(of_family)
                .collect(),
            ..NftConfig::new(match family {
                IpFamily::V4 => Family::Ip,
                IpFamily::V6 => Family::Ip6,
            })
        }
    }

    /// The loopback prefix of the family (never a NodePort address).
    pub fn loopback(&self) -> IpNet {
        match self.family {
            Family::Ip => "127.0.0.0/8".parse().expect("literal"),
            Family::Ip6 => "::1/128".parse().expect("literal"),
        }
    }
}
