//! The test-facing handle: start, address, kubeconfig, direct store access, hooks.
//!
//! Direct access lets a test arrange state (or check it) without going through a client, and
//! the hooks ([`TestApiServer::compact`], [`TestApiServer::close_watches`],
//! [`TestApiServer::pause_watches`], and the lasting faults of [`TestApiServer::set_fault`])
//! provoke the failure paths that clients must survive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::Fault;
use crate::meta::meta_str;
use crate::resources::Resource;
use crate::selectors::Selectors;
use crate::server::{self, Running, StartError};
use crate::services::Allocations;
use crate::shared::Shared;
use crate::store::Store;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where ClusterIPs come from (default `10.96.0.0/12`).
    pub service_cidr: Ipv4Net,
    /// Where NodePorts come from (default 30000–32767).
    pub node_port_range: RangeInclusive<u16>,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (default 1 s).
    pub bookmark_interval: Duration,
    /// How many events the history keeps for resuming watches (default 10 000).
    pub history_size: usize,
    /// The address to listen on (default `127.0.0.1`). The listener is bound in the calling
    /// thread's network namespace, so a server started inside a test-bed namespace serves
    /// the nodes there.
    pub bind: IpAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            node_port_range: 30000..=32767,
            bookmark_interval: Duration::from_secs(1),
            history_size: 10_000,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// A running in-memory API server; stops when dropped.
#[derive(Debug)]
pub struct TestApiServer {
    shared: Arc<Shared>,
    running: Running,
}

impl TestApiServer {
    /// Starts a server with the default [`Config`].
    ///
    /// # Panics
    /// If no port on 127.0.0.1 can be bound or no thread started (a broken test machine).
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(Config::default()).expect("start the test api server")
    }

    /// Starts a server with the given settings on a free port of `config.bind`.
    ///
    /// Works from plain and async tests alike: the server runs its own runtime on its own thread.
    pub fn start_with(mut config: Config) -> Result<Self, StartError> {
        config.bookmark_interval = config.bookmark_interval.max(Duration::from_millis(10));
        let (listener, addr) = server::bind(config.bind)?;
        let allocations = Allocations::new(config.service_cidr, config.node_port_range.clone());
        let store = Store::new(config.history_size, allocations);
        let shared = Arc::new(Shared::new(store, config, addr));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            let _ = shared.write(|s| s.create(namespaces(), "", obj));
        }
        let running = server::spawn(listener, Arc::clone(&shared))?;
        Ok(Self { shared, running })
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig for this server (context `sluice-test`, namespace `default`).
    #[must_use]
    pub fn kubeconfig_yaml(&self) -> String {
        crate::kubeconfig::kubeconfig_yaml(&self.url())
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Creates an object; its kind comes from `apiVersion` and `kind`, its namespace from
    /// `metadata.namespace` (default `default` for namespaced kinds).
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let (res, ns) = locate(&obj)?;
        self.shared.write(|s| s.create(res, &ns, obj))
    }

    /// Replaces an object (must exist); a set `metadata.resourceVersion` must be current.
    pub fn update(&self, obj: Value) -> Result<Value, ApiError> {
        let (res, ns) = locate(&obj)?;
        let name = meta_str(&obj, "name").to_owned();
        self.shared.write(|s| s.update(res, &ns, &name, obj, false))
    }

    /// Replaces an object's status.
    pub fn update_status(&self, obj: Value) -> Result<Value, ApiError> {
        let (res, ns) = locate(&obj)?;
        let name = meta_str(&obj, "name").to_owned();
        self.shared.write(|s| s.update(res, &ns, &name, obj, true))
    }

    /// One object by plural (`services`, or `events.events.k8s.io` for a non-core group), namespace (`""` for cluster-scoped) and name.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let res = by_plural(plural)?;
        self.shared.read().get(res, namespace, name)
    }

    /// Every object of a kind, in all namespaces, ordered by namespace and name.
    pub fn list(&self, plural: &str) -> Result<Vec<Value>, ApiError> {
        let res = by_plural(plural)?;
        Ok(self.shared.read().list(res, None, &Selectors::default()))
    }

    /// Deletes an object and returns its last state.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let res = by_plural(plural)?;
        self.shared.write(|s| s.delete(res, namespace, name))
    }

    /// The current resource version.
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.shared.read().resource_version()
    }

    /// Forgets the event history up to now: watches resuming from an older version get 410.
    pub fn compact(&self) {
        self.shared.write(Store::compact);
    }

    /// Ends every open watch stream; clients reconnect from their last seen version.
    pub fn close_watches(&self) {
        self.shared.close_watches();
    }

    /// Holds back events and bookmarks on watch streams (as if the network stalled).
    pub fn pause_watches(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Delivers what [`Self::pause_watches`] held back.
    pub fn resume_watches(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Switches `fault` on until [`Self::clear_fault`] (see [`Fault`] for what each does to
    /// open and new requests). Also `PUT /sluice-test/fault?fault=NAME` over HTTP.
    pub fn set_fault(&self, fault: Fault) {
        crate::faults::set(&self.shared, Some(fault));
    }

    /// Switches the fault off: requests a hang held are served, watches deliver again.
    pub fn clear_fault(&self) {
        crate::faults::set(&self.shared, None);
    }

    /// The fault switched on, if any.
    #[must_use]
    pub fn fault(&self) -> Option<Fault> {
        *self.shared.fault.borrow()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.running.stop();
    }
}

fn namespaces() -> &'static Resource {
    Resource::by_plural("namespaces").expect("invariant: namespaces are in the resource table")
}

fn by_plural(plural: &str) -> Result<&'static Resource, ApiError> {
    Resource::by_plural(plural).ok_or_else(|| ApiError::not_found("resources", plural))
}

fn locate(obj: &Value) -> Result<(&'static Resource, String), ApiError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let res = Resource::by_kind(api_version, kind).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "no resource for apiVersion {api_version:?} kind {kind:?}"
        ))
    })?;
    let ns = match meta_str(obj, "namespace") {
        _ if !res.namespaced => String::new(),
        "" => "default".to_owned(),
        ns => ns.to_owned(),
    };
    Ok((res, ns))
}
