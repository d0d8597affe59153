//! `--proxy-mode ipvs`: virtual servers over generic netlink, addresses on `kube-ipvs0`, set
//! members as `ipset restore` text through the `Ipset` seam (ipset's netlink protocol on a
//! real host), and a fixed iptables ruleset through the iptables mode's restore machinery.
//!
//! A full sync reads IPVS, the link's addresses and the sets back and changes only what
//! differs (a restart adopts what is there, drift is repaired); a partial sync changes only
//! the virtual servers, real servers, addresses and set members of the Services that changed,
//! against what the last sync programmed. A real server leaving a TCP virtual server gets
//! weight 0 and is deleted by [`Backend::tick`] once it has no connections (kube-proxy's
//! graceful termination); UDP and SCTP real servers are deleted at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_model::service::{IpFamily, ServicePortName};
use sluice_proxy_core::backend::{Backend, BackendError, Outcome, ProxyMode, Tick};
use sluice_proxy_core::{Changes, Snapshot};
use sluice_proxy_iptables::Iptables;
use sluice_proxy_iptables::dump::Dump;

use crate::diff;
use crate::ipvs::{Ipvs, IpvsError};
use crate::link::Vips;
use crate::render::{self, IpvsConfig, PortRender};
use crate::rules;
use crate::sets::{self, Entries, Ipset};
use crate::types::{RealServer, RsKey, TCP, VirtualServer, VsKey};

/// How often terminating real servers are checked (kube-proxy: 1 minute).
pub const GRACEFUL_CHECK: Duration = Duration::from_secs(60);

const MODE: ProxyMode = ProxyMode::Ipvs;

fn cleanup_result(failed: Vec<String>) -> Result<(), BackendError> {
    match failed.is_empty() {
        true => Ok(()),
        false => Err(BackendError::cleanup(MODE, failed.join("; "))),
    }
}

fn apply_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::apply(MODE, Outcome::Unknown, e)
}

/// What a family's last successful sync programmed.
#[derive(Debug, Default)]
struct Programmed {
    ports: BTreeMap<ServicePortName, PortRender>,
    servers: BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)>,
    vips: BTreeMap<IpAddr, usize>,
    members: BTreeMap<(&'static str, String), usize>,
}

impl Programmed {
    fn count(
        &mut self,
        port: &PortRender,
        delta: isize,
        vips: &mut Vec<(IpAddr, bool)>,
        members: &mut Entries,
        gone: &mut Entries,
    ) {
        for ip in &port.vips {
            if let Some(now) = bump(&mut self.vips, *ip, delta) {
                vips.push((*ip, now));
            }
        }
        for (set, ms) in &port.sets {
            for m in ms {
                match bump(&mut self.members, (*set, m.clone()), delta) {
                    Some(true) => sets::add(members, set, m.clone()),
                    Some(false) => sets::add(gone, set, m.clone()),
                    None => {}
                }
            }
        }
    }
}

/// Adds `delta` to `key`'s count; `Some(true)` when it became present, `Some(false)` when it
/// went away.
fn bump<K: Ord>(map: &mut BTreeMap<K, usize>, key: K, delta: isize) -> Option<bool> {
    let n = map.entry(key).or_insert(0);
    let before = *n;
    *n = n.saturating_add_signed(delta);
    let after = *n;
    match (before, after) {
        (0, a) if a > 0 => Some(true),
        (b, 0) if b > 0 => Some(false),
        _ => None,
    }
}

struct PerFamily<I> {
    cfg: IpvsConfig,
    ipt: I,
    programmed: Option<Programmed>,
}

