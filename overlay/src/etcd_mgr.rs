//! The etcd subnet manager, on flannel's key layout so Sluice and flannel nodes share one
//! etcd: `<prefix>/config` holds net-conf.json, `<prefix>/subnets/<a.b.c.d>-<len>` one lease
//! JSON per node, attached to an etcd lease with a TTL (24 h by default) that the node
//! renews. A node that stops renewing disappears from its peers when the TTL runs out.
//!
//! Acquisition is a create-if-absent transaction, retried when another node wins the race;
//! peers are handed out as complete sets (listed, then kept current by a prefix watch, and
//! re-listed whenever the watch is lost or compacted), so the reconciler never acts on a
//! partial view. The same watch guards this node's own lease: deleted or overwritten, it is
//! written again at once rather than at the next renewal a day later.
//!
//! The connection sends HTTP/2 keepalives and every request has a deadline, so an etcd that
//! silently stops answering (a dropped connection, a frozen member) is noticed and logged
//! within seconds instead of after the kernel's TCP retransmissions give up.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use futures::Stream;
use ipnet::{Ipv4Net, Ipv6Net};
use sluice_model::net_conf::{NetConf, NetConfError};
use tokio::sync::Notify;

use crate::allocate::{self, AllocateError, Origin, Ranges};
use crate::etcd_entry::{self, Entry, Garbage};
use crate::lease::{Lease, LeaseAttrs, subnet_key};

/// flannel's default key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// flannel's lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often acquisition retries after losing a race (flannel's `raceRetries`).
const RACE_RETRIES: usize = 10;
/// HTTP/2 keepalive: a ping this often (etcd refuses pings more often than every 5 s)...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...answered within this, or the connection is dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one request (a watch's only until it is established).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong with leases in etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdMgrError {
    /// etcd did not answer or refused.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// What was attempted.
        op: String,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// `<prefix>/config` is missing.
    #[error("etcd {0}: no network configuration")]
    NoConfig(String),
    /// `<prefix>/config` is not valid net-conf JSON.
    #[error("etcd {key}: {source}")]
    Config {
        /// The key.
        key: String,
        /// The parse error.
        #[source]
        source: NetConfError,
    },
    /// No subnet is free.
    #[error(transparent)]
    Allocate(#[from] AllocateError),
    /// The peer watch ended or was compacted; the caller re-lists.
    #[error("etcd watch of {0} lost")]
    WatchLost(String),
    /// Other nodes kept winning the race for free subnets.
    #[error("lost the race for a free subnet {0} times")]
    Raced(usize),
}

/// A lease this node holds in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The lease as peers see it.
    pub lease: Lease,
    /// The etcd lease that keeps it alive.
    pub etcd_lease: i64,
    /// Where the subnet came from.
    pub origin: Origin,
}

/// Leases through etcd.
#[derive(Clone)]
pub struct EtcdSubnetManager {
    client: Client,
    prefix: String,
    ttl: Duration,
}

