//! One manifest file → the objects the proxy cares about.
//!
//! Every file is read as YAML, which also accepts JSON; a file may hold
//! several `---`-separated documents and `kind: List` documents. A document
//! that does not parse, or a Service/EndpointSlice that is not a valid object,
//! makes the whole file bad (reported and skipped): half a file is more
//! surprising than none. Documents of other kinds are skipped with a note.
//!
//! A file that starts with `{` is read as JSON with `serde_json`, a `List` one item at a
//! time: `serde_yaml` loads a whole document as events before deserialising it, which for
//! a 8 MiB `List` of 10,000 Services and their slices peaked at ~290 MiB (events plus the
//! JSON tree of the whole list), against a few MiB item by item (issue 14).

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize as _;
use serde_json::Value;
use serde_json::value::RawValue;

/// An object from a manifest file.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    Slice(Box<EndpointSlice>),
    /// A Node.
    Node(Box<Node>),
}

/// The identity of an object across files: kind, namespace, name.
pub(super) type ObjKey = (&'static str, String, String);

impl Object {
    /// Records the object into `feed` as the proxy on `node` sees it (a Node object only
    /// when it is that node's).
    pub fn feed(&self, feed: &crate::runner::Feed, node: &str) {
        match self {
            Self::Service(svc) => feed.on_service(svc),
            Self::Slice(slice) => feed.on_slice(slice),
            Self::Node(n) if n.metadata.name.as_deref() == Some(node) => feed.on_node(n),
            Self::Node(_) => {}
        }
    }

    pub(super) fn key(&self) -> ObjKey {
        let (kind, meta) = match self {
            Self::Service(o) => ("Service", &o.metadata),
            Self::Slice(o) => ("EndpointSlice", &o.metadata),
            Self::Node(o) => ("Node", &o.metadata),
        };
        let ns = meta.namespace.clone().unwrap_or_default();
        (kind, ns, meta.name.clone().unwrap_or_default())
    }
}

/// The objects of one file, plus notes on skipped documents.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The Services, EndpointSlices and Nodes, in file order.
    pub objects: Vec<Object>,
    /// What was skipped, and why.
    pub notes: Vec<String>,
}

/// Parses a file's text; `Err` is the reason the file is bad.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut objects = Vec::new();
    let notes = parse_with(text, &mut |o| objects.push(o))?;
    Ok(Parsed { objects, notes })
}

/// Parses a file's text, handing each object to `sink` as soon as it is parsed (nothing
/// is held: a file of 10,000 Services and their slices is ~29 MiB of objects, issue 14);
/// returns the notes on skipped documents. A bad document is found only when it is
/// reached, after the objects before it went to `sink`.
pub(super) fn parse_with(text: &str, sink: &mut dyn FnMut(Object)) -> Result<Vec<String>, String> {
    let mut parsed = Sink {
        sink,
        notes: Vec::new(),
    };
    if text.trim_start().starts_with('{') {
        parse_json(text, &mut parsed)?;
        return Ok(parsed.notes);
    }
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(document).map_err(|e| format!("document {}: {e}", index + 1))?;
        add(value, index + 1, &mut parsed)?;
    }
    Ok(parsed.notes)
}

/// Where parsed objects and notes go.
struct Sink<'a> {
    sink: &'a mut dyn FnMut(Object),
    notes: Vec<String>,
}

/// The fields of a JSON document that tell a `List` and hold its items, unparsed.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "apiVersion")]
    api: Option<&'a str>,
    kind: Option<&'a str>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// JSON documents (one or several, concatenated), a `List`'s items parsed one by one.
