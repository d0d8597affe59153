//! The bounded-frequency sync loop (kube-proxy's `BoundedFrequencyRunner`
//! plus the body of `syncProxyRules` that every backend shares).
//!
//! Why bounded: applying a change costs a kernel transaction, so a burst of
//! API events must coalesce into one apply, but a lone change must not wait.
//! The loop therefore
//! - waits for the [`Feed`] to be initialized (both initial lists complete),
//!   then syncs at once (a full apply);
//! - after that, syncs when woken by a queued change, but never sooner than
//!   `min_sync_period` after the end of the previous sync: everything queued
//!   meanwhile coalesces in the change trackers (1 s default);
//! - forces a full apply every `sync_period` (30 s default), repairing
//!   anything changed behind its back;
//! - after a failed apply, forces a full apply of that family and retries
//!   with exponential backoff from `retry_backoff` up to `sync_period`;
//! - calls the backend's periodic task ([`Backend::tick`]) every
//!   [`Backend::tick_period`] between syncs, and runs a full sync at once when
//!   the task asks for one (a missing iptables canary).
//!
//! Each family's sync runs in a `tracing` span `sync` with its counts, and is
//! published through [`SyncStatus`] and [`SyncObserver`]. Backend calls run
//! on the blocking pool: they wait on netlink or on a child process
//! (`iptables-restore`).

mod feed;
mod isolate;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until};
use tracing::Instrument as _;

use crate::backend::{Backend, BackendError, Tick, chain};
use crate::{Changes, Snapshot};
use sluice_model::service::{IpFamily, ServiceName, ServicePortName};

pub use feed::Feed;
pub use status::{FamilyStatus, NodeStatus, SyncObserver, SyncRecord, SyncReport, SyncStatus};

/// Timing of the sync loop (kube-proxy's `minSyncPeriod` and `syncPeriod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Minimum time between the end of one sync and the start of the next.
    pub min_sync_period: Duration,
    /// Time between forced full syncs.
    pub sync_period: Duration,
    /// First retry delay after a failed apply (doubles up to `sync_period`).
    pub retry_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// The sync loop over one backend and the feed's states.
pub struct Runner<B> {
    feed: Feed,
    backend: Option<B>,
    config: RunnerConfig,
    observers: Vec<Arc<dyn SyncObserver>>,
    /// Per family: Services the backend refused (see [`isolate`]), left out until they
    /// change.
    unprogrammable: BTreeMap<IpFamily, BTreeSet<ServiceName>>,
    /// Per family: ports changed by syncs that failed since the last success (the suspects
    /// of the next isolation, as the retry is a full sync that no longer lists them).
    unapplied: BTreeMap<IpFamily, BTreeSet<ServicePortName>>,
}

impl<B> std::fmt::Debug for Runner<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// When the loop must next run on its own.
#[derive(Debug)]
struct Schedule {
    next_full: Instant,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_end: Option<Instant>,
    /// The backend's next periodic task, if it has one.
    next_tick: Option<Instant>,
}

