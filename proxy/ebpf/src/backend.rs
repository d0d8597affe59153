//! `--proxy-mode ebpf`: the [`Backend`] over an engine that remembers, per Service port, the
//! entries it programmed, and one [`MapIo`] (the kernel maps, or [`crate::FakeMaps`]).
//!
//! A partial apply renders only the changed ports and writes only their differences (O(the
//! change)); a full apply reads the maps back first, so drift (an entry someone deleted, a
//! restart adopting pinned maps) is repaired by diff, never by a flush.
//!
//! The shared core hands a dual-stack cluster over as one snapshot per family (as nftables
//! gets one for `ip` and one for `ip6`): each family keeps its own record — service ids,
//! ports, claims, whether it is synced — and a full sync of one family reads back and
//! repairs only that family's maps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_ebpf_common::{ServiceKey, ServiceKey6, stats};
use sluice_model::service::{IpFamily, ServicePortName};
use sluice_proxy_core::backend::{Backend, BackendError, Outcome, ProxyMode, Tick};
use sluice_proxy_core::{Changes, Snapshot};

use crate::diff::{Op, diff, order};
use crate::io::MapIo;
use crate::render::{Ids, MapSet, RenderConfig, render, render_port, union};

/// How often the programs' attachment is checked between syncs.
const TICK: Duration = Duration::from_secs(2);

/// One address family's record of what it programmed.
#[derive(Debug, Default)]
struct FamilyState {
    ids: Ids,
    /// Per port, what it programmed.
    ports: BTreeMap<ServicePortName, MapSet>,
    /// How many ports hold each service key.
    claims: BTreeMap<ServiceKey, u32>,
    /// The same for IPv6 keys.
    claims6: BTreeMap<ServiceKey6, u32>,
    /// Slots programmed.
    slot_count: usize,
    /// Whether the record matches the maps (false until the first full apply, and after a
    /// failed one).
    synced: bool,
}

impl FamilyState {
    /// One port's change from `old` to `new`. A service key several ports hold (a ClusterIP's
    /// wildcard entry, an address two Services claim) is deleted only with its last holder.
    fn port_ops(&mut self, old: &MapSet, new: &MapSet, ops: &mut Vec<Op>) {
        claimed(
            &mut self.claims,
            &old.services,
            &new.services,
            (Op::PutService, Op::DeleteService),
            ops,
        );
        claimed(
            &mut self.claims6,
            &old.services6,
            &new.services6,
            (Op::PutService6, Op::DeleteService6),
            ops,
        );
        let slot_ops = diff(
            &MapSet {
                slots: new.slots.clone(),
                slots6: new.slots6.clone(),
                ranges: new.ranges.clone(),
                ..MapSet::default()
            },
            &MapSet {
                slots: old.slots.clone(),
                slots6: old.slots6.clone(),
                ranges: old.ranges.clone(),
                ..MapSet::default()
            },
        );
        let (new_n, old_n) = (
            new.slots.len() + new.slots6.len(),
            old.slots.len() + old.slots6.len(),
        );
        self.slot_count = (self.slot_count + new_n).saturating_sub(old_n);
        ops.extend(slot_ops);
    }

    /// Recounts the claims and slots of `ports`.
    fn recount(&mut self) {
        self.claims.clear();
        self.claims6.clear();
        self.slot_count = 0;
        for set in self.ports.values() {
            for k in set.services.keys() {
                *self.claims.entry(*k).or_default() += 1;
            }
            for k in set.services6.keys() {
                *self.claims6.entry(*k).or_default() += 1;
            }
        }
        let all = union(self.ports.values());
        self.slot_count = all.slots.len() + all.slots6.len();
    }
}

/// The puts and deletes of one service map's change from `old` to `new`, counting holders in
/// `claims`: a key is deleted only when its last holder lets go.
fn claimed<K: Ord + Copy>(
    claims: &mut BTreeMap<K, u32>,
    old: &BTreeMap<K, sluice_ebpf_common::ServiceValue>,
    new: &BTreeMap<K, sluice_ebpf_common::ServiceValue>,
    (put, delete): (
        impl Fn(K, sluice_ebpf_common::ServiceValue) -> Op,
        impl Fn(K) -> Op,
    ),
    ops: &mut Vec<Op>,
) {
    for (k, v) in new {
        if old.get(k) == Some(v) {
            continue;
        }
        if !old.contains_key(k) {
            *claims.entry(*k).or_default() += 1;
        }
        ops.push(put(*k, *v));
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        let left = claims.get_mut(k).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left.unwrap_or(0) == 0 {
            claims.remove(k);
            ops.push(delete(*k));
        }
    }
}

