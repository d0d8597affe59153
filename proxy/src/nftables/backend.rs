//! `--proxy-mode nftables`: the [`Backend`] over [`NftState`] and one [`NftKernel`] (netlink
//! in production, `FakeNft` in unit tests). A partial apply sends only the changed owners'
//! operations; a full apply reads the table back first, so drift (a deleted table, a flushed
//! chain, a removed element) is repaired and a restart adopts what is there without a flush.
//! After UDP Service changes, conntrack entries that would keep sending datagrams to a gone
//! endpoint — or past a Service that just got endpoints — are deleted, as kube-proxy does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sluice_model::service::{IpFamily, Protocol, ServicePortName};
use sluice_nft::conntrack::FlowFilter;
use sluice_nft::{Family, NftKernel, Op, Transaction};

use super::ctx::{NftConfig, TABLE};
use super::desired::Desired;
use super::kernel_view::view;
use super::state::{NftState, summary};
use crate::backend::{Backend, BackendError, ProxyMode};
use crate::{Changes, Snapshot};

/// Deletes conntrack entries (the ctnetlink chokepoint; a no-op in unit tests).
pub trait ConntrackCleaner: Send {
    /// Deletes the flows matching `filter`; how many went.
    fn delete(&mut self, filter: &FlowFilter) -> Result<usize, String>;
}

impl ConntrackCleaner for sluice_nft::conntrack::Conntrack {
    fn delete(&mut self, filter: &FlowFilter) -> Result<usize, String> {
        sluice_nft::conntrack::Conntrack::delete(self, filter).map_err(|e| e.to_string())
    }
}

/// Forgets every request (tests without a kernel).
#[derive(Debug, Default)]
pub struct NoConntrack;

impl ConntrackCleaner for NoConntrack {
    fn delete(&mut self, _: &FlowFilter) -> Result<usize, String> {
        Ok(0)
    }
}

/// What UDP flows of one port may point at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct UdpPort {
    vips: Vec<IpAddr>,
    port: u16,
    endpoints: BTreeSet<IpAddr>,
}

/// The nftables backend for both families.
pub struct NftablesBackend<K, C = NoConntrack> {
    kernel: K,
    conntrack: C,
    states: BTreeMap<Family, NftState>,
    udp: BTreeMap<(Family, ServicePortName), UdpPort>,
}

impl<K: NftKernel + Send, C: ConntrackCleaner> NftablesBackend<K, C> {
    /// A backend rendering with `configs` (one per family it serves).
    pub fn new(kernel: K, conntrack: C, configs: impl IntoIterator<Item = NftConfig>) -> Self {
        Self {
            kernel,
            conntrack,
            states: configs
                .into_iter()
                .map(|c| (c.family, NftState::new(c)))
                .collect(),
            udp: BTreeMap::new(),
        }
    }

    /// The kernel handle (tests inspect the fake through it).
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// What is believed programmed for `family`.
    pub fn programmed(&self, family: Family) -> Option<Desired> {
        self.states.get(&family).map(NftState::programmed)
    }

    fn state(&mut self, snap: &Snapshot) -> Result<(Family, &mut NftState), BackendError> {
        let family = family_of(snap.family());
        match self.states.get_mut(&family) {
            Some(s) => Ok((family, s)),
            None => Err(apply_err(format!(
                "no nftables configuration for {family:?}"
            ))),
        }
    }

    fn apply_with(
        &mut self,
        snap: &Snapshot,
        changes: &Changes,
        full: bool,
    ) -> Result<(), BackendError> {
        let (family, _) = self.state(snap)?;
        let kernel_view = if full {
            let table = self
                .kernel
                .read_table(family, TABLE)
                .map_err(|e| apply_err(e.to_string()))?;
            Some(table)
        } else {
            None
        };
        let (_, state) = self.state(snap)?;
        let pending = match kernel_view {
            Some(table) => state.plan_full_against(snap, |want| {
                table.map(|t| view(family, &t, want)).unwrap_or_default()
            }),
            None => state.plan_partial(snap, changes),
        };
        for w in &pending.warnings {
            tracing::warn!("{w}");
        }
        let counts = summary(&pending.tx);
        if !pending.is_empty() {
            self.kernel
                .apply(&pending.tx)
                .map_err(|e| apply_err(e.to_string()))?;
        }
        tracing::debug!(
            ?family,
            full,
            ops = pending.len(),
            ?counts,
            "nftables transaction applied"
        );
        let (_, state) = self.state(snap)?;
        pending.commit(state);
        self.clear_udp_flows(family, snap, changes, full);
        Ok(())
    }