impl<B: Backend + 'static> Runner<B> {
    /// A runner that programs `backend` from `feed`'s states.
    pub fn new(feed: Feed, backend: B, config: RunnerConfig) -> Self {
        Self {
            feed,
            backend: Some(backend),
            config,
            observers: Vec::new(),
            unprogrammable: BTreeMap::new(),
            unapplied: BTreeMap::new(),
        }
    }

    /// Adds an observer called after every sync (metrics, service health).
    pub fn observe(&mut self, observer: Arc<dyn SyncObserver>) {
        self.observers.push(observer);
    }

    /// Runs until `shutdown` completes, then returns the backend (for a
    /// cleanup on exit, if wanted). A panicking apply propagates.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> B {
        tokio::pin!(shutdown);
        let wait_init = async {
            let mut status = self.feed.status();
            let _ = status.wait_for(|s| s.initialized).await;
        };
        tokio::select! {
            () = &mut shutdown => return self.into_backend(),
            () = wait_init => {}
        }
        let tick_period = self.backend.as_ref().and_then(|b| b.tick_period());
        let mut schedule = Schedule {
            next_full: Instant::now(),
            retry_at: None,
            backoff: self.config.retry_backoff,
            last_end: None,
            next_tick: tick_period.map(|p| Instant::now() + p),
        };
        loop {
            if schedule.last_end.is_some() {
                let mut deadline = schedule
                    .retry_at
                    .map_or(schedule.next_full, |r| r.min(schedule.next_full));
                let tick_first = schedule.next_tick.is_some_and(|t| t < deadline);
                if let Some(t) = schedule.next_tick.filter(|_| tick_first) {
                    deadline = t;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = self.feed.wake().notified() => {}
                    () = sleep_until(deadline) => {
                        if tick_first {
                            schedule.next_tick = tick_period.map(|p| Instant::now() + p);
                            if !self.tick().await.full_sync {
                                continue;
                            }
                            schedule.next_full = Instant::now();
                        }
                    }
                }
                let earliest = schedule
                    .last_end
                    .map(|end| end + self.config.min_sync_period);
                if let Some(earliest) = earliest.filter(|e| *e > Instant::now()) {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = sleep_until(earliest) => {}
                    }
                }
            }
            self.sync_due(&mut schedule).await;
        }
        self.into_backend()
    }

    fn into_backend(self) -> B {
        (self.backend).expect("invariant: the backend is back after every apply")
    }

    /// One pass: requests the periodic full sync if due, syncs every family
    /// with work, and reschedules.
    async fn sync_due(&mut self, schedule: &mut Schedule) {
        let full_due = Instant::now() >= schedule.next_full;
        if full_due {
            for fam in self.feed.states() {
                feed::lock(&fam.state).request_periodic_sync();
            }
        }
        let mut synced = false;
        let mut failed = false;
        for index in 0..self.feed.states().len() {
            match self.sync_family(index).await {
                None => {}
                Some(ok) => {
                    synced = true;
                    failed |= !ok;
                }
            }
        }
        let now = Instant::now();
        if synced || schedule.last_end.is_none() {
            schedule.last_end = Some(now);
        }
        if full_due {
            schedule.next_full = now + self.config.sync_period;
        }
        if failed {
            schedule.retry_at = Some(now + schedule.backoff);
            schedule.backoff = (schedule.backoff * 2).min(self.config.sync_period);
        } else if synced {
            schedule.retry_at = None;
            schedule.backoff = self.config.retry_backoff;
        }
    }

    /// Syncs one family if it has work. `None`: nothing to do; else whether
    /// the apply succeeded.
    async fn sync_family(&mut self, index: usize) -> Option<bool> {
        let feed = self.feed.clone();
        let fam = &feed.states()[index];
        let family = fam.family;
        let start = Instant::now();
        let (snapshot, changes, in_flight) = {
            let mut state = feed::lock(&fam.state);
            if !state.has_pending() {
                return None;
            }
            let (snapshot, changes) = state.sync();
            let mut in_flight = None;
            self.feed.publish(|s| {
                let f = s.families.entry(family).or_default();
                in_flight = f.queued_since.take();
                f.service_changes_pending = state.service_changes_pending();
                f.endpoint_changes_pending = state.endpoint_changes_pending();
            });
            (snapshot, changes, in_flight)
        };
        let span = tracing::info_span!(
            "sync",
            %family,
            full = changes.full,
            ports = changes.ports.len(),
            services = changes.service_changes,
            endpoints = changes.endpoint_changes,
            total_ports = snapshot.len(),
        );
        let (snapshot, changes, result) = self
            .apply_isolating(family, snapshot, changes)
            .instrument(span.clone())
            .await;
        let record = SyncRecord {
            family,
            at: SystemTime::now(),
            duration: start.elapsed(),
            full: changes.full,
            ok: result.is_ok(),
            ports: if changes.full {
                snapshot.len()
            } else {
                changes.ports.len()
            },
            service_changes: changes.service_changes,
            endpoint_changes: changes.endpoint_changes,
        };
        span.in_scope(|| log_result(&record, result.as_ref().err()));
        if result.is_err() {
            feed::lock(&fam.state).retry_after_failure(&changes);
        }
        self.publish(&record, in_flight);
        let report = SyncReport {
            record: &record,
            snapshot: &snapshot,
            changes: &changes,
            error: result.as_ref().err(),
        };
        for observer in &self.observers {
            observer.on_sync(&report);
        }
        Some(record.ok)
    }

    /// Runs the backend's periodic task on the blocking pool; a failure is logged.
    async fn tick(&mut self) -> Tick {
        let result = self.on_blocking_pool(|b| b.tick()).await;
        match result {
            Ok(tick) => {
                if tick.full_sync {
                    tracing::info!("the backend asks for a full sync");
                }
                tick
            }
            Err(e) => {
                tracing::warn!("backend periodic task failed: {}", chain(&e));
                Tick::default()
            }
        }
    }

    /// Runs `f` on the backend on the blocking pool (it may block on the kernel).
    async fn on_blocking_pool<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut B) -> R + Send + 'static,
    ) -> R {
        let mut backend =
            (self.backend.take()).expect("invariant: the backend is back after every call");
        let joined = tokio::task::spawn_blocking(move || {
            let r = f(&mut backend);
            (backend, r)
        })
        .await;
        match joined {
            Ok((backend, r)) => {
                self.backend = Some(backend);
                r
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Applies `snapshot` without the Services known unprogrammable (a changed one is tried
    /// again); when the apply fails, isolates the Services the backend refuses and applies
    /// the rest (see [`isolate`]). Returns what was applied.
    async fn apply_isolating(
        &mut self,
        family: IpFamily,
        snapshot: Snapshot,
        changes: Changes,
    ) -> (Snapshot, Changes, Result<(), BackendError>) {
        let changed = changes.services();
        let mut unprogrammable = self.unprogrammable.remove(&family).unwrap_or_default();
        for service in unprogrammable.intersection(&changed) {
            tracing::info!(%service, "changed: trying to program it again");
        }
        unprogrammable.retain(|s| !changed.contains(s));
        let snapshot = snapshot.without(&unprogrammable);
        let (snapshot, changes, result) = self.apply(snapshot, changes).await;
        let (snapshot, changes, result) = match result {
            Err(e @ BackendError::Apply { .. }) if !changes.full => {
                self.retry_whole(snapshot, changes, e).await
            }
            other => (snapshot, changes, other),
        };
        let Err(error) = result else {
            self.unapplied.remove(&family);
            self.set_unprogrammable(family, unprogrammable);
            return (snapshot, changes, Ok(()));
        };
        let unapplied = self.unapplied.entry(family).or_default();
        unapplied.extend(changes.ports.iter().cloned());
        let suspects = unapplied.iter().map(ServicePortName::service).collect();
        let isolated = match error {
            BackendError::Apply { .. } => self.isolate(&snapshot, suspects, &changes).await,
            _ => None,
        };
        let Some(isolated) = isolated else {
            self.set_unprogrammable(family, unprogrammable);
            return (snapshot, changes, Err(error));
        };
        for service in &isolated.unprogrammable {
            tracing::warn!(
                %service,
                "the {} backend refuses this Service; it is left out (not served) until it changes, the rest is programmed: {}",
                self.backend.as_ref().map(|b| b.mode().to_string()).unwrap_or_default(),
                chain(&error)
            );
        }
        self.unapplied.remove(&family);
        let snapshot = snapshot.without(&isolated.unprogrammable);
        unprogrammable.extend(isolated.unprogrammable);
        self.set_unprogrammable(family, unprogrammable);
        let changes = Changes {
            full: true,
            periodic: false,
            ..changes
        };
        (snapshot, changes, Ok(()))
    }

    /// After a refused partial apply: one full apply of the same state (every Service),
    /// before isolation, whose probes commit states *without* the changed Services and so
    /// take them out of the dataplane for a moment. A partial apply can be refused for
    /// reasons of its own (the backend's record of the kernel is off) that a full apply,
    /// which reads the kernel back, does not have. Returns the full apply's outcome.
    async fn retry_whole(
        &mut self,
        snapshot: Snapshot,
        changes: Changes,
        error: BackendError,
    ) -> (Snapshot, Changes, Result<(), BackendError>) {
        tracing::warn!(
            "partial apply refused, trying a full apply of the same state: {}",
            chain(&error)
        );
        let full = Changes {
            full: true,
            periodic: false,
            ..changes
        };
        self.on_blocking_pool(move |backend| {
            let result = backend.apply_full(&snapshot, &full);
            (snapshot, full, result)
        })
        .await
    }

    /// Remembers and publishes the unprogrammable Services of `family`.
    fn set_unprogrammable(&mut self, family: IpFamily, services: BTreeSet<ServiceName>) {
        let list: Vec<ServiceName> = services.iter().cloned().collect();
        self.feed.publish(|s| {
            if list.is_empty() {
                s.unprogrammable.remove(&family);
            } else {
                s.unprogrammable.insert(family, list);
            }
        });
        if !services.is_empty() {
            self.unprogrammable.insert(family, services);
        }
    }

    /// Runs the backend on the blocking pool; nothing to apply is a success.
    async fn apply(
        &mut self,
        snapshot: Snapshot,
        changes: Changes,
    ) -> (Snapshot, Changes, Result<(), BackendError>) {
        if changes.is_empty() {
            return (snapshot, changes, Ok(()));
        }
        self.on_blocking_pool(move |backend| {
            let result = backend.apply(&snapshot, &changes);
            (snapshot, changes, result)
        })
        .await
    }

    /// Publishes one sync into [`SyncStatus`]; a failed sync re-queues the
    /// update it carried so health reflects the unapplied change.
    fn publish(&self, record: &SyncRecord, in_flight: Option<SystemTime>) {
        self.feed.publish(|s| {
            s.syncs_total += 1;
            s.service_changes_total += record.service_changes as u64;
            s.endpoint_changes_total += record.endpoint_changes as u64;
            let fam = s.families.entry(record.family).or_default();
            if record.ok {
                fam.last_synced = Some(record.at);
                s.last_synced = Some(record.at);
            } else {
                s.failed_syncs_total += 1;
                fam.queued_since = match (in_flight, fam.queued_since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            s.last_sync = Some(record.clone());
        });
    }
}

fn log_result(record: &SyncRecord, error: Option<&BackendError>) {
    let millis = record.duration.as_secs_f64() * 1000.0;
    match error {
        None => tracing::debug!(duration_ms = millis, "synced"),
        Some(e) => tracing::warn!(
            duration_ms = millis,
            "sync failed, retrying with a full sync: {}",
            chain(e)
        ),
    }
}

#[cfg(test)]
mod tests;
