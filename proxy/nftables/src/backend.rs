//! `--proxy-mode nftables`: the [`Backend`] over [`NftState`] and one [`NftKernel`] (netlink
//! in production, `FakeNft` in unit tests). A partial apply sends only the changed owners'
//! operations; a full apply reads the table back first, so drift (a deleted table, a flushed
//! chain, a removed element) is repaired and a restart adopts what is there without a flush
//! — unless the ruleset's generation shows nobody committed since the last read-back or the
//! proxy's own last commit ([`crate::trust`]): then it plans against its own record, and a
//! sync that is full only because the period came ([`Changes::periodic`]) is the partial
//! sync of what changed.
//! After each sync the UDP flows of the ports it looked at are reconciled with one conntrack
//! dump, as kube-proxy's reconciler does (`sluice_proxy_core::conntrack`).

use std::collections::BTreeMap;

use sluice_conntrack::{Cleaner as ConntrackCleaner, Conntrack, NoConntrack};
use sluice_model::service::IpFamily;
use sluice_nft::{Family, NftKernel, Op, TableSink, Transaction};
use sluice_proxy_core::backend::BackendOptions;
use sluice_proxy_core::conntrack::reconcile_flows;

use super::ctx::{NftConfig, TABLE};
use super::print::Old;
use super::sender::Sender;
use super::state::{Against, NftState};
use super::trust::{READ_BACK_EVERY, Trust};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use sluice_nft::NftError;
use sluice_proxy_core::backend::{Backend, BackendError, Outcome, ProxyMode};
use sluice_proxy_core::{Changes, Snapshot};

/// The real nftables backend: netlink and ctnetlink in the process's namespace.
pub type KernelNftables = NftablesBackend<sluice_nft::Netlink, Conntrack>;

impl KernelNftables {
    /// Opens netlink and ctnetlink in the calling thread's namespace and renders with `opts`.
    pub fn open(opts: &BackendOptions) -> Result<Self, BackendError> {
        let fail = |what: &str, source| BackendError::Open {
            mode: ProxyMode::Nftables,
            what: what.into(),
            source,
        };
        let kernel =
            sluice_nft::Netlink::open().map_err(|e| fail("nf_tables netlink", e.into()))?;
        let conntrack = Conntrack::open().map_err(|e| fail("ctnetlink", e.into()))?;
        let configs = opts.families.iter().map(|f| NftConfig::of(opts, *f));
        Ok(Self::new(kernel, conntrack, configs))
    }
}

/// The nftables backend for both families.
pub struct NftablesBackend<K, C = NoConntrack> {
    kernel: K,
    conntrack: C,
    states: BTreeMap<Family, NftState>,
    /// Which families' records a full sync may plan against without a read-back.
    trust: Trust,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    failures: Counter,
    /// How many operations a full sync puts into one transaction ([`PART_OPS`]).
    part: usize,
}