fn parse_json(text: &str, parsed: &mut Sink<'_>) -> Result<(), String> {
    let documents = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    for (index, document) in documents.enumerate() {
        let doc = index + 1;
        let raw = document.map_err(|e| format!("document {doc}: {e}"))?;
        let head: Option<Head<'_>> = serde_json::from_str(raw.get()).ok();
        match head {
            Some(Head {
                api: Some("v1"),
                kind: Some("List"),
                items,
            }) => {
                for item in items.unwrap_or_default() {
                    let value: Value = serde_json::from_str(item.get())
                        .map_err(|e| format!("document {doc}: {e}"))?;
                    add(value, doc, parsed)?;
                }
            }
            _ => {
                let value: Value =
                    serde_json::from_str(raw.get()).map_err(|e| format!("document {doc}: {e}"))?;
                add(value, doc, parsed)?;
            }
        }
    }
    Ok(())
}

fn add(value: Value, doc: usize, parsed: &mut Sink<'_>) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let object = match (api.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            return items
                .into_iter()
                .try_for_each(|item| add(item, doc, parsed));
        }
        ("v1", "Service") => Object::Service(Box::new(typed(value, doc, &kind)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::Slice(Box::new(typed(value, doc, &kind)?))
        }
        ("v1", "Node") => Object::Node(Box::new(typed(value, doc, &kind)?)),
        _ => {
            parsed.notes.push(format!(
                "document {doc}: skipped apiVersion {api:?} kind {kind:?}"
            ));
            return Ok(());
        }
    };
    (parsed.sink)(normalize(object, doc)?);
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    doc: usize,
    kind: &str,
) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("document {doc}: invalid {kind}: {e}"))
}

/// Requires a name and defaults the namespace to `default`, as `kubectl
/// apply` would.
fn normalize(mut object: Object, doc: usize) -> Result<Object, String> {
    let (meta, namespaced) = match &mut object {
        Object::Service(o) => (&mut o.metadata, true),
        Object::Slice(o) => (&mut o.metadata, true),
        Object::Node(o) => (&mut o.metadata, false),
    };
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err(format!("document {doc}: metadata.name is required"));
    }
    if namespaced && meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_owned());
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_json_and_lists() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"discovery.k8s.io/v1\", \"kind\": \"EndpointSlice\", \"metadata\": {\"name\": \"a-1\", \"namespace\": \"x\"}, \"addressType\": \"IPv4\", \"endpoints\": []}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        let parsed = parse(text).unwrap();
        let keys: Vec<ObjKey> = parsed.objects.iter().map(Object::key).collect();
        assert_eq!(
            keys,
            [
                ("Service", "default".to_owned(), "a".to_owned()),
                ("EndpointSlice", "x".to_owned(), "a-1".to_owned())
            ]
        );
        assert_eq!(parsed.notes.len(), 1);
    }

    #[test]
    fn json_lists_are_read_item_by_item_as_yaml_reads_them() {
        let text = r#"{"kind": "List", "apiVersion": "v1", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
            {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "a-1", "namespace": "x"}, "addressType": "IPv4", "endpoints": []}]},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}]}
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}"#;
        let json = parse(text).unwrap();
        let yaml = parse(&format!("---\n{}", text.replace("]}\n", "]}\n---\n"))).unwrap();
        let keys = |p: &Parsed| p.objects.iter().map(Object::key).collect::<Vec<_>>();
        assert_eq!(keys(&json), keys(&yaml));
        assert_eq!(keys(&json).len(), 3, "{:?}", keys(&json));
        assert_eq!((json.notes.len(), yaml.notes.len()), (1, 1));
        let err = parse(r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "x"}}]}"#).unwrap_err();
        assert_eq!(err, "document 1: metadata.name is required");
        assert!(parse("{\"a\": ").unwrap_err().starts_with("document 1: "));
    }

    #[test]
    fn bad_documents_name_the_reason() {
        let err = parse("kind: Service\napiVersion: v1\nmetadata: {namespace: x}\n").unwrap_err();
        assert_eq!(err, "document 1: metadata.name is required");
        let err = parse("a: [\n").unwrap_err();
        assert!(err.starts_with("document 1: "), "{err}");
        let err = parse("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: 3}\n")
            .unwrap_err();
        assert!(err.starts_with("document 1: invalid Service: "), "{err}");
    }
}