type Labels = Vec<(&'static str, String)>;

/// What the syncs did: kube-proxy's IPVS-mode iptables metrics, and Sluice's own write count.
#[derive(Clone, Debug, Default)]
pub struct IpvsMetrics {
    /// IPVS netlink writes.
    pub writes: Counter,
    /// `sync_proxy_rules_iptables_total{table,ip_family}`: rules of the last restore.
    pub iptables_total: Family<Labels, Gauge>,
    /// `sync_proxy_rules_iptables_restore_failures_total{ip_family}`.
    pub restore_failures: Family<Labels, Counter>,
}

impl IpvsMetrics {
    /// Counts one `iptables-restore` of `input` for `family`, as kube-proxy's IPVS mode
    /// does: the rules per table when it went through, a failure when not.
    fn restored(&self, family: IpFamily, input: &str, ok: bool) {
        let fam = family.to_string();
        if !ok {
            (self.restore_failures)
                .get_or_create(&vec![("ip_family", fam)])
                .inc();
            return;
        }
        for table in Dump::parse(input).map(|d| d.tables).unwrap_or_default() {
            let n: usize = table.chains.iter().map(|c| c.rules.len()).sum();
            let labels = vec![("table", table.name), ("ip_family", fam.clone())];
            self.iptables_total.get_or_create(&labels).set(n as i64);
        }
    }
}

/// The IPVS backend over its kernel interfaces.
pub struct IpvsBackend<V, L, S, I> {
    ipvs: V,
    vips: L,
    ipset: S,
    families: BTreeMap<IpFamily, PerFamily<I>>,
    /// Real servers at weight 0 waiting for their connections to end.
    terminating: BTreeSet<(VsKey, RsKey)>,
    random_fully: bool,
    strict_arp: bool,
    /// `--ipvs-tcp-timeout`, `--ipvs-tcpfin-timeout`, `--ipvs-udp-timeout` in seconds.
    timeouts: (u32, u32, u32),
    metrics: IpvsMetrics,
}

impl<V, L, S, I> std::fmt::Debug for IpvsBackend<V, L, S, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsBackend")
            .field("families", &self.families.keys().collect::<Vec<_>>())
            .field("terminating", &self.terminating.len())
            .finish_non_exhaustive()
    }
}

impl<V: Ipvs, L: Vips, S: Ipset, I: Iptables> IpvsBackend<V, L, S, I> {
    /// A backend over these interfaces, one iptables and configuration per family.
    pub fn new(
        ipvs: V,
        vips: L,
        ipset: S,
        families: impl IntoIterator<Item = (I, IpvsConfig)>,
    ) -> Self {
        Self {
            ipvs,
            vips,
            ipset,
            families: (families.into_iter())
                .map(|(ipt, cfg)| {
                    (
                        cfg.family,
                        PerFamily {
                            cfg,
                            ipt,
                            programmed: None,
                        },
                    )
                })
                .collect(),
            terminating: BTreeSet::new(),
            random_fully: false,
            strict_arp: false,
            timeouts: (0, 0, 0),
            metrics: IpvsMetrics::default(),
        }
    }

    /// Uses `MASQUERADE --random-fully` (iptables ≥ 1.6.2).
    pub fn with_random_fully(mut self, on: bool) -> Self {
        self.random_fully = on;
        self
    }

    /// Sets the strict-ARP sysctls in [`Backend::init`].
    pub fn with_strict_arp(mut self, on: bool) -> Self {
        self.strict_arp = on;
        self
    }

    /// Sets IPVS's connection timeouts in [`Backend::init`] (TCP, TCP FIN, UDP; zero:
    /// unchanged), as kube-proxy does with `--ipvs-*-timeout`.
    pub fn with_timeouts(mut self, timeouts: (Duration, Duration, Duration)) -> Self {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        self.timeouts = (secs(timeouts.0), secs(timeouts.1), secs(timeouts.2));
        self
    }

    /// The IPVS interface (tests inspect the fake through it).
    pub fn ipvs(&mut self) -> &mut V {
        &mut self.ipvs
    }

    /// The dummy link interface.
    pub fn vips(&mut self) -> &mut L {
        &mut self.vips
    }

    /// The ipset interface.
    pub fn ipset(&mut self) -> &mut S {
        &mut self.ipset
    }

    /// Real servers waiting to be deleted.
    pub fn terminating(&self) -> &BTreeSet<(VsKey, RsKey)> {
        &self.terminating
    }

    /// The iptables interface of `family` (tests inspect the fake through it).
    pub fn iptables(&mut self, family: IpFamily) -> Option<&mut I> {
        self.families.get_mut(&family).map(|f| &mut f.ipt)
    }