/// About how many operations (elements counted one by one) a full sync puts into one
/// transaction: a cold sync of 10,000 Services × 3 endpoints (~90,000) goes in ~22. Each
/// transaction of 4,096 operations is ~1.5 MiB of operations and ~1.5 MiB of netlink batch
/// instead of ~22 and ~21 MiB for the whole sync; two are alive at once (one applied, one
/// planned). 8,192 was as fast and peaked 3 MiB higher (65 MiB at 10,000 Services).
pub const PART_OPS: usize = 4_096;

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
            trust: Trust::new(READ_BACK_EVERY),
            failures: Counter::default(),
            part: PART_OPS,
        }
    }

    /// Puts about `ops` operations into each transaction of a full sync (tests; [`PART_OPS`]
    /// by default; `usize::MAX`: one transaction).
    pub fn with_part_ops(mut self, ops: usize) -> Self {
        self.part = ops.max(1);
        self
    }

    /// Reads the table back at every full sync, at least every `every` when nothing else
    /// committed (tests; [`READ_BACK_EVERY`] by default).
    pub fn with_read_back_every(mut self, every: std::time::Duration) -> Self {
        self.trust = Trust::new(every);
        self
    }

    /// The kernel handle (tests inspect the fake through it).
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// One family's record (tests).
    #[cfg(test)]
    pub(crate) fn state_of(&self, family: Family) -> Option<&NftState> {
        self.states.get(&family)
    }

    fn state(&mut self, snap: &Snapshot) -> Result<(Family, &mut NftState), BackendError> {
        let family = family_of(snap.family());
        match self.states.get_mut(&family) {
            Some(s) => Ok((family, s)),
            None => Err(no_config(family)),
        }
    }

    fn apply_with(
        &mut self,
        snap: &Snapshot,
        changes: &Changes,
        full: bool,
    ) -> Result<(), BackendError> {
        let (family, _) = self.state(snap)?;
        let result = self.sync(family, snap, changes, full);
        if result.is_err() {
            self.trust.forget(family);
        }
        result
    }

    fn sync(
        &mut self,
        family: Family,
        snap: &Snapshot,
        changes: &Changes,
        full: bool,
    ) -> Result<(), BackendError> {
        let generation = self.kernel.generation().map_err(apply_err)?;
        let trusted = self.trust.skip_read(family, generation);
        let read_back = full && !trusted;
        let kernel_view = if read_back {
            // Streamed into the diff's "before" side, never held whole (issue 14: it was
            // the peak of a full resync that reads back).
            let read = |sink: &mut dyn TableSink| self.kernel.read_table_into(family, TABLE, sink);
            Some(Old::read_back(read).map_err(apply_err)?)
        } else {
            None
        };
        let Some(state) = self.states.get_mut(&family) else {
            return Err(no_config(family));
        };
        // Trusted: a periodic sync is the partial sync of what changed (kube-proxy's are
        // too); a full sync for another reason (topology, restart of the isolation) renders
        // every Service against the record.
        let against = match kernel_view {
            Some(old) => {
                // What reading back allocated and freed is not needed for the render.
                sluice_proxy_core::memory::release();
                Some(Against::Kernel(Box::new(old)))
            }
            None if full && !changes.periodic => Some(Against::Record),
            None => None,
        };
        let mut sender = Sender::new(&mut self.kernel, family, generation);
        let (result, rest) = match against {
            Some(against) => {
                let limit = self.part;
                sender.pipelined(|send| state.plan_full_parts(snap, against, limit, send))
            }
            None => match sender.take(state.plan_partial(snap, changes)) {
                Ok(part) => (Ok(()), vec![part]),
                Err(e) => (Err(e), Vec::new()),
            },
        };
        let Sender {
            at, sent, counts, ..
        } = sender;
        tracing::debug!(
            ?family,
            full,
            read_back,
            transactions = sent,
            ?counts,
            "nftables transactions applied"
        );
        state.record(rest, result.is_ok());
        result.map_err(apply_err)?;
        self.trust.synced(family, at, read_back, sent > 0);
        match reconcile_flows(&mut self.conntrack, snap, changes) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(?family, n, "stale conntrack entries deleted"),
            Err(e) => tracing::warn!("conntrack cleanup: {e}"),
        }
        Ok(())
    }
}

fn no_config(family: Family) -> BackendError {
    BackendError::apply(
        ProxyMode::Nftables,
        Outcome::Refused,
        format!("no nftables configuration for {family:?}"),
    )
}

fn family_of(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// A failed apply: a refusal rolled the whole transaction back; lost answers or a broken
/// socket leave the outcome unknown.
fn apply_err(e: NftError) -> BackendError {
    let outcome = match &e {
        NftError::Refused { .. } | NftError::Encode { .. } | NftError::NotInKernel => {
            Outcome::Refused
        }
        NftError::Socket(_) | NftError::Decode { .. } | NftError::Lost { .. } => Outcome::Unknown,
    };
    BackendError::apply(ProxyMode::Nftables, outcome, e)
}

impl<K: NftKernel + Send, C: ConntrackCleaner> Backend for NftablesBackend<K, C> {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        let family = family_of(snapshot.family());
        let cfg = (self.states.get(&family))
            .map(|s| s.config().clone())
            .ok_or_else(|| no_config(family))?;
        let mut fresh = NftState::new(cfg);
        let pending = fresh.plan_full_kernel(snapshot, None);
        Ok(sluice_nft::text::script(&pending.tx))
    }

    fn apply_partial(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
    ) -> Result<(), BackendError> {
        let result = self.apply_with(snapshot, changes, false);
        self.count(result)
    }

    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        let result = self.apply_with(snapshot, changes, true);
        self.count(result)
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            self.failures.clone(),
        );
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        for family in [Family::Ip, Family::Ip6] {
            let exists = match self.kernel.read_table(family, TABLE) {
                Ok(table) => table.is_some(),
                // No nf_tables, no table of ours (`--cleanup` in an IPVS-only kernel).
                Err(NftError::NotInKernel) => {
                    tracing::debug!("no nftables leftovers to remove: {}", NftError::NotInKernel);
                    return Ok(());
                }
                Err(e) => return Err(BackendError::cleanup(ProxyMode::Nftables, e)),
            };
            if exists {
                let mut tx = Transaction::new(family, TABLE);
                tx.push(Op::DeleteTable);
                self.kernel
                    .apply(&tx)
                    .map_err(|e| BackendError::cleanup(ProxyMode::Nftables, e))?;
            }
        }
        for state in self.states.values_mut() {
            *state = NftState::new(state.config().clone());
        }
        self.trust.clear();
        Ok(())
    }
}

impl<K, C> NftablesBackend<K, C> {
    /// Counts a failed sync (`..._nftables_sync_failures_total`).
    fn count(&self, result: Result<(), BackendError>) -> Result<(), BackendError> {
        if result.is_err() {
            self.failures.inc();
        }
        result
    }
}

impl<K, C> std::fmt::Debug for NftablesBackend<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesBackend")
            .field("families", &self.states.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
