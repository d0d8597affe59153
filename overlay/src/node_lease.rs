//! The kube subnet manager's view of a Node: its subnets come from `spec.podCIDRs` (assigned
//! by the controller manager), its attributes from flannel's annotations. Kept free of
//! Kubernetes types so it is tested with plain strings; the watcher hands the fields over.

use std::collections::BTreeMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::lease::{AnnotationKeys, Lease, LeaseError};

/// A node whose pod CIDRs cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    /// The controller manager has not assigned one yet (flannel's message).
    #[error("node {0:?} pod cidr not assigned")]
    NotAssigned(String),
    /// The text is not a CIDR.
    #[error("node {node:?}: spec.podCIDRs: invalid CIDR {value:?}")]
    Invalid {
        /// The node.
        node: String,
        /// The offending value.
        value: String,
    },
    /// The pod CIDR lies outside the configured `Network`.
    #[error("node {node:?}: pod cidr {cidr} is outside the network {network}")]
    OutsideNetwork {
        /// The node.
        node: String,
        /// Its pod CIDR.
        cidr: IpNet,
        /// The configured network.
        network: IpNet,
    },
}

/// The node's subnets, checked against the configured networks (a family whose network is
/// `None` is not enabled and its CIDR is ignored).
pub fn pod_subnets(
    node: &str,
    pod_cidrs: &[String],
    network: Option<Ipv4Net>,
    ipv6_network: Option<Ipv6Net>,
) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), PodCidrError> {
    let (mut v4, mut v6) = (None, None);
    for text in pod_cidrs {
        let cidr: IpNet = text.trim().parse().map_err(|_| PodCidrError::Invalid {
            node: node.to_owned(),
            value: text.clone(),
        })?;
        let outside = |network: IpNet| PodCidrError::OutsideNetwork {
            node: node.to_owned(),
            cidr,
            network,
        };
        match (cidr.trunc(), network, ipv6_network) {
            (IpNet::V4(c), Some(n), _) if n.contains(&c) => v4 = Some(c),
            (IpNet::V4(_), Some(n), _) => return Err(outside(n.into())),
            (IpNet::V6(c), _, Some(n)) if n.contains(&c) => v6 = Some(c),
            (IpNet::V6(_), _, Some(n)) => return Err(outside(n.into())),
            _ => {}
        }
    }
    let missing_v4 = network.is_some() && v4.is_none();
    let missing_v6 = ipv6_network.is_some() && v6.is_none();
    if missing_v4 || missing_v6 {
        return Err(PodCidrError::NotAssigned(node.to_owned()));
    }
    Ok((v4, v6))
}

/// A peer's lease from its Node, `None` for nodes no subnet manager claimed or without a pod
/// CIDR yet (they are simply not peers until they have one).
pub fn peer_lease(
    keys: &AnnotationKeys,
    node: &str,
    pod_cidrs: &[String],
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Lease>, LeaseError> {
    let Some(attrs) = keys.read(node, annotations)? else {
        return Ok(None);
    };
    let mut lease = Lease {
        subnet: None,
        ipv6_subnet: None,
        attrs,
    };
    for text in pod_cidrs {
        match text.trim().parse::<IpNet>() {
            Ok(IpNet::V4(n)) => lease.subnet = Some(n.trunc()),
            Ok(IpNet::V6(n)) => lease.ipv6_subnet = Some(n.trunc()),
            Err(_) => {
                return Err(LeaseError::Annotation {
                    node: node.to_owned(),
                    key: "spec.podCIDRs".to_owned(),
                    reason: format!("invalid CIDR {text:?}"),
                });
            }
        }
    }
    Ok((lease.subnet.is_some() || lease.ipv6_subnet.is_some()).then_some(lease))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn subnets_are_checked_against_the_networks() {
        let net = Some("10.244.0.0/16".parse().unwrap());
        let net6 = Some("fd00:1::/56".parse().unwrap());
        let (v4, v6) =
            pod_subnets("n1", &cidrs(&["10.244.1.0/24", "fd00:1::/64"]), net, net6).unwrap();
        assert_eq!(
            (v4.unwrap().to_string(), v6.unwrap().to_string()),
            ("10.244.1.0/24".into(), "fd00:1::/64".into())
        );
        let (v4, v6) =
            pod_subnets("n1", &cidrs(&["10.244.1.0/24", "fd00:1::/64"]), net, None).unwrap();
        assert!(v4.is_some() && v6.is_none(), "IPv6 not enabled: ignored");
    }

    #[test]
    fn unusable_pod_cidrs_are_clear_errors() {
        let net = Some("10.244.0.0/16".parse().unwrap());
        let e = pod_subnets("n1", &[], net, None).unwrap_err();
        assert_eq!(e.to_string(), r#"node "n1" pod cidr not assigned"#);
        let e = pod_subnets("n1", &cidrs(&["10.99.1.0/24"]), net, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"node "n1": pod cidr 10.99.1.0/24 is outside the network 10.244.0.0/16"#
        );
        let e = pod_subnets("n1", &cidrs(&["banana"]), net, None).unwrap_err();
        assert!(e.to_string().contains("invalid CIDR \"banana\""), "{e}");
    }

    #[test]
    fn peers_need_a_claim_and_a_cidr() {
        let keys = AnnotationKeys::default();
        let mut ann = BTreeMap::new();
        assert_eq!(
            peer_lease(&keys, "n2", &cidrs(&["10.244.2.0/24"]), &ann).unwrap(),
            None
        );
        ann.insert(keys.key("kube-subnet-manager"), "true".into());
        ann.insert(keys.key("backend-type"), "vxlan".into());
        ann.insert(keys.key("public-ip"), "192.168.0.12".into());
        assert_eq!(peer_lease(&keys, "n2", &[], &ann).unwrap(), None);
        let lease = peer_lease(&keys, "n2", &cidrs(&["10.244.2.0/24"]), &ann)
            .unwrap()
            .unwrap();
        assert_eq!(lease.label(), "10.244.2.0-24");
        assert!(peer_lease(&keys, "n2", &cidrs(&["x"]), &ann).is_err());
    }
}
