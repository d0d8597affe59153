//! The Kubernetes API source: three `kube::runtime::watcher`s (Services,
//! EndpointSlices, this node's Node) feeding the model.
//!
//! The label selector is kube-proxy's (`!service.kubernetes.io/service-proxy-name`
//! or `=<serviceProxyName>`, and `!service.kubernetes.io/headless`, on both
//! Services and EndpointSlices), so the API server filters out what another
//! proxy owns; the model applies the same test again, because a label added
//! to a watched object arrives as a plain update. The Node watch uses the
//! field selector `metadata.name=<node>`. Watch errors are logged and the
//! watcher retries with kube's default backoff; a 410 re-list goes through
//! [`Reflector`], which neither drops nor duplicates objects.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use sluice_model::k8s::proxy_label_selector;

use super::SourceError;
use super::reflect::{Kind, Reflector};
use crate::runner::Feed;

/// Builds a client from `kubeconfig` (a file), or, without one, from the
/// environment (`KUBECONFIG`, `~/.kube/config`, then in-cluster), with
/// `master` overriding the server URL as kube-proxy's `--master` does.
pub async fn client(
    kubeconfig: Option<&Path>,
    master: Option<&str>,
) -> Result<kube::Client, SourceError> {
    let path = kubeconfig.map_or_else(|| "<default>".to_owned(), |p| p.display().to_string());
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| SourceError::Kubeconfig {
        path: path.clone(),
        source: e,
    };
    let mut config = match kubeconfig {
        Some(file) => {
            let parsed = Kubeconfig::read_from(file).map_err(|e| boxed(e.into()))?;
            kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
                .await
                .map_err(|e| boxed(e.into()))?
        }
        None => kube::Config::infer().await.map_err(|e| boxed(e.into()))?,
    };
    if let Some(master) = master.filter(|m| !m.is_empty()) {
        config.cluster_url = master.parse().map_err(|e| boxed(Box::new(e)))?;
    }
    kube::Client::try_from(config).map_err(SourceError::Client)
}

/// This node's Node object as it is now, asked for every 250 ms until `wait` has passed
/// (kube-proxy waits for its Node at start to learn its primary IPs); `None` when it does
/// not show up in time or the API cannot be reached.
pub async fn fetch_node(client: &kube::Client, name: &str, wait: Duration) -> Option<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match api.get_opt(name).await {
            Ok(Some(node)) => return Some(node),
            Ok(None) => tracing::debug!(%name, "Node not found yet"),
            Err(e) => tracing::debug!(%name, "Node not readable yet: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Watches the API for one node.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    node_name: String,
    proxy_name: Option<String>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("KubeSource"))
            .field("node_name", &self.node_name)
            .field("proxy_name", &self.proxy_name)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source for node `node_name`; `proxy_name` is `serviceProxyName`.
    pub fn new(
        client: kube::Client,
        node_name: impl Into<String>,
        proxy_name: Option<String>,
    ) -> Self {
        Self {
            client,
            node_name: node_name.into(),
            proxy_name,
        }
    }

    /// Feeds `feed` until the task is dropped (watchers retry forever).
    pub async fn run(self, feed: Feed) {
        let labels = proxy_label_selector(self.proxy_name.as_deref());
        let selected = watcher::Config::default().labels(&labels);
        let node = watcher::Config::default().fields(&format!("metadata.name={}", self.node_name));
        let services = watch::<Service>(Api::all(self.client.clone()), selected.clone(), &feed);
        let slices = watch::<EndpointSlice>(Api::all(self.client.clone()), selected, &feed);
        let nodes = watch::<Node>(Api::all(self.client), node, &feed);
        futures::join!(services, slices, nodes);
    }
}

/// Runs one watcher into the feed.
async fn watch<K>(api: Api<K>, config: watcher::Config, feed: &Feed)
where
    K: Kind + kube::Resource<DynamicType = ()> + DeserializeOwned + Sync,
{
    let mut reflector = Reflector::<K>::default();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => reflector.handle(feed, event),
            Err(e) => tracing::warn!(kind = K::NAME, "watch failed, retrying: {e}"),
        }
    }
}
