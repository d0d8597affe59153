//! The object store: every object of every kind, the global resource version and the history.
//!
//! One global counter (like etcd's revision) versions every write, so a list's version is a
//! point in time that watches of any kind can resume from. Writes go through here so that
//! metadata (uid, timestamps, generation, resourceVersion) and the Service allocations stay
//! consistent with what a real API server would report.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::history::{Event, EventType, History};
use crate::meta::{Ids, meta_str, metadata_mut, now_rfc3339};
use crate::resources::Resource;
use crate::selectors::Selectors;
use crate::services::Allocations;
use crate::update::{
    check_identity, check_namespace, keep_system_metadata, main_update, spec_of, status_update,
};

/// An object's namespace and name.
pub(crate) type ObjectKey = (String, String);

type Objects = BTreeMap<ObjectKey, Value>;

/// All objects plus the machinery that versions them.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<String, Objects>,
    rv: u64,
    history: History,
    ids: Ids,
    allocations: Allocations,
}

fn table_key(res: &Resource) -> String {
    format!("{}/{}", res.group, res.plural)
}

impl Store {
    /// An empty store.
    #[must_use]
    pub(crate) fn new(history_size: usize, allocations: Allocations) -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 0,
            history: History::new(history_size),
            ids: Ids::new(),
            allocations,
        }
    }

    /// The latest resource version.
    #[must_use]
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The event history.
    #[must_use]
    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    /// Forgets the event history up to now.
    pub(crate) fn compact(&mut self) {
        self.history.compact(self.rv);
    }

    fn table(&mut self, res: &Resource) -> &mut Objects {
        self.objects.entry(table_key(res)).or_default()
    }

    fn record(
        &mut self,
        res: &'static Resource,
        kind: EventType,
        object: &Value,
        prev: Option<Value>,
    ) {
        self.history.push(Event {
            rv: self.rv,
            resource: res,
            kind,
            object: object.clone(),
            previous: prev,
        });
    }

    /// One object.
    pub(crate) fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&table_key(res))
            .and_then(|t| t.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res.plural, name))
    }

    /// Objects of a kind, optionally in one namespace, filtered by selectors.
    #[must_use]
    pub(crate) fn list(&self, res: &Resource, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        self.list_page(res, ns, sel, None, usize::MAX).0
    }

    /// One page of a list: the objects after `after` in namespace/name order, at most
    /// `limit` of them, and — when more follow — the key of the last one returned with how
    /// many follow.
    pub(crate) fn list_page(
        &self,
        res: &Resource,
        ns: Option<&str>,
        sel: &Selectors,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> (Vec<Value>, Option<(ObjectKey, usize)>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(table) = self.objects.get(&table_key(res)) else {
            return (Vec::new(), None);
        };
        let from = after.map_or(Unbounded, Excluded);
        let mut matching = (table.range((from, Unbounded)))
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .filter(|(_, v)| sel.matches(v));
        let page: Vec<(&ObjectKey, &Value)> = matching.by_ref().take(limit).collect();
        let rest = matching.count();
        let next = match page.last() {
            Some((key, _)) if rest > 0 => Some(((*key).clone(), rest)),
            _ => None,
        };
        (page.into_iter().map(|(_, v)| v.clone()).collect(), next)
    }

    /// Stores a new object, filling in server-owned metadata.
    pub(crate) fn create(
        &mut self,
        res: &'static Resource,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        self.prepare_new(res, ns, &mut obj)?;
        let name = meta_str(&obj, "name").to_owned();
        if self.table(res).contains_key(&(ns.to_owned(), name.clone())) {
            return Err(ApiError::AlreadyExists {
                plural: res.plural.to_owned(),
                name,
            });
        }
        if res.kind == "Service" {
            self.allocations.on_create(&mut obj)?;
        }
        self.rv += 1;
        metadata_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.table(res).insert((ns.to_owned(), name), obj.clone());
        self.record(res, EventType::Added, &obj, None);
        Ok(obj)
    }

    fn prepare_new(&mut self, res: &Resource, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest("object must be a JSON object".into()));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        let uid = self.ids.uid();
        let suffix = self.ids.name_suffix();
        let meta = metadata_mut(obj);
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if prefix.is_empty() {
                return Err(ApiError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
            meta.insert("name".into(), json!(format!("{prefix}{suffix}")));
        }
        check_namespace(res, ns, meta.get("namespace").and_then(Value::as_str))?;
        if res.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        meta.remove("resourceVersion");
        Ok(())
    }

    /// Replaces an object (`status_only`: the `/status` subresource).
    ///
    /// A non-empty `metadata.resourceVersion` in `new` must match the stored one. The main
    /// resource keeps the stored status; the status subresource keeps everything but status and
    /// metadata. A write that changes nothing keeps the old version and emits no event.
    pub(crate) fn update(
        &mut self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        mut new: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if !new.is_object() {
            return Err(ApiError::BadRequest("object must be a JSON object".into()));
        }
        check_identity(res, ns, name, &new)?;
        let sent_rv = meta_str(&new, "resourceVersion");
        if !sent_rv.is_empty() && sent_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::Conflict {
                plural: res.plural.to_owned(),
                name: name.to_owned(),
            });
        }
        new = if status_only {
            status_update(&old, new)
        } else {
            main_update(res, &old, new)
        };
        keep_system_metadata(&old, &mut new, res);
        if res.kind == "Service" && !status_only {
            self.allocations.on_update(&old, &mut new)?;
        }
        if spec_of(&new) != spec_of(&old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if new == old {
            return Ok(old);
        }
        self.rv += 1;
        metadata_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.table(res)
            .insert((ns.to_owned(), name.to_owned()), new.clone());
        self.record(res, EventType::Modified, &new, Some(old));
        Ok(new)
    }

    /// Removes an object and returns its last state (stamped with the deletion's version).
    pub(crate) fn delete(
        &mut self,
        res: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let mut obj = self
            .table(res)
            .remove(&(ns.to_owned(), name.to_owned()))
            .ok_or_else(|| ApiError::not_found(res.plural, name))?;
        if res.kind == "Service" {
            self.allocations.release(&obj);
        }
        self.rv += 1;
        metadata_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(res, EventType::Deleted, &obj, None);
        Ok(obj)
    }
}
