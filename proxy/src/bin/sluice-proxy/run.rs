//! The daemon: one feed per address family, the source (API server or manifests directory),
//! the sync runner with the chosen backend, and the health, metrics and health-check node
//! port servers observing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sluice_model::service::IpFamily;
use sluice_proxy::dataplane::Any;
use sluice_proxy_core::TrackerConfig;
use sluice_proxy_core::backend::BackendOptions;
use sluice_proxy_core::config::PREFER_SAME_TRAFFIC_DISTRIBUTION;
use sluice_proxy_core::config_file::{LocalMode, NodePortAddress, ProxyConfig};
use sluice_proxy_core::health::{self, HealthServer, StatusSource};
use sluice_proxy_core::healthcheck::ServiceHealthServers;
use sluice_proxy_core::metrics::{self, Metrics};
use sluice_proxy_core::runner::{Feed, Runner, RunnerConfig};
use sluice_proxy_core::source::{KubeSource, ManifestsSource, client};
use tokio::net::TcpListener;

/// Runs until killed.
pub(crate) async fn run(config: ProxyConfig) -> anyhow::Result<()> {
    let node = node_name(&config)?;
    let families = families(&config);
    tracing::info!(%node, mode = %config.mode, ?families, "starting sluice-proxy");
    for setting in config.unapplied() {
        tracing::warn!(
            setting,
            "accepted for kube-proxy compatibility but not applied"
        );
    }
    let feed = feed(&config, &node, &families);
    let options = backend_options(&config, &families);
    let backend =
        Any::build(config.mode, &options).with_context(|| format!("proxy mode {}", config.mode))?;
    let mut runner = Runner::new(
        feed.clone(),
        backend,
        RunnerConfig {
            min_sync_period: config.min_sync_period,
            sync_period: config.sync_period,
            ..RunnerConfig::default()
        },
    );
    let metrics = Metrics::new(config.mode, SystemTime::now());
    runner.observe(Arc::new(metrics.clone()));
    let source = Arc::new(StatusSource::new(feed.status(), config.health_timeout()));
    let hc = Arc::new(ServiceHealthServers::new(
        tokio::runtime::Handle::current(),
        // Health-check node ports listen where node ports are served, as kube-proxy's do.
        options.nodeport_addresses.clone(),
        ServiceHealthServers::proxy_health(source.clone()),
    ));
    runner.observe(hc);
    serve_health(&config, source, &metrics).await?;
    spawn_metrics_sampler(feed.clone(), metrics);
    spawn_source(&config, &node, &feed).await?;
    runner.run(std::future::pending()).await;
    Ok(())
}

/// `--hostname-override`, else `NODE_NAME` (the DaemonSet's downward API), else the hostname.
pub(crate) fn node_name(config: &ProxyConfig) -> anyhow::Result<String> {
    if let Some(n) = &config.hostname_override {
        return Ok(n.clone());
    }
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return Ok(n.to_lowercase());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").context("read the hostname")?;
    Ok(host.trim().to_lowercase())
}

/// IPv4, plus IPv6 when a cluster CIDR is IPv6 (dual stack).
pub(crate) fn families(config: &ProxyConfig) -> Vec<IpFamily> {
    let mut out = vec![IpFamily::V4];
    if config
        .cluster_cidrs
        .iter()
        .any(|c| matches!(c, ipnet::IpNet::V6(_)))
    {
        out.push(IpFamily::V6);
    }
    out
}

pub(crate) fn feed(config: &ProxyConfig, node: &str, families: &[IpFamily]) -> Feed {
    for gate in config.feature_gates.keys() {
        if gate != PREFER_SAME_TRAFFIC_DISTRIBUTION {
            tracing::warn!(%gate, "feature gate not used by sluice-proxy; ignored");
        }
    }
    Feed::new(
        families
            .iter()
            .map(|f| TrackerConfig::for_proxy(config, *f, node)),
    )
}

pub(crate) fn backend_options(config: &ProxyConfig, families: &[IpFamily]) -> BackendOptions {
    let local_cidrs = match config.detect_local_mode {
        LocalMode::ClusterCidr => config.cluster_cidrs.clone(),
        other => {
            tracing::warn!(
                "--detect-local-mode {other:?} is not supported by the nftables backend yet; \
                 falling back to --cluster-cidr"
            );
            config.cluster_cidrs.clone()
        }
    };
    BackendOptions {
        families: families.to_vec(),
        local_cidrs,
        masquerade_all: config.masquerade_all,
        masquerade_bit: config.masquerade_bit,
        nodeport_addresses: nodeport_addresses(&config.node_port_addresses),
        service_cidrs: config.service_cidrs.clone(),
    }
}

