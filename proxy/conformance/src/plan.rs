//! The one cluster every scenario is written for, in every runner: the lab's two-node layout
//! (`sluice-lab up --nodes 2 --pods-per-node 2`), so a scenario's addresses are real
//! addresses in the lab and plain data for the pure runners.
//!
//! ```text
//! underlay 192.168.0.0/24     client 192.168.0.250 (and .251), API server 192.168.0.1
//! node1 192.168.0.11  zone-a  pods 10.244.1.0/24: web-1 10.244.1.2, web-2 10.244.1.3
//! node2 192.168.0.12  zone-b  pods 10.244.2.0/24: web-3 10.244.2.2, web-4 10.244.2.3
//! cluster CIDR 10.244.0.0/16, service CIDR 10.96.0.0/12
//! every pod answers TCP and UDP on 8080 and 8081 with its name and the source it saw
//! ```
//!
//! For dual-stack scenarios (the pure runners; the lab's network is IPv4 only) the plan has
//! IPv6 twins: nodes fd00::11 and fd00::12, pods fd10:244:N::2 and ::3, cni0 fd10:244:N::1 (cluster CIDR fd10:244::/32).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One node of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// `node1`, `node2`.
    pub name: &'static str,
    /// Its underlay address (the Node's InternalIP).
    pub ip: Ipv4Addr,
    /// Its pod subnet's third octet (10.244.N.0/24).
    pub subnet: u8,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: &'static str,
}

impl NodePlan {
    /// `10.244.N.0/24`.
    pub fn pod_cidr(&self) -> IpNet {
        IpNet::new(Ipv4Addr::new(10, 244, self.subnet, 0).into(), 24).expect("valid prefix")
    }

    /// Every address the node has: loopback, the underlay, `flannel.1` (10.244.N.0) and
    /// `cni0` (10.244.N.1), then the IPv6 twins.
    pub fn addresses(&self) -> Vec<IpAddr> {
        vec![
            Ipv4Addr::LOCALHOST.into(),
            self.ip.into(),
            Ipv4Addr::new(10, 244, self.subnet, 0).into(),
            Ipv4Addr::new(10, 244, self.subnet, 1).into(),
            Ipv6Addr::LOCALHOST.into(),
            self.ip6().into(),
            v6_pod(self.subnet, 1).into(),
        ]
    }

    /// The node's IPv6 underlay address, `fd00::1N`.
    pub fn ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10 + u16::from(self.subnet))
    }

    /// `fd10:244:N::/64`.
    pub fn pod_cidr6(&self) -> IpNet {
        IpNet::new(v6_pod(self.subnet, 0).into(), 64).expect("valid prefix")
    }
}

/// `fd10:244:<subnet>::<host>`.
fn v6_pod(subnet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd10, 0x244, u16::from(subnet), 0, 0, 0, 0, host)
}

/// One pod of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// `web-1`….
    pub name: &'static str,
    /// The node it runs on.
    pub node: &'static str,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// The nodes.
pub const NODES: [NodePlan; 2] = [
    NodePlan {
        name: "node1",
        ip: Ipv4Addr::new(192, 168, 0, 11),
        subnet: 1,
        zone: "zone-a",
    },
    NodePlan {
        name: "node2",
        ip: Ipv4Addr::new(192, 168, 0, 12),
        subnet: 2,
        zone: "zone-b",
    },
];

/// The pods.
pub const PODS: [PodPlan; 4] = [
    PodPlan {
        name: "web-1",
        node: "node1",
        ip: Ipv4Addr::new(10, 244, 1, 2),
    },
    PodPlan {
        name: "web-2",
        node: "node1",
        ip: Ipv4Addr::new(10, 244, 1, 3),
    },
    PodPlan {
        name: "web-3",
        node: "node2",
        ip: Ipv4Addr::new(10, 244, 2, 2),
    },
    PodPlan {
        name: "web-4",
        node: "node2",
        ip: Ipv4Addr::new(10, 244, 2, 3),
    },
];

/// The external client's address on the underlay (`client`).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 250);

/// The ports every pod serves, TCP and UDP.
pub const POD_PORTS: [u16; 2] = [8080, 8081];

/// The cluster CIDR (`--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// The service CIDR (`--service-cidr`).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// The node named `name`.
pub fn node(name: &str) -> Option<&'static NodePlan> {
    NODES.iter().find(|n| n.name == name)
}

/// The pod named `name`.
pub fn pod(name: &str) -> Option<&'static PodPlan> {
    PODS.iter().find(|p| p.name == name)
}

impl PodPlan {
    /// The pod's IPv6 twin address.
    pub fn ip6(&self) -> Ipv6Addr {
        let [.., subnet, host] = self.ip.octets();
        v6_pod(subnet, u16::from(host))
    }
}

/// The pod with address `ip` (IPv4 or its IPv6 twin).
pub fn pod_at(ip: IpAddr) -> Option<&'static PodPlan> {
    PODS.iter()
        .find(|p| IpAddr::from(p.ip) == ip || IpAddr::from(p.ip6()) == ip)
}

/// The flags every node's proxy runs with (the lab's), with a scenario's own: a scenario
/// flag replaces the base flag of the same name.
pub fn flags(node: &str, scenario: &[String]) -> Vec<String> {
    let base = [
        ("--hostname-override", node),
        ("--cluster-cidr", CLUSTER_CIDR),
        ("--service-cidr", SERVICE_CIDR),
    ];
    let mut out = Vec::new();
    for (flag, value) in base {
        if !scenario.iter().any(|s| s == flag) {
            out.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    out.extend(scenario.iter().cloned());
    out
}

/// The Node objects of the plan, as the lab registers them.
pub fn node_objects() -> String {
    let mut out = String::new();
    for n in NODES {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
             kubernetes.io/hostname: {name}\n    topology.kubernetes.io/zone: {zone}\n\
             spec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\nstatus:\n  addresses:\n  \
             - {{type: InternalIP, address: {ip}}}\n  - {{type: InternalIP, address: {ip6}}}\n  \
             - {{type: Hostname, address: {name}}}\n",
            name = n.name,
            zone = n.zone,
            cidr = n.pod_cidr(),
            ip = n.ip,
            ip6 = n.ip6(),
        ));
    }
    out
}