/// The eBPF backend over map I/O `M`.
pub struct EbpfBackend<M> {
    io: M,
    cfg: RenderConfig,
    v4: FamilyState,
    v6: FamilyState,
    failures: Counter,
    writes: Counter,
    entries: Family<Vec<(String, String)>, Gauge>,
    dataplane: Family<Vec<(String, String)>, Gauge>,
}

impl<M> std::fmt::Debug for EbpfBackend<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfBackend")
            .field("ports", &self.v4.ports.len())
            .field("ports6", &self.v6.ports.len())
            .field("synced", &self.v4.synced)
            .field("synced6", &self.v6.synced)
            .finish_non_exhaustive()
    }
}

impl<M: MapIo> EbpfBackend<M> {
    /// A backend writing through `io`, rendering with `cfg`.
    pub fn new(io: M, cfg: RenderConfig) -> Self {
        Self {
            io,
            cfg,
            v4: FamilyState::default(),
            v6: FamilyState::default(),
            failures: Counter::default(),
            writes: Counter::default(),
            entries: Family::default(),
            dataplane: Family::default(),
        }
    }

    /// The map I/O (tests inspect the fake through it).
    pub fn io(&mut self) -> &mut M {
        &mut self.io
    }

    /// What the engine believes is programmed, both families.
    pub fn programmed(&self) -> MapSet {
        union(self.v4.ports.values().chain(self.v6.ports.values()))
    }

    fn state(&mut self, family: IpFamily) -> &mut FamilyState {
        match family {
            IpFamily::V4 => &mut self.v4,
            IpFamily::V6 => &mut self.v6,
        }
    }

    fn write(&mut self, family: IpFamily, mut ops: Vec<Op>) -> Result<(), BackendError> {
        order(&mut ops);
        self.writes.inc_by(ops.len() as u64);
        if let Err(e) = self.io.apply(&ops) {
            self.failures.inc();
            self.state(family).synced = false;
            return Err(BackendError::apply(ProxyMode::Ebpf, Outcome::Unknown, e));
        }
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        let set = |map: &str, n: usize| {
            let labels = vec![("map".to_owned(), map.to_owned())];
            self.entries.get_or_create(&labels).set(n as i64);
        };
        set("services", self.v4.claims.len());
        set("slots", self.v4.slot_count);
        set("services6", self.v6.claims6.len());
        set("slots6", self.v6.slot_count);
    }

    fn full(&mut self, snapshot: &Snapshot) -> Result<(), BackendError> {
        let family = snapshot.family();
        let have = match self.io.dump(family) {
            Ok(have) => have.of_family(family),
            Err(e) => {
                self.failures.inc();
                return Err(BackendError::apply(ProxyMode::Ebpf, Outcome::Refused, e));
            }
        };
        let cfg = self.cfg.clone();
        let state = self.state(family);
        if state.ids.is_empty() {
            // Adopted maps (a restart): new ids never reuse ones the old entries still use.
            state.ids.start_above(have.ids(family).max().unwrap_or(0));
        }
        let want = render(&cfg, snapshot, &mut state.ids);
        for gone in state.ports.keys().filter(|p| !want.contains_key(*p)) {
            state.ids.release(gone, &[]);
        }
        let ops = diff(&union(want.values()), &have);
        let n = ops.len();
        state.ports = want;
        state.recount();
        self.write(family, ops)?;
        let state = self.state(family);
        state.synced = true;
        tracing::debug!(
            ?family,
            writes = n,
            ports = state.ports.len(),
            "ebpf full sync"
        );
        Ok(())
    }

