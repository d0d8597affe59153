//! The daemon: one feed per address family, the source (API server or manifests directory),
//! the sync runner with the chosen backend, and the health, metrics and health-check node
//! port servers observing it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sluice_model::service::IpFamily;
use sluice_proxy::dataplane::{self, Any};
use sluice_proxy::node::{self, NodeFacts};
use sluice_proxy_core::backend::{Backend as _, BackendOptions, ProxyMode};
use sluice_proxy_core::config::{NodeTopology, PREFER_SAME_TRAFFIC_DISTRIBUTION};
use sluice_proxy_core::config_file::{LocalMode, ProxyConfig};
use sluice_proxy_core::health::{self, HealthServer, StatusSource};
use sluice_proxy_core::healthcheck::ServiceHealthServers;
use sluice_proxy_core::metrics::{self, Metrics};
use sluice_proxy_core::runner::{Feed, Runner, RunnerConfig};
use sluice_proxy_core::source::{KubeSource, ManifestsSource, client, fetch_node};
use sluice_proxy_core::{TrackerConfig, node_addresses};
use tokio::net::TcpListener;

/// How long a starting proxy waits for a previous one in its network namespace to exit.
const OWNER_WAIT: Duration = Duration::from_secs(5);

/// How long the proxy waits at start for its Node object (its primary IPs, pod CIDRs).
const NODE_WAIT: Duration = Duration::from_secs(10);

/// Runs until killed.
pub(crate) async fn run(config: ProxyConfig) -> anyhow::Result<()> {
    let node = node_name(&config)?;
    let families = node::families(&config);
    tracing::info!(%node, mode = %config.mode, ?families, "starting sluice-proxy");
    // Before anything touches the kernel: one proxy per network namespace (the fake mode
    // programs nothing).
    let _owner = match config.mode {
        ProxyMode::Fake => None,
        _ => Some(sluice_proxy::owner::claim(OWNER_WAIT)?),
    };
    for setting in config.unapplied() {
        tracing::warn!(
            setting,
            "accepted for kube-proxy compatibility but not applied"
        );
    }
    let client = match &config.manifests_dir {
        Some(_) => None,
        None => Some(kube_client(&config).await?),
    };
    let facts = this_node(&config, &node, client.as_ref()).await;
    let options = node::backend_options(&config, &families, &facts);
    let backend = build_backend(&config, &options)?;
    let feed = feed(&config, &node, &families);
    let metrics = Metrics::with_mode(SystemTime::now(), |r| backend.register_metrics(r));
    let mut runner = Runner::new(
        feed.clone(),
        backend,
        RunnerConfig {
            min_sync_period: config.min_sync_period,
            sync_period: config.sync_period,
            ..RunnerConfig::default()
        },
    );
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
    sluice_proxy_core::memory::set_release(sluice_proxy::memory::trim);
    spawn_source(&config, &node, &feed, client).await?;
    runner.run(std::future::pending()).await;
    Ok(())
}

/// The chosen mode's backend: other modes' leftovers removed first (as kube-proxy does), the
/// host set up for it (what `--init-only` does alone).
pub(crate) fn build_backend(config: &ProxyConfig, options: &BackendOptions) -> anyhow::Result<Any> {
    dataplane::cleanup_others(config.mode);
    let mut backend =
        Any::build(config.mode, options).with_context(|| format!("proxy mode {}", config.mode))?;
    backend
        .init()
        .with_context(|| format!("proxy mode {} init", config.mode))?;
    Ok(backend)
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

pub(crate) async fn kube_client(config: &ProxyConfig) -> anyhow::Result<kube::Client> {
    client(
        config.client.kubeconfig.as_deref(),
        config.client.master.as_deref(),
    )
    .await
    .context("connect to the Kubernetes API")
}

/// This node's addresses, with the Node object's primary IPs and pod CIDRs when the API
/// has it (kube mode; standalone mode uses the interfaces alone).
pub(crate) async fn this_node(
    config: &ProxyConfig,
    name: &str,
    client: Option<&kube::Client>,
) -> NodeFacts {
    let object = match client {
        Some(c) => fetch_node(c, name, NODE_WAIT).await,
        None => None,
    };
    if client.is_some() && object.is_none() {
        tracing::warn!(
            %name,
            "Node not found within {NODE_WAIT:?}: primary IPs taken from the interfaces"
        );
    }
    let topology = object.as_ref().map(|n| NodeTopology {
        addresses: node_addresses(n),
        ..NodeTopology::default()
    });
    let mut facts = NodeFacts::local(config, topology.as_ref());
    if let Some(spec) = object.as_ref().and_then(|n| n.spec.as_ref()) {
        let cidrs = spec.pod_cidrs.clone().unwrap_or_default();
        facts.pod_cidrs = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    }
    if config.detect_local_mode == LocalMode::NodeCidr && facts.pod_cidrs.is_empty() {
        tracing::warn!("--detect-local-mode NodeCIDR: no podCIDRs known for this node");
    }
    facts
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
    client: Option<kube::Client>,
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
    let client = match client {
        Some(c) => c,
        None => kube_client(config).await?,
    };
    let source = KubeSource::new(client, node, config.service_proxy_name.clone());
    tokio::spawn(source.run(feed.clone()));
    Ok(())
}
