//! What the iptables rendering depends on besides the Services, per address family — the
//! settings kube-proxy's `NewProxier` derives: the masquerade mark (`%#08x` of the bit), the
//! local-traffic detector's match, localhost NodePorts (IPv4 only, and only when
//! `--nodeport-addresses` includes loopback), the node's primary IP, and what the host's
//! iptables and kernel support (`--random-fully`, nfacct counters).

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::IpFamily;
use sluice_proxy_core::backend::{BackendOptions, LocalDetect};

/// Rendering settings of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptConfig {
    /// The family of `iptables` (IPv4) or `ip6tables` (IPv6).
    pub family: IpFamily,
    /// The mark asking KUBE-POSTROUTING to masquerade, as written (`0x004000`).
    pub masquerade_mark: String,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// How pods are recognised (`! -s CIDR`, `! -i BRIDGE`, `! -i PREFIX+`).
    pub local: LocalDetect,
    /// IPv4 NodePorts on 127.0.0.1 (`--iptables-localhost-nodeports`, effective).
    pub localhost_nodeports: bool,
    /// The addresses serving NodePorts; `None`: every local address (`addrtype LOCAL`).
    pub nodeport_addresses: Option<Vec<IpAddr>>,
    /// The node's primary IP of this family (a load balancer's own address passes its source
    /// ranges when this is inside them).
    pub node_ip: Option<IpAddr>,
    /// `MASQUERADE --random-fully` (iptables ≥ 1.6.2).
    pub random_fully: bool,
    /// The kernel has nfacct: count INVALID drops and localhost NodePort accepts.
    pub nfacct: bool,
    /// `nf_conntrack_tcp_be_liberal` is set: no INVALID drop rule.
    pub tcp_be_liberal: bool,
}

/// kube-proxy's nfacct counter of dropped INVALID packets.
pub(crate) const NFACCT_INVALID: &str = "ct_state_invalid_dropped_pkts";
/// kube-proxy's nfacct counter of accepted localhost NodePort packets.
pub(crate) const NFACCT_LOCALHOST: &str = "localhost_nps_accepted_pkts";

impl IptConfig {
    /// kube-proxy's defaults for `family`: mark bit 14, no local detection, every local
    /// address serving NodePorts, localhost NodePorts on IPv4.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            masquerade_mark: mark(sluice_proxy_core::config_file::DEFAULT_MASQUERADE_BIT),
            masquerade_all: false,
            local: LocalDetect::Cidrs(Vec::new()),
            localhost_nodeports: family == IpFamily::V4,
            nodeport_addresses: None,
            node_ip: None,
            random_fully: true,
            nfacct: false,
            tcp_be_liberal: false,
        }
    }

    /// The settings of `family` from the proxy's options and what the host supports.
    pub fn of(opts: &BackendOptions, family: IpFamily, random_fully: bool, nfacct: bool) -> Self {
        let of_family = |n: &IpNet| family.contains(&n.addr());
        let local = match &opts.local {
            LocalDetect::Cidrs(c) => {
                LocalDetect::Cidrs(c.iter().copied().filter(of_family).collect())
            }
            other => other.clone(),
        };
        let nodeport_addresses: Option<Vec<IpAddr>> = (opts.nodeport_addresses.as_ref())
            .map(|a| a.iter().copied().filter(|ip| family.contains(ip)).collect());
        // kube-proxy: localhost NodePorts only on IPv4, and only when the NodePort addresses
        // include IPv4 loopback.
        let loopback_selected = nodeport_addresses
            .as_ref()
            .is_none_or(|a| a.iter().any(|ip| ip.is_loopback()));
        Self {
            family,
            masquerade_mark: mark(opts.masquerade_bit),
            masquerade_all: opts.masquerade_all,
            local,
            localhost_nodeports: opts.localhost_nodeports
                && family == IpFamily::V4
                && loopback_selected,
            nodeport_addresses,
            node_ip: opts.node_ips.iter().copied().find(|ip| family.contains(ip)),
            random_fully,
            nfacct,
            tcp_be_liberal: opts.tcp_be_liberal,
        }
    }

    /// `! -s CIDR` (or `! -i IF`): "the source is not a pod"; `None` without a detector.
    pub(crate) fn if_not_local(&self) -> Option<String> {
        self.local_match().map(|m| format!("! {m}"))
    }

    /// `-s CIDR` (or `-i IF`): "the source is a pod".
    pub(crate) fn if_local(&self) -> Option<String> {
        self.local_match()
    }

    fn local_match(&self) -> Option<String> {
        match &self.local {
            LocalDetect::Cidrs(c) => c.first().map(|net| format!("-s {net}")),
            LocalDetect::Bridge(b) => Some(format!("-i {b}")),
            LocalDetect::InterfacePrefix(p) => Some(format!("-i {p}+")),
        }
    }
}

/// `%#08x` of `1 << bit`, as kube-proxy formats the mark (`0x004000` for bit 14).
pub(crate) fn mark(bit: u8) -> String {
    let value = 1u64 << bit.min(31);
    format!("{value:#08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_formatted_as_kube_proxy_formats_it() {
        assert_eq!(mark(14), "0x004000");
        assert_eq!(mark(0), "0x000001");
        assert_eq!(mark(24), "0x1000000");
    }

    #[test]
    fn localhost_nodeports_only_on_ipv4_with_loopback_selected() {
        let mut opts = BackendOptions::default();
        assert!(IptConfig::of(&opts, IpFamily::V4, true, false).localhost_nodeports);
        assert!(!IptConfig::of(&opts, IpFamily::V6, true, false).localhost_nodeports);
        opts.nodeport_addresses = Some(vec!["192.168.0.2".parse().unwrap()]);
        assert!(!IptConfig::of(&opts, IpFamily::V4, true, false).localhost_nodeports);
        opts.nodeport_addresses = Some(vec!["127.0.0.1".parse().unwrap()]);
        assert!(IptConfig::of(&opts, IpFamily::V4, true, false).localhost_nodeports);
        opts.localhost_nodeports = false;
        assert!(!IptConfig::of(&opts, IpFamily::V4, true, false).localhost_nodeports);
    }
}
