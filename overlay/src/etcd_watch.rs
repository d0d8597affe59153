//! Keeps the etcd peer set current: list, then watch from the listed revision, and start
//! over with a fresh list whenever the watch breaks, is cancelled or falls behind a
//! compaction (flannel's `LeaseWatcher.Reset`). Every change yields the complete set; a key
//! overwritten with garbage leaves it, exactly as a fresh list would have it.
//!
//! The same list and watch see this node's own key, so a lease that was deleted or
//! overwritten is noticed at once and the renewer told to write it again. Only a key that
//! now holds another node's valid lease is left alone (with an error): overwriting it could
//! take a working subnet from a live node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use futures::channel::mpsc::Sender;
use tokio::sync::Notify;

use crate::etcd_entry::{self, Entry};
use crate::etcd_mgr::{EtcdMgrError, EtcdSubnetManager};
use crate::lease::Lease;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// This node's key, and (when guarded) its lease and whom to tell when it is lost.
pub(crate) struct Own {
    /// The key below the subnets prefix.
    pub(crate) label: String,
    /// The lease the key must hold, and the renewer to wake when it does not.
    pub(crate) guard: Option<(Lease, Arc<Notify>)>,
}

impl Own {
    /// Checks what the own key holds now (`None`: deleted) and wakes the renewer if needed.
    fn check(&self, now: Option<&Entry>) {
        let Some((lease, repair)) = &self.guard else {
            return;
        };
        let key = &self.label;
        match now {
            Some(Entry::Lease(found)) if found == lease => {}
            Some(Entry::Lease(found)) if found.attrs.public_ip != lease.attrs.public_ip => {
                tracing::error!(
                    "this node's subnet {key} is now leased to {:?}; not overwriting another node's lease",
                    found.attrs.public_ip
                );
            }
            Some(Entry::Lease(_)) => {
                tracing::warn!("this node's lease {key} was changed; writing it again");
                repair.notify_one();
            }
            Some(_) => {
                tracing::warn!("this node's lease {key} holds garbage; writing it again");
                repair.notify_one();
            }
            None => {
                tracing::warn!("this node's lease {key} was deleted; writing it again");
                repair.notify_one();
            }
        }
    }
}

/// The receiver went away: stop.
struct Closed;

/// Runs until the receiver is dropped.
pub(crate) async fn run(mgr: EtcdSubnetManager, own: Own, mut tx: Sender<Vec<Lease>>) {
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
    own: &Own,
    tx: &mut Sender<Vec<Lease>>,
    backoff: &mut Duration,
) -> Result<Closed, EtcdMgrError> {
    let listing = mgr.listing().await?;
    *backoff = BACKOFF_MIN;
    let mine = listing.leases.iter().find(|(label, _)| *label == own.label);
    let garbled = listing.garbage.iter().find(|g| g.label == own.label);
    match (mine, garbled) {
        (Some((_, lease)), _) => own.check(Some(&Entry::Lease(lease.clone()))),
        (None, Some(g)) => own.check(Some(&Entry::Garbage(g.clone()))),
        (None, None) => own.check(None),
    }
    let mut peers: BTreeMap<String, Lease> = listing
        .leases
        .into_iter()
        .filter(|(label, _)| *label != own.label)
        .collect();
    if tx.send(peers.values().cloned().collect()).await.is_err() {
        return Ok(Closed);
    }
    let (prefix, opts) = mgr.watch_options(listing.revision + 1);
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
            let (label, entry) = match event.event_type() {
                etcd_client::EventType::Put => {
                    let (label, entry) =
                        etcd_entry::parse(&prefix, kv.key(), kv.value(), kv.mod_revision());
                    (label, Some(entry))
                }
                etcd_client::EventType::Delete => {
                    let key = String::from_utf8_lossy(kv.key());
                    let Some(label) = key.strip_prefix(&prefix) else {
                        continue;
                    };
                    (label.to_owned(), None)
                }
            };
            if label == own.label {
                own.check(entry.as_ref());
                continue;
            }
            match entry {
                Some(Entry::Lease(lease)) => {
                    peers.insert(label, lease);
                }
                _ => {
                    peers.remove(&label);
                }
            }
        }
        if tx.send(peers.values().cloned().collect()).await.is_err() {
            return Ok(Closed);
        }
    }
}
