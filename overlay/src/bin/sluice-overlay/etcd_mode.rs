//! etcd mode (no `--kube-subnet-mgr`): flannel's leases under `--etcd-prefix`, renewed before
//! they expire; the configuration comes from `<prefix>/config`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use anyhow::Context;
use sluice_model::subnet_env::SubnetEnv;
use sluice_overlay::etcd_mgr::{EtcdSubnetManager, HeldLease};
use sluice_overlay::flags::Flags;

use crate::common::{Setup, previous_mac, serve};
use crate::kube_mode::retry;

/// How often a failed renewal is retried (flannel: every minute).
const RENEW_RETRY: Duration = Duration::from_secs(60);

pub(crate) async fn run(flags: Flags) -> anyhow::Result<()> {
    let endpoints = flags.etcd_endpoints.clone();
    let mgr = retry("connect to etcd", || {
        EtcdSubnetManager::connect(&endpoints, &flags.etcd_prefix, flags.subnet_lease_ttl)
    })
    .await;
    let conf = retry("read the network configuration", || mgr.config()).await;
    let range = conf
        .check()?
        .ipv4
        .context("net-conf: IPv4 is not enabled")?;
    let setup = Setup::new(&flags, &conf).await?;
    let (leases, _) = retry("list leases", || mgr.leases()).await;
    let mine = leases
        .iter()
        .find(|l| l.attrs.public_ip == Some(setup.public_ip));
    let (attrs, mac) = setup.attrs(previous_mac(mine.map(|l| &l.attrs)));
    let previous = SubnetEnv::read(&flags.subnet_file)
        .ok()
        .and_then(|e| e.subnet_network());
    let held = retry("acquire lease", || {
        mgr.acquire(&range, &attrs, previous, random_index)
    })
    .await;
    tracing::info!(origin = ?held.origin, "etcd lease held");
    tokio::spawn(renew_forever(
        mgr.clone(),
        held.clone(),
        flags.renew_after(),
    ));
    let peers = mgr.peers(held.lease.subnet);
    serve(&flags, &conf, setup, held.lease, mac, peers).await
}

/// Renews the lease before it expires, for as long as the daemon runs. A failed renewal is
/// retried every minute (sooner for short TTLs); routes are never touched meanwhile.
async fn renew_forever(mgr: EtcdSubnetManager, mut held: HeldLease, after: Duration) {
    let mut wait = after;
    loop {
        tokio::time::sleep(wait).await;
        match mgr.renew(&held).await {
            Ok(renewed) => {
                held = renewed;
                wait = after;
                tracing::debug!("lease renewed");
            }
            Err(e) => {
                wait = RENEW_RETRY.min(after);
                tracing::warn!("renew lease: {e}; retrying in {wait:?}");
            }
        }
    }
}

/// A random index below `n` (flannel picks among the first free subnets at random so nodes
/// joining together rarely race for the same one).
fn random_index(n: usize) -> usize {
    let r = RandomState::new().hash_one(std::process::id());
    usize::try_from(r % n.max(1) as u64).unwrap_or(0)
}