    /// On start in iptables mode: everything of the IPVS mode except the chains both modes
    /// write (`crate::switch`) — virtual servers, `kube-ipvs0`, the IPVS-only chains and the
    /// rules leading to them or matching the sets, then the sets.
    pub fn remove_for_iptables_mode(&mut self) -> Result<(), BackendError> {
        let mut failed = self.remove_servers_and_link();
        for fam in self.families.values_mut() {
            match crate::switch::remove_ipvs_rules(&mut fam.ipt, fam.cfg.family) {
                Ok(r) if r != Default::default() => tracing::info!(
                    "removed the IPVS mode's {:?} rules: chains {:?}, {} rules",
                    fam.cfg.family,
                    r.chains,
                    r.rules
                ),
                Ok(_) => {}
                Err(e) => failed.push(format!("{:?} iptables: {e}", fam.cfg.family)),
            }
            fam.programmed = None;
        }
        // Only the sets that exist: this runs on every start in iptables mode, where there
        // are usually none (and an `ipset` program may be missing: then there are none).
        match self.ipset.save() {
            Ok(saved) => {
                let present: Vec<&str> = (saved.lines())
                    .filter_map(|l| l.strip_prefix("create "))
                    .filter_map(|l| l.split_whitespace().next())
                    .collect();
                failed.extend(self.destroy_sets_where(|name| present.contains(&name)));
            }
            Err(e) => tracing::debug!("no IPVS-mode sets to remove: {e}"),
        }
        cleanup_result(failed)
    }

    /// Deletes every virtual server of the families served and `kube-ipvs0`; what failed.
    fn remove_servers_and_link(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        let families: Vec<IpFamily> = self.families.keys().copied().collect();
        match self.ipvs.services() {
            Ok(all) => {
                for vs in all
                    .iter()
                    .filter(|v| families.iter().any(|f| f.contains(&v.key.addr)))
                {
                    if let Err(e) = self.ipvs.del_service(&vs.key)
                        && !e.is_not_found()
                    {
                        failed.push(e.to_string());
                    }
                }
            }
            Err(IpvsError::Unavailable(_)) => {}
            Err(e) => failed.push(e.to_string()),
        }
        self.terminating.clear();
        if let Err(e) = self.vips.delete_link() {
            failed.push(e.to_string());
        }
        failed
    }

    /// Destroys the sets of the families served (after the rules matching them went).
    fn destroy_sets(&mut self) -> Vec<String> {
        self.destroy_sets_where(|_| true)
    }

    /// Destroys the sets of the families served that `wanted` selects by name.
    fn destroy_sets_where(&mut self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut failed = Vec::new();
        let families: Vec<IpFamily> = self.families.keys().copied().collect();
        for family in families {
            for (set, _) in sets::ALL {
                let name = sets::name(set, family);
                if wanted(&name)
                    && let Err(e) = self.ipset.destroy(&name)
                {
                    failed.push(e.to_string());
                }
            }
        }
        failed
    }

    fn cfg(&self, family: IpFamily) -> Result<&IpvsConfig, BackendError> {
        (self.families.get(&family)).map(|f| &f.cfg).ok_or_else(|| {
            BackendError::apply(
                MODE,
                Outcome::Refused,
                format!("no IPVS configuration for {family:?}"),
            )
        })
    }

    fn sync(&mut self, snap: &Snapshot, changes: &Changes, full: bool) -> Result<(), BackendError> {
        let family = snap.family();
        self.cfg(family)?;
        let full = full || self.families[&family].programmed.is_none();
        let result = match full {
            true => self.full(snap),
            false => self.partial(snap, changes),
        };
        if result.is_err()
            && let Some(f) = self.families.get_mut(&family)
        {
            f.programmed = None;
        }
        result
    }

