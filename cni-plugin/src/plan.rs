//! What an attachment should look like, computed from the config and subnet.env alone — the
//! same defaults flannel's plugin hands its `bridge` + `host-local` delegate, without the
//! delegate execs. Pure, so the flannel compatibility rules are unit-tested.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sluice_model::subnet_env::SubnetEnv;

use crate::config::NetConf;
use crate::error::{CniError, Code};
use crate::ipam::Range;

/// flannel's default bridge.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The attachment to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The bridge the pods of this node share.
    pub bridge: String,
    /// MTU of the bridge and both veth ends.
    pub mtu: u32,
    /// Hairpin mode on the host port.
    pub hairpin: bool,
    /// Put the gateway address on the bridge.
    pub is_gateway: bool,
    /// Masquerade the pod's traffic leaving the cluster networks.
    pub ip_masq: bool,
    /// One range per address family (IPv4 first), one address allocated from each.
    pub ranges: Vec<Range>,
    /// Routes in the pod, each via its family's gateway.
    pub routes: Vec<(IpNet, IpAddr)>,
}

impl Plan {
    /// The plan for `conf` on a node whose overlay wrote `env`.
    pub fn new(conf: &NetConf, env: &SubnetEnv) -> Result<Self, CniError> {
        let s = conf.bridge_settings();
        let bridge = conf.bridge_name();
        crate::env::check_ifname("bridge", &bridge)
            .map_err(|m| CniError::new(Code::InvalidConfig, m))?;
        let default_gw = s.is_default_gateway.unwrap_or(false);
        let mut plan = Self {
            bridge,
            mtu: s.mtu.unwrap_or(env.mtu),
            hairpin: s.hairpin_mode.unwrap_or(false),
            is_gateway: default_gw || s.is_gateway.unwrap_or(true),
            ip_masq: s.ip_masq.unwrap_or(!env.ipmasq),
            ranges: Vec::new(),
            routes: Vec::new(),
        };
        if let Some(subnet) = env.subnet_network() {
            plan.add_family(IpNet::V4(subnet), &v4(&env.networks), default_gw)?;
        }
        if let Some(subnet) = env.ipv6_subnet_network() {
            plan.add_family(IpNet::V6(subnet), &v6(&env.ipv6_networks), default_gw)?;
        }
        if plan.ranges.is_empty() {
            return Err(CniError::new(
                Code::InvalidConfig,
                "subnet.env gives this node no subnet (FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET)",
            ));
        }
        Ok(plan)
    }

    /// The default route when asked for, else one route per cluster network.
    fn add_family(
        &mut self,
        subnet: IpNet,
        networks: &[IpNet],
        default_gw: bool,
    ) -> Result<(), CniError> {
        let range = Range::of(subnet).ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("subnet {subnet} is too small to allocate from"),
            )
        })?;
        if default_gw {
            let any = IpNet::new(unspecified(subnet), 0).unwrap_or(subnet);
            self.routes.push((any, range.gateway));
        } else {
            self.routes
                .extend(networks.iter().map(|n| (n.trunc(), range.gateway)));
        }
        self.ranges.push(range);
        Ok(())
    }

    /// The gateway's address on the bridge, per family.
    pub fn gateway_addresses(&self) -> Vec<IpNet> {
        self.ranges
            .iter()
            .filter_map(|r| IpNet::new(r.gateway, r.subnet.prefix_len()).ok())
            .collect()
    }
}

fn unspecified(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpNet::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn v4(nets: &[Ipv4Net]) -> Vec<IpNet> {
    nets.iter().copied().map(IpNet::V4).collect()
}

fn v6(nets: &[Ipv6Net]) -> Vec<IpNet> {
    nets.iter().copied().map(IpNet::V6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn plan(conf: &str, env: &str) -> Result<Plan, CniError> {
        let conf = NetConf::parse(conf.as_bytes()).unwrap();
        Plan::new(&conf, &SubnetEnv::parse(env).unwrap())
    }

    #[test]
    fn flannels_defaults() {
        let p = plan(
            r#"{"name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
            ENV,
        )
        .unwrap();
        assert_eq!(p.bridge, "cni0");
        assert_eq!(p.mtu, 1450);
        assert!(p.hairpin && p.is_gateway);
        // FLANNEL_IPMASQ=true: the overlay masquerades, so the plugin does not.
        assert!(!p.ip_masq);
        assert_eq!(p.ranges[0].subnet.to_string(), "10.244.1.0/24");
        assert_eq!(
            p.routes,
            vec![("0.0.0.0/0".parse().unwrap(), "10.244.1.1".parse().unwrap())]
        );
        assert_eq!(
            p.gateway_addresses(),
            vec!["10.244.1.1/24".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn without_default_gateway_the_cluster_networks_are_routed() {
        let env = ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false");
        let p = plan(
            r#"{"name":"n","type":"sluice","bridge":"br9","mtu":1400,"delegate":{"bridge":"br7"}}"#,
            &env,
        )
        .unwrap();
        assert_eq!((p.bridge.as_str(), p.mtu, p.ip_masq), ("br7", 1400, true));
        assert_eq!(
            p.routes,
            vec![(
                "10.244.0.0/16".parse().unwrap(),
                "10.244.1.1".parse().unwrap()
            )]
        );
    }

    #[test]
    fn dual_stack_gets_a_range_and_routes_per_family() {
        let env = format!(
            "{ENV}FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:1::1/64\n"
        );
        let p = plan(
            r#"{"name":"n","type":"sluice","isDefaultGateway":true}"#,
            &env,
        )
        .unwrap();
        assert_eq!(p.ranges.len(), 2);
        assert_eq!(
            p.routes[1],
            ("::/0".parse().unwrap(), "fd00:10:0:1::1".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_bridge_name_is_invalid_config() {
        let e = plan(
            r#"{"name":"n","type":"sluice","bridge":"this-name-is-too-long"}"#,
            ENV,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
    }
}
