//! The kernel side of [`MapIo`]: the embedded eBPF object loaded with aya, its maps pinned in
//! a bpffs directory (a restarted proxy adopts them: the loader reuses pinned maps by name),
//! the socket-LB programs (IPv4 and IPv6) attached to one cgroup v2 directory through
//! `bpf_link`s, pinned there too, so the dataplane keeps working while the proxy is down.
//!
//! Nothing is loaded until the first map access: building the backend (as `--cleanup` and
//! other modes' start-up cleanup do) never attaches anything.

use std::borrow::Borrow;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use sluice_ebpf_common::{
    Backend, Backend6, ServiceKey, ServiceKey6, ServiceValue, SlotKey, SrcRange, SrcRange6,
    ip6_from_words, ip6_words, map_names, stats,
};
use sluice_model::service::IpFamily;

use crate::diff::Op;
use crate::error::EbpfError;
use crate::io::MapIo;
use crate::pin;
use crate::render::MapSet;

/// The programs built by `ebpf/programs` (empty when built with `AYA_BUILD_SKIP`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-ebpf"));

/// The socket-LB programs, attached to the cgroup.
pub const SOCK_PROGRAMS: [&str; 4] = [
    "sluice_connect4",
    "sluice_sendmsg4",
    "sluice_recvmsg4",
    "sluice_getpeername4",
];

/// The IPv6 socket-LB programs, attached to the cgroup next to the IPv4 ones (whatever the
/// cluster's families: with empty IPv6 maps they translate nothing).
pub const SOCK_PROGRAMS6: [&str; 4] = [
    "sluice_connect6",
    "sluice_sendmsg6",
    "sluice_recvmsg6",
    "sluice_getpeername6",
];

/// Every socket-LB program, IPv4 then IPv6.
pub fn sock_programs() -> impl Iterator<Item = &'static str> {
    SOCK_PROGRAMS.into_iter().chain(SOCK_PROGRAMS6)
}

/// The tc programs, attached to the node's interfaces (ingress, egress).
pub const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("sluice_tc_ingress", TcAttachType::Ingress),
    ("sluice_tc_egress", TcAttachType::Egress),
];

/// Where to attach and pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// The cgroup v2 directory whose sockets are load-balanced.
    pub cgroup: Option<PathBuf>,
    /// The interfaces the tc programs attach to (empty: those holding one of `addresses`).
    pub interfaces: Vec<String>,
    /// Without `interfaces`: the interfaces holding an address in one of these (the node
    /// IPs, the pod CIDRs: the underlay and the pod network's devices; either family) get the
    /// tc programs. Neither given: no interface does.
    pub addresses: Vec<ipnet::IpNet>,
    /// The service CIDRs (`--service-cidr`, both families): unallocated addresses in them
    /// are dropped.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// The bpffs directory for pins.
    pub pin_dir: PathBuf,
}

struct Loaded {
    ebpf: Ebpf,
    cgroup: PathBuf,
}

/// The kernel maps behind [`MapIo`].
pub struct KernelMaps {
    cfg: KernelConfig,
    loaded: Option<Loaded>,
}

impl KernelMaps {
    /// Maps to be loaded (on first use) with `cfg`.
    pub fn new(cfg: KernelConfig) -> Self {
        Self { cfg, loaded: None }
    }

