//! `--proxy-mode iptables`: one `iptables-restore --noflush` per family per sync.
//!
//! As kube-proxy: the top-level chains are rewritten on every sync, a partial sync writes
//! the chains of the Services that changed and deletes (`-X`) the chains they no longer
//! use, the jump rules from the built-in chains and the canary chains are ensured on full
//! syncs, and a failed sync makes the next one full. Where Sluice does better: stale chains
//! of a partial sync come from what the last sync programmed (no `iptables-save` per sync),
//! and a full sync reads the kernel's chains back and rewrites only the per-Service chains
//! that differ from what they should be — a restart adopts what is there, drift is repaired,
//! and the periodic full resync costs one `iptables-save` instead of a rewrite of the whole
//! ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_conntrack::{Cleaner as ConntrackCleaner, NoConntrack};
use sluice_model::service::{IpFamily, ServiceName};
use sluice_proxy_core::backend::{Backend, BackendError, Outcome, ProxyMode, Tick};
use sluice_proxy_core::conntrack::reconcile_flows;
use sluice_proxy_core::{Changes, Snapshot};

use crate::config::IptConfig;
use crate::dump::Dump;
use crate::exec::{ExecError, Iptables};
use crate::jumps::{CANARY_TABLES, Missing};
use crate::names::KUBE_PROXY_CANARY;
use crate::render::{Rendered, Scope, render};
use crate::stream::FullSync;

/// How often the canary chain is looked for (kube-proxy: its sync period).
pub const CANARY_PERIOD: Duration = Duration::from_secs(10);

type Labels = Vec<(&'static str, String)>;

/// kube-proxy's iptables metrics.
#[derive(Clone, Debug, Default)]
pub struct IptMetrics {
    /// `sync_proxy_rules_iptables_total{table,ip_family}`: rules programmed.
    pub total: Family<Labels, Gauge>,
    /// `sync_proxy_rules_iptables_last{table,ip_family}`: rules written by the last sync.
    pub last: Family<Labels, Gauge>,
    /// `sync_proxy_rules_iptables_restore_failures_total{ip_family}`.
    pub restore_failures: Family<Labels, Counter>,
    /// `sync_proxy_rules_iptables_partial_restore_failures_total{ip_family}`.
    pub partial_failures: Family<Labels, Counter>,
}

/// One family's programs and what was programmed through them.
struct PerFamily<I> {
    ipt: I,
    cfg: IptConfig,
    /// Each Service's chains as last programmed; `None` until a full sync succeeded.
    programmed: Option<BTreeMap<ServiceName, BTreeSet<String>>>,
}

/// The iptables backend over one [`Iptables`] per family.
pub struct IptablesBackend<I, C = NoConntrack> {
    families: BTreeMap<IpFamily, PerFamily<I>>,
    conntrack: C,
    metrics: IptMetrics,
}

impl<I: Iptables, C: ConntrackCleaner> IptablesBackend<I, C> {
    /// A backend programming each family through its programs with its settings.
    pub fn new(families: impl IntoIterator<Item = (I, IptConfig)>, conntrack: C) -> Self {
        let families = (families.into_iter())
            .map(|(ipt, cfg)| {
                let fam = PerFamily {
                    ipt,
                    cfg,
                    programmed: None,
                };
                (fam.cfg.family, fam)
            })
            .collect();
        Self {
            families,
            conntrack,
            metrics: IptMetrics::default(),
        }
    }

    /// The programs of `family` (tests inspect the fake through it).
    pub fn iptables(&mut self, family: IpFamily) -> Option<&mut I> {
        self.families.get_mut(&family).map(|f| &mut f.ipt)
    }

    /// The metrics.
    pub fn metrics(&self) -> &IptMetrics {
        &self.metrics
    }

    fn family(&mut self, snap: &Snapshot) -> Result<&mut PerFamily<I>, BackendError> {
        let family = snap.family();
        self.families.get_mut(&family).ok_or_else(|| {
            BackendError::apply(
                ProxyMode::Iptables,
                Outcome::Refused,
                format!("no iptables configuration for {family:?}"),
            )
        })
    }

    fn sync(&mut self, snap: &Snapshot, changes: &Changes, full: bool) -> Result<(), BackendError> {
        let metrics = self.metrics.clone();
        let fam = self.family(snap)?;
        let full = full || fam.programmed.is_none();
        let label = fam.cfg.family.to_string();
        let result = match full {
            true => fam.full(snap),
            false => fam.partial(snap, changes),
        };
        match &result {
            Ok(written) => record(&metrics, &label, *written),
            Err(_) => {
                fam.programmed = None;
                metrics
                    .restore_failures
                    .get_or_create(&vec![("ip_family", label.clone())])
                    .inc();
                if !full {
                    metrics
                        .partial_failures
                        .get_or_create(&vec![("ip_family", label)])
                        .inc();
                }
            }
        }
        result?;
        match reconcile_flows(&mut self.conntrack, snap, changes) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "stale conntrack entries deleted"),
            Err(e) => tracing::warn!("conntrack cleanup: {e}"),
        }
        Ok(())
    }
}

