//! [`Feed`]: where sources hand API objects to the model and the sync loop
//! learns that there is work.
//!
//! A source (the Kubernetes watch, the manifests directory, a test) never
//! talks to the runner directly: it records objects into one [`ProxyState`]
//! per family and, when a state says a sync is needed, the feed marks the
//! update queued (for health) and wakes the runner. Keeping that in one place
//! means every source gets the same filtering, logging and health semantics.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_model::k8s::ConvertError;
use sluice_model::service::IpFamily;
use tokio::sync::{Notify, watch};

use super::status::{FamilyStatus, NodeStatus, SyncStatus};
use crate::{ProxyState, Recorded, TrackerConfig};

/// The taint the cluster autoscaler sets on nodes it is about to delete.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Shared handle on the per-family model states; cheap to clone.
#[derive(Clone, Debug)]
pub struct Feed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    states: Vec<Family>,
    wake: Notify,
    status: watch::Sender<SyncStatus>,
    /// Initial lists complete: (Services, EndpointSlices).
    listed: Mutex<(bool, bool)>,
}

#[derive(Debug)]
pub(super) struct Family {
    pub(super) family: IpFamily,
    pub(super) state: Mutex<ProxyState>,
}

impl Feed {
    /// A feed with one state per config (one per family; two for dual stack).
    pub fn new(configs: impl IntoIterator<Item = TrackerConfig>) -> Self {
        let states: Vec<Family> = (configs.into_iter())
            .map(|config| Family {
                family: config.family,
                state: Mutex::new(ProxyState::new(config)),
            })
            .collect();
        let families = (states.iter())
            .map(|f| (f.family, FamilyStatus::default()))
            .collect();
        let status = SyncStatus {
            families,
            ..SyncStatus::default()
        };
        Self {
            inner: Arc::new(Inner {
                states,
                wake: Notify::new(),
                status: watch::Sender::new(status),
                listed: Mutex::new((false, false)),
            }),
        }
    }

    /// The families served, in config order.
    pub fn families(&self) -> Vec<IpFamily> {
        self.inner.states.iter().map(|f| f.family).collect()
    }

    /// A receiver of the latest [`SyncStatus`] (health, metrics).
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.status.subscribe()
    }

    /// Runs `f` on the state of `family`, if served (tests, `explain`).
    pub fn with_state<R>(
        &self,
        family: IpFamily,
        f: impl FnOnce(&mut ProxyState) -> R,
    ) -> Option<R> {
        let fam = self.inner.states.iter().find(|s| s.family == family)?;
        Some(f(&mut lock(&fam.state)))
    }

    /// Records a change made directly on the model (tests, benchmarks, a
    /// source that converts objects itself): `f` runs on every family's
    /// state and returns whether a sync is needed.
    pub fn update(&self, mut f: impl FnMut(&mut ProxyState) -> bool) {
        self.record("model", |state| Ok(changed(f(state))));
    }

    /// A Service was added or updated.
    pub fn on_service(&self, svc: &Service) {
        self.record("service", |state| state.on_service(svc));
    }

    /// A Service was deleted.
    pub fn on_service_deleted(&self, svc: &Service) {
        self.record("service", |state| {
            state.on_service_deleted(svc).map(changed)
        });
    }

    /// An EndpointSlice was added or updated.
    pub fn on_slice(&self, slice: &EndpointSlice) {
        self.record("endpointslice", |state| state.on_slice(slice));
    }

    /// An EndpointSlice was deleted.
    pub fn on_slice_deleted(&self, slice: &EndpointSlice) {
        self.record("endpointslice", |state| {
            state.on_slice_deleted(slice).map(changed)
        });
    }

    /// This node's Node object was added or updated.
    pub fn on_node(&self, node: &Node) {
        let deleting = node.metadata.deletion_timestamp.is_some()
            || (node.spec.as_ref().and_then(|s| s.taints.as_ref()))
                .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
        self.set_node(NodeStatus::Present { deleting });
        self.record("node", |state| Ok(changed(state.on_node(node))));
    }

    /// This node's Node object was deleted.
    pub fn on_node_deleted(&self) {
        self.set_node(NodeStatus::Absent);
        self.record("node", |state| Ok(changed(state.on_node_deleted())));
    }

    /// The initial Service list is complete (kube-proxy's `OnServiceSynced`).
    pub fn services_listed(&self) {
        self.listed(|l| l.0 = true);
    }

    /// The initial EndpointSlice list is complete
    /// (`OnEndpointSlicesSynced`).
    pub fn slices_listed(&self) {
        self.listed(|l| l.1 = true);
    }

    /// Both initial lists are complete: syncs may start.
    pub fn is_initialized(&self) -> bool {
        self.inner.status.borrow().initialized
    }

    fn listed(&self, set: impl FnOnce(&mut (bool, bool))) {
        let mut listed = self
            .inner
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set(&mut listed);
        if *listed == (true, true) && !self.is_initialized() {
            self.inner.status.send_modify(|s| s.initialized = true);
            tracing::info!("initial Service and EndpointSlice lists complete");
            self.inner.wake.notify_one();
        }
    }

    fn set_node(&self, node: NodeStatus) {
        self.inner.status.send_if_modified(|s| {
            let changed = s.node != node;
            s.node = node;
            changed
        });
    }

    /// Records one object into every family's state; logs what the model
    /// skipped once (the warnings are the same for every family), and
    /// queues a sync for each family that needs one.
    fn record(
        &self,
        kind: &'static str,
        mut f: impl FnMut(&mut ProxyState) -> Result<Recorded, ConvertError>,
    ) {
        for (i, fam) in self.inner.states.iter().enumerate() {
            let mut state = lock(&fam.state);
            match f(&mut state) {
                Ok(recorded) => {
                    if i == 0 {
                        for warning in &recorded.warnings {
                            tracing::warn!(kind, "{warning}");
                        }
                    }
                    if recorded.changed {
                        self.queued(fam.family, &state);
                    }
                }
                Err(e) if i == 0 => {
                    tracing::warn!(kind, "rejecting object: {e}");
                    self.inner.status.send_modify(|s| {
                        *s.rejected_objects.entry(kind).or_default() += 1;
                    });
                }
                Err(_) => {}
            }
        }
    }

    /// Marks an update of `family` queued and wakes the runner.
    fn queued(&self, family: IpFamily, state: &ProxyState) {
        let now = SystemTime::now();
        self.inner.status.send_modify(|s| {
            s.last_queued = Some(now);
            let fam = s.families.entry(family).or_default();
            fam.queued_since.get_or_insert(now);
            fam.service_changes_pending = state.service_changes_pending();
            fam.endpoint_changes_pending = state.endpoint_changes_pending();
        });
        self.inner.wake.notify_one();
    }

    pub(super) fn states(&self) -> &[Family] {
        &self.inner.states
    }

    pub(super) fn wake(&self) -> &Notify {
        &self.inner.wake
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut SyncStatus)) {
        self.inner.status.send_modify(f);
    }
}

fn changed(changed: bool) -> Recorded {
    Recorded {
        changed,
        warnings: Vec::new(),
    }
}

pub(super) fn lock(state: &Mutex<ProxyState>) -> MutexGuard<'_, ProxyState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