impl EtcdSubnetManager {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, EtcdMgrError> {
        let options = ConnectOptions::new()
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|source| etcd_err(format!("connect {}", endpoints.join(",")), source))?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            ttl,
        })
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// Reads net-conf.json from `<prefix>/config`.
    pub async fn config(&self) -> Result<NetConf, EtcdMgrError> {
        let key = format!("{}/config", self.prefix);
        let resp = self
            .client
            .clone()
            .get(key.as_str(), None)
            .await
            .map_err(|source| etcd_err(format!("get {key}"), source))?;
        let kv = resp
            .kvs()
            .first()
            .ok_or_else(|| EtcdMgrError::NoConfig(key.clone()))?;
        let text = String::from_utf8_lossy(kv.value());
        NetConf::parse(&text).map_err(|source| EtcdMgrError::Config { key, source })
    }

    /// All leases and the revision they were read at. Malformed leases are skipped with a
    /// warning: one bad key must not hide the other peers.
    pub async fn leases(&self) -> Result<(Vec<Lease>, i64), EtcdMgrError> {
        let listing = self.listing().await?;
        let leases = listing.leases.into_iter().map(|(_, l)| l).collect();
        Ok((leases, listing.revision))
    }

    /// Every key below the subnets prefix: the leases, the subnet keys holding garbage, and
    /// the revision they were read at.
    pub async fn listing(&self) -> Result<Listing, EtcdMgrError> {
        let prefix = self.subnets_prefix();
        let resp = self
            .client
            .clone()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|source| etcd_err(format!("list {prefix}"), source))?;
        let mut listing = Listing {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Listing::default()
        };
        for kv in resp.kvs() {
            match etcd_entry::parse(&prefix, kv.key(), kv.value(), kv.mod_revision()) {
                (label, Entry::Lease(lease)) => listing.leases.push((label, lease)),
                (_, Entry::Garbage(g)) => listing.garbage.push(g),
                (_, Entry::Foreign) => {}
            }
        }
        Ok(listing)
    }

    /// Acquires subnets for `attrs` (flannel's order: own lease, `previous`, free ones; one
    /// per enabled family) and writes the lease with a fresh TTL.
    pub async fn acquire(
        &self,
        ranges: &Ranges,
        attrs: &LeaseAttrs,
        previous: (Option<Ipv4Net>, Option<Ipv6Net>),
        mut pick: impl FnMut(usize) -> usize,
    ) -> Result<HeldLease, EtcdMgrError> {
        let public_ip = match (attrs.public_ip, attrs.public_ipv6) {
            (Some(v4), _) => IpAddr::V4(v4),
            (None, Some(v6)) => IpAddr::V6(v6),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        for _ in 0..RACE_RETRIES {
            let listing = self.listing().await?;
            let garbage: Vec<_> = listing.garbage.iter().map(|g| g.subnets).collect();
            let leases: Vec<Lease> = listing.leases.into_iter().map(|(_, l)| l).collect();
            let choice =
                allocate::choose(ranges, public_ip, &leases, &garbage, previous, &mut pick)?;
            let lease = Lease {
                subnet: choice.subnet,
                ipv6_subnet: choice.ipv6_subnet,
                attrs: attrs.clone(),
            };
            let label = lease.label();
            let guard = match listing.garbage.iter().find(|g| g.label == label) {
                _ if choice.origin == Origin::OwnLease => Guard::None,
                Some(g) => {
                    tracing::warn!(
                        "taking back this node's previous subnet {label}: its key holds garbage"
                    );
                    Guard::Revision(g.mod_revision)
                }
                None => Guard::Absent,
            };
            if let Some(etcd_lease) = self.write(&lease, guard).await? {
                return Ok(HeldLease {
                    lease,
                    etcd_lease,
                    origin: choice.origin,
                });
            }
        }
        Err(EtcdMgrError::Raced(RACE_RETRIES))
    }

    /// Re-puts the lease under a fresh TTL (flannel's renewal) and revokes the old etcd lease,
    /// which no longer holds the key. Returns the renewed lease.
    pub async fn renew(&self, held: &HeldLease) -> Result<HeldLease, EtcdMgrError> {
        let etcd_lease = self
            .write(&held.lease, Guard::None)
            .await?
            .unwrap_or_default();
        if held.etcd_lease != 0 && held.etcd_lease != etcd_lease {
            let _ = self.client.clone().lease_revoke(held.etcd_lease).await;
        }
        Ok(HeldLease {
            etcd_lease,
            ..held.clone()
        })
    }

    /// Writes `lease` under a new etcd lease if `guard` holds (else `None`: another node
    /// won). A lost race revokes the unused lease.
    async fn write(&self, lease: &Lease, guard: Guard) -> Result<Option<i64>, EtcdMgrError> {
        let mut client = self.client.clone();
        let key = format!("{}{}", self.subnets_prefix(), lease.label());
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let grant = client
            .lease_grant(ttl, None)
            .await
            .map_err(|source| etcd_err(format!("grant lease for {key}"), source))?;
        let put = TxnOp::put(
            key.as_str(),
            lease.etcd_value(),
            Some(PutOptions::new().with_lease(grant.id())),
        );
        let guard = match guard {
            Guard::None => Vec::new(),
            Guard::Absent => vec![Compare::version(key.as_str(), CompareOp::Equal, 0)],
            Guard::Revision(rev) => {
                vec![Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)]
            }
        };
        let resp = client
            .txn(Txn::new().when(guard).and_then([put]))
            .await
            .map_err(|source| etcd_err(format!("put {key}"), source))?;
        if resp.succeeded() {
            return Ok(Some(grant.id()));
        }
        let _ = client.lease_revoke(grant.id()).await;
        Ok(None)
    }

    /// The complete peer set (every lease but the one labelled `own`, see [`Lease::label`]),
    /// anew after every change; re-lists
    /// after any watch failure. Errors are logged and retried with backoff; the stream never
    /// ends on its own.
    pub fn peers(&self, own: String) -> impl Stream<Item = Vec<Lease>> + Send + 'static {
        let own = crate::etcd_watch::Own {
            label: own,
            guard: None,
        };
        let mgr = self.clone();
        let (tx, rx) = futures::channel::mpsc::channel(16);
        tokio::spawn(async move { crate::etcd_watch::run(mgr, own, tx).await });
        rx
    }

    /// [`EtcdSubnetManager::peers`] of `held`, which also notifies `repair` whenever this
    /// node's own key is deleted or stops holding its lease (the caller then renews it).
    pub fn peers_guarding(
        &self,
        held: &HeldLease,
        repair: Arc<Notify>,
    ) -> impl Stream<Item = Vec<Lease>> + Send + 'static {
        let own = crate::etcd_watch::Own {
            label: held.lease.label(),
            guard: Some((held.lease.clone(), repair)),
        };
        let mgr = self.clone();
        let (tx, rx) = futures::channel::mpsc::channel(16);
        tokio::spawn(async move { crate::etcd_watch::run(mgr, own, tx).await });
        rx
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn watch_options(&self, revision: i64) -> (String, WatchOptions) {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        (self.subnets_prefix(), opts)
    }
}

/// Every key below the subnets prefix, sorted into leases and garbage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys (below the prefix) holding leases, and their leases.
    pub leases: Vec<(String, Lease)>,
    /// The subnet keys holding something else.
    pub garbage: Vec<Garbage>,
    /// The revision they were read at.
    pub revision: i64,
}

/// When a lease write may happen.
#[derive(Clone, Copy, Debug)]
enum Guard {
    /// Always (renewal, our own lease).
    None,
    /// Only if nobody holds the key.
    Absent,
    /// Only if the key is still at this modification revision (garbage taken back).
    Revision(i64),
}

fn etcd_err(op: String, source: etcd_client::Error) -> EtcdMgrError {
    EtcdMgrError::Etcd { op, source }
}

/// The subnets key of a lease, for callers that delete or inspect it.
pub fn lease_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!(
        "{}/subnets/{}",
        prefix.trim_end_matches('/'),
        subnet_key(Some(subnet), None)
    )
}
