//! Snapshot → what IPVS mode programs, pure: per Service port its virtual servers with their
//! real servers, the addresses `kube-ipvs0` must hold, and its ipset members — as kube-proxy's
//! `syncProxyRules` computes them.
//!
//! One virtual server per (ClusterIP | external IP | load-balancer IP | node-port address) ×
//! port × protocol, NAT forwarding, the configured scheduler, weight 1, ClientIP affinity as
//! persistence with the affinity timeout. The ClusterIP's real servers follow the internal
//! traffic policy, the others the external one; a Local policy with no local endpoint falls
//! back to the cluster endpoints (kube-proxy #97081: pods on the node can still reach the
//! Service; external clients' replies go astray — IPVS mode's documented difference). No
//! endpoint at all is a virtual server without real servers: IPVS has no REJECT, the client
//! sees a timeout (TCP: the SYN is dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_model::service::{
    Endpoint, IpFamily, Protocol, ServicePort, ServicePortName, TrafficPolicy,
};
use sluice_proxy_core::Snapshot;
use sluice_proxy_core::backend::{BackendOptions, LocalDetect};

use crate::sets::{self, Entries};
use crate::types::{F_PERSISTENT, F_SOURCE_HASH, RsKey, VirtualServer, VsKey};

/// What rendering needs besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsConfig {
    /// The family rendered.
    pub family: IpFamily,
    /// `--ipvs-scheduler` (`rr` when empty).
    pub scheduler: String,
    /// The addresses node ports are served on (loopback never).
    pub nodeport_ips: Vec<IpAddr>,
    /// `--nodeport-addresses` selects every address: [`Self::nodeport_ips`] is refreshed
    /// from the node's addresses (all but `kube-ipvs0`'s) on every full sync, as kube-proxy.
    pub nodeport_all: bool,
    /// This node's addresses (external IPs that are node addresses are not put on
    /// `kube-ipvs0`; node addresses inside source ranges may hairpin through the LB).
    pub node_ips: Vec<IpAddr>,
    /// `--ipvs-exclude-cidrs`: virtual servers in these are never deleted.
    pub exclude_cidrs: Vec<IpNet>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// Pod CIDRs of this family (detect-local by CIDR); empty: none.
    pub cluster_cidrs: Vec<IpNet>,
    /// The interface pods' traffic arrives on (detect-local by bridge, `cni0`, or by
    /// interface name prefix, `veth+`), as an iptables `-i` argument; `None`: by CIDR.
    pub pod_interface: Option<String>,
    /// The masquerade mark bit.
    pub masquerade_bit: u8,
    /// `conntrack.tcpBeLiberal`: no INVALID drop rule.
    pub tcp_be_liberal: bool,
}

impl IpvsConfig {
    /// From the backend options, for `family`.
    pub fn of(opts: &BackendOptions, family: IpFamily) -> Self {
        let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
            (ips.iter())
                .filter(|ip| family.contains(ip) && !ip.is_loopback())
                .copied()
                .collect()
        };
        let nodeport = opts.nodeport_addresses.as_deref().unwrap_or(&opts.node_ips);
        Self {
            family,
            scheduler: match opts.ipvs.scheduler.as_str() {
                "" => "rr".into(),
                s => s.into(),
            },
            nodeport_ips: of_family(nodeport),
            nodeport_all: opts.nodeport_addresses.is_none(),
            node_ips: of_family(&opts.node_ips),
            exclude_cidrs: opts.ipvs.exclude_cidrs.clone(),
            masquerade_all: opts.masquerade_all,
            cluster_cidrs: (opts.local.cidrs().iter())
                .filter(|n| family.contains(&n.addr()))
                .copied()
                .collect(),
            pod_interface: match &opts.local {
                LocalDetect::Cidrs(_) => None,
                LocalDetect::Bridge(b) => Some(b.clone()),
                LocalDetect::InterfacePrefix(p) => Some(format!("{p}+")),
            },
            masquerade_bit: opts.masquerade_bit,
            tcp_be_liberal: opts.tcp_be_liberal,
        }
    }

    /// A configuration for tests: IPv4, `rr`, these node addresses.
    pub fn v4(node_ips: &[IpAddr]) -> Self {
        Self {
            family: IpFamily::V4,
            scheduler: "rr".into(),
            nodeport_ips: node_ips.to_vec(),
            nodeport_all: false,
            node_ips: node_ips.to_vec(),
            exclude_cidrs: Vec::new(),
            masquerade_all: false,
            cluster_cidrs: Vec::new(),
            pod_interface: None,
            masquerade_bit: 14,
            tcp_be_liberal: false,
        }
    }
}