    /// Brings one virtual server to `want` with real servers `rs`, given what is there.
    fn converge_vs(
        &mut self,
        want: &VirtualServer,
        rs: &BTreeSet<RsKey>,
        have: Option<(&VirtualServer, Vec<RealServer>)>,
    ) -> Result<(), IpvsError> {
        let have_rs = match have {
            None => {
                self.ipvs.add_service(want)?;
                self.metrics.writes.inc();
                Vec::new()
            }
            Some((vs, rs)) => {
                if !vs.same(want) {
                    self.ipvs.edit_service(want)?;
                    self.metrics.writes.inc();
                }
                rs
            }
        };
        let key = want.key;
        let term = self.terminating.clone();
        let d = diff::real_servers(rs, &have_rs, |r| term.contains(&(key, *r)));
        for r in &d.add {
            self.ipvs
                .add_destination(&key, &RealServer::new(r.addr, r.port, 1))?;
            self.metrics.writes.inc();
        }
        for r in &d.reweight {
            self.ipvs
                .edit_destination(&key, &RealServer::new(r.addr, r.port, 1))?;
            self.terminating.remove(&(key, *r));
            self.metrics.writes.inc();
        }
        for r in &d.remove {
            self.remove_rs(&key, r)?;
        }
        Ok(())
    }

