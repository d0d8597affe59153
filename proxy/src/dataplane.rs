//! [`Any`]: the backend `--proxy-mode` names, dispatched statically, and the per-mode work
//! the binary does around it: building from the resolved options, removing other modes'
//! leftovers, `--cleanup`, and the mode's [`Dialect`] and tracer for `explain`.

use std::time::Duration;

use prometheus_client::registry::Registry;
use sluice_model::service::IpFamily;
use sluice_proxy_core::Snapshot;
use sluice_proxy_core::backend::{
    Backend, BackendError, BackendOptions, EbpfOptions, FakeBackend, ProxyMode, Tick,
};
use sluice_proxy_core::explain::{BackendCheck, Dialect, NodeContext, Packet, VerdictView};
use sluice_proxy_core::{Changes, backend};
use sluice_proxy_ebpf::KernelEbpf;
use sluice_proxy_iptables::dump::Dump;
use sluice_proxy_iptables::{Exec, Iptables, KernelIptables, Scope, Variant};
use sluice_proxy_ipvs::{KernelIpvsBackend, KernelVips};
use sluice_proxy_nftables::{KernelNftables, NftConfig};

/// The backend chosen by `--proxy-mode`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Any {
    /// The recording fake (tests, benchmarks, `--proxy-mode fake`).
    Fake(FakeBackend),
    /// nftables through netlink (`--proxy-mode nftables`).
    Nftables(Box<KernelNftables>),
    /// kube-proxy's ruleset through iptables-restore (`--proxy-mode iptables`).
    Iptables(Box<KernelIptables>),
    /// Socket-level load balancing in BPF maps (`--proxy-mode ebpf`).
    Ebpf(Box<KernelEbpf>),
    /// kube-proxy's IPVS mode (`--proxy-mode ipvs`).
    Ipvs(Box<KernelIpvsBackend>),
}

/// The modes this version can build.
pub const BUILT: [ProxyMode; 5] = [
    ProxyMode::Nftables,
    ProxyMode::Iptables,
    ProxyMode::Ebpf,
    ProxyMode::Ipvs,
    ProxyMode::Fake,
];

impl Any {
    /// The backend for `mode` with default options, or
    /// [`BackendError::ModeNotAvailable`] when this version does not have it yet.
    pub fn new(mode: ProxyMode) -> Result<Self, BackendError> {
        Self::build(mode, &BackendOptions::default())
    }

    /// The backend for `mode`, opening its kernel interfaces in the current namespace.
    pub fn build(mode: ProxyMode, opts: &BackendOptions) -> Result<Self, BackendError> {
        match mode {
            ProxyMode::Fake => Ok(Self::Fake(FakeBackend::new())),
            ProxyMode::Nftables => Ok(Self::Nftables(Box::new(KernelNftables::open(opts)?))),
            ProxyMode::Iptables => Ok(Self::Iptables(Box::new(KernelIptables::open(opts)?))),
            ProxyMode::Ebpf => Ok(Self::Ebpf(Box::new(KernelEbpf::open(opts)?))),
            ProxyMode::Ipvs => Ok(Self::Ipvs(Box::new(KernelIpvsBackend::open(opts)?))),
        }
    }

