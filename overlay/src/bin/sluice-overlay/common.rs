//! What both subnet managers share: finding the underlay, choosing the VTEP MAC, describing
//! the lease, and — once a lease is held — writing subnet.env, installing masquerading,
//! serving health and running the reconcile loop.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use futures::Stream;
use ipnet::{IpNet, Ipv4Net};
use sluice_model::net_conf::{BackendType, NetConf};
use sluice_overlay::flags::Flags;
use sluice_overlay::kernel::VxlanSpec;
use sluice_overlay::masq::{self, MasqNets};
use sluice_overlay::netlink_kernel::{NetlinkKernel, Underlay, deletions};
use sluice_overlay::sync::{Health, Node, run};
use sluice_overlay::{Lease, LeaseAttrs, Mac, Params, health, subnet_env};

/// VXLAN's encapsulation overhead (IPv4 outer header + UDP + VXLAN + inner Ethernet).
const VXLAN_OVERHEAD: u32 = 50;

/// The node's kernel and underlay, found before any lease is taken.
pub(crate) struct Setup {
    pub(crate) kernel: NetlinkKernel,
    pub(crate) underlay: Underlay,
    pub(crate) public_ip: Ipv4Addr,
    pub(crate) params: Params,
}

impl Setup {
    pub(crate) async fn new(flags: &Flags, conf: &NetConf) -> anyhow::Result<Self> {
        let kernel = NetlinkKernel::connect().context("open netlink")?;
        let underlay = kernel.underlay(flags.iface.as_deref()).await?;
        let public_ip = match (flags.public_ip, underlay.addr) {
            (Some(IpAddr::V4(ip)), _) => ip,
            (Some(IpAddr::V6(ip)), _) => {
                bail!("--public-ip {ip}: IPv6 underlays are not supported yet")
            }
            (None, Some(net)) => net.addr(),
            (None, None) => bail!(
                "interface {} has no IPv4 address (use --public-ip)",
                underlay.name
            ),
        };
        let backend = &conf.backend;
        let params = Params {
            backend: backend.backend_type,
            vni: backend.vni(),
            direct_routing: backend.direct_routing(),
        };
        Ok(Self {
            kernel,
            underlay,
            public_ip,
            params,
        })
    }

    /// The overlay MTU: the configured one, else the underlay's less the VXLAN overhead.
    pub(crate) fn mtu(&self, conf: &NetConf) -> u32 {
        conf.backend.mtu.unwrap_or(match self.params.backend {
            BackendType::Vxlan => self.underlay.mtu.saturating_sub(VXLAN_OVERHEAD),
            BackendType::HostGw => self.underlay.mtu,
        })
    }

    /// What this node publishes, keeping `mac` (from a previous lease) when there is one.
    pub(crate) fn attrs(&self, mac: Option<Mac>) -> (LeaseAttrs, Mac) {
        let mac = mac.unwrap_or_else(random_mac);
        let backend_data = match self.params.backend {
            BackendType::Vxlan => serde_json::json!({"VNI": self.params.vni, "VtepMAC": mac}),
            BackendType::HostGw => serde_json::Value::Null,
        };
        let attrs = LeaseAttrs {
            public_ip: Some(self.public_ip),
            public_ipv6: None,
            backend_type: self.params.backend.as_str().to_owned(),
            backend_data,
            backend_v6_data: serde_json::Value::Null,
        };
        (attrs, mac)
    }
}

/// The MAC of a previous lease of ours, if it was a VXLAN one.
pub(crate) fn previous_mac(attrs: Option<&LeaseAttrs>) -> Option<Mac> {
    let lease = Lease {
        subnet: None,
        ipv6_subnet: None,
        attrs: attrs?.clone(),
    };
    lease.vxlan_data(false).ok().flatten().map(|d| d.vtep_mac)
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

/// Writes subnet.env, installs masquerading, serves health, and reconciles forever.
pub(crate) async fn serve(
    flags: &Flags,
    conf: &NetConf,
    setup: Setup,
    lease: Lease,
    mac: Mac,
    peers: impl Stream<Item = Vec<Lease>>,
) -> anyhow::Result<()> {
    let subnet = lease.subnet.context("the lease has no IPv4 subnet")?;
    let network = conf.network.context("net-conf.json has no Network")?;
    let mtu = setup.mtu(conf);
    subnet_env(conf.network, conf.ipv6_network, &lease, mtu, flags.ip_masq)
        .write_atomic(&flags.subnet_file)
        .context("write subnet.env")?;
    tracing::info!(%subnet, mtu, file = %flags.subnet_file.display(), "lease acquired, subnet.env written");
    if flags.ip_masq {
        nft(&masq::render(&MasqNets {
            network: network.into(),
            pod_cidr: subnet.into(),
        }))?;
    }
    let device = (setup.params.backend == BackendType::Vxlan).then(|| VxlanSpec {
        name: setup.params.device(false),
        vni: setup.params.vni,
        local: IpAddr::V4(setup.public_ip),
        underlay: setup.underlay.name.clone(),
        port: conf.backend.port(),
        mtu,
        mac,
        address: IpNet::V4(Ipv4Net::new(subnet.network(), 32).unwrap_or(subnet)),
    });
    let underlay_net = setup.underlay.addr;
    let node = Node {
        kernel: setup.kernel,
        params: setup.params,
        own: lease,
        device,
        networks: vec![network.into()],
        same_l2: Box::new(move |ip| match (underlay_net, ip) {
            (Some(net), IpAddr::V4(v4)) => net.trunc().contains(&v4),
            _ => false,
        }),
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

/// Loads an nft script in one transaction (`nft -f -`).
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