    /// The embedded object (tests load their own instance of it).
    pub fn object() -> Result<&'static [u8], EbpfError> {
        match OBJECT.is_empty() {
            true => Err(EbpfError::NotBuilt),
            false => Ok(OBJECT),
        }
    }

    /// Whether the programs are built in, for the kernel tests: a build without them
    /// (`AYA_BUILD_SKIP`) skips those tests with a note, except under CI, where a skipped
    /// kernel test would pass without testing anything.
    pub fn built_for_tests() -> bool {
        let built = !OBJECT.is_empty();
        assert!(
            built || std::env::var_os("CI").is_none(),
            "CI: the eBPF programs are not built in (AYA_BUILD_SKIP?)"
        );
        if !built {
            eprintln!("skipped: the eBPF programs are not built in (AYA_BUILD_SKIP)");
        }
        built
    }

    /// Loads the object with its maps pinned in (or adopted from) `pin_dir`.
    pub fn load_object(pin_dir: &Path) -> Result<Ebpf, EbpfError> {
        pin::ensure_dir(pin_dir)?;
        EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(Self::object()?)
            .map_err(|e| EbpfError::Load(Box::new(e)))
    }

    fn loaded(&mut self) -> Result<&mut Loaded, EbpfError> {
        if self.loaded.is_none() {
            let cgroup = match &self.cfg.cgroup {
                Some(c) => c.clone(),
                None => pin::cgroup2_root()?,
            };
            let mut ebpf = Self::load_object(&self.cfg.pin_dir)?;
            for name in sock_programs() {
                attach(&mut ebpf, name, &cgroup, &self.cfg.pin_dir)?;
            }
            write_service_cidrs(&mut ebpf, &self.cfg.service_cidrs)?;
            let cookie = sluice_ebpf_common::netns_cookie().map_err(|source| EbpfError::Fs {
                what: "read this network namespace's cookie (SO_NETNS_COOKIE)",
                path: PathBuf::from("/proc/self/ns/net"),
                source,
            })?;
            write_node_cookie(&mut ebpf, cookie)?;
            // A restart replaces the old proxy's tc links too.
            pin::remove_tc_pins(&self.cfg.pin_dir)?;
            sync_tc(&mut ebpf, &self.cfg)?;
            let (ifaces, ports) = tc_targets(&self.cfg);
            tracing::info!(
                cgroup = %cgroup.display(),
                pins = %self.cfg.pin_dir.display(),
                interfaces = ?ifaces.iter().map(|i| &i.name).collect::<Vec<_>>(),
                bridge_ports = ports.len(),
                "eBPF socket load balancer and tc path attached"
            );
            self.loaded = Some(Loaded { ebpf, cgroup });
        }
        self.loaded.as_mut().ok_or(EbpfError::NotBuilt)
    }
}

/// Loads program `name`, attaches it to `cgroup` and pins its link as `link_<name>`,
/// replacing (and so detaching) a link a previous proxy pinned there. (`Single` means no
/// flags: a `bpf_link` on a cgroup always runs alongside other links, and the kernel refuses
/// flags on link creation.) Old and new run side by
/// side for a moment; both translate the same way, and a translated address is no Service
/// address, so nothing is translated twice.
fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &Path,
    pin_dir: &Path,
) -> Result<(), EbpfError> {
    let fail = |source| EbpfError::Program { name, source };
    let prog: &mut CgroupSockAddr = (ebpf.program_mut(name))
        .ok_or(EbpfError::NotBuilt)?
        .try_into()
        .map_err(fail)?;
    if prog.fd().is_err() {
        prog.load().map_err(fail)?;
    }
    let dir = File::open(cgroup).map_err(|source| EbpfError::Fs {
        what: "open cgroup",
        path: cgroup.to_owned(),
        source,
    })?;
    let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(fail)?;
    let link = prog.take_link(id).map_err(fail)?;
    let path = pin_dir.join(format!("link_{name}"));
    let link_err = |source: Box<dyn std::error::Error + Send + Sync>| EbpfError::Link {
        path: path.clone(),
        source,
    };
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| link_err(Box::new(e)))?;
    pin::unpin_link(&path)?;
    fd.pin(&path).map_err(|e| link_err(Box::new(e)))?;
    Ok(())
}

/// Fills the service-CIDR tries, one per family (adopted maps keep earlier prefixes until
/// cleanup; the CIDRs are configuration and rarely change).
pub fn write_service_cidrs(ebpf: &mut Ebpf, cidrs: &[ipnet::IpNet]) -> Result<(), EbpfError> {
    for net in cidrs {
        match net {
            ipnet::IpNet::V4(net) => {
                let name = map_names::SERVICE_CIDRS;
                let mut trie: LpmTrie<&mut MapData, u32, u8> = LpmTrie::try_from(map(ebpf, name)?)
                    .map_err(|source| EbpfError::Map { name, source })?;
                let key = Key::new(
                    u32::from(net.prefix_len()),
                    u32::from(net.network()).to_be(),
                );
                trie.insert(&key, 1, 0)
                    .map_err(|source| EbpfError::Map { name, source })?;
            }
            ipnet::IpNet::V6(net) => {
                let name = map_names::SERVICE_CIDRS6;
                let mut trie: LpmTrie<&mut MapData, [u32; 4], u8> =
                    LpmTrie::try_from(map(ebpf, name)?)
                        .map_err(|source| EbpfError::Map { name, source })?;
                let key = Key::new(u32::from(net.prefix_len()), ip6_words(&net.network()));
                trie.insert(&key, 1, 0)
                    .map_err(|source| EbpfError::Map { name, source })?;
            }
        }
    }
    Ok(())
}