    fn partial(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        let family = snapshot.family();
        let cfg = self.cfg.clone();
        let state = self.state(family);
        let mut ops = Vec::new();
        for name in &changes.ports {
            let old = state.ports.remove(name).unwrap_or_default();
            let new = render_port(&cfg, snapshot, name, &mut state.ids);
            state.port_ops(&old, &new, &mut ops);
            if new.is_empty() {
                state.ids.release(name, &[]);
            } else {
                state.ports.insert(name.clone(), new);
            }
        }
        let n = ops.len();
        self.write(family, ops)?;
        tracing::debug!(
            ?family,
            writes = n,
            ports = changes.ports.len(),
            "ebpf partial sync"
        );
        Ok(())
    }
}

impl<M: MapIo> Backend for EbpfBackend<M> {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Ebpf
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        let mut ids = Ids::default();
        let all = union(render(&self.cfg, snapshot, &mut ids).values());
        Ok(dump_text(&all))
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        if !self.state(snapshot.family()).synced {
            return self.full(snapshot);
        }
        let _span = tracing::debug_span!("ebpf_sync", full = false).entered();
        self.partial(snapshot, changes)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, _changes: &Changes) -> Result<(), BackendError> {
        let _span = tracing::debug_span!("ebpf_sync", full = true).entered();
        self.full(snapshot)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.v4 = FamilyState::default();
        self.v6 = FamilyState::default();
        self.io
            .cleanup()
            .map_err(|e| BackendError::cleanup(ProxyMode::Ebpf, e))
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self) -> Result<Tick, BackendError> {
        let counters = self.io.counters();
        for (i, name) in stats::NAMES.iter().enumerate() {
            let labels = vec![("event".to_owned(), (*name).to_owned())];
            let v = counters.get(i).copied().unwrap_or(0);
            self.dataplane
                .get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if !self.v4.synced && !self.v6.synced {
            return Ok(Tick::default());
        }
        let reattached = self.io.ensure_attached().map_err(|e| BackendError::Init {
            mode: ProxyMode::Ebpf,
            source: e.into(),
        })?;
        if reattached > 0 {
            tracing::warn!(
                reattached,
                "eBPF programs were detached behind our back: re-attached"
            );
        }
        Ok(Tick::default())
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sync_proxy_rules_ebpf_sync_failures",
            "eBPF map writes that failed",
            self.failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_ebpf_map_writes",
            "Single-entry writes to the service and slot maps (both families)",
            self.writes.clone(),
        );
        registry.register(
            "sync_proxy_rules_ebpf_map_entries",
            "Entries programmed, by map (services, slots, services6, slots6)",
            self.entries.clone(),
        );
        registry.register(
            "ebpf_socket_lb_events",
            "Socket-LB events counted by the programs (sum over CPUs), by event",
            self.dataplane.clone(),
        );
    }
}

/// The maps as text (`render`, debugging): one line per service entry with its backends,
/// IPv4 first, then IPv6.
pub fn dump_text(all: &MapSet) -> String {
    let mut out = String::new();
    let lines = (all.services.iter())
        .map(|(k, v)| (std::net::SocketAddr::V4(k.socket_addr()), k.proto, v, false))
        .chain(
            (all.services6.iter())
                .map(|(k, v)| (std::net::SocketAddr::V6(k.socket_addr()), k.proto, v, true)),
        );
    for (addr, proto, v, v6) in lines {
        let what = if v.flags & sluice_ebpf_common::service_flags::REJECT != 0 {
            "reject".to_owned()
        } else if v.backend_count == 0 {
            "drop".to_owned()
        } else {
            let backends: Vec<String> = (1..=u32::from(v.backend_count))
                .map(|slot| {
                    let key = sluice_ebpf_common::SlotKey {
                        service_id: v.service_id,
                        slot,
                    };
                    all.backend(v6, &key)
                        .map_or("?".to_owned(), |b| b.to_string())
                })
                .collect();
            backends.join(" ")
        };
        let affinity = match v.flags & sluice_ebpf_common::service_flags::AFFINITY {
            0 => String::new(),
            _ => format!(" affinity {}s", v.affinity_timeout),
        };
        let _ = writeln!(out, "{addr}/{proto} id {}: {what}{affinity}", v.service_id);
    }
    out
}
