//! The backend on a real host: IPVS, rtnetlink and ipset's netlink protocol opened in the
//! current namespace (the `ipset` program where the kernel refuses that protocol), and iptables of the variant the host uses (`--iptables-variant`; inside
//! User-Mode Linux only `legacy` works: that kernel has no nf_tables for `ip` tables).

use sluice_proxy_core::backend::{BackendError, BackendOptions, ProxyMode};
use sluice_proxy_iptables::{Exec, Variant};

use crate::backend::IpvsBackend;
use crate::ipvs::KernelIpvs;
use crate::link::KernelVips;
use crate::nlset::KernelIpset;
use crate::render::IpvsConfig;

/// The IPVS backend over the kernel.
pub type KernelIpvsBackend = IpvsBackend<KernelIpvs, KernelVips, KernelIpset, Exec>;

impl KernelIpvsBackend {
    /// Opens IPVS (an error when the kernel has none, as kube-proxy exits then), rtnetlink,
    /// ipset over netlink and the iptables programs.
    pub fn open(opts: &BackendOptions) -> Result<Self, BackendError> {
        let fail =
            |what: &str, source: Box<dyn std::error::Error + Send + Sync>| BackendError::Open {
                mode: ProxyMode::Ipvs,
                what: what.into(),
                source,
            };
        let ipvs = KernelIpvs::open().map_err(|e| fail("IPVS generic netlink", e.into()))?;
        let vips = KernelVips::open().map_err(|e| fail("rtnetlink", e.into()))?;
        let variant = match opts.iptables_variant.as_deref() {
            None => usable(Variant::detect()),
            Some(v) => Variant::parse(v).ok_or_else(|| {
                fail(
                    "iptables variant",
                    format!("{v:?} is not nft or legacy").into(),
                )
            })?,
        };
        let mut random_fully = false;
        let mut families = Vec::new();
        for family in &opts.families {
            let exec = Exec::new(*family, variant);
            random_fully = exec
                .supports_random_fully()
                .map_err(|e| fail("iptables", e.into()))?;
            families.push((exec, IpvsConfig::of(opts, *family)));
        }
        Ok(IpvsBackend::new(ipvs, vips, KernelIpset::open(), families)
            .with_random_fully(random_fully)
            .with_strict_arp(opts.ipvs.strict_arp)
            .with_timeouts(opts.ipvs.timeouts))
    }
}

/// `variant`, unless it is nf_tables and the kernel cannot run it (User-Mode Linux's kernel
/// has IPVS but no nf_tables for `ip` tables): then legacy. iptables exits 1 for a missing
/// chain and 4 when it cannot talk to the kernel at all.
fn usable(variant: Variant) -> Variant {
    use sluice_proxy_iptables::Iptables as _;
    if variant == Variant::Nft {
        let mut nft = Exec::new(sluice_model::service::IpFamily::V4, Variant::Nft);
        if nft.run(&["-S", "KUBE-SERVICES", "-t", "nat"]).is_err() {
            tracing::info!("iptables-nft does not work in this kernel: using iptables-legacy");
            return Variant::Legacy;
        }
    }
    variant
}

/// What IPVS mode has programmed for `family` in this namespace, read back (virtual and real
/// servers over netlink, `kube-ipvs0`'s addresses, the sets' members) as a rendering the
/// [`crate::Tracer`] walks: `explain` traces what is there, not what would be. `None` when
/// the kernel has no IPVS or nothing of the mode is programmed.
pub fn read_programmed(family: sluice_model::service::IpFamily) -> Option<crate::PortRender> {
    use crate::ipvs::Ipvs as _;
    use crate::link::Vips as _;
    use crate::sets::Ipset as _;
    let mut ipvs = KernelIpvs::open().ok()?;
    let mut all = crate::PortRender::default();
    for vs in ipvs.services().ok()? {
        if !family.contains(&vs.key.addr) {
            continue;
        }
        let real = (ipvs.destinations(&vs.key).ok()?.into_iter())
            .filter(|r| r.weight > 0)
            .map(|r| r.key)
            .collect();
        all.servers.insert(vs.key, (vs, real));
    }
    let mut vips = KernelVips::open().ok()?;
    all.vips = (vips.addresses().ok()?.into_iter())
        .filter(|ip| family.contains(ip))
        .collect();
    all.sets = crate::sets::parse_save(&KernelIpset::open().save().ok()?, family);
    (!all.sets.is_empty() || !all.servers.is_empty()).then_some(all)
}