/// Records `cookie` as the node's network namespace: the socket layer translates the node's
/// own sockets to load-balancer IPs whose source ranges hold a node IP.
pub fn write_node_cookie(ebpf: &mut Ebpf, cookie: u64) -> Result<(), EbpfError> {
    let name = map_names::NODE;
    let mut arr: aya::maps::Array<&mut MapData, u64> = aya::maps::Array::try_from(map(ebpf, name)?)
        .map_err(|source| EbpfError::Map { name, source })?;
    arr.set(0, cookie, 0)
        .map_err(|source| EbpfError::Map { name, source })
}

/// Where `(iface, program)`'s link is pinned (bpffs refuses names with a dot: flannel.1).
fn tc_pin(pin_dir: &Path, iface: &str, program: &str) -> PathBuf {
    pin_dir.join(format!("tc_{}_{program}", iface.replace('.', "_")))
}

/// What the tc path attaches to now: the node's interfaces (both programs; each one's
/// address recorded for SNAT), and the ports of those that are bridges (ingress only: a pod's
/// reply passes the bridge's netfilter hooks before the bridge device's own tc ingress, so
/// it must be un-SNATed on the port it arrives on).
fn tc_targets(cfg: &KernelConfig) -> (Vec<crate::pin::Iface>, Vec<(String, u32)>) {
    let ifaces = crate::pin::interfaces(&cfg.interfaces, &cfg.addresses);
    let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    let ports = crate::pin::bridge_ports(&names);
    (ifaces, ports)
}

/// Attaches what [`tc_targets`] names and is not attached yet (or lost its pin), and unpins
/// the links of interfaces that are gone; returns how many links were made.
fn sync_tc(ebpf: &mut Ebpf, cfg: &KernelConfig) -> Result<usize, EbpfError> {
    let (ifaces, ports) = tc_targets(cfg);
    {
        let name = map_names::IFADDR;
        let mut addrs: HashMap<&mut MapData, u32, u32> = HashMap::try_from(map(ebpf, name)?)
            .map_err(|source| EbpfError::Map { name, source })?;
        for (iface, addr) in (ifaces.iter()).filter_map(|i| Some((i, i.addr?))) {
            let addr = u32::from(addr).to_be();
            if addrs.get(&iface.index, 0).ok() != Some(addr) {
                addrs
                    .insert(iface.index, addr, 0)
                    .map_err(|source| EbpfError::Map { name, source })?;
            }
        }
    }
    {
        let name = map_names::IFADDR6;
        let mut addrs: HashMap<&mut MapData, u32, [u32; 4]> =
            HashMap::try_from(map(ebpf, name)?)
                .map_err(|source| EbpfError::Map { name, source })?;
        for (iface, addr) in (ifaces.iter()).filter_map(|i| Some((i, i.addr6?))) {
            let addr = ip6_words(&addr);
            if addrs.get(&iface.index, 0).ok() != Some(addr) {
                addrs
                    .insert(iface.index, addr, 0)
                    .map_err(|source| EbpfError::Map { name, source })?;
            }
        }
    }
    let mut want: Vec<(String, &'static str, TcAttachType)> = Vec::new();
    for iface in &ifaces {
        for (prog, kind) in TC_PROGRAMS {
            want.push((iface.name.clone(), prog, kind));
        }
    }
    for (port, _) in &ports {
        want.push((port.clone(), TC_PROGRAMS[0].0, TC_PROGRAMS[0].1));
    }
    let mut made = 0;
    for (iface, prog, kind) in &want {
        let path = tc_pin(&cfg.pin_dir, iface, prog);
        if path.exists() {
            continue;
        }
        attach_one_tc(ebpf, iface, prog, *kind, &path)?;
        made += 1;
    }
    // Links of interfaces that are gone (a deleted pod's veth).
    let wanted: Vec<PathBuf> = want
        .iter()
        .map(|(i, p, _)| tc_pin(&cfg.pin_dir, i, p))
        .collect();
    if let Ok(entries) = std::fs::read_dir(&cfg.pin_dir) {
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with("tc_") && !wanted.contains(&path) {
                pin::unpin_link(&path)?;
            }
        }
    }
    Ok(made)
}

