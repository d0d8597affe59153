//! The overlay's control loop: level-triggered, so it only ever asks "given the peers now,
//! make the kernel right". A new peer set triggers a reconcile at once; a timer triggers one
//! every period anyway, which is what repairs state someone else deleted. Failed operations
//! are simply tried again by the next reconcile.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::desired::{Params, compute};
use crate::kernel::{Kernel, VxlanSpec};
use crate::lease::Lease;
use crate::reconcile::{Outcome, reconcile};

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
    /// Whether an underlay address is on our L2 (DirectRouting).
    pub same_l2: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
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
}

/// Shared health state.
pub type SharedHealth = Arc<Mutex<Health>>;

impl<K: Kernel> Node<K> {
    /// One reconcile against `peers`, recorded in `health`.
    pub async fn sync(&mut self, peers: &[Lease], health: &SharedHealth) -> Option<Outcome> {
        let span = tracing::info_span!("reconcile", peers = peers.len());
        let computed = span.in_scope(|| {
            let computed = compute(&self.own, peers, &self.params, &self.same_l2);
            for why in &computed.skipped {
                tracing::warn!("{why}");
            }
            computed
        });
        let result = reconcile(
            &mut self.kernel,
            &self.devices,
            &self.networks,
            &computed.desired,
        )
        .instrument(span.clone())
        .await;
        let _enter = span.enter();
        let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
        h.reconciles += 1;
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
                h.last_error = Some(out.failures.join("; "));
                tracing::warn!(failures = ?out.failures, "reconcile incomplete, retrying next period");
                Some(out)
            }
            Err(e) => {
                h.last_error = Some(e.to_string());
                tracing::warn!("reconcile failed: {e}");
                None
            }
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
