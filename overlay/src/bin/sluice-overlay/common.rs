//! What both subnet managers share: finding the underlay, choosing VTEP MACs, describing the
//! lease, and — once a lease is held — writing subnet.env, installing masquerading, serving
//! health and running the reconcile loop. Each enabled family (IPv4, IPv6) gets its own
//! VXLAN device, VTEP address and MAC, as in flannel.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use futures::Stream;
use ipnet::IpNet;
use sluice_model::net_conf::{BackendType, MIN_MTU, MIN_MTU_V6, NetConf};
use sluice_overlay::allocate::Ranges;
use sluice_overlay::flags::Flags;
use sluice_overlay::kernel::VxlanSpec;
use sluice_overlay::masq::MasqNets;
use sluice_overlay::netlink_kernel::{NetlinkKernel, Underlay, deletions};
use sluice_overlay::sync::{Health, Masquerade, Node, run};
use sluice_overlay::validate::Bounds;
use sluice_overlay::{Lease, LeaseAttrs, Mac, Params, health, subnet_env};

/// VXLAN's encapsulation overhead over IPv4 (outer IPv4 + UDP + VXLAN + inner Ethernet).
const VXLAN_OVERHEAD: u32 = 50;
/// The same over IPv6 (a 40-byte outer header instead of 20).
const VXLAN6_OVERHEAD: u32 = 70;

/// The node's kernel and underlay, found before any lease is taken.
pub(crate) struct Setup {
    pub(crate) kernel: NetlinkKernel,
    pub(crate) underlay: Underlay,
    /// The IPv4 VTEP address, when IPv4 is enabled.
    pub(crate) public_ip: Option<Ipv4Addr>,
    /// The IPv6 VTEP address, when IPv6 is enabled.
    pub(crate) public_ipv6: Option<Ipv6Addr>,
    pub(crate) params: Params,
}

impl Setup {
    pub(crate) async fn new(flags: &Flags, conf: &NetConf) -> anyhow::Result<Self> {
        let kernel = NetlinkKernel::connect().context("open netlink")?;
        let underlay = kernel.underlay(flags.iface.as_deref()).await?;
        let public_ip = if conf.enable_ipv4 {
            Some(match (flags.public_ip, underlay.addr) {
                (Some(IpAddr::V4(ip)), _) => ip,
                (Some(IpAddr::V6(ip)), _) => bail!("--public-ip {ip}: use --public-ipv6 for IPv6"),
                (None, Some(net)) => net.addr(),
                (None, None) => bail!(
                    "interface {} has no IPv4 address (use --public-ip)",
                    underlay.name
                ),
            })
        } else {
            None
        };
        let public_ipv6 = if conf.enable_ipv6 {
            Some(match (flags.public_ipv6, underlay.addr6) {
                (Some(ip), _) => ip,
                (None, Some(net)) => net.addr(),
                (None, None) => bail!(
                    "interface {} has no global IPv6 address (use --public-ipv6)",
                    underlay.name
                ),
            })
        } else {
            None
        };
        let backend = &conf.backend;
        let params = Params {
            backend: backend.backend_type,
            vni: backend.vni(),
            direct_routing: backend.direct_routing(),
        };
        let setup = Self {
            kernel,
            underlay,
            public_ip,
            public_ipv6,
            params,
        };
        setup.check_mtu(conf)?;
        Ok(setup)
    }

    /// The overlay MTU must fit the underlay (the kernel refuses a VXLAN device whose MTU
    /// plus the encapsulation exceeds it, on every reconcile) and carry IP at all.
    fn check_mtu(&self, conf: &NetConf) -> anyhow::Result<()> {
        let overhead = self.overhead();
        let fits = self.underlay.mtu.saturating_sub(overhead);
        let min = if self.public_ipv6.is_some() {
            MIN_MTU_V6
        } else {
            MIN_MTU
        };
        let (name, under) = (&self.underlay.name, self.underlay.mtu);
        match conf.backend.mtu {
            Some(mtu) if mtu > fits => bail!(
                "Backend.MTU {mtu} does not fit {name} (MTU {under}) with the {overhead}-byte encapsulation: at most {fits}"
            ),
            None if fits < min => bail!(
                "{name}'s MTU {under} leaves {fits} for the overlay after {overhead} bytes of encapsulation, below the minimum {min}"
            ),
            _ => Ok(()),
        }
    }

    /// Bytes of encapsulation per packet.
    fn overhead(&self) -> u32 {
        match (self.params.backend, self.public_ip) {
            (BackendType::HostGw, _) => 0,
            (BackendType::Vxlan, Some(_)) if self.public_ipv6.is_none() => VXLAN_OVERHEAD,
            (BackendType::Vxlan, _) => VXLAN6_OVERHEAD,
        }
    }

    /// The address that identifies this node's lease (IPv4 unless IPv4 is off).
    pub(crate) fn identity(&self) -> Option<IpAddr> {
        self.public_ip
            .map(IpAddr::V4)
            .or(self.public_ipv6.map(IpAddr::V6))
    }

    /// The overlay MTU: the configured one, else the underlay's less the VXLAN overhead of
    /// the outer family (the larger one when both run, so one MTU fits both devices).
    pub(crate) fn mtu(&self, conf: &NetConf) -> u32 {
        conf.backend
            .mtu
            .unwrap_or(self.underlay.mtu.saturating_sub(self.overhead()))
    }

