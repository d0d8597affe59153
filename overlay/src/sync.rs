//! The overlay's control loop: level-triggered, so it only ever asks "given the peers now,
//! make the kernel right". A new peer set triggers a reconcile at once; a timer triggers one
//! every period anyway, which is what repairs state someone else deleted (the `--ip-masq`
//! table included). Failed operations are simply tried again by the next reconcile.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use tokio::time::Instant;
use tracing::Instrument;

use sluice_nft::NftKernel;

use crate::desired::{Desired, Params, compute};
use crate::kernel::{Kernel, VxlanSpec};
use crate::lease::{Lease, subnet_key};
use crate::masq::{self, MasqNets};
use crate::reconcile::{Outcome, reconcile};
use crate::validate::{self, Bounds, Reason, Skipped};

/// Everything a reconcile needs besides the peers.
pub struct Node<K> {
    /// The kernel.
    pub kernel: K,
    /// Backend settings.
    pub params: Params,
    /// This node's lease.
    pub own: Lease,
    /// The VXLAN devices, one per family (none for host-gw).
    pub devices: Vec<VxlanSpec>,
    /// The pod networks (bounds which routes are ours).
    pub networks: Vec<IpNet>,
    /// What a peer lease is checked against before it is programmed.
    pub bounds: Bounds,
    /// Whether an underlay address is on our L2 (DirectRouting).
    pub same_l2: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// `--ip-masq`: the table each reconcile keeps right, when on.
    pub masq: Option<Masquerade>,
}

/// The masquerade table of every family, and the nftables kernel it lives in.
pub struct Masquerade {
    /// nftables (netlink, or a fake in tests).
    pub kernel: Box<dyn NftKernel + Send>,
    /// One entry per family.
    pub nets: Vec<MasqNets>,
}

impl Masquerade {
    /// Makes every family's table right; returns what failed.
    pub fn repair(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        for nets in &self.nets {
            let family = nets.family().keyword();
            match masq::repair(&mut self.kernel, nets) {
                Ok(true) => tracing::info!("masquerade table {family} {} written", masq::TABLE),
                Ok(false) => {}
                Err(e) => failures.push(format!("masquerade table {family} {}: {e}", masq::TABLE)),
            }
        }
        failures
    }
}

/// What the health endpoint reports.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// When the last reconcile without failures finished.
    pub last_ok: Option<Instant>,
    /// Reconciles run so far.
    pub reconciles: u64,
    /// The last reconcile's error or failures, if any.
    pub last_error: Option<String>,
    /// Reconciles that failed or left failures.
    pub failed_reconciles: u64,
    /// The peer leases (and routes) the last reconcile did not program, and why.
    pub skipped: Vec<Skipped>,
}

/// Shared health state.
pub type SharedHealth = Arc<Mutex<Health>>;

impl<K: Kernel> Node<K> {
    /// One reconcile against `peers`, recorded in `health`.
    pub async fn sync(&mut self, peers: &[Lease], health: &SharedHealth) -> Option<Outcome> {
        let span = tracing::info_span!("reconcile", peers = peers.len());
        let (desired, mut skipped) = self.desire(peers);
        let mut result = reconcile(&mut self.kernel, &self.devices, &self.networks, &desired)
            .instrument(span.clone())
            .await
            .map_err(|e| e.to_string());
        let _enter = span.enter();
        self.repair_masq(&mut result);
        if let Ok(out) = &result {
            skipped.extend(out.blocked.iter().map(|(dst, proto)| blocked(*dst, *proto)));
        }
        record(health, result, skipped)
    }

    /// The state the valid peers call for, and the peers skipped.
    fn desire(&self, peers: &[Lease]) -> (Desired, Vec<Skipped>) {
        let selection = validate::select(&self.bounds, &self.own, peers, &self.params);
        let computed = compute(&self.own, &selection.peers, &self.params, &self.same_l2);
        let mut skipped = selection.skipped;
        skipped.extend(computed.skipped.into_iter().map(|detail| Skipped {
            lease: String::new(),
            reason: Reason::Backend,
            detail,
        }));
        (computed.desired, skipped)
    }