/// `--nodeport-addresses`: empty or `all` means every local address but loopback; CIDRs
/// select the local addresses inside them, read once at start.
fn nodeport_addresses(spec: &[NodePortAddress]) -> Option<Vec<IpAddr>> {
    if spec.is_empty() || spec.contains(&NodePortAddress::All) {
        return None;
    }
    let local = local_addresses();
    let picked: Vec<IpAddr> = local
        .into_iter()
        .filter(|ip| {
            spec.iter().any(|s| match s {
                NodePortAddress::Cidr(net) => net.contains(ip),
                NodePortAddress::Primary => !ip.is_loopback(),
                NodePortAddress::Localhost => ip.is_loopback(),
                NodePortAddress::All => true,
            })
        })
        .collect();
    if picked.is_empty() {
        tracing::warn!(
            ?spec,
            "--nodeport-addresses matches no local address; no node ports served"
        );
    }
    Some(picked)
}

/// The addresses on this node's interfaces (from `/proc/net`, no netlink needed).
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            if let Some(hex) = line.split_whitespace().next()
                && let Ok(bits) = u128::from_str_radix(hex, 16)
            {
                out.push(IpAddr::V6(bits.into()));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[1].contains("/32 host LOCAL")
                && let Some(ip) = pair[0].trim().trim_start_matches("|-- ").parse().ok()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

async fn serve_health(
    config: &ProxyConfig,
    source: Arc<StatusSource>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let hard_fail = config.bind_address_hard_fail;
    if let Some(addr) = config.healthz_bind_address {
        let router = HealthServer::new(source)
            .with_metrics(metrics.clone())
            .router();
        serve_on(addr, "healthz", hard_fail, router).await?;
    }
    if let Some(addr) = config.metrics_bind_address {
        serve_on(addr, "metrics", hard_fail, metrics::router(metrics.clone())).await?;
    }
    Ok(())
}

/// Serves `router` on `addr`. A port that cannot be bound is fatal only with
/// `--bind-address-hard-fail`; otherwise, as kube-proxy does, the error is logged and the
/// bind retried every 5 s while the proxy goes on programming Services.
async fn serve_on(
    addr: SocketAddr,
    what: &'static str,
    hard_fail: bool,
    router: axum::Router,
) -> anyhow::Result<()> {
    let first = match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(e) if hard_fail => return Err(e).with_context(|| format!("bind {what} {addr}")),
        Err(e) => {
            tracing::error!(%addr, "cannot bind the {what} server, retrying every 5 s: {e}");
            None
        }
    };
    tokio::spawn(async move {
        let listener = match first {
            Some(listener) => listener,
            None => loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Ok(listener) = TcpListener::bind(addr).await {
                    tracing::info!(%addr, "{what} server bound");
                    break listener;
                }
            },
        };
        health::serve(listener, router, std::future::pending()).await
    });
    Ok(())
}

/// Pending-change gauges and timestamps follow the runner's status.
fn spawn_metrics_sampler(feed: Feed, metrics: Metrics) {
    let mut status = feed.status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            metrics.update_from_status(&status.borrow_and_update());
        }
    });
}

pub(crate) async fn spawn_source(
    config: &ProxyConfig,
    node: &str,
    feed: &Feed,
) -> anyhow::Result<()> {
    if let Some(dir) = &config.manifests_dir {
        let source = ManifestsSource::new(dir.clone(), node);
        let feed = feed.clone();
        tokio::spawn(async move {
            if let Err(e) = source.run(feed).await {
                tracing::error!("manifests source stopped: {e}");
            }
        });
        return Ok(());
    }
    let client = client(
        config.client.kubeconfig.as_deref(),
        config.client.master.as_deref(),
    )
    .await
    .context("connect to the Kubernetes API")?;
    let source = KubeSource::new(client, node, config.service_proxy_name.clone());
    tokio::spawn(source.run(feed.clone()));
    Ok(())
}
