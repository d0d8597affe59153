//! How a write combines the stored object with the request body.
//!
//! The split between the main resource and the `/status` subresource is what lets controllers
//! (flannel's node annotations, a load-balancer's Service status) and users write the same
//! object without undoing each other's changes.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::{meta_str, metadata_mut};
use crate::resources::Resource;

/// The parts of an object that are not metadata or status, to decide on `generation` bumps.
pub(crate) fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

pub(crate) fn check_namespace(
    res: &Resource,
    ns: &str,
    body_ns: Option<&str>,
) -> Result<(), ApiError> {
    match body_ns {
        Some(b) if res.namespaced && !b.is_empty() && b != ns => {
            Err(ApiError::BadRequest(format!(
                "the namespace of the provided object ({b}) does not match the namespace sent on the request ({ns})"
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_identity(
    res: &Resource,
    ns: &str,
    name: &str,
    new: &Value,
) -> Result<(), ApiError> {
    let body_name = meta_str(new, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(res, ns, Some(meta_str(new, "namespace")))
}

/// Main-resource write: the status comes from the stored object.
pub(crate) fn main_update(res: &Resource, old: &Value, mut new: Value) -> Value {
    if res.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    new
}

/// Status write: only status and metadata come from the request.
pub(crate) fn status_update(old: &Value, new: Value) -> Value {
    let mut out = old.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(m) = out.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if let Some(meta) = new.get("metadata") {
        out["metadata"] = meta.clone();
    }
    out
}

/// Fields clients cannot change: identity, uid, creation time, generation (recomputed).
pub(crate) fn keep_system_metadata(old: &Value, new: &mut Value, res: &Resource) {
    new["apiVersion"] = json!(res.api_version());
    new["kind"] = json!(res.kind);
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = metadata_mut(new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
}
