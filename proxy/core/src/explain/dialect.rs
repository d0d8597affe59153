//! [`Dialect`]: where the dataplanes deliberately differ from each other for the same
//! Services, so the model can predict what one mode's rules do (and the conformance suite can
//! say so per mode instead of skipping). kube-proxy's own modes differ the same way: its
//! nftables mode rejects traffic to unserved ports of a ClusterIP and drops traffic to
//! unallocated ones, its iptables mode serves NodePorts on localhost, its IPVS mode cannot
//! reject.

use serde::Serialize;

/// One dataplane's answers to the questions its modes disagree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dialect {
    /// Traffic to a ClusterIP on a port or protocol it does not serve is rejected
    /// (nftables' `cluster-ips-check`); otherwise it is left alone.
    pub reject_unserved_cluster_ip_ports: bool,
    /// Traffic to an unallocated address inside the service CIDRs is dropped; otherwise it
    /// is left alone.
    pub drop_unallocated_cluster_ips: bool,
    /// IPv4 loopback accepts NodePorts (iptables with `localhostNodePorts`).
    pub localhost_nodeports: bool,
    /// A Service with no usable endpoint anywhere rejects its traffic; otherwise drops it.
    pub reject_no_endpoints: bool,
    /// An endpoint reaching itself through its Service is masqueraded, so the reply comes
    /// back through the node.
    pub hairpin_masquerade: bool,
    /// Pods' connections are translated at `connect()`/`sendmsg()` (the eBPF mode's socket
    /// load balancer): no packet is rewritten, so a pod's source is never masqueraded.
    pub socket_lb: bool,
    /// Traffic to any Service address the node holds (ClusterIPs, external IPs that are not
    /// node addresses, load-balancer IPs) on a port it does not serve is rejected (IPVS
    /// mode's `KUBE-IPVS-FILTER` over `kube-ipvs0`'s addresses).
    pub reject_unserved_vip_ports: bool,
    /// kube-proxy's IPVS mode: a Local traffic policy uses the local endpoints when there
    /// are any and every endpoint otherwise (no short-circuit of pod and node traffic, no
    /// drop), and traffic under a Local policy is never masqueraded (only hairpin).
    pub local_falls_back_to_cluster: bool,
    /// The node's own connections to a load-balancer IP are not held to
    /// `loadBalancerSourceRanges` (kube-proxy's IPVS mode: IPVS schedules them in `LOCAL_OUT`,
    /// and its source-range firewall is jumped to from `INPUT` only).
    pub source_ranges_spare_node: bool,
}

impl Dialect {
    /// kube-proxy's nftables mode, which Sluice's nftables mode follows.
    pub const NFTABLES: Self = Self {
        reject_unserved_cluster_ip_ports: true,
        drop_unallocated_cluster_ips: true,
        localhost_nodeports: false,
        reject_no_endpoints: true,
        hairpin_masquerade: true,
        socket_lb: false,
        reject_unserved_vip_ports: false,
        local_falls_back_to_cluster: false,
        source_ranges_spare_node: false,
    };

    /// Sluice's eBPF mode: nftables' verdicts, with pods load-balanced at the socket (their
    /// source kept, also reaching themselves).
    pub const EBPF: Self = Self {
        hairpin_masquerade: false,
        socket_lb: true,
        ..Self::NFTABLES
    };

    /// kube-proxy's IPVS mode: `KUBE-IPVS-FILTER` rejects new connections to a Service address
    /// on `kube-ipvs0` that no virtual server serves; unallocated ClusterIPs are not on the
    /// link and are left alone; no NodePorts on loopback; IPVS itself answers ICMP port
    /// unreachable for a virtual server without real servers (a reject, no rule involved).
    pub const IPVS: Self = Self {
        reject_unserved_cluster_ip_ports: true,
        drop_unallocated_cluster_ips: false,
        localhost_nodeports: false,
        reject_no_endpoints: true,
        hairpin_masquerade: true,
        socket_lb: false,
        reject_unserved_vip_ports: true,
        local_falls_back_to_cluster: true,
        source_ranges_spare_node: true,
    };

    /// kube-proxy's iptables mode (`localhostNodePorts` as configured).
    pub const fn iptables(localhost_nodeports: bool) -> Self {
        Self {
            reject_unserved_cluster_ip_ports: false,
            drop_unallocated_cluster_ips: false,
            localhost_nodeports,
            reject_no_endpoints: true,
            hairpin_masquerade: true,
            socket_lb: false,
            reject_unserved_vip_ports: false,
            local_falls_back_to_cluster: false,
            source_ranges_spare_node: false,
        }
    }
}

impl Default for Dialect {
    fn default() -> Self {
        Self::NFTABLES
    }
}