    /// Repairs the masquerade tables; a failure counts against the reconcile.
    fn repair_masq(&mut self, result: &mut Result<Outcome, String>) {
        let Some(masq) = self.masq.as_mut() else {
            return;
        };
        let failures = masq.repair();
        match result {
            Ok(out) => out.failures.extend(failures),
            Err(e) => failures.iter().for_each(|f| *e = format!("{e}; {f}")),
        }
    }
}

/// Records a reconcile's outcome in `health` and logs it.
fn record(
    health: &SharedHealth,
    result: Result<Outcome, String>,
    skipped: Vec<Skipped>,
) -> Option<Outcome> {
    let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
    h.reconciles += 1;
    report_skipped(&h.skipped, &skipped);
    h.skipped = skipped;
    match result {
        Ok(out) if out.failures.is_empty() => {
            if !out.was_converged() {
                tracing::info!(?out, "overlay repaired or updated");
            }
            h.last_ok = Some(Instant::now());
            h.last_error = None;
            Some(out)
        }
        Ok(out) => {
            h.failed_reconciles += 1;
            h.last_error = Some(out.failures.join("; "));
            tracing::warn!(failures = ?out.failures, "reconcile incomplete, retrying next period");
            Some(out)
        }
        Err(e) => {
            h.failed_reconciles += 1;
            tracing::warn!("reconcile failed: {e}");
            h.last_error = Some(e);
            None
        }
    }
}

/// A desired route someone else's route is in the way of, as a skipped lease.
fn blocked(dst: IpNet, proto: u8) -> Skipped {
    let lease = match dst {
        IpNet::V4(n) => subnet_key(Some(n), None),
        IpNet::V6(n) => subnet_key(None, Some(n)),
    };
    Skipped {
        lease,
        reason: Reason::RouteTaken,
        detail: format!(
            "a route to {dst} that this overlay did not make (protocol {proto}) is in the way; left alone"
        ),
    }
}

/// Logs each lease newly skipped (not every reconcile: the period would repeat them forever)
/// and each that is programmed again.
fn report_skipped(before: &[Skipped], now: &[Skipped]) {
    for s in now.iter().filter(|s| !before.contains(s)) {
        tracing::warn!(reason = s.reason.label(), "{s}");
    }
    for s in before
        .iter()
        .filter(|b| !now.iter().any(|n| n.lease == b.lease))
    {
        if !s.lease.is_empty() {
            tracing::info!("lease {} is no longer skipped", s.lease);
        }
    }
}

/// How long a nudge waits for more of its kind before the reconcile it asks for: a
/// deleted device takes its routes and neighbours with it in a burst of events.
pub const NUDGE_DEBOUNCE: Duration = Duration::from_millis(100);

/// Reconciles on every peer set, soon after every nudge (the kernel reported a deletion),
/// and every `period`, until `peers` ends. Returns the node (so tests can inspect it).
pub async fn run<K: Kernel>(
    mut node: Node<K>,
    peers: impl Stream<Item = Vec<Lease>>,
    nudges: impl Stream<Item = ()>,
    period: Duration,
    health: SharedHealth,
) -> Node<K> {
    let mut peers = std::pin::pin!(peers);
    let mut nudges = std::pin::pin!(nudges.fuse());
    let mut latest: Option<Vec<Lease>> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nudged: Option<Instant> = None;
    loop {
        let debounce = tokio::time::sleep_until(nudged.unwrap_or_else(far_future));
        tokio::select! {
            next = peers.next() => match next {
                Some(set) => latest = Some(set),
                None => return node,
            },
            Some(()) = nudges.next() => {
                nudged.get_or_insert_with(|| Instant::now() + NUDGE_DEBOUNCE);
                continue;
            }
            () = debounce => {}
            _ = tick.tick() => {}
        }
        nudged = None;
        // Nothing is programmed before the first complete peer set.
        if let Some(set) = &latest {
            node.sync(set, &health).await;
        }
    }
}

/// A deadline that never comes (no nudge pending).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
