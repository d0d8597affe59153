//! Reflector-style handling of `kube::runtime::watcher` events without a
//! store of full objects: the model *is* the store, so this only remembers
//! which objects it has applied (namespace and name), enough to turn a
//! re-list into deletions.
//!
//! Why not the `reflector` store: it would keep a second copy of every
//! Service and EndpointSlice (the model already holds what it needs) and
//! still leave the diffing to us. Why not buffer a re-list: objects are
//! applied as they arrive (`InitApply`), because applying an unchanged object
//! is a no-op in the change trackers, so nothing is dropped or duplicated
//! while the list streams in; at `InitDone` the objects the new list did not
//! contain are deleted.

use std::collections::HashSet;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;

use crate::runner::Feed;

/// A kind the proxy watches, and what its events mean to the feed.
pub(super) trait Kind: kube::Resource + Clone + Debug + Default + Send + 'static {
    /// For logs.
    const NAME: &'static str;
    fn apply(feed: &Feed, obj: &Self);
    fn delete(feed: &Feed, obj: &Self);
    /// The initial list is complete.
    fn listed(feed: &Feed);
}

impl Kind for Service {
    const NAME: &'static str = "services";
    fn apply(feed: &Feed, obj: &Self) {
        feed.on_service(obj);
    }
    fn delete(feed: &Feed, obj: &Self) {
        feed.on_service_deleted(obj);
    }
    fn listed(feed: &Feed) {
        feed.services_listed();
    }
}

impl Kind for EndpointSlice {
    const NAME: &'static str = "endpointslices";
    fn apply(feed: &Feed, obj: &Self) {
        feed.on_slice(obj);
    }
    fn delete(feed: &Feed, obj: &Self) {
        feed.on_slice_deleted(obj);
    }
    fn listed(feed: &Feed) {
        feed.slices_listed();
    }
}

impl Kind for Node {
    const NAME: &'static str = "nodes";
    fn apply(feed: &Feed, obj: &Self) {
        feed.on_node(obj);
    }
    fn delete(feed: &Feed, _obj: &Self) {
        feed.on_node_deleted();
    }
    fn listed(_feed: &Feed) {}
}

/// An object's identity within its kind.
type Key = (Option<String>, String);

fn key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The applied set of one watched kind.
#[derive(Debug)]
pub(super) struct Reflector<K> {
    known: HashSet<Key>,
    /// Objects seen since `Init`, while a (re-)list is in progress.
    relisting: Option<HashSet<Key>>,
    _kind: std::marker::PhantomData<fn(K)>,
}

impl<K: Kind> Default for Reflector<K> {
    fn default() -> Self {
        Self {
            known: HashSet::new(),
            relisting: None,
            _kind: std::marker::PhantomData,
        }
    }
}

impl<K: Kind> Reflector<K> {
    /// Feeds one watcher event to the model.
    pub(super) fn handle(&mut self, feed: &Feed, event: Event<K>) {
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(obj) => {
                let key = key(obj.meta());
                K::apply(feed, &obj);
                self.relisting.get_or_insert_default().insert(key);
            }
            Event::InitDone => self.init_done(feed),
            Event::Apply(obj) => {
                self.known.insert(key(obj.meta()));
                K::apply(feed, &obj);
            }
            Event::Delete(obj) => {
                self.known.remove(&key(obj.meta()));
                K::delete(feed, &obj);
            }
        }
    }

    /// Deletes what the new list no longer has, and reports the list done.
    fn init_done(&mut self, feed: &Feed) {
        let listed = self.relisting.take().unwrap_or_default();
        let gone: Vec<Key> = self.known.difference(&listed).cloned().collect();
        if !gone.is_empty() {
            tracing::info!(
                kind = K::NAME,
                count = gone.len(),
                "deleted while not watched"
            );
        }
        for (namespace, name) in gone {
            let mut obj = K::default();
            *obj.meta_mut() = ObjectMeta {
                namespace,
                name: Some(name),
                ..ObjectMeta::default()
            };
            K::delete(feed, &obj);
        }
        self.known = listed;
        K::listed(feed);
        // The list's pages and decoded objects are gone: hand their memory back before the
        // sync the completed list lets run (issue 14).
        crate::memory::release();
    }

    #[cfg(test)]
    pub(super) fn known(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_model::service::IpFamily;

    use super::*;
    use crate::TrackerConfig;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "p", "port": 80}]},
        }))
        .unwrap()
    }

    fn ports(feed: &Feed) -> Vec<String> {
        feed.with_state(IpFamily::V4, |state| {
            let (snapshot, _) = state.sync();
            (snapshot.service_ports())
                .map(|p| p.name.to_string())
                .collect()
        })
        .unwrap()
    }

    #[test]
    fn relist_deletes_what_is_gone_and_keeps_the_rest() {
        let feed = Feed::new([TrackerConfig::new(IpFamily::V4, "n1")]);
        let mut r = Reflector::<Service>::default();
        r.handle(&feed, Event::Init);
        r.handle(&feed, Event::InitApply(svc("a", "10.0.0.1")));
        r.handle(&feed, Event::InitApply(svc("b", "10.0.0.2")));
        assert!(!feed.is_initialized());
        r.handle(&feed, Event::InitDone);
        r.handle(&feed, Event::Apply(svc("c", "10.0.0.3")));
        assert_eq!(ports(&feed), ["ns/a:p", "ns/b:p", "ns/c:p"]);
        // A 410 re-list: b was deleted and d created while not watching.
        r.handle(&feed, Event::Init);
        r.handle(&feed, Event::InitApply(svc("a", "10.0.0.1")));
        r.handle(&feed, Event::InitApply(svc("c", "10.0.0.3")));
        r.handle(&feed, Event::InitApply(svc("d", "10.0.0.4")));
        assert_eq!(ports(&feed).len(), 4, "nothing deleted mid-list");
        r.handle(&feed, Event::InitDone);
        assert_eq!(ports(&feed), ["ns/a:p", "ns/c:p", "ns/d:p"]);
        assert_eq!(r.known(), 3);
        r.handle(&feed, Event::Delete(svc("a", "10.0.0.1")));
        assert_eq!(ports(&feed), ["ns/c:p", "ns/d:p"]);
    }
}
