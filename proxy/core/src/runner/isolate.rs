//! One Service the kernel refuses must not stop every other change (issue 15 bug 3).
//!
//! A backend programs a sync as one transaction (nftables sends a large full sync as several,
//! each of whole Services, and stops at the first refused), so one unprogrammable object (a
//! chain name past the kernel's limit, a rule it rejects) fails the sync, and every retry fails
//! the same way: nothing changes any more and `/healthz` turns 503. kube-proxy has the same
//! weakness (an `iptables-restore` that fails is retried as a whole, forever); it relies on the
//! API server never handing it such an object. Sluice validates objects as the API server does,
//! and — because standalone mode, a kernel with other limits, or a backend bug can still
//! produce one — the runner isolates what the backend refuses, for every backend:
//!
//! - a refused *partial* apply is first retried as one full apply of everything (the runner's
//!   `retry_whole`): a partial apply can fail for the backend's own reasons (its record of the
//!   kernel is off) where a full one, which reads the kernel back, goes through — and unlike
//!   the probes below it never takes a Service out (found by the lab soak);
//! - the *suspects* are the Services changed by this sync or by the failed syncs before it
//!   (on the first sync, every Service): a Service that programmed fine and did not change
//!   is not retried without;
//! - a full apply without any suspect must succeed, otherwise the failure is not caused by
//!   a Service (netlink gone, a foreign owner, no memory) and the sync fails as before,
//!   retried with backoff;
//! - then groups of suspects are added back, halving a group that fails (adaptive group
//!   testing: about `2·k·log2(n)` applies for `k` bad Services among `n` suspects, bounded
//!   by [`MAX_PROBES`]); a single Service that fails on its own is *unprogrammable*;
//! - the snapshot without the unprogrammable Services is applied and the sync counts as a
//!   success: the rest is programmed, so health stays 200 (the Service is not served, which
//!   a log line per Service and `kubeproxy_sluice_services_unprogrammable` report);
//! - an unprogrammable Service stays out of every later sync until it changes (its
//!   definition or its endpoints), then it is tried again.
//!
//! While probing, the suspects are briefly out of the dataplane (each probe is a full
//! apply): new connections to a Service changed in this very sync may be refused for
//! the few milliseconds isolation takes; established ones keep their conntrack entries, and
//! Services that did not change are never touched.

use std::collections::BTreeSet;

use sluice_model::service::ServiceName;

use crate::backend::{Backend, chain};
use crate::{Changes, Snapshot};

use super::Runner;

/// Gives up isolating after this many probe applies (the sync then fails as before).
pub(super) const MAX_PROBES: usize = 256;

/// What isolation found.
#[derive(Debug)]
pub(super) struct Isolated {
    /// The Services left out; the rest was applied successfully.
    pub(super) unprogrammable: BTreeSet<ServiceName>,
}

impl<B: Backend + 'static> Runner<B> {
    /// After a failed apply of `snapshot` (already without the known unprogrammable
    /// Services): finds the suspects the backend refuses and applies the rest, or `None`
    /// when the failure is not a Service's.
    pub(super) async fn isolate(
        &mut self,
        snapshot: &Snapshot,
        suspects: BTreeSet<ServiceName>,
        changes: &Changes,
    ) -> Option<Isolated> {
        let suspects: Vec<ServiceName> = (suspects.into_iter())
            .filter(|s| snapshot.ports_of(s).next().is_some())
            .collect();
        if suspects.is_empty() {
            return None;
        }
        let mut search = Search {
            all: suspects.iter().cloned().collect(),
            good: BTreeSet::new(),
            bad: BTreeSet::new(),
            probes: 0,
        };
        if !self.probe(snapshot, &search.all, &mut search.probes).await {
            tracing::debug!("the apply fails without any changed Service too");
            return None;
        }
        let mut groups = vec![suspects];
        while let Some(group) = groups.pop() {
            if search.probes >= MAX_PROBES {
                tracing::warn!(
                    "giving up isolating unprogrammable Services after {MAX_PROBES} applies"
                );
                return None;
            }
            let exclude = search.excluding(&group);
            if self.probe(snapshot, &exclude, &mut search.probes).await {
                search.good.extend(group);
            } else if let [single] = group.as_slice() {
                search.bad.insert(single.clone());
            } else {
                let (a, b) = group.split_at(group.len() / 2);
                groups.push(b.to_vec());
                groups.push(a.to_vec());
            }
        }
        self.finish(snapshot, search.bad, changes).await
    }

    /// Applies everything but `bad` with the sync's own changes (made full).
    async fn finish(
        &mut self,
        snapshot: &Snapshot,
        bad: BTreeSet<ServiceName>,
        changes: &Changes,
    ) -> Option<Isolated> {
        if bad.is_empty() {
            // Every suspect programs: the failure did not come back, so it was not a
            // Service's. The sync stays failed and is retried as before.
            return None;
        }
        let without = snapshot.without(&bad);
        let full = Changes {
            full: true,
            periodic: false,
            ..changes.clone()
        };
        let result = self
            .on_blocking_pool(move |b| b.apply_full(&without, &full))
            .await;
        match result {
            Ok(()) => Some(Isolated {
                unprogrammable: bad,
            }),
            Err(e) => {
                tracing::warn!(
                    "apply without the unprogrammable Services failed: {}",
                    chain(&e)
                );
                None
            }
        }
    }

    /// One full apply of `snapshot` without `exclude`; whether it succeeded.
    async fn probe(
        &mut self,
        snapshot: &Snapshot,
        exclude: &BTreeSet<ServiceName>,
        probes: &mut usize,
    ) -> bool {
        *probes += 1;
        let without = snapshot.without(exclude);
        let full = Changes {
            full: true,
            periodic: false,
            ..Changes::default()
        };
        let result = self
            .on_blocking_pool(move |b| b.apply_full(&without, &full))
            .await;
        result.is_ok()
    }
}

/// The state of the group testing.
struct Search {
    /// Every suspect.
    all: BTreeSet<ServiceName>,
    /// Suspects proven programmable (together with the non-suspects).
    good: BTreeSet<ServiceName>,
    /// Suspects that fail on their own.
    bad: BTreeSet<ServiceName>,
    /// Applies so far.
    probes: usize,
}

impl Search {
    /// What a probe of `group` leaves out: every suspect not yet proven good and not in it.
    fn excluding(&self, group: &[ServiceName]) -> BTreeSet<ServiceName> {
        let group: BTreeSet<&ServiceName> = group.iter().collect();
        (self.all.iter())
            .filter(|s| !self.good.contains(*s) && !group.contains(s))
            .cloned()
            .collect()
    }
}