/// Attaches tc program `name` to `iface` (a TCX link) and pins it at `path`, replacing (and so
/// detaching) an earlier pin.
fn attach_one_tc(
    ebpf: &mut Ebpf,
    iface: &str,
    name: &'static str,
    kind: TcAttachType,
    path: &Path,
) -> Result<(), EbpfError> {
    let fail = |source| EbpfError::Program { name, source };
    let prog: &mut SchedClassifier = (ebpf.program_mut(name))
        .ok_or(EbpfError::NotBuilt)?
        .try_into()
        .map_err(fail)?;
    if prog.fd().is_err() {
        prog.load().map_err(fail)?;
    }
    let id = prog.attach(iface, kind).map_err(fail)?;
    let link = prog.take_link(id).map_err(fail)?;
    let link_err = |source: Box<dyn std::error::Error + Send + Sync>| EbpfError::Link {
        path: path.to_owned(),
        source,
    };
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| link_err(Box::new(e)))?;
    pin::unpin_link(path)?;
    fd.pin(path).map_err(|e| link_err(Box::new(e)))?;
    Ok(())
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, EbpfError> {
    ebpf.map_mut(name).ok_or(EbpfError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    })
}

fn services(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, ServiceKey, ServiceValue>, EbpfError> {
    let name = map_names::SERVICES;
    HashMap::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

fn slots(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, SlotKey, Backend>, EbpfError> {
    let name = map_names::SLOTS;
    HashMap::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

fn services6(
    ebpf: &mut Ebpf,
) -> Result<HashMap<&mut MapData, ServiceKey6, ServiceValue>, EbpfError> {
    let name = map_names::SERVICES6;
    HashMap::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

fn slots6(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, SlotKey, Backend6>, EbpfError> {
    let name = map_names::SLOTS6;
    HashMap::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

fn ranges(ebpf: &mut Ebpf) -> Result<LpmTrie<&mut MapData, SrcRange, u8>, EbpfError> {
    let name = map_names::SOURCE_RANGES;
    LpmTrie::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

fn ranges6(ebpf: &mut Ebpf) -> Result<LpmTrie<&mut MapData, SrcRange6, u8>, EbpfError> {
    let name = map_names::SOURCE_RANGES6;
    LpmTrie::try_from(map(ebpf, name)?).map_err(|source| EbpfError::Map { name, source })
}

/// The IPv6 trie key of (service id, prefix): 32 bits of id, then the prefix.
fn range6_key(id: u32, net: &ipnet::Ipv6Net) -> Key<SrcRange6> {
    let data = SrcRange6 {
        service_id_be: id.to_be(),
        addr: ip6_words(&net.network()),
    };
    Key::new(32 + u32::from(net.prefix_len()), data)
}

fn range6_of(key: &Key<SrcRange6>) -> Option<(u32, ipnet::IpNet)> {
    let data = key.data();
    let len = u8::try_from(key.prefix_len().checked_sub(32)?).ok()?;
    let net = ipnet::Ipv6Net::new(ip6_from_words(&data.addr), len).ok()?;
    Some((u32::from_be(data.service_id_be), net.into()))
}

/// The trie key of (service id, prefix): 32 bits of id, then the prefix.
fn range_key(id: u32, net: &ipnet::Ipv4Net) -> Key<SrcRange> {
    let data = SrcRange {
        service_id_be: id.to_be(),
        addr: u32::from(net.network()).to_be(),
    };
    Key::new(32 + u32::from(net.prefix_len()), data)
}

fn range_of(key: &Key<SrcRange>) -> Option<(u32, ipnet::IpNet)> {
    let data = key.data();
    let len = u8::try_from(key.prefix_len().checked_sub(32)?).ok()?;
    let net = ipnet::Ipv4Net::new(u32::from_be(data.addr).into(), len).ok()?;
    Some((u32::from_be(data.service_id_be), net.into()))
}

/// Reads the service and slot maps of `ebpf`, both families (batched where the kernel can: a
/// full resync reads every entry back).
pub fn dump_maps(ebpf: &mut Ebpf) -> Result<MapSet, EbpfError> {
    let mut out = dump_family(ebpf, IpFamily::V4)?;
    let v6 = dump_family(ebpf, IpFamily::V6)?;
    out.merge(&v6);
    Ok(out)
}

/// Reads `family`'s service and slot maps and source-range trie.
pub fn dump_family(ebpf: &mut Ebpf, family: IpFamily) -> Result<MapSet, EbpfError> {
    let mut out = MapSet::default();
    match family {
        IpFamily::V4 => {
            read_all(ebpf, map_names::SERVICES, &mut out.services, services)?;
            read_all(ebpf, map_names::SLOTS, &mut out.slots, slots)?;
            read_ranges(&ranges(ebpf)?, map_names::SOURCE_RANGES, range_of, &mut out)?;
        }
        IpFamily::V6 => {
            read_all(ebpf, map_names::SERVICES6, &mut out.services6, services6)?;
            read_all(ebpf, map_names::SLOTS6, &mut out.slots6, slots6)?;
            read_ranges(
                &ranges6(ebpf)?,
                map_names::SOURCE_RANGES6,
                range6_of,
                &mut out,
            )?;
        }
    }
    Ok(out)
}

/// Every entry of hash map `name` into `out`: batched, else (no batch operations here) one
/// by one through `open`.
fn read_all<K: aya::Pod + Ord, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    out: &mut std::collections::BTreeMap<K, V>,
    open: impl FnOnce(&mut Ebpf) -> Result<HashMap<&mut MapData, K, V>, EbpfError>,
) -> Result<(), EbpfError> {
    if batch_read(ebpf, name, |k, v| {
        out.insert(k, v);
    })? {
        return Ok(());
    }
    out.clear();
    read_hash(&open(ebpf)?, name, |k, v| {
        out.insert(k, v);
    })
}

/// Reads hash map `name` with `BPF_MAP_LOOKUP_BATCH`; `false` where the kernel has no batch
/// operations (or batching is off), so the caller reads entry by entry.
fn batch_read<K: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &'static str,
    each: impl FnMut(K, V),
) -> Result<bool, EbpfError> {
    if !batching() {
        return Ok(false);
    }
    let fd = match ebpf.map(name) {
        Some(aya::maps::Map::HashMap(data)) => data.fd().as_fd(),
        _ => {
            return Err(EbpfError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            });
        }
    };
    match sluice_ebpf_common::map_lookup_batch(fd, each) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(errno::EINVAL | errno::ENOTSUPP)) => Ok(false),
        Err(io_error) => Err(EbpfError::Map {
            name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            }),
        }),
    }
}

/// Every entry of hash map `name`, one lookup per key (the fallback where the kernel has no
/// batch lookup, and for pinned maps read back by `explain`).
fn read_hash<T: Borrow<MapData>, K: aya::Pod, V: aya::Pod>(
    m: &HashMap<T, K, V>,
    name: &'static str,
    mut put: impl FnMut(K, V),
) -> Result<(), EbpfError> {
    for entry in m.iter() {
        let (k, v) = entry.map_err(|source| EbpfError::Map { name, source })?;
        put(k, v);
    }
    Ok(())
}

fn read_ranges<T: Borrow<MapData>, K: aya::Pod>(
    m: &LpmTrie<T, K, u8>,
    name: &'static str,
    decode: impl Fn(&Key<K>) -> Option<(u32, ipnet::IpNet)>,
    out: &mut MapSet,
) -> Result<(), EbpfError> {
    for key in m.keys() {
        let key = key.map_err(|source| EbpfError::Map { name, source })?;
        if let Some(r) = decode(&key) {
            out.ranges.insert(r);
        }
    }
    Ok(())
}

/// What the pinned maps of a running (or stopped) proxy hold, decoded: for `explain` and
/// anyone checking the programmed dataplane against the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    /// The service, slot and source-range maps.
    pub maps: MapSet,
    /// The service-CIDR tries (both families).
    pub service_cidrs: Vec<ipnet::IpNet>,
}

