//! The subset of strategic merge patch that real objects need.
//!
//! Strategic merge differs from JSON merge patch only in how lists are combined, and the real
//! API server learns that from Go struct tags. Here the tags that matter for the served kinds are
//! a table keyed by the path suffix of the list field:
//!
//! | list field (path suffix)           | merged by        |
//! |------------------------------------|------------------|
//! | `spec.ports` (Service)             | `port`           |
//! | `containers`, `initContainers`     | `name`           |
//! | `containers[].ports`               | `containerPort`  |
//! | `env`, `volumes`                   | `name`           |
//! | `volumeMounts`                     | `mountPath`      |
//! | `status.conditions`                | `type`           |
//! | `status.addresses` (Node)          | `type`           |
//! | `metadata.ownerReferences`         | `uid`            |
//! | `metadata.finalizers`              | set union        |
//!
//! Every other list is replaced, which is also what the real API does for atomic lists such as
//! EndpointSlice `endpoints` and `ports`. Maps merge recursively and `null` deletes a key.
//! Directives: `$patch: replace` (map or list item), `$patch: delete` (map, or list item by its
//! merge key), `$deleteFromPrimitiveList/<field>`; `$setElementOrder/<field>` and `$retainKeys`
//! are accepted and ignored (element order is not preserved).

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge {
    /// Items are maps matched by this key.
    Key(&'static str),
    /// Items are primitives merged as a set.
    Set,
}

/// Path suffixes (with `[]` for list items) and their merge strategy; first match wins.
const LIST_MERGE: &[(&str, ListMerge)] = &[
    ("containers[].ports", ListMerge::Key("containerPort")),
    ("initContainers[].ports", ListMerge::Key("containerPort")),
    ("spec.ports", ListMerge::Key("port")),
    ("containers", ListMerge::Key("name")),
    ("initContainers", ListMerge::Key("name")),
    ("env", ListMerge::Key("name")),
    ("volumes", ListMerge::Key("name")),
    ("volumeMounts", ListMerge::Key("mountPath")),
    ("status.conditions", ListMerge::Key("type")),
    ("status.addresses", ListMerge::Key("type")),
    ("metadata.ownerReferences", ListMerge::Key("uid")),
    ("metadata.finalizers", ListMerge::Set),
];

fn list_merge(path: &str) -> Option<ListMerge> {
    LIST_MERGE
        .iter()
        .find(|(suffix, _)| path == *suffix || path.ends_with(&format!(".{suffix}")))
        .map(|(_, how)| *how)
}

/// Applies a strategic merge patch to `doc`.
pub(crate) fn merge(doc: &mut Value, patch: &Value) {
    merge_at(doc, patch, "");
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn merge_at(doc: &mut Value, patch: &Value, path: &str) {
    let Some(patch_map) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = Value::Object(strip_directives(patch_map));
            return;
        }
        Some("delete") => {
            *doc = Value::Null;
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            delete_from_list(target, field, value);
        } else if !key.starts_with('$') {
            merge_field(target, key, value, &join(path, key));
        }
    }
}

fn merge_field(target: &mut Map<String, Value>, key: &str, value: &Value, path: &str) {
    match value {
        Value::Null => {
            target.remove(key);
        }
        Value::Array(items) => {
            let existing = target.remove(key);
            let merged = merge_list(existing, items, path);
            target.insert(key.to_owned(), Value::Array(merged));
        }
        _ => {
            let slot = target.entry(key.to_owned()).or_insert(Value::Null);
            merge_at(slot, value, path);
            if slot.is_null() {
                target.remove(key);
            }
        }
    }
}

fn merge_list(existing: Option<Value>, items: &[Value], path: &str) -> Vec<Value> {
    let is_replace = |v: &Value| v.get("$patch").and_then(Value::as_str) == Some("replace");
    if items.iter().any(is_replace) {
        return items.iter().filter(|v| !is_replace(v)).cloned().collect();
    }
    let mut current = match existing {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    match list_merge(path) {
        Some(ListMerge::Key(k)) => merge_keyed(&mut current, items, k, path),
        Some(ListMerge::Set) => {
            for item in items {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
        }
        None => return items.to_vec(),
    }
    current
}

fn merge_keyed(current: &mut Vec<Value>, items: &[Value], key: &str, path: &str) {
    let item_path = format!("{path}[]");
    for item in items {
        let Some(id) = item.get(key) else {
            current.push(item.clone());
            continue;
        };
        let pos = current.iter().position(|c| c.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_at(&mut current[i], item, &item_path),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                merge_at(&mut fresh, item, &item_path);
                current.push(fresh);
            }
        }
    }
}

fn delete_from_list(target: &mut Map<String, Value>, field: &str, values: &Value) {
    let (Some(Value::Array(list)), Some(remove)) = (target.get_mut(field), values.as_array())
    else {
        return;
    };
    list.retain(|v| !remove.contains(v));
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(mut doc: Value, patch: Value) -> Value {
        merge(&mut doc, &patch);
        doc
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let doc = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        let out = patched(
            doc,
            json!({"metadata": {"annotations": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"b": "2", "c": "3"}}})
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let doc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        let out = patched(
            doc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 53},
                {"port": 443, "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 53}])
        );
    }

    #[test]
    fn conditions_and_addresses_merge_by_type() {
        let doc = json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let out = patched(
            doc,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True"})
        );
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn containers_by_name_and_their_ports_by_container_port() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "ports": [{"containerPort": 80}]}]}});
        let out = patched(
            doc,
            json!({"spec": {"containers": [{"name": "a", "image": "y",
                "ports": [{"containerPort": 81}]}]}}),
        );
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["image"], "y");
        assert_eq!(c["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn other_lists_replace_and_directives() {
        let doc = json!({"endpoints": [{"addresses": ["1.1.1.1"]}], "spec": {"ports": [{"port": 1}],
            "selector": {"a": "b"}}, "metadata": {"finalizers": ["x"]}});
        let out = patched(
            doc,
            json!({"endpoints": [{"addresses": ["2.2.2.2"]}],
                "spec": {"ports": [{"port": 2}, {"$patch": "replace"}],
                    "selector": {"$patch": "replace", "c": "d"},
                    "$setElementOrder/ports": [{"port": 2}]},
                "metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert_eq!(out["endpoints"], json!([{"addresses": ["2.2.2.2"]}]));
        assert_eq!(out["spec"]["ports"], json!([{"port": 2}]));
        assert_eq!(out["spec"]["selector"], json!({"c": "d"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        let gone = patched(
            json!({"spec": {"a": {"b": 1}}}),
            json!({"spec": {"a": {"$patch": "delete"}}}),
        );
        assert_eq!(gone, json!({"spec": {}}));
    }
}
