//! `--proxy-mode nftables`: the [`Backend`] over [`NftState`] and one [`NftKernel`] (netlink
//! in production, `FakeNft` in unit tests). A partial apply sends only the changed owners'
//! operations; a full apply reads the table back first, so drift (a deleted table, a flushed
//! chain, a removed element) is repaired and a restart adopts what is there without a flush.
//! After each sync the UDP flows of the ports it looked at are reconciled with one conntrack
//! dump, as kube-proxy's reconciler does (see [`UdpScope`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sluice_model::service::{IpFamily, Protocol, ServicePort};
use sluice_nft::conntrack::{Conntrack, FlowKey};
use sluice_nft::{Family, NftError, NftKernel, Op, Proto, Transaction};

use super::ctx::{NftConfig, TABLE};
use super::desired::Desired;
use super::kernel_view::view;
use super::state::{NftState, summary};
use crate::backend::{Backend, BackendError, ProxyMode};
use crate::{Changes, Snapshot};

/// Deletes conntrack entries (the ctnetlink chokepoint; a no-op in unit tests).
pub trait ConntrackCleaner: Send {
    /// Deletes every flow of `family` that `stale` picks, with one dump; how many went.
    fn delete_where(
        &mut self,
        family: Family,
        stale: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, NftError>;
}

impl ConntrackCleaner for Conntrack {
    fn delete_where(
        &mut self,
        family: Family,
        stale: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, NftError> {
        Conntrack::delete_where(self, family, stale)
    }
}

/// Forgets every request (tests without a kernel).
#[derive(Debug, Default)]
pub struct NoConntrack;

impl ConntrackCleaner for NoConntrack {
    fn delete_where(&mut self, _: Family, _: &dyn Fn(&FlowKey) -> bool) -> Result<usize, NftError> {
        Ok(0)
    }
}

/// kube-proxy's UDP conntrack reconciliation for the ports a sync looked at: a flow sent to
/// one of their service addresses (or node ports) whose reply does not come from a serving
/// endpoint of the port is stale — DNATed to a gone endpoint, or never DNATed
/// because it arrived while there was none — and is deleted. Flows to current endpoints are
/// left alone, so a restart (whose first sync looks at every port) breaks none.
#[derive(Debug, Default)]
struct UdpScope {
    vips: HashMap<(IpAddr, u16), BTreeSet<IpAddr>>,
    node_ports: HashMap<u16, BTreeSet<IpAddr>>,
}

impl UdpScope {
    fn add(&mut self, dest: UdpDest, allowed: &BTreeSet<IpAddr>) {
        let (addr, port) = dest;
        let set = match addr {
            Some(ip) => self.vips.entry((ip, port)).or_default(),
            None => self.node_ports.entry(port).or_default(),
        };
        set.extend(allowed);
    }

    fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.node_ports.is_empty()
    }

    fn stale(&self, f: &FlowKey) -> bool {
        let Some(port) = f.orig_dst_port.filter(|_| f.proto == Proto::Udp.number()) else {
            return false;
        };
        let allowed = f
            .orig_dst
            .and_then(|d| self.vips.get(&(d, port)))
            .or_else(|| self.node_ports.get(&port));
        allowed.is_some_and(|a| f.reply_src.is_none_or(|r| !a.contains(&r)))
    }
}

/// The nftables backend for both families.
pub struct NftablesBackend<K, C = NoConntrack> {
    kernel: K,
    conntrack: C,
    states: BTreeMap<Family, NftState>,
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
        // Ports that go away: where their flows went, from what is programmed for them.
        let removed: Vec<UdpDest> = changes
            .ports
            .iter()
            .filter(|n| n.protocol == Protocol::Udp && snap.service_port(n).is_none())
            .flat_map(|n| state.udp_destinations(n))
            .collect();
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
        self.clear_udp_flows(family, snap, changes, full, removed);
        Ok(())
    }

    /// Deletes the stale UDP flows of the ports this sync looked at (all on a full sync)
    /// and of the ports it removed, with one conntrack dump.
    fn clear_udp_flows(
        &mut self,
        family: Family,
        snap: &Snapshot,
        changes: &Changes,
        full: bool,
        removed: Vec<UdpDest>,
    ) {
        let mut scope = UdpScope::default();
        let none = BTreeSet::new();
        for dest in removed {
            scope.add(dest, &none);
        }
        let ports: Vec<&ServicePort> = if full {
            snap.service_ports().collect()
        } else {
            changes
                .ports
                .iter()
                .filter_map(|n| snap.service_port(n))
                .collect()
        };
        for port in ports
            .into_iter()
            .filter(|p| p.name.protocol == Protocol::Udp)
        {
            // Every endpoint still serving, whatever this node's policy picks from them
            // (kube-proxy: a policy or topology change must not cut a live flow).
            let allowed: BTreeSet<IpAddr> = (snap.endpoints(&port.name).iter())
                .filter(|e| e.serving || e.is_ready(port.publish_not_ready_addresses))
                .map(|e| e.ip)
                .collect();
            for dest in udp_destinations(port) {
                scope.add(dest, &allowed);
            }
        }
        if scope.is_empty() {
            return;
        }
        match self.conntrack.delete_where(family, &|f| scope.stale(f)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(?family, n, "stale UDP conntrack entries deleted"),
            Err(e) => tracing::warn!("UDP conntrack cleanup: {e}"),
        }
    }
}

/// A UDP destination of a Service port: a service address and port, or (`None`) a node port.
pub(crate) type UdpDest = (Option<IpAddr>, u16);

fn udp_destinations(port: &ServicePort) -> Vec<UdpDest> {
    let vips = port
        .cluster_ips
        .iter()
        .chain(&port.external_ips)
        .chain(&port.load_balancer_vips);
    vips.map(|ip| (Some(*ip), port.port))
        .chain(port.node_port.map(|np| (None, np)))
        .collect()
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