    /// What this node publishes, keeping the MACs of a previous lease when there is one.
    pub(crate) fn attrs(&self, previous: Option<&LeaseAttrs>) -> (LeaseAttrs, Mac, Mac) {
        let mac = previous_mac(previous, false).unwrap_or_else(random_mac);
        let mac6 = previous_mac(previous, true).unwrap_or_else(random_mac);
        let vxlan = self.params.backend == BackendType::Vxlan;
        let data = |on: bool, mac: Mac| match on && vxlan {
            true => serde_json::json!({"VNI": self.params.vni, "VtepMAC": mac}),
            false => serde_json::Value::Null,
        };
        let attrs = LeaseAttrs {
            public_ip: self.public_ip,
            public_ipv6: self.public_ipv6,
            backend_type: self.params.backend.as_str().to_owned(),
            backend_data: data(self.public_ip.is_some(), mac),
            backend_v6_data: data(self.public_ipv6.is_some(), mac6),
        };
        (attrs, mac, mac6)
    }

    /// The VXLAN devices for `lease`: one per family it has a subnet in.
    fn devices(&self, lease: &Lease, conf: &NetConf, macs: (Mac, Mac)) -> Vec<VxlanSpec> {
        if self.params.backend != BackendType::Vxlan {
            return Vec::new();
        }
        let mtu = self.mtu(conf);
        let spec = |v6: bool, local: IpAddr, mac: Mac, subnet: IpNet| VxlanSpec {
            name: self.params.device(v6),
            vni: self.params.vni,
            local,
            underlay: self.underlay.name.clone(),
            port: conf.backend.port(),
            mtu,
            mac,
            address: IpNet::new(subnet.network(), subnet.max_prefix_len()).unwrap_or(subnet),
        };
        let v4 = lease
            .subnet
            .zip(self.public_ip)
            .map(|(s, ip)| spec(false, ip.into(), macs.0, s.into()));
        let v6 = lease
            .ipv6_subnet
            .zip(self.public_ipv6)
            .map(|(s, ip)| spec(true, ip.into(), macs.1, s.into()));
        v4.into_iter().chain(v6).collect()
    }
}

/// The VTEP MAC of a previous lease of ours for a family, if it was a VXLAN one.
fn previous_mac(attrs: Option<&LeaseAttrs>, v6: bool) -> Option<Mac> {
    let lease = Lease {
        subnet: None,
        ipv6_subnet: None,
        attrs: attrs?.clone(),
    };
    lease.vxlan_data(v6).ok().flatten().map(|d| d.vtep_mac)
}

/// A random locally administered unicast MAC (the std hasher's per-process random keys are
/// the entropy source; no crate needed for six bytes).
pub(crate) fn random_mac() -> Mac {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    let bytes = h.finish().to_be_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[..6]);
    mac[0] = (mac[0] | 0x02) & 0xfe;
    Mac(mac)
}

/// Writes subnet.env, installs masquerading, serves health, and reconciles forever. Peer
/// leases are checked against the networks, the underlay and (etcd mode) `ranges`.
pub(crate) async fn serve(
    flags: &Flags,
    conf: &NetConf,
    setup: Setup,
    lease: Lease,
    macs: (Mac, Mac),
    ranges: Ranges,
    peers: impl Stream<Item = Vec<Lease>>,
) -> anyhow::Result<()> {
    let network = conf.network.filter(|_| conf.enable_ipv4);
    let network6 = conf.ipv6_network.filter(|_| conf.enable_ipv6);
    let mtu = setup.mtu(conf);
    subnet_env(network, network6, &lease, mtu, flags.ip_masq)
        .write_atomic(&flags.subnet_file)
        .context("write subnet.env")?;
    tracing::info!(lease = %lease.label(), mtu, file = %flags.subnet_file.display(), "lease acquired, subnet.env written");
    let families = [
        network.map(IpNet::V4).zip(lease.subnet.map(IpNet::V4)),
        network6
            .map(IpNet::V6)
            .zip(lease.ipv6_subnet.map(IpNet::V6)),
    ];
    let masq = if flags.ip_masq {
        let nets = families
            .iter()
            .flatten()
            .map(|(network, pod_cidr)| MasqNets {
                network: *network,
                pod_cidr: *pod_cidr,
            })
            .collect();
        let kernel = sluice_nft::Netlink::open().context("open nftables netlink")?;
        let mut masq = Masquerade {
            kernel: Box::new(kernel),
            nets,
        };
        if let Some(e) = masq.repair().into_iter().next() {
            bail!("{e}");
        }
        Some(masq)
    } else {
        None
    };
    let devices = setup.devices(&lease, conf, macs);
    let (under4, under6) = (setup.underlay.addr, setup.underlay.addr6);
    let networks: Vec<IpNet> = families.iter().flatten().map(|(n, _)| *n).collect();
    let bounds = Bounds {
        networks: networks.clone(),
        ranges,
        underlay: [under4.map(IpNet::V4), under6.map(IpNet::V6)]
            .into_iter()
            .flatten()
            .collect(),
    };
    let node = Node {
        kernel: setup.kernel,
        params: setup.params,
        own: lease,
        devices,
        networks,
        bounds,
        same_l2: Box::new(move |ip| match ip {
            IpAddr::V4(a) => under4.is_some_and(|n| n.trunc().contains(&a)),
            IpAddr::V6(a) => under6.is_some_and(|n| n.trunc().contains(&a)),
        }),
        masq,
    };
    let health = Arc::new(Mutex::new(Health::default()));
    if flags.healthz_port != 0 {
        let addr = SocketAddr::new(flags.healthz_ip, flags.healthz_port);
        let (h, period) = (health.clone(), flags.reconcile_period);
        tokio::spawn(async move {
            if let Err(e) = health::serve(addr, h, period).await {
                tracing::error!("health endpoint {addr}: {e}");
            }
        });
    }
    let nudges = deletions().context("watch netlink for deletions")?;
    run(node, peers, nudges, flags.reconcile_period, health).await;
    bail!("the peer source ended")
}