/// The map pinned as `name` in `pin_dir`, as the map type `M` (a hash map, a trie).
fn pinned<M>(pin_dir: &Path, name: &'static str) -> Result<M, EbpfError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let err = |source| EbpfError::Map { name, source };
    let data = MapData::from_pin(pin_dir.join(name)).map_err(err)?;
    M::try_from(aya::maps::Map::from_map_data(data).map_err(err)?).map_err(err)
}

/// The prefixes of service-CIDR trie `name`, made networks by `net` (key data, length).
fn read_cidrs<K: aya::Pod>(
    trie: &LpmTrie<MapData, K, u8>,
    name: &'static str,
    net: impl Fn(K, u8) -> Option<ipnet::IpNet>,
    out: &mut Vec<ipnet::IpNet>,
) -> Result<(), EbpfError> {
    for key in trie.keys() {
        let key = key.map_err(|source| EbpfError::Map { name, source })?;
        let len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
        out.extend(net(key.data(), len));
    }
    Ok(())
}

/// Reads the maps pinned in `pin_dir` back, without loading or attaching anything (the
/// pins are opened read-only in effect: nothing is written).
pub fn read_pinned(pin_dir: &Path) -> Result<Programmed, EbpfError> {
    let mut out = Programmed::default();
    let svc: HashMap<_, ServiceKey, ServiceValue> = pinned(pin_dir, map_names::SERVICES)?;
    read_hash(&svc, map_names::SERVICES, |k, v| {
        out.maps.services.insert(k, v);
    })?;
    let sl: HashMap<_, SlotKey, Backend> = pinned(pin_dir, map_names::SLOTS)?;
    read_hash(&sl, map_names::SLOTS, |k, v| {
        out.maps.slots.insert(k, v);
    })?;
    let tr: LpmTrie<_, SrcRange, u8> = pinned(pin_dir, map_names::SOURCE_RANGES)?;
    read_ranges(&tr, map_names::SOURCE_RANGES, range_of, &mut out.maps)?;
    // The IPv6 maps (pinned by every version that has the IPv6 programs).
    if pin_dir.join(map_names::SERVICES6).exists() {
        let svc6: HashMap<_, ServiceKey6, ServiceValue> = pinned(pin_dir, map_names::SERVICES6)?;
        read_hash(&svc6, map_names::SERVICES6, |k, v| {
            out.maps.services6.insert(k, v);
        })?;
        let sl6: HashMap<_, SlotKey, Backend6> = pinned(pin_dir, map_names::SLOTS6)?;
        read_hash(&sl6, map_names::SLOTS6, |k, v| {
            out.maps.slots6.insert(k, v);
        })?;
    }
    let cidrs: LpmTrie<_, u32, u8> = pinned(pin_dir, map_names::SERVICE_CIDRS)?;
    read_cidrs(
        &cidrs,
        map_names::SERVICE_CIDRS,
        |k, len| {
            Some(
                ipnet::Ipv4Net::new(u32::from_be(k).into(), len)
                    .ok()?
                    .into(),
            )
        },
        &mut out.service_cidrs,
    )?;
    // The IPv6 tc path's tries (pinned by every version that has it).
    if pin_dir.join(map_names::SOURCE_RANGES6).exists() {
        let tr6: LpmTrie<_, SrcRange6, u8> = pinned(pin_dir, map_names::SOURCE_RANGES6)?;
        read_ranges(&tr6, map_names::SOURCE_RANGES6, range6_of, &mut out.maps)?;
        let cidrs6: LpmTrie<_, [u32; 4], u8> = pinned(pin_dir, map_names::SERVICE_CIDRS6)?;
        read_cidrs(
            &cidrs6,
            map_names::SERVICE_CIDRS6,
            |k, len| Some(ipnet::Ipv6Net::new(ip6_from_words(&k), len).ok()?.into()),
            &mut out.service_cidrs,
        )?;
    }
    Ok(out)
}

