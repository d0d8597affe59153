//! The kube subnet manager: the node's subnet is the `spec.podCIDRs` the controller manager
//! assigned, the lease is flannel's annotations patched onto `nodes/<name>/status`, and
//! peers are every other node that carries them. No TTL: a peer is gone when its Node is.
//!
//! Peers are watched with a reflector over all Nodes and handed out as complete sets
//! (level-triggered), so a missed or re-listed event can never leave stale peer state
//! behind: the reconciler only ever sees "these are the peers now". The same watch sees this
//! node's own annotations: changed or removed, they are published again at once, and garbage
//! found there at start is replaced rather than fatal.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use ipnet::{Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::lease::{AnnotationKeys, Lease, LeaseAttrs, LeaseError};
use crate::node_lease::{PodCidrError, peer_lease, pod_subnets};

/// What can go wrong talking to the API about leases.
#[derive(Debug, thiserror::Error)]
pub enum KubeMgrError {
    /// An API call failed.
    #[error("{op} node {node}: {source}")]
    Api {
        /// The operation, e.g. `get`, `patch status of`.
        op: &'static str,
        /// The node.
        node: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The node's pod CIDRs are unusable.
    #[error(transparent)]
    PodCidr(#[from] PodCidrError),
    /// The node's own annotations are malformed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// Leases through Node objects.
#[derive(Clone)]
pub struct KubeSubnetManager {
    nodes: Api<Node>,
    node_name: String,
    keys: AnnotationKeys,
}

impl KubeSubnetManager {
    /// A manager for node `node_name` with flannel's annotation keys under `keys`.
    pub fn new(client: kube::Client, node_name: &str, keys: AnnotationKeys) -> Self {
        Self {
            nodes: Api::all(client),
            node_name: node_name.to_owned(),
            keys,
        }
    }

    async fn own_node(&self) -> Result<Node, KubeMgrError> {
        self.nodes
            .get(&self.node_name)
            .await
            .map_err(|source| self.api_err("get", source))
    }

    /// What this node published before (to keep its VTEP MAC across restarts), if anything.
    /// Annotations someone overwrote with garbage are not fatal: they are simply replaced.
    pub async fn previous_attrs(&self) -> Result<Option<LeaseAttrs>, KubeMgrError> {
        let node = self.own_node().await?;
        let annotations = node.metadata.annotations.unwrap_or_default();
        match self.keys.read(&self.node_name, &annotations) {
            Ok(attrs) => Ok(attrs),
            Err(e) => {
                tracing::warn!(
                    "this node's own annotations are unusable ({e}); publishing new ones"
                );
                Ok(None)
            }
        }
    }

    /// Publishes `attrs` again (after someone changed or removed this node's annotations).
    pub async fn republish(&self, attrs: &LeaseAttrs) -> Result<(), KubeMgrError> {
        let patch = json!({"metadata": {"annotations": self.keys.publish(attrs)}});
        self.patch_status(patch).await
    }

    /// Takes the node's pod CIDRs as its lease and publishes `attrs` on it (flannel's
    /// `AcquireLease`): a strategic-merge patch of `nodes/<name>/status`.
    pub async fn acquire(
        &self,
        network: Option<Ipv4Net>,
        ipv6_network: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease, KubeMgrError> {
        let node = self.own_node().await?;
        let (subnet, ipv6_subnet) =
            pod_subnets(&self.node_name, &pod_cidrs(&node), network, ipv6_network)?;
        let patch = json!({"metadata": {"annotations": self.keys.publish(attrs)}});
        self.patch_status(patch).await?;
        Ok(Lease {
            subnet,
            ipv6_subnet,
            attrs: attrs.clone(),
        })
    }

    /// Marks the node's network available (flannel's `CompleteLease`).
    pub async fn complete(&self) -> Result<(), KubeMgrError> {
        let condition = json!({"type": "NetworkUnavailable", "status": "False",
            "reason": "FlannelIsUp", "message": "Sluice overlay is running on this node"});
        self.patch_status(json!({"status": {"conditions": [condition]}}))
            .await
    }

    async fn patch_status(&self, patch: serde_json::Value) -> Result<(), KubeMgrError> {
        self.nodes
            .patch_status(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
            .map(drop)
            .map_err(|source| self.api_err("patch status of", source))
    }

    /// The complete set of peer leases, anew after every change to any Node. Malformed
    /// peers are skipped with a warning (one bad node must not cut the others off).
    pub fn peers(&self) -> impl Stream<Item = Vec<Lease>> + Send + 'static {
        self.watch(None)
    }

    /// [`KubeSubnetManager::peers`], also notifying `repair` whenever this node's own
    /// annotations no longer say what `attrs` publishes (changed, garbage, removed), so the
    /// caller publishes them again at once.
    pub fn peers_guarding(
        &self,
        attrs: &LeaseAttrs,
        repair: Arc<Notify>,
    ) -> impl Stream<Item = Vec<Lease>> + Send + 'static {
        self.watch(Some((self.keys.publish(attrs), repair)))
    }

    fn watch(
        &self,
        guard: Option<(BTreeMap<String, String>, Arc<Notify>)>,
    ) -> impl Stream<Item = Vec<Lease>> + Send + 'static {
        let (reader, writer) = reflector::store();
        let me = self.node_name.clone();
        let keys = self.keys.clone();
        let events = watcher(self.nodes.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        events.filter_map(move |event| {
            let ready = match event {
                Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => false,
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("watch nodes: {e}");
                    false
                }
            };
            let nodes = reader.state();
            if let Some((published, repair)) = guard.as_ref().filter(|_| ready) {
                check_own(&nodes, &me, published, repair);
            }
            let peers = ready.then(|| peer_set(&nodes, &me, &keys));
            futures::future::ready(peers)
        })
    }

    fn api_err(&self, op: &'static str, source: kube::Error) -> KubeMgrError {
        KubeMgrError::Api {
            op,
            node: self.node_name.clone(),
            source,
        }
    }
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.clone().unwrap_or_default();
    match (spec.pod_cidrs, spec.pod_cidr) {
        (Some(list), _) if !list.is_empty() => list,
        (_, Some(one)) => vec![one],
        _ => Vec::new(),
    }
}

/// Wakes `repair` when this node's annotations lack or differ from what it `published`.
fn check_own(nodes: &[Arc<Node>], me: &str, published: &BTreeMap<String, String>, repair: &Notify) {
    let Some(own) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))
    else {
        return;
    };
    let have = own.metadata.annotations.clone().unwrap_or_default();
    let changed: Vec<&String> = published
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    if !changed.is_empty() {
        tracing::warn!(
            ?changed,
            "this node's lease annotations were changed; publishing them again"
        );
        repair.notify_one();
    }
}

fn peer_set(nodes: &[Arc<Node>], me: &str, keys: &AnnotationKeys) -> Vec<Lease> {
    let mut by_name = BTreeMap::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name == me {
            continue;
        }
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        match peer_lease(keys, &name, &pod_cidrs(node), &annotations) {
            Ok(Some(lease)) => {
                by_name.insert(name, lease);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping peer: {e}"),
        }
    }
    by_name.into_values().collect()
}
