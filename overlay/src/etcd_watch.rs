//! Keeps the etcd peer set current: list, then watch from the listed revision, and start
//! over with a fresh list whenever the watch breaks, is cancelled or falls behind a
//! compaction (flannel's `LeaseWatcher.Reset`). Every change yields the complete set.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::SinkExt;
use futures::channel::mpsc::Sender;

use crate::etcd_mgr::{EtcdMgrError, EtcdSubnetManager, parse_kv};
use crate::lease::Lease;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The receiver went away: stop.
struct Closed;

/// Runs until the receiver is dropped.
pub(crate) async fn run(mgr: EtcdSubnetManager, own: String, mut tx: Sender<Vec<Lease>>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match list_and_watch(&mgr, &own, &mut tx, &mut backoff).await {
            Ok(Closed) => return,
            Err(e) => {
                tracing::warn!("peer watch: {e}; re-listing in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn list_and_watch(
    mgr: &EtcdSubnetManager,
    own: &str,
    tx: &mut Sender<Vec<Lease>>,
    backoff: &mut Duration,
) -> Result<Closed, EtcdMgrError> {
    let (leases, revision) = mgr.leases().await?;
    *backoff = BACKOFF_MIN;
    let mut peers: BTreeMap<String, Lease> = leases
        .into_iter()
        .filter(|l| l.label() != own)
        .map(|l| (l.label(), l))
        .collect();
    if tx.send(peers.values().cloned().collect()).await.is_err() {
        return Ok(Closed);
    }
    let (prefix, opts) = mgr.watch_options(revision + 1);
    let lost = || EtcdMgrError::WatchLost(prefix.clone());
    let mut stream = mgr
        .client()
        .watch(prefix.as_str(), Some(opts))
        .await
        .map_err(|source| EtcdMgrError::Etcd {
            op: format!("watch {prefix}"),
            source,
        })?;
    loop {
        let resp = stream
            .message()
            .await
            .map_err(|_| lost())?
            .ok_or_else(lost)?;
        if resp.canceled() || resp.compact_revision() != 0 {
            return Err(lost());
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let name = String::from_utf8_lossy(kv.key());
            let Some(label) = name.strip_prefix(&prefix) else {
                continue;
            };
            match event.event_type() {
                etcd_client::EventType::Put => {
                    if let Some(lease) = parse_kv(&prefix, kv.key(), kv.value())
                        && lease.label() != own
                    {
                        peers.insert(label.to_owned(), lease);
                    }
                }
                etcd_client::EventType::Delete => {
                    peers.remove(label);
                }
            }
        }
        if tx.send(peers.values().cloned().collect()).await.is_err() {
            return Ok(Closed);
        }
    }
}
