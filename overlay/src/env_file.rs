//! The subnet.env this node writes for the CNI plugin: flannel's rule is the network as
//! configured, the lease subnet with its first host address, the overlay MTU and the
//! `--ip-masq` setting.

use ipnet::{Ipv4Net, Ipv6Net};
use sluice_model::subnet_env::SubnetEnv;

use crate::lease::Lease;

/// subnet.env for `lease` inside the configured networks.
pub fn subnet_env(
    network: Option<Ipv4Net>,
    ipv6_network: Option<Ipv6Net>,
    lease: &Lease,
    mtu: u32,
    ipmasq: bool,
) -> SubnetEnv {
    SubnetEnv {
        networks: network.into_iter().collect(),
        subnet: lease.subnet.map(SubnetEnv::first_host_v4),
        ipv6_networks: ipv6_network.into_iter().collect(),
        ipv6_subnet: lease.ipv6_subnet.map(SubnetEnv::first_host_v6),
        mtu,
        ipmasq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_what_flannel_writes() {
        let lease = Lease::from_etcd("10.244.1.0-24", r#"{"PublicIP":"192.168.0.11"}"#).unwrap();
        let env = subnet_env(
            Some("10.244.0.0/16".parse().unwrap()),
            None,
            &lease,
            1450,
            true,
        );
        assert_eq!(
            env.to_string(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
    }
}