/// Applies `ops` to the maps of `ebpf`, in order. A run of puts into one map (a cold sync:
/// tens of thousands of them) is one `BPF_MAP_UPDATE_BATCH` call instead of one system call
/// per entry; the order between runs, which keeps every Service backed, is unchanged.
pub fn apply_ops(ebpf: &mut Ebpf, ops: &[Op]) -> Result<(), EbpfError> {
    let mut rest = ops;
    while let Some(first) = rest.first() {
        let same = |op: &&Op| std::mem::discriminant(*op) == std::mem::discriminant(first);
        let run = match first {
            Op::PutSlot(..) | Op::PutService(..) | Op::PutSlot6(..) | Op::PutService6(..) => {
                rest.iter().take_while(same).count()
            }
            _ => 1,
        };
        let (now, later) = rest.split_at(run);
        let batch = run >= BATCH_MIN && batching();
        match first {
            Op::PutSlot(..) if batch => put_batch(ebpf, map_names::SLOTS, now, |op| match op {
                Op::PutSlot(k, v) => Some((*k, *v)),
                _ => None,
            })?,
            Op::PutService(..) if batch => {
                put_batch(ebpf, map_names::SERVICES, now, |op| match op {
                    Op::PutService(k, v) => Some((*k, *v)),
                    _ => None,
                })?;
            }
            Op::PutSlot6(..) if batch => put_batch(ebpf, map_names::SLOTS6, now, |op| match op {
                Op::PutSlot6(k, v) => Some((*k, *v)),
                _ => None,
            })?,
            Op::PutService6(..) if batch => {
                put_batch(ebpf, map_names::SERVICES6, now, |op| match op {
                    Op::PutService6(k, v) => Some((*k, *v)),
                    _ => None,
                })?;
            }
            _ => {
                for op in now {
                    apply_one(ebpf, op)?;
                }
            }
        }
        rest = later;
    }
    Ok(())
}

