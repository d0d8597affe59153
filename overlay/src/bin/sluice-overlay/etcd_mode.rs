//! etcd mode (no `--kube-subnet-mgr`): flannel's leases under `--etcd-prefix`, renewed before
//! they expire; the configuration comes from `<prefix>/config`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_model::subnet_env::SubnetEnv;
use sluice_overlay::allocate::Ranges;
use sluice_overlay::etcd_mgr::{EtcdSubnetManager, HeldLease};
use sluice_overlay::flags::Flags;
use tokio::sync::Notify;

use crate::common::{Setup, serve};
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
    let checked = conf.check()?;
    let ranges = Ranges {
        ipv4: checked.ipv4,
        ipv6: checked.ipv6,
    };
    let setup = Setup::new(&flags, &conf).await?;
    let (leases, _) = retry("list leases", || mgr.leases()).await;
    let me = setup.identity();
    let mine = leases.iter().find(|l| {
        l.attrs.public_ip.map(IpAddr::V4) == me || l.attrs.public_ipv6.map(IpAddr::V6) == me
    });
    let (attrs, mac, mac6) = setup.attrs(mine.map(|l| &l.attrs));
    let env = SubnetEnv::read(&flags.subnet_file).ok();
    let previous = (
        env.as_ref().and_then(SubnetEnv::subnet_network),
        env.as_ref().and_then(SubnetEnv::ipv6_subnet_network),
    );
    let held = retry("acquire lease", || {
        mgr.acquire(&ranges, &attrs, previous, random_index)
    })
    .await;
    tracing::info!(origin = ?held.origin, "etcd lease held");
    let repair = Arc::new(Notify::new());
    let peers = mgr.peers_guarding(&held, repair.clone());
    tokio::spawn(renew_forever(
        mgr.clone(),
        held.clone(),
        flags.renew_after(),
        repair,
    ));
    serve(&flags, &conf, setup, held.lease, (mac, mac6), ranges, peers).await
}

/// Renews the lease before it expires, and at once when the peer watch finds it deleted or
/// overwritten (`repair`), for as long as the daemon runs. A failed renewal is retried every
/// minute (sooner for short TTLs); routes are never touched meanwhile.
async fn renew_forever(
    mgr: EtcdSubnetManager,
    mut held: HeldLease,
    after: Duration,
    repair: Arc<Notify>,
) {
    let mut wait = after;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = repair.notified() => {}
        }
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