    /// TCP: weight 0 and onto the terminating list; UDP, SCTP: deleted now.
    fn remove_rs(&mut self, key: &VsKey, r: &RsKey) -> Result<(), IpvsError> {
        self.metrics.writes.inc();
        if key.protocol == TCP {
            self.ipvs
                .edit_destination(key, &RealServer::new(r.addr, r.port, 0))?;
            self.terminating.insert((*key, *r));
            return Ok(());
        }
        match self
            .ipvs
            .del_destination(key, &RealServer::new(r.addr, r.port, 0))
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    fn del_vs(&mut self, key: &VsKey) -> Result<(), IpvsError> {
        self.metrics.writes.inc();
        self.terminating.retain(|(vs, _)| vs != key);
        match self.ipvs.del_service(key) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    fn full(&mut self, snap: &Snapshot) -> Result<(), BackendError> {
        let family = snap.family();
        self.cfg(family)?;
        // The fixed parts: the link, the sets, the rules and their jumps.
        self.vips.ensure_link().map_err(apply_err)?;
        if self.families[&family].cfg.nodeport_all {
            let mut ips: Vec<IpAddr> = (self.vips.node_addresses().map_err(apply_err)?)
                .into_iter()
                .filter(|ip| family.contains(ip))
                .collect();
            ips.sort();
            ips.dedup();
            self.families
                .get_mut(&family)
                .expect("checked")
                .cfg
                .nodeport_ips = ips;
        }
        let cfg = self.cfg(family)?.clone();
        self.ipset
            .restore(&sets::creates(family))
            .map_err(apply_err)?;
        let fam = self.families.get_mut(&family).expect("checked");
        let input = rules::render(&cfg, self.random_fully);
        let restored = fam.ipt.restore(&input);
        self.metrics.restored(family, &input, restored.is_ok());
        restored.map_err(apply_err)?;
        rules::ensure_jumps(&mut fam.ipt).map_err(apply_err)?;

        let ports = render::render(&cfg, snap);
        let all = render::union(ports.values());
        let current: BTreeMap<VsKey, VirtualServer> = (self.ipvs.services().map_err(apply_err)?)
            .into_iter()
            .filter(|v| family.contains(&v.key.addr))
            .map(|v| (v.key, v))
            .collect();
        for (key, (vs, rs)) in &all.servers {
            let have = match current.get(key) {
                Some(v) => Some((v, self.ipvs.destinations(key).map_err(apply_err)?)),
                None => None,
            };
            self.converge_vs(vs, rs, have).map_err(apply_err)?;
        }
        for key in current.keys() {
            let excluded = cfg.exclude_cidrs.iter().any(|n| n.contains(&key.addr));
            if !all.servers.contains_key(key) && !excluded {
                self.del_vs(key).map_err(apply_err)?;
            }
        }
        let on_link = self.vips.addresses().map_err(apply_err)?;
        for ip in all.vips.difference(&on_link) {
            self.vips.add(*ip).map_err(apply_err)?;
        }
        for ip in on_link.iter().filter(|ip| family.contains(ip)) {
            if !all.vips.contains(ip) {
                self.vips.del(*ip).map_err(apply_err)?;
            }
        }
        let have = sets::parse_save(&self.ipset.save().map_err(apply_err)?, family);
        let delta = sets::delta(&all.sets, &have, family);
        if !delta.is_empty() {
            self.ipset.restore(&delta).map_err(apply_err)?;
        }
        let mut programmed = Programmed {
            servers: all.servers.clone(),
            ..Programmed::default()
        };
        let (mut v, mut m, mut g) = (Vec::new(), Entries::new(), Entries::new());
        for port in ports.values() {
            programmed.count(port, 1, &mut v, &mut m, &mut g);
        }
        programmed.ports = ports;
        self.families.get_mut(&family).expect("checked").programmed = Some(programmed);
        tracing::debug!(?family, servers = all.servers.len(), "ipvs full sync");
        Ok(())
    }

    fn partial(&mut self, snap: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        let family = snap.family();
        let cfg = self.cfg(family)?.clone();
        let mut prog = (self.families.get_mut(&family))
            .and_then(|f| f.programmed.take())
            .unwrap_or_default();
        let (mut vips, mut members, mut gone) = (Vec::new(), Entries::new(), Entries::new());
        let mut old_servers: BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)> = BTreeMap::new();
        let mut new_servers: BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)> = BTreeMap::new();
        for service in changes.services() {
            // The Service's ports are one range of the sorted map (unnamed TCP sorts first).
            let from = ServicePortName::new(&service, "", sluice_model::service::Protocol::Tcp);
            let old: Vec<ServicePortName> = (prog.ports.range(from..))
                .map(|(n, _)| n)
                .take_while(|n| n.namespace == service.namespace && n.name == service.name)
                .cloned()
                .collect();
            for name in old {
                if let Some(port) = prog.ports.remove(&name) {
                    prog.count(&port, -1, &mut vips, &mut members, &mut gone);
                    old_servers.extend(port.servers);
                }
            }
            for port in snap.ports_of(&service) {
                let r = render::render_port(&cfg, snap, &port.name);
                if r.servers.is_empty() {
                    continue;
                }
                prog.count(&r, 1, &mut vips, &mut members, &mut gone);
                new_servers.extend(r.servers.clone());
                prog.ports.insert(port.name.clone(), r);
            }
        }
        // A member (or address) a Service dropped and re-added in this sync did not change.
        for (set, ms) in members.iter_mut() {
            if let Some(g) = gone.get_mut(set) {
                let both: Vec<String> = ms.intersection(g).cloned().collect();
                for m in both {
                    ms.remove(&m);
                    g.remove(&m);
                }
            }
        }
        let mut net: BTreeMap<IpAddr, i32> = BTreeMap::new();
        for (ip, present) in &vips {
            *net.entry(*ip).or_default() += if *present { 1 } else { -1 };
        }
        let vips: Vec<(IpAddr, bool)> = (net.into_iter())
            .filter(|(_, n)| *n != 0)
            .map(|(ip, n)| (ip, n > 0))
            .collect();
        let result = self.program_partial(
            &mut prog,
            family,
            &old_servers,
            &new_servers,
            &vips,
            &members,
            &gone,
        );
        if result.is_ok() {
            self.families.get_mut(&family).expect("checked").programmed = Some(prog);
        }
        result
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, the parts of one partial sync"
    )]
    fn program_partial(
        &mut self,
        prog: &mut Programmed,
        family: IpFamily,
        old: &BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)>,
        new: &BTreeMap<VsKey, (VirtualServer, BTreeSet<RsKey>)>,
        vips: &[(IpAddr, bool)],
        members: &Entries,
        gone: &Entries,
    ) -> Result<(), BackendError> {
        for (key, (vs, rs)) in new {
            let have = prog.servers.get(key).map(|(v, rs)| {
                let mut list: Vec<RealServer> = rs
                    .iter()
                    .map(|r| RealServer::new(r.addr, r.port, 1))
                    .collect();
                list.extend(
                    (self.terminating.iter())
                        .filter(|(k, r)| k == key && !rs.contains(r))
                        .map(|(_, r)| RealServer::new(r.addr, r.port, 0)),
                );
                (v.clone(), list)
            });
            self.converge_vs(vs, rs, have.as_ref().map(|(v, l)| (v, l.clone())))
                .map_err(apply_err)?;
            prog.servers.insert(*key, (vs.clone(), rs.clone()));
        }
        for key in old.keys().filter(|k| !new.contains_key(k)) {
            let claimed = prog.ports.values().any(|p| p.servers.contains_key(key));
            if !claimed && prog.servers.remove(key).is_some() {
                self.del_vs(key).map_err(apply_err)?;
            }
        }
        let mut delta = String::new();
        let ips = sets::name(sets::IPVS_IPS, family);
        for (ip, present) in vips {
            match present {
                true => {
                    self.vips.add(*ip).map_err(apply_err)?;
                    delta.push_str(&format!("add {ips} {ip}\n"));
                }
                false => {
                    self.vips.del(*ip).map_err(apply_err)?;
                    delta.push_str(&format!("del {ips} {ip}\n"));
                }
            }
        }
        delta.push_str(&sets::delta(members, &Entries::new(), family));
        delta.push_str(&sets::delta(&Entries::new(), gone, family));
        if !delta.is_empty() {
            self.ipset.restore(&delta).map_err(apply_err)?;
        }
        Ok(())
    }

    /// Deletes terminating real servers that have no connections left (or are gone).
    pub fn sweep(&mut self) -> Result<usize, IpvsError> {
        let mut deleted = 0;
        let by_vs: BTreeSet<VsKey> = self.terminating.iter().map(|(k, _)| *k).collect();
        for key in by_vs {
            let dests = match self.ipvs.destinations(&key) {
                Ok(d) => d,
                Err(e) if e.is_not_found() => {
                    self.terminating.retain(|(k, _)| *k != key);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let waiting: Vec<RsKey> = (self.terminating.iter())
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| *r)
                .collect();
            for r in waiting {
                match dests.iter().find(|d| d.key == r) {
                    None => {
                        self.terminating.remove(&(key, r));
                    }
                    Some(d) if d.active + d.inactive == 0 => {
                        match self.ipvs.del_destination(&key, d) {
                            Err(e) if !e.is_not_found() => return Err(e),
                            _ => {}
                        }
                        self.terminating.remove(&(key, r));
                        deleted += 1;
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(deleted)
    }
}

impl<V: Ipvs, L: Vips, S: Ipset, I: Iptables> Backend for IpvsBackend<V, L, S, I> {
    fn mode(&self) -> ProxyMode {
        MODE
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        let cfg = self.cfg(snapshot.family())?;
        let all = render::union(render::render(cfg, snapshot).values());
        Ok(render::text(&all) + &rules::render(cfg, self.random_fully))
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        self.sync(snapshot, changes, false)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        self.sync(snapshot, changes, true)
    }

    /// Every virtual server of the families served, `kube-ipvs0`, the sets and the rules.
    fn cleanup(&mut self) -> Result<(), BackendError> {
        let mut failed = self.remove_servers_and_link();
        for fam in self.families.values_mut() {
            if let Err(e) = rules::cleanup(&mut fam.ipt) {
                failed.push(format!("{:?} iptables: {e}", fam.cfg.family));
            }
            fam.programmed = None;
        }
        failed.extend(self.destroy_sets());
        cleanup_result(failed)
    }

    fn init(&mut self) -> Result<(), BackendError> {
        let init = |e: Box<dyn std::error::Error + Send + Sync>| BackendError::Init {
            mode: MODE,
            source: e,
        };
        crate::sysctl::set_all(self.strict_arp).map_err(|e| init(e.into()))?;
        let (tcp, fin, udp) = self.timeouts;
        if (tcp, fin, udp) != (0, 0, 0) {
            self.ipvs
                .set_timeouts(tcp, fin, udp)
                .map_err(|e| init(e.into()))?;
        }
        Ok(())
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(GRACEFUL_CHECK)
    }

    fn tick(&mut self) -> Result<Tick, BackendError> {
        match self.sweep() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "terminated real servers deleted"),
            Err(e) => return Err(apply_err(e)),
        }
        Ok(Tick::default())
    }

    fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "sync_proxy_rules_ipvs_writes",
            "IPVS virtual and real server writes made by syncs (Sluice)",
            m.writes.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.iptables_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.restore_failures.clone(),
        );
    }
}