/// Runs shorter than this are written entry by entry (a one-Service change: a few entries).
const BATCH_MIN: usize = 8;

/// Whether runs of puts are written, and full syncs read back, in batches (on unless a
/// benchmark compares: `sluice-bench ebpf --no-batch`).
pub static BATCH_WRITES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn batching() -> bool {
    BATCH_WRITES.load(std::sync::atomic::Ordering::Relaxed)
}

/// One batch write of the entries of `ops` (each op's key and value, picked by `entry`) into
/// hash map `name`; where the kernel refuses batch operations (before 5.6), `ops` one by one.
fn put_batch<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    ops: &[Op],
    entry: fn(&Op) -> Option<(K, V)>,
) -> Result<(), EbpfError> {
    let (keys, values): (Vec<K>, Vec<V>) = ops.iter().filter_map(entry).unzip();
    let fd = match ebpf.map(name) {
        Some(aya::maps::Map::HashMap(data)) => data.fd().as_fd(),
        _ => {
            return Err(EbpfError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            });
        }
    };
    match sluice_ebpf_common::map_update_batch(fd, &keys, &values, 0) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(errno::EINVAL | errno::ENOTSUPP)) => {
            tracing::debug!("{name}: no batch updates here ({e}); writing one by one");
            ops.iter().try_for_each(|op| apply_one(ebpf, op))
        }
        Err(io_error) => Err(EbpfError::Map {
            name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_batch",
                io_error,
            }),
        }),
    }
}

/// errno values the batch fallback looks for (no libc dependency for two numbers).
mod errno {
    pub(super) const EINVAL: i32 = 22;
    /// The kernel's internal "operation not supported" (524), as `bpf(2)` returns it.
    pub(super) const ENOTSUPP: i32 = 524;
}

fn apply_one(ebpf: &mut Ebpf, op: &Op) -> Result<(), EbpfError> {
    let svc_err = |source| EbpfError::Map {
        name: map_names::SERVICES,
        source,
    };
    let slot_err = |source| EbpfError::Map {
        name: map_names::SLOTS,
        source,
    };
    let range_err = |source| EbpfError::Map {
        name: map_names::SOURCE_RANGES,
        source,
    };
    let range6_err = |source| EbpfError::Map {
        name: map_names::SOURCE_RANGES6,
        source,
    };
    let svc6_err = |source| EbpfError::Map {
        name: map_names::SERVICES6,
        source,
    };
    let slot6_err = |source| EbpfError::Map {
        name: map_names::SLOTS6,
        source,
    };
    match op {
        Op::PutSlot(k, v) => slots(ebpf)?.insert(k, v, 0).map_err(slot_err)?,
        Op::PutService(k, v) => services(ebpf)?.insert(k, v, 0).map_err(svc_err)?,
        Op::DeleteService(k) => match services(ebpf)?.remove(k) {
            Err(aya::maps::MapError::KeyNotFound) => {}
            other => other.map_err(svc_err)?,
        },
        Op::DeleteSlot(k) => match slots(ebpf)?.remove(k) {
            Err(aya::maps::MapError::KeyNotFound) => {}
            other => other.map_err(slot_err)?,
        },
        Op::PutRange(id, ipnet::IpNet::V4(net)) => ranges(ebpf)?
            .insert(&range_key(*id, net), 1, 0)
            .map_err(range_err)?,
        Op::DeleteRange(id, ipnet::IpNet::V4(net)) => {
            match ranges(ebpf)?.remove(&range_key(*id, net)) {
                Err(aya::maps::MapError::KeyNotFound) => {}
                other => other.map_err(range_err)?,
            }
        }
        Op::PutRange(id, ipnet::IpNet::V6(net)) => ranges6(ebpf)?
            .insert(&range6_key(*id, net), 1, 0)
            .map_err(range6_err)?,
        Op::DeleteRange(id, ipnet::IpNet::V6(net)) => {
            match ranges6(ebpf)?.remove(&range6_key(*id, net)) {
                Err(aya::maps::MapError::KeyNotFound) => {}
                other => other.map_err(range6_err)?,
            }
        }
        Op::PutSlot6(k, v) => slots6(ebpf)?.insert(k, v, 0).map_err(slot6_err)?,
        Op::PutService6(k, v) => services6(ebpf)?.insert(k, v, 0).map_err(svc6_err)?,
        Op::DeleteService6(k) => match services6(ebpf)?.remove(k) {
            Err(aya::maps::MapError::KeyNotFound) => {}
            other => other.map_err(svc6_err)?,
        },
        Op::DeleteSlot6(k) => match slots6(ebpf)?.remove(k) {
            Err(aya::maps::MapError::KeyNotFound) => {}
            other => other.map_err(slot6_err)?,
        },
    }
    Ok(())
}