    fn inner(&self) -> &dyn Backend {
        match self {
            Self::Fake(b) => b,
            Self::Nftables(b) => b.as_ref(),
            Self::Iptables(b) => b.as_ref(),
            Self::Ebpf(b) => b.as_ref(),
            Self::Ipvs(b) => b.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Backend {
        match self {
            Self::Fake(b) => b,
            Self::Nftables(b) => b.as_mut(),
            Self::Iptables(b) => b.as_mut(),
            Self::Ebpf(b) => b.as_mut(),
            Self::Ipvs(b) => b.as_mut(),
        }
    }
}

/// Removes what `mode` may have programmed in this namespace, in both families (nothing
/// for modes this version does not build). iptables: in each variant (nft, legacy) that
/// holds the proxy's chains, nothing where no variant does.
pub fn cleanup(mode: ProxyMode) -> Result<(), BackendError> {
    let opts = BackendOptions {
        families: vec![IpFamily::V4, IpFamily::V6],
        ..BackendOptions::default()
    };
    if mode == ProxyMode::Ipvs {
        // IPVS's rules live in whichever iptables variant holds the chains (legacy where the
        // kernel has no nf_tables); the virtual servers, the link and the sets are cleaned
        // with the first.
        for opts in ipvs_cleanup_options() {
            build_and_clean(mode, &opts)?;
        }
        return Ok(());
    }
    if mode == ProxyMode::Iptables {
        for variant in [Variant::Nft, Variant::Legacy] {
            if variant.holds_proxy_chains() {
                let opts = BackendOptions {
                    iptables_variant: Some(variant.as_str().to_owned()),
                    ..opts.clone()
                };
                build_and_clean(mode, &opts)?;
            }
        }
        return Ok(());
    }
    build_and_clean(mode, &opts)
}

fn build_and_clean(mode: ProxyMode, opts: &BackendOptions) -> Result<(), BackendError> {
    match Any::build(mode, opts) {
        Ok(mut backend) => backend.cleanup(),
        Err(BackendError::ModeNotAvailable(_)) => Ok(()),
        Err(BackendError::Open {
            mode: ProxyMode::Iptables,
            what,
            source,
        }) => {
            tracing::debug!("no iptables leftovers to remove ({what}: {source})");
            Ok(())
        }
        // No IPVS in this kernel: no virtual servers can be left over. (kube-ipvs0, sets and
        // rules of an IPVS-mode run cannot exist without it either.)
        Err(BackendError::Open {
            mode: ProxyMode::Ipvs,
            what,
            source,
        }) => {
            tracing::debug!("no IPVS leftovers to remove ({what}: {source})");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `--cleanup`: every mode's state removed; a mode whose cleanup fails is reported and the
/// others still cleaned. `ebpf`: where the ebpf mode pinned (`--ebpf-pin-dir`).
pub fn cleanup_all(ebpf: &EbpfOptions) -> Vec<BackendError> {
    // IPVS first: its rules reference chains the iptables mode's cleanup deletes by name
    // (KUBE-SERVICES, KUBE-MARK-MASQ), which fails while IPVS's own chains still jump there.
    let mut order = vec![ProxyMode::Ipvs];
    order.extend(ProxyMode::ALL.into_iter().filter(|m| *m != ProxyMode::Ipvs));
    let mut failed: Vec<BackendError> = order
        .into_iter()
        .filter_map(|mode| cleanup(mode).err())
        .collect();
    if ebpf.pin_dir.is_some() {
        let opts = BackendOptions {
            ebpf: ebpf.clone(),
            ..BackendOptions::default()
        };
        failed.extend(build_and_clean(ProxyMode::Ebpf, &opts).err());
    }
    failed
}

/// On start in `mode`: the leftovers of every other mode are removed, as kube-proxy does
/// (a failure is logged, not fatal: the chosen mode can still run).
///
/// Between `iptables` and `ipvs` only what the other mode alone has: the two share chain
/// names (`KUBE-SERVICES`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`, `KUBE-FORWARD`,
/// `KUBE-PROXY-FIREWALL`), so the other's whole cleanup would tear down the starting mode's
/// live rules on every restart ([`sluice_proxy_ipvs::switch`] says what goes; the starting
/// mode's first full sync rewrites the shared chains). Upstream removes nothing on such a
/// switch; Sluice leaves nothing of the other mode behind.
pub fn cleanup_others(mode: ProxyMode) {
    for other in ProxyMode::ALL.into_iter().filter(|m| *m != mode) {
        let done = match (mode, other) {
            (ProxyMode::Ipvs, ProxyMode::Iptables) => remove_iptables_mode(),
            (ProxyMode::Iptables, ProxyMode::Ipvs) => remove_ipvs_mode(),
            _ => cleanup(other),
        };
        if let Err(e) = done {
            tracing::warn!("removing {other} leftovers: {}", backend::chain(&e));
        }
    }
}

/// Starting in ipvs mode: the iptables mode's own chains, in each variant holding the
/// proxy's chains, in both families.
fn remove_iptables_mode() -> Result<(), BackendError> {
    let mut failed = Vec::new();
    for variant in [Variant::Nft, Variant::Legacy] {
        if !variant.holds_proxy_chains() {
            continue;
        }
        for family in [IpFamily::V4, IpFamily::V6] {
            let mut ipt = Exec::new(family, variant);
            match sluice_proxy_ipvs::switch::remove_iptables_mode(&mut ipt) {
                Ok(r) if r != Default::default() => tracing::info!(
                    "removed the iptables mode's {family:?} {} rules: {} chains, {} rules",
                    variant.as_str(),
                    r.chains.len(),
                    r.rules
                ),
                Ok(_) => {}
                Err(e) => failed.push(format!("{family:?} {}: {e}", variant.as_str())),
            }
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(BackendError::cleanup(
            ProxyMode::Iptables,
            failed.join("; "),
        )),
    }
}

/// Starting in iptables mode: the IPVS mode's IPVS-only rules and, where `kube-ipvs0` shows
/// that the IPVS mode ran in this namespace, its virtual servers, `kube-ipvs0` and sets.
/// Without `kube-ipvs0` neither IPVS nor ipset is asked anything: a node that never ran the
/// IPVS mode keeps its own IPVS services (a load balancer's, keepalived's) and does not load
/// those kernel modules.
fn remove_ipvs_mode() -> Result<(), BackendError> {
    let ran = KernelVips::open()
        .and_then(|mut v| v.exists())
        .unwrap_or(false);
    for opts in ipvs_cleanup_options() {
        if !ran {
            remove_ipvs_rules(&opts)?;
            continue;
        }
        match Any::build(ProxyMode::Ipvs, &opts) {
            Ok(Any::Ipvs(mut b)) => b.remove_for_iptables_mode()?,
            Ok(_) | Err(BackendError::Open { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The IPVS mode's IPVS-only chains and the rules leading to them or matching its sets, in
/// the variant `opts` names, both families.
fn remove_ipvs_rules(opts: &BackendOptions) -> Result<(), BackendError> {
    let variant = (opts.iptables_variant.as_deref())
        .and_then(Variant::parse)
        .unwrap_or(Variant::Legacy);
    for family in [IpFamily::V4, IpFamily::V6] {
        let mut ipt = Exec::new(family, variant);
        match sluice_proxy_ipvs::switch::remove_ipvs_rules(&mut ipt, family) {
            Ok(r) if r != Default::default() => tracing::info!(
                "removed the IPVS mode's {family:?} rules: chains {:?}, {} rules",
                r.chains,
                r.rules
            ),
            Ok(_) => {}
            Err(e) => return Err(BackendError::cleanup(ProxyMode::Ipvs, e.to_string())),
        }
    }
    Ok(())
}

/// One set of options per iptables variant holding IPVS-mode rules (legacy where none does:
/// the kernel without nf_tables), both families.
fn ipvs_cleanup_options() -> Vec<BackendOptions> {
    let mut variants: Vec<Variant> = [Variant::Legacy, Variant::Nft]
        .into_iter()
        .filter(|v| v.holds_proxy_chains())
        .collect();
    if variants.is_empty() {
        variants.push(Variant::Legacy);
    }
    (variants.into_iter())
        .map(|variant| BackendOptions {
            families: vec![IpFamily::V4, IpFamily::V6],
            iptables_variant: Some(variant.as_str().to_owned()),
            ..BackendOptions::default()
        })
        .collect()
}

/// What `mode` does where the modes differ.
pub fn dialect(mode: ProxyMode, opts: &BackendOptions) -> Dialect {
    match mode {
        ProxyMode::Iptables => Dialect::iptables(opts.localhost_nodeports),
        ProxyMode::Ipvs => Dialect::IPVS,
        ProxyMode::Ebpf => Dialect::EBPF,
        ProxyMode::Nftables | ProxyMode::Fake => sluice_proxy_nftables::DIALECT,
    }
}

/// `mode`'s tracer over what it would program for `snapshot` on `node`, held against the
/// model's `verdict`; `None` when the mode has no tracer.
pub fn check(
    mode: ProxyMode,
    opts: &BackendOptions,
    snapshot: &Snapshot,
    node: &NodeContext,
    packet: &Packet,
    verdict: &VerdictView,
) -> Option<BackendCheck> {
    match mode {
        ProxyMode::Nftables => {
            let cfg = NftConfig::of(opts, snapshot.family());
            let table = sluice_proxy_nftables::rendered(&cfg, snapshot);
            let tracer = sluice_proxy_nftables::Tracer::new(&table, &node.node_ips)
                .with_pod_sources(&node.pod_cidrs);
            Some(BackendCheck::run(
                mode.as_str(),
                "rendered",
                &tracer,
                packet,
                node,
                verdict,
            ))
        }
        ProxyMode::Iptables => {
            let cfg = sluice_proxy_iptables::IptConfig::of(opts, snapshot.family(), true, false);
            let rendered = sluice_proxy_iptables::render(&cfg, snapshot, Scope::All, &[]);
            let dump = Dump::parse(&rendered.text()).ok()?;
            Some(iptables_check(&dump, "rendered", node, packet, verdict))
        }
        ProxyMode::Ipvs => {
            let cfg = ipvs_config(opts, snapshot.family(), node);
            let all = sluice_proxy_ipvs::render::union(
                sluice_proxy_ipvs::render(&cfg, snapshot).values(),
            );
            Some(ipvs_check(&all, &cfg, "rendered", node, packet, verdict))
        }
        ProxyMode::Ebpf => {
            let cfg = sluice_proxy_ebpf::RenderConfig::of(opts);
            let ids = &mut sluice_proxy_ebpf::render::Ids::default();
            let maps = sluice_proxy_ebpf::render::union(
                sluice_proxy_ebpf::render::render(&cfg, snapshot, ids).values(),
            );
            let cidrs = sluice_proxy_ebpf::kernel_config(opts).service_cidrs;
            Some(ebpf_check(&maps, &cidrs, "rendered", node, packet, verdict))
        }
        _ => None,
    }
}

/// The IPVS rendering settings `node`'s facts imply (its addresses, pods, masquerade-all).
fn ipvs_config(
    opts: &BackendOptions,
    family: IpFamily,
    node: &NodeContext,
) -> sluice_proxy_ipvs::IpvsConfig {
    let mut cfg = sluice_proxy_ipvs::IpvsConfig::of(opts, family);
    let of_family = |ips: &[std::net::IpAddr]| -> Vec<std::net::IpAddr> {
        (ips.iter())
            .filter(|ip| family.contains(ip) && !ip.is_loopback())
            .copied()
            .collect()
    };
    cfg.nodeport_ips = of_family(&node.nodeport_ips);
    cfg.node_ips = of_family(&node.node_ips);
    cfg.cluster_cidrs = (node.pod_cidrs.iter())
        .filter(|n| family.contains(&n.addr()))
        .copied()
        .collect();
    cfg.masquerade_all = node.masquerade_all;
    cfg
}

fn ipvs_check(
    all: &sluice_proxy_ipvs::PortRender,
    cfg: &sluice_proxy_ipvs::IpvsConfig,
    source: &'static str,
    node: &NodeContext,
    packet: &Packet,
    verdict: &VerdictView,
) -> BackendCheck {
    let tracer = sluice_proxy_ipvs::Tracer::new(all, cfg);
    BackendCheck::run(
        ProxyMode::Ipvs.as_str(),
        source,
        &tracer,
        packet,
        node,
        verdict,
    )
}

/// The eBPF tracer over decoded maps, held against `verdict`.
fn ebpf_check(
    maps: &sluice_proxy_ebpf::MapSet,
    service_cidrs: &[ipnet::IpNet],
    source: &'static str,
    node: &NodeContext,
    packet: &Packet,
    verdict: &VerdictView,
) -> BackendCheck {
    let tracer = sluice_proxy_ebpf::Tracer::new(maps, service_cidrs, &node.pod_cidrs);
    BackendCheck::run(
        ProxyMode::Ebpf.as_str(),
        source,
        &tracer,
        packet,
        node,
        verdict,
    )
}

/// As [`check`], over what is programmed in this namespace where the mode can read it back
/// (iptables: `iptables-save`; ipvs: IPVS netlink, `kube-ipvs0`, `ipset save`; ebpf: the maps
/// pinned in `--ebpf-pin-dir`, decoded); the rendering where nothing of the mode is programmed.
pub fn check_programmed(
    mode: ProxyMode,
    opts: &BackendOptions,
    snapshot: &Snapshot,
    node: &NodeContext,
    packet: &Packet,
    verdict: &VerdictView,
) -> Option<BackendCheck> {
    if mode == ProxyMode::Ipvs
        && let Some(all) = sluice_proxy_ipvs::read_programmed(snapshot.family())
    {
        let cfg = ipvs_config(opts, snapshot.family(), node);
        return Some(ipvs_check(
            &all,
            &cfg,
            "programmed, IPVS netlink and ipset",
            node,
            packet,
            verdict,
        ));
    }
    if mode == ProxyMode::Iptables
        && let Some(dump) = iptables_programmed(opts, snapshot.family())
    {
        return Some(iptables_check(
            &dump,
            "programmed, iptables-save",
            node,
            packet,
            verdict,
        ));
    }
    if mode == ProxyMode::Ebpf {
        let cfg = sluice_proxy_ebpf::kernel_config(opts);
        match sluice_proxy_ebpf::kernel::read_pinned(&cfg.pin_dir) {
            Ok(p) => {
                return Some(ebpf_check(
                    &p.maps,
                    &p.service_cidrs,
                    "programmed, pinned maps",
                    node,
                    packet,
                    verdict,
                ));
            }
            Err(e) => tracing::warn!(
                "reading the pinned maps in {}: {} (tracing the rendering instead)",
                cfg.pin_dir.display(),
                sluice_proxy_core::backend::chain(&e)
            ),
        }
    }
    check(mode, opts, snapshot, node, packet, verdict)
}

/// The nat and filter tables as `iptables-save` prints them, when the proxy's chains are in
/// them.
fn iptables_programmed(opts: &BackendOptions, family: IpFamily) -> Option<Dump> {
    let variant = match opts.iptables_variant.as_deref() {
        Some(v) => Variant::parse(v)?,
        None => Variant::detect(),
    };
    let mut exec = Exec::new(family, variant);
    let mut text = String::new();
    for table in ["nat", "filter"] {
        text.push_str(&exec.save(table).ok()?);
    }
    let dump = Dump::parse(&text).ok()?;
    dump.chain("nat", "KUBE-SERVICES").is_some().then_some(dump)
}

fn iptables_check(
    dump: &Dump,
    source: &'static str,
    node: &NodeContext,
    packet: &Packet,
    verdict: &VerdictView,
) -> BackendCheck {
    let tracer =
        sluice_proxy_iptables::Tracer::new(dump, &node.node_ips).with_pod_sources(&node.pod_cidrs);
    BackendCheck::run(
        ProxyMode::Iptables.as_str(),
        source,
        &tracer,
        packet,
        node,
        verdict,
    )
}

impl Backend for Any {
    fn mode(&self) -> ProxyMode {
        self.inner().mode()
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        self.inner().render(snapshot)
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        self.inner_mut().apply_partial(snapshot, changes)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        self.inner_mut().apply_full(snapshot, changes)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.inner_mut().cleanup()
    }

    fn init(&mut self) -> Result<(), BackendError> {
        self.inner_mut().init()
    }

    fn tick_period(&self) -> Option<Duration> {
        self.inner().tick_period()
    }

    fn tick(&mut self) -> Result<Tick, BackendError> {
        self.inner_mut().tick()
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.inner().register_metrics(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_builds_and_the_missing_modes_say_so() {
        assert_eq!(Any::new(ProxyMode::Fake).unwrap().mode(), ProxyMode::Fake);
        // nftables opens netlink in the current namespace: built (and cleaned up) by the
        // kernel tests inside their own namespaces, never here in the host's.
        // ipvs is built; on a kernel without IPVS (this machine's) it says so at open.
        assert!(BUILT.contains(&ProxyMode::Ipvs));
        // ebpf builds without touching the kernel (nothing loads before the first sync).
        assert_eq!(Any::new(ProxyMode::Ebpf).unwrap().mode(), ProxyMode::Ebpf);
    }
}