    /// kube-proxy's UDP conntrack cleanup: flows to a removed endpoint, and every flow to a
    /// port that had no endpoint (those were black-holed into a stale entry).
    fn clear_udp_flows(&mut self, family: Family, snap: &Snapshot, changes: &Changes, full: bool) {
        let names: Vec<ServicePortName> = if full {
            snap.service_ports()
                .map(|p| p.name.clone())
                .chain(
                    self.udp
                        .keys()
                        .filter(|(f, _)| *f == family)
                        .map(|(_, n)| n.clone()),
                )
                .collect()
        } else {
            changes.ports.iter().cloned().collect()
        };
        for name in names {
            if name.protocol != Protocol::Udp {
                continue;
            }
            let now = udp_port(snap, &name);
            let before = self.udp.remove(&(family, name.clone()));
            for f in stale_filters(before.as_ref(), now.as_ref()) {
                if let Err(e) = self.conntrack.delete(&f) {
                    tracing::warn!("conntrack cleanup for {name:?}: {e}");
                }
            }
            if let Some(now) = now {
                self.udp.insert((family, name), now);
            }
        }
    }
}

fn udp_port(snap: &Snapshot, name: &ServicePortName) -> Option<UdpPort> {
    let port = snap.service_port(name)?;
    let cat = snap.categorize(name)?;
    Some(UdpPort {
        vips: port
            .cluster_ips
            .iter()
            .chain(&port.external_ips)
            .chain(&port.load_balancer_vips)
            .copied()
            .collect(),
        port: port.port,
        endpoints: cat.all_reachable.iter().map(|e| e.ip).collect(),
    })
}

fn stale_filters(before: Option<&UdpPort>, now: Option<&UdpPort>) -> Vec<FlowFilter> {
    let Some(before) = before else {
        // A port seen for the first time: entries made while it did not exist are stale.
        return now
            .filter(|n| !n.endpoints.is_empty())
            .map(|n| {
                n.vips
                    .iter()
                    .map(|v| FlowFilter::udp_to(*v).port(n.port))
                    .collect()
            })
            .unwrap_or_default();
    };
    let mut out = Vec::new();
    let now_eps = now.map(|n| &n.endpoints);
    for ep in &before.endpoints {
        if now_eps.is_none_or(|e| !e.contains(ep)) {
            out.extend(
                before
                    .vips
                    .iter()
                    .map(|v| FlowFilter::udp_to(*v).port(before.port).reply_from(*ep)),
            );
        }
    }
    if let Some(now) = now
        && before.endpoints.is_empty()
        && !now.endpoints.is_empty()
    {
        out.extend(
            now.vips
                .iter()
                .map(|v| FlowFilter::udp_to(*v).port(now.port)),
        );
    }
    out
}

fn family_of(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

fn apply_err(reason: String) -> BackendError {
    BackendError::Apply {
        mode: ProxyMode::Nftables,
        reason,
    }
}

impl<K: NftKernel + Send, C: ConntrackCleaner> Backend for NftablesBackend<K, C> {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }

    fn render(&self, snapshot: &Snapshot, _changes: &Changes) -> Result<String, BackendError> {
        let family = family_of(snapshot.family());
        let cfg = self
            .states
            .get(&family)
            .map(|s| s.config().clone())
            .ok_or_else(|| apply_err(format!("no nftables configuration for {family:?}")))?;
        let mut fresh = NftState::new(cfg);
        let pending = fresh.plan_full(snapshot, Some(Desired::default()));
        Ok(sluice_nft::text::script(&pending.tx))
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        self.apply_with(snapshot, changes, false)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        self.apply_with(snapshot, changes, true)
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        for family in [Family::Ip, Family::Ip6] {
            let exists = self
                .kernel
                .read_table(family, TABLE)
                .map_err(|e| cleanup_err(e.to_string()))?
                .is_some();
            if exists {
                let mut tx = Transaction::new(family, TABLE);
                tx.push(Op::DeleteTable);
                self.kernel
                    .apply(&tx)
                    .map_err(|e| cleanup_err(e.to_string()))?;
            }
        }
        for state in self.states.values_mut() {
            *state = NftState::new(state.config().clone());
        }
        self.udp.clear();
        Ok(())
    }
}

fn cleanup_err(reason: String) -> BackendError {
    BackendError::Cleanup {
        mode: ProxyMode::Nftables,
        reason,
    }
}

impl<K, C> std::fmt::Debug for NftablesBackend<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesBackend")
            .field("families", &self.states.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
