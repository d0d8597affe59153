//! `--proxy-mode ebpf`: the [`Backend`] over an engine that remembers, per Service port, the
//! entries it programmed, and one [`MapIo`] (the kernel maps, or [`crate::FakeMaps`]).
//!
//! A partial apply renders only the changed ports and writes only their differences (O(the
//! change)); a full apply reads the maps back first, so drift (an entry someone deleted, a
//! restart adopting pinned maps) is repaired by diff, never by a flush.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_ebpf_common::stats;
use sluice_model::service::{IpFamily, ServicePortName};
use sluice_proxy_core::backend::{Backend, BackendError, Outcome, ProxyMode, Tick};
use sluice_proxy_core::{Changes, Snapshot};

use crate::diff::{Op, diff, order};
use crate::io::MapIo;
use crate::render::{Ids, MapSet, RenderConfig, render, render_port, union};

/// How often the programs' attachment is checked between syncs.
const TICK: Duration = Duration::from_secs(2);

/// The eBPF backend over map I/O `M`.
pub struct EbpfBackend<M> {
    io: M,
    cfg: RenderConfig,
    ids: Ids,
    /// Per port, what it programmed.
    ports: BTreeMap<ServicePortName, MapSet>,
    /// How many ports hold each service key.
    claims: BTreeMap<sluice_ebpf_common::ServiceKey, u32>,
    /// Slots programmed.
    slot_count: usize,
    /// Whether the engine's record matches the maps (false until the first full apply, and
    /// after a failed one).
    synced: bool,
    failures: Counter,
    writes: Counter,
    entries: Family<Vec<(String, String)>, Gauge>,
    dataplane: Family<Vec<(String, String)>, Gauge>,
}

impl<M> std::fmt::Debug for EbpfBackend<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfBackend")
            .field("ports", &self.ports.len())
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

impl<M: MapIo> EbpfBackend<M> {
    /// A backend writing through `io`, rendering with `cfg`.
    pub fn new(io: M, cfg: RenderConfig) -> Self {
        Self {
            io,
            cfg,
            ids: Ids::default(),
            ports: BTreeMap::new(),
            claims: BTreeMap::new(),
            slot_count: 0,
            synced: false,
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

    /// What the engine believes is programmed.
    pub fn programmed(&self) -> MapSet {
        union(self.ports.values())
    }

    fn write(&mut self, mut ops: Vec<Op>) -> Result<(), BackendError> {
        order(&mut ops);
        self.writes.inc_by(ops.len() as u64);
        self.io.apply(&ops).map_err(|e| {
            self.failures.inc();
            self.synced = false;
            BackendError::apply(ProxyMode::Ebpf, Outcome::Unknown, e)
        })?;
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        let set = |map: &str, n: usize| {
            let labels = vec![("map".to_owned(), map.to_owned())];
            self.entries.get_or_create(&labels).set(n as i64);
        };
        set("services", self.claims.len());
        set("slots", self.slot_count);
    }

    fn full(&mut self, snapshot: &Snapshot) -> Result<(), BackendError> {
        let have = self.io.dump().map_err(|e| {
            self.failures.inc();
            BackendError::apply(ProxyMode::Ebpf, Outcome::Refused, e)
        })?;
        if self.ids.is_empty() {
            // Adopted maps (a restart): new ids never reuse ones the old entries still use.
            self.ids.start_above(
                have.services
                    .values()
                    .map(|v| v.service_id)
                    .max()
                    .unwrap_or(0),
            );
        }
        let want = render(&self.cfg, snapshot, &mut self.ids);
        for gone in self.ports.keys().filter(|p| !want.contains_key(*p)) {
            self.ids.release(gone, &[]);
        }
        let all = union(want.values());
        let ops = diff(&all, &have);
        let n = ops.len();
        self.claims.clear();
        for set in want.values() {
            for k in set.services.keys() {
                *self.claims.entry(*k).or_default() += 1;
            }
        }
        self.slot_count = all.slots.len();
        self.ports = want;
        self.write(ops)?;
        self.synced = true;
        tracing::debug!(writes = n, ports = self.ports.len(), "ebpf full sync");
        Ok(())
    }

    fn partial(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        let mut ops = Vec::new();
        for name in &changes.ports {
            let old = self.ports.remove(name).unwrap_or_default();
            let new = render_port(&self.cfg, snapshot, name, &mut self.ids);
            self.port_ops(&old, &new, &mut ops);
            if new.is_empty() {
                self.ids.release(name, &[]);
            } else {
                self.ports.insert(name.clone(), new);
            }
        }
        let n = ops.len();
        self.write(ops)?;
        tracing::debug!(writes = n, ports = changes.ports.len(), "ebpf partial sync");
        Ok(())
    }

    /// One port's change from `old` to `new`. A service key several ports hold (a ClusterIP's
    /// wildcard entry, an address two Services claim) is deleted only with its last holder.
    fn port_ops(&mut self, old: &MapSet, new: &MapSet, ops: &mut Vec<Op>) {
        for (k, v) in &new.services {
            if old.services.get(k) == Some(v) {
                continue;
            }
            if !old.services.contains_key(k) {
                *self.claims.entry(*k).or_default() += 1;
            }
            ops.push(Op::PutService(*k, *v));
        }
        for k in old
            .services
            .keys()
            .filter(|k| !new.services.contains_key(*k))
        {
            let left = self.claims.get_mut(k).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left.unwrap_or(0) == 0 {
                self.claims.remove(k);
                ops.push(Op::DeleteService(*k));
            }
        }
        let slot_ops = diff(
            &MapSet {
                slots: new.slots.clone(),
                ranges: new.ranges.clone(),
                ..MapSet::default()
            },
            &MapSet {
                slots: old.slots.clone(),
                ranges: old.ranges.clone(),
                ..MapSet::default()
            },
        );
        self.slot_count = (self.slot_count + new.slots.len()).saturating_sub(old.slots.len());
        ops.extend(slot_ops);
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
        if snapshot.family() != IpFamily::V4 {
            return Ok(());
        }
        if !self.synced {
            return self.full(snapshot);
        }
        let _span = tracing::debug_span!("ebpf_sync", full = false).entered();
        self.partial(snapshot, changes)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, _changes: &Changes) -> Result<(), BackendError> {
        if snapshot.family() != IpFamily::V4 {
            return Ok(());
        }
        let _span = tracing::debug_span!("ebpf_sync", full = true).entered();
        self.full(snapshot)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.ports.clear();
        self.synced = false;
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
        if !self.synced {
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
            "Single-entry writes to the service and slot maps",
            self.writes.clone(),
        );
        registry.register(
            "sync_proxy_rules_ebpf_map_entries",
            "Entries programmed, by map",
            self.entries.clone(),
        );
        registry.register(
            "ebpf_socket_lb_events",
            "Socket-LB events counted by the programs (sum over CPUs), by event",
            self.dataplane.clone(),
        );
    }
}

/// The maps as text (`render`, debugging): one line per service entry with its backends.
pub fn dump_text(all: &MapSet) -> String {
    let mut out = String::new();
    for (k, v) in &all.services {
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
                    all.slots
                        .get(&key)
                        .map_or("?".to_owned(), |b| b.socket_addr().to_string())
                })
                .collect();
            backends.join(" ")
        };
        let affinity = match v.flags & sluice_ebpf_common::service_flags::AFFINITY {
            0 => String::new(),
            _ => format!(" affinity {}s", v.affinity_timeout),
        };
        let _ = writeln!(
            out,
            "{}/{} id {}: {what}{affinity}",
            k.socket_addr(),
            k.proto,
            v.service_id
        );
    }
    out
}