/// What one sync wrote, for the rule-count metrics.
#[derive(Clone, Copy, Debug)]
struct Written {
    filter: usize,
    nat: usize,
    /// nat rules of unchanged chains, programmed and not rewritten.
    skipped_nat: usize,
}

impl Written {
    fn of(r: &Rendered) -> Self {
        Self {
            filter: r.filter.len(),
            nat: r.nat.len(),
            skipped_nat: r.skipped_nat_rules,
        }
    }
}

/// Frees the tables a full sync read back on a thread of its own: at 10,000 Services they
/// are 110,000 strings, freed while the sync goes on.
fn free_in_background<T: Send + 'static>(big: T) {
    let spawned = std::thread::Builder::new()
        .name("ipt-free".into())
        .spawn(move || drop(big));
    // Without a thread, the failed spawn has freed `big` here.
    drop(spawned);
}

fn record(metrics: &IptMetrics, family: &str, r: Written) {
    let labels = |table: &str| {
        vec![
            ("table", table.to_owned()),
            ("ip_family", family.to_owned()),
        ]
    };
    let filter = r.filter as i64;
    let nat_written = r.nat as i64;
    metrics.total.get_or_create(&labels("filter")).set(filter);
    metrics.last.get_or_create(&labels("filter")).set(filter);
    metrics
        .total
        .get_or_create(&labels("nat"))
        .set(nat_written + r.skipped_nat as i64);
    metrics.last.get_or_create(&labels("nat")).set(nat_written);
}

/// A failed program: a refused restore changed nothing (iptables-restore commits nothing
/// of a table whose input fails); anything else leaves the outcome unknown.
fn apply_err(e: ExecError) -> BackendError {
    let outcome = match &e {
        ExecError::Failed { line: Some(_), .. } => Outcome::Refused,
        _ => Outcome::Unknown,
    };
    BackendError::apply(ProxyMode::Iptables, outcome, e)
}

impl<I: Iptables> PerFamily<I> {
    /// A full sync: the kernel's tables read back, missing jump rules and canaries added,
    /// every per-Service chain that differs from its rendering rewritten, every chain of ours that
    /// is no longer used deleted.
    fn full(&mut self, snap: &Snapshot) -> Result<Written, BackendError> {
        let mut saved = String::new();
        for table in ["filter", "mangle", "nat"] {
            saved.push_str(&self.ipt.save(table).map_err(apply_err)?);
        }
        let kernel = Dump::parse(&saved).map_err(|e| {
            BackendError::apply(
                ProxyMode::Iptables,
                Outcome::Refused,
                format!("iptables-save: {e}"),
            )
        })?;
        let missing = Missing::in_tables(&self.cfg, &kernel);
        // Rendered chunk by chunk into the program while it reads (see `stream`).
        let mut sync = FullSync::new(&self.cfg, snap, &kernel, &missing);
        let restored = self.ipt.restore_with(&mut |out| sync.write(out));
        let done = sync.done.take();
        drop(sync);
        // The dump is freed while the next steps run.
        free_in_background((kernel, saved));
        restored.map_err(apply_err)?;
        let done = done.ok_or_else(|| {
            BackendError::apply(
                ProxyMode::Iptables,
                Outcome::Unknown,
                "the restore input was not written whole",
            )
        })?;
        self.programmed = Some(done.active);
        tracing::debug!(
            family = ?self.cfg.family,
            skipped_nat_rules = done.skipped_nat,
            stale = done.stale,
            "iptables full sync"
        );
        Ok(Written {
            filter: done.filter,
            nat: done.nat,
            skipped_nat: done.skipped_nat,
        })
    }