/// The per-CPU counters of `ebpf`, summed.
pub fn counters(ebpf: &mut Ebpf) -> Vec<u64> {
    let Some(m) = ebpf.map_mut(map_names::STATS) else {
        return Vec::new();
    };
    let Ok(arr) = PerCpuArray::<&mut MapData, u64>::try_from(m) else {
        return Vec::new();
    };
    (0..stats::COUNT)
        .map(|i| arr.get(&i, 0).map_or(0, |v| v.iter().sum()))
        .collect()
}

/// The maps of a freshly loaded object with **nothing attached**: benchmarks and tests write
/// and read the real kernel maps without touching any cgroup or interface.
pub struct MapsOnly(pub Ebpf);

impl MapsOnly {
    /// Loads the object with its maps pinned in `pin_dir` (a bpffs the caller mounted).
    pub fn load(pin_dir: &Path) -> Result<Self, EbpfError> {
        KernelMaps::load_object(pin_dir).map(Self)
    }
}

impl MapIo for MapsOnly {
    fn dump(&mut self, family: IpFamily) -> Result<MapSet, EbpfError> {
        dump_family(&mut self.0, family)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), EbpfError> {
        apply_ops(&mut self.0, ops)
    }

    fn counters(&mut self) -> Vec<u64> {
        counters(&mut self.0)
    }

    fn cleanup(&mut self) -> Result<(), EbpfError> {
        Ok(())
    }
}

impl MapIo for KernelMaps {
    fn dump(&mut self, family: IpFamily) -> Result<MapSet, EbpfError> {
        dump_family(&mut self.loaded()?.ebpf, family)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), EbpfError> {
        let cfg = self.cfg.clone();
        let loaded = self.loaded()?;
        apply_ops(&mut loaded.ebpf, ops)?;
        // New pods' bridge ports get the tc ingress program with the sync their endpoints
        // trigger (and at the latest with the next tick).
        sync_tc(&mut loaded.ebpf, &cfg)?;
        Ok(())
    }

    fn ensure_attached(&mut self) -> Result<usize, EbpfError> {
        let pin_dir = self.cfg.pin_dir.clone();
        let Some(loaded) = self.loaded.as_mut() else {
            return Ok(0);
        };
        let mut n = 0;
        for name in sock_programs() {
            if !pin_dir.join(format!("link_{name}")).exists() {
                attach(&mut loaded.ebpf, name, &loaded.cgroup, &pin_dir)?;
                n += 1;
            }
        }
        Ok(n + sync_tc(&mut loaded.ebpf, &self.cfg)?)
    }

    fn counters(&mut self) -> Vec<u64> {
        match self.loaded.as_mut() {
            Some(l) => counters(&mut l.ebpf),
            None => Vec::new(),
        }
    }

    fn cleanup(&mut self) -> Result<(), EbpfError> {
        self.loaded = None;
        pin::remove_all(&self.cfg.pin_dir)
    }
}