/// One Service port's share of the dataplane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRender {
    /// Its virtual servers and their real servers (weight 1 each).
    pub servers: BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)>,
    /// The addresses it needs on `kube-ipvs0`.
    pub vips: BTreeSet<IpAddr>,
    /// Its ipset members.
    pub sets: Entries,
}

impl PortRender {
    /// Adds `other` (first claim of a virtual server wins, as the first port in name order).
    pub fn merge(&mut self, other: &PortRender) {
        for (k, v) in &other.servers {
            self.servers.entry(*k).or_insert_with(|| v.clone());
        }
        self.vips.extend(other.vips.iter().copied());
        sets::merge(&mut self.sets, &other.sets);
    }
}

fn proto_number(p: Protocol) -> u16 {
    u16::from(p.number())
}

/// The endpoints kube-proxy's `syncEndpoint` programs: the Local set when the policy is
/// Local and it is not empty, else the Cluster set.
fn real_servers(cat: &sluice_proxy_core::Categorized<'_>, local_policy: bool) -> BTreeSet<RsKey> {
    let pick: &[&Endpoint] = match (local_policy, cat.local.as_deref()) {
        (true, Some(local)) if !local.is_empty() => local,
        _ => cat.cluster.as_deref().unwrap_or(&[]),
    };
    (pick.iter())
        .map(|ep| RsKey {
            addr: ep.ip,
            port: ep.port,
        })
        .collect()
}

/// One Service port's virtual servers, addresses and set members.
pub fn render_port(cfg: &IpvsConfig, snapshot: &Snapshot, name: &ServicePortName) -> PortRender {
    let mut out = PortRender::default();
    let (Some(port), Some(cat)) = (snapshot.service_port(name), snapshot.categorize(name)) else {
        return out;
    };
    let Some(cluster_ip) = port.cluster_ip(cfg.family) else {
        return out;
    };
    let protocol = proto_number(name.protocol);
    let proto = name.protocol.as_lower_str();
    let mut flags = 0;
    let mut timeout = 0;
    if let Some(aff) = &port.session_affinity {
        flags |= F_PERSISTENT;
        timeout = aff.timeout_seconds;
    }
    if cfg.scheduler == "mh" {
        flags |= F_SOURCE_HASH;
    }
    let vs = |addr: IpAddr, p: u16| VirtualServer {
        key: VsKey {
            addr,
            protocol,
            port: p,
        },
        scheduler: cfg.scheduler.clone(),
        flags,
        timeout,
    };
    let internal = real_servers(&cat, port.internal_traffic_policy == TrafficPolicy::Local);
    let external_local =
        port.externally_accessible() && port.external_traffic_policy == TrafficPolicy::Local;
    let external = real_servers(&cat, external_local);
    let mut add = |v: VirtualServer, rs: &BTreeSet<RsKey>| {
        out.servers.insert(v.key, (v, rs.clone()));
    };

    add(vs(cluster_ip, port.port), &internal);
    out.vips.insert(cluster_ip);
    let ipport = |ip: &IpAddr| format!("{ip},{proto}:{}", port.port);
    sets::add(&mut out.sets, sets::CLUSTER_IP, ipport(&cluster_ip));

    // Hairpin: a local endpoint reaching itself through the Service is masqueraded.
    for ep in snapshot.endpoints(name) {
        if family_of(ep.ip) == cfg.family && ep.is_local(&snapshot.node().name) {
            let entry = format!("{},{proto}:{},{}", ep.ip, ep.port, ep.ip);
            sets::add(&mut out.sets, sets::LOOP_BACK, entry);
        }
    }

    for ip in of_family(cfg, &port.external_ips) {
        add(vs(ip, port.port), &external);
        if !cfg.node_ips.contains(&ip) {
            out.vips.insert(ip);
        }
        // One or the other, as kube-proxy: only the Cluster-policy set is masqueraded.
        let set = match external_local {
            true => sets::EXTERNAL_IP_LOCAL,
            false => sets::EXTERNAL_IP,
        };
        sets::add(&mut out.sets, set, ipport(&ip));
    }

    let ranges: Vec<&IpNet> = (port.load_balancer_source_ranges.iter())
        .filter(|n| cfg.family.contains(&n.addr()))
        .collect();
    for ip in of_family(cfg, &port.load_balancer_vips) {
        add(vs(ip, port.port), &external);
        out.vips.insert(ip);
        sets::add(&mut out.sets, sets::LOAD_BALANCER, ipport(&ip));
        if external_local {
            sets::add(&mut out.sets, sets::LOAD_BALANCER_LOCAL, ipport(&ip));
        }
        if !ranges.is_empty() {
            sets::add(&mut out.sets, sets::LOAD_BALANCER_FW, ipport(&ip));
            for net in &ranges {
                let entry = format!("{},{net}", ipport(&ip));
                sets::add(&mut out.sets, sets::LOAD_BALANCER_SOURCE_CIDR, entry);
            }
            // A node address inside the ranges: traffic hairpinned through the load
            // balancer arrives from the LB IP itself, and is allowed.
            if (cfg.node_ips.iter()).any(|n| ranges.iter().any(|r| r.contains(n))) {
                let entry = format!("{},{ip}", ipport(&ip));
                sets::add(&mut out.sets, sets::LOAD_BALANCER_SOURCE_IP, entry);
            }
        }
    }

    if let Some(node_port) = port.node_port {
        for ip in &cfg.nodeport_ips {
            add(vs(*ip, node_port), &external);
        }
        let (set, local) = match name.protocol {
            Protocol::Tcp => (sets::NODE_PORT_TCP, sets::NODE_PORT_LOCAL_TCP),
            Protocol::Udp => (sets::NODE_PORT_UDP, sets::NODE_PORT_LOCAL_UDP),
            Protocol::Sctp => (sets::NODE_PORT_SCTP, sets::NODE_PORT_LOCAL_SCTP),
        };
        if name.protocol == Protocol::Sctp {
            for ip in &cfg.nodeport_ips {
                let entry = format!("{ip},{proto}:{node_port}");
                sets::add(&mut out.sets, set, entry.clone());
                if external_local {
                    sets::add(&mut out.sets, local, entry);
                }
            }
        } else {
            sets::add(&mut out.sets, set, node_port.to_string());
            if external_local {
                sets::add(&mut out.sets, local, node_port.to_string());
            }
        }
    }
    if let Some(hc) = port.health_check_node_port {
        sets::add(&mut out.sets, sets::HEALTH_CHECK_NODE_PORT, hc.to_string());
    }
    out
}

