//! `--kube-subnet-mgr`: the subnet is the Node's podCIDR, the lease its annotations.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::config::KubeConfigOptions;
use sluice_model::net_conf::NetConf;
use sluice_overlay::allocate::Ranges;
use sluice_overlay::flags::Flags;
use sluice_overlay::kube_mgr::{KubeMgrError, KubeSubnetManager};
use sluice_overlay::node_lease::PodCidrError;
use sluice_overlay::{AnnotationKeys, Lease, LeaseAttrs};
use tokio::sync::Notify;

use crate::common::{Setup, serve};

pub(crate) async fn run(flags: Flags) -> anyhow::Result<()> {
    let node = flags
        .node_name
        .clone()
        .context("NODE_NAME (or --node-name) is not set")?;
    let conf = NetConf::read(&flags.net_config_path)?;
    conf.check()?;
    let client = client(&flags).await?;
    let mgr = KubeSubnetManager::new(
        client,
        &node,
        AnnotationKeys::new(&flags.kube_annotation_prefix),
    );
    let setup = Setup::new(&flags, &conf).await?;
    let previous = retry("read own node", || mgr.previous_attrs()).await;
    let (attrs, mac, mac6) = setup.attrs(previous.as_ref());
    let lease = acquire(&mgr, &conf, &attrs).await?;
    retry("mark network available", || mgr.complete()).await;
    let repair = Arc::new(Notify::new());
    let peers = mgr.peers_guarding(&attrs, repair.clone());
    tokio::spawn(republish_on(mgr.clone(), attrs.clone(), repair));
    // The controller manager sizes podCIDRs: SubnetLen and its range do not apply.
    let ranges = Ranges::default();
    serve(&flags, &conf, setup, lease, (mac, mac6), ranges, peers).await
}

/// Publishes this node's annotations again whenever the peer watch finds them changed.
async fn republish_on(mgr: KubeSubnetManager, attrs: LeaseAttrs, repair: Arc<Notify>) {
    loop {
        repair.notified().await;
        retry("publish this node's annotations", || mgr.republish(&attrs)).await;
    }
}

/// Acquires the lease, waiting out API trouble and a podCIDR not assigned yet, but failing
/// at once on a podCIDR that can never work (outside `Network`, unparseable).
async fn acquire(
    mgr: &KubeSubnetManager,
    conf: &NetConf,
    attrs: &LeaseAttrs,
) -> anyhow::Result<Lease> {
    let mut delay = Duration::from_millis(500);
    loop {
        let network = conf.network.filter(|_| conf.enable_ipv4);
        let network6 = conf.ipv6_network.filter(|_| conf.enable_ipv6);
        match mgr.acquire(network, network6, attrs).await {
            Ok(lease) => return Ok(lease),
            Err(KubeMgrError::PodCidr(
                e @ (PodCidrError::OutsideNetwork { .. } | PodCidrError::Invalid { .. }),
            )) => {
                return Err(e.into());
            }
            Err(e) => tracing::warn!("acquire lease: {e}; retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn client(flags: &Flags) -> anyhow::Result<kube::Client> {
    let config = match &flags.kubeconfig_file {
        Some(path) => {
            let kc = crate::kubeconfig::read(path)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("in-cluster kube config")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Retries `f` with backoff (0.5 s → 10 s) until it succeeds, logging each failure: the API
/// server being briefly away must not kill the daemon (and nothing is torn down meanwhile).
pub(crate) async fn retry<T, E, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(500);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!("{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