    /// A partial sync: the top-level chains and the chains of the Services in `changes`.
    fn partial(&mut self, snap: &Snapshot, changes: &Changes) -> Result<Written, BackendError> {
        let services = changes.services();
        let mut rendered = render(&self.cfg, snap, Scope::Only(&services), &[]);
        let before = self.programmed.as_ref();
        let mut stale = BTreeSet::new();
        for service in &services {
            let now = rendered.active.get(service);
            for chain in before.and_then(|b| b.get(service)).into_iter().flatten() {
                if now.is_none_or(|n| !n.contains(chain)) {
                    stale.insert(chain.clone());
                }
            }
        }
        rendered.stale = stale.into_iter().collect();
        self.ipt.restore(&rendered.text()).map_err(apply_err)?;
        self.programmed = Some(std::mem::take(&mut rendered.active));
        Ok(Written::of(&rendered))
    }
}

impl<I: Iptables, C: ConntrackCleaner> Backend for IptablesBackend<I, C> {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError> {
        let family = snapshot.family();
        let fam = self.families.get(&family).ok_or_else(|| {
            BackendError::apply(
                ProxyMode::Iptables,
                Outcome::Refused,
                format!("no iptables configuration for {family:?}"),
            )
        })?;
        Ok(render(&fam.cfg, snapshot, Scope::All, &[]).text())
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

    fn cleanup(&mut self) -> Result<(), BackendError> {
        let mut failed = Vec::new();
        for fam in self.families.values_mut() {
            if let Err(e) = crate::cleanup::cleanup(&mut fam.ipt) {
                failed.push(format!("{:?}: {e}", fam.cfg.family));
            }
            fam.programmed = None;
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(BackendError::cleanup(
                ProxyMode::Iptables,
                failed.join("; "),
            )),
        }
    }

    fn init(&mut self) -> Result<(), BackendError> {
        let localhost = (self.families.values())
            .any(|f| f.cfg.family == IpFamily::V4 && f.cfg.localhost_nodeports);
        if localhost {
            crate::sysctl::enable_route_localnet().map_err(|e| BackendError::Init {
                mode: ProxyMode::Iptables,
                source: e.into(),
            })?;
        }
        Ok(())
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(CANARY_PERIOD)
    }

    /// kube-proxy's iptables monitor: a missing canary chain (someone flushed the tables)
    /// asks for a full sync, which recreates it.
    fn tick(&mut self) -> Result<Tick, BackendError> {
        let mut full_sync = false;
        for fam in self.families.values_mut() {
            if fam.programmed.is_none() {
                continue;
            }
            let table = CANARY_TABLES[0];
            let present =
                (fam.ipt.run(&["-S", KUBE_PROXY_CANARY, "-t", table])).map_err(apply_err)?;
            if !present {
                tracing::info!(family = ?fam.cfg.family, "iptables canary {table}/{KUBE_PROXY_CANARY} deleted: full sync");
                fam.programmed = None;
                full_sync = true;
            }
        }
        Ok(Tick { full_sync })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.total.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            m.last.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.restore_failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures",
            m.partial_failures.clone(),
        );
    }
}

impl<I, C> std::fmt::Debug for IptablesBackend<I, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesBackend")
            .field("families", &self.families.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