fn family_of(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

fn of_family<'a>(cfg: &'a IpvsConfig, ips: &'a [IpAddr]) -> impl Iterator<Item = IpAddr> + 'a {
    ips.iter().filter(|ip| cfg.family.contains(ip)).copied()
}

/// Every proxied port's share, by port name (ports with nothing to program left out).
pub fn render(cfg: &IpvsConfig, snapshot: &Snapshot) -> BTreeMap<ServicePortName, PortRender> {
    (snapshot.service_ports())
        .map(|p: &ServicePort| (p.name.clone(), render_port(cfg, snapshot, &p.name)))
        .filter(|(_, r)| !r.servers.is_empty())
        .collect()
}

/// The union of per-port shares, plus `KUBE-IPVS-IPS` (every `kube-ipvs0` address).
pub fn union<'a>(ports: impl IntoIterator<Item = &'a PortRender>) -> PortRender {
    let mut all = PortRender::default();
    for p in ports {
        all.merge(p);
    }
    for ip in &all.vips {
        sets::add(&mut all.sets, sets::IPVS_IPS, ip.to_string());
    }
    all
}

/// `ipvsadm -Ln`-like text of a rendering (for `render` and golden tests).
pub fn text(all: &PortRender) -> String {
    let mut out = String::new();
    for (vs, rs) in all.servers.values() {
        out.push_str(&format!("{} {}", vs.key, vs.scheduler));
        if vs.flags & F_PERSISTENT != 0 {
            out.push_str(&format!(" persistent {}", vs.timeout));
        }
        out.push('\n');
        for r in rs {
            out.push_str(&format!("  -> {r} Masq 1\n"));
        }
    }
    for ip in &all.vips {
        out.push_str(&format!("{} {ip}\n", crate::link::DUMMY));
    }
    for (set, members) in &all.sets {
        for m in members {
            out.push_str(&format!("{set} {m}\n"));
        }
    }
    out
}
